// Copies the validated JS option objects into the core's plain structs, once. Type mismatches
// (a bug in the control layer, not user input) throw a TypeError naming the option.
#pragma once

#include <napi.h>

#include <vector>

#include "../core/core_options.h"

namespace splicegate {

bool readCoreOptions(const Napi::Object& from, CoreOptions& out);
bool readListenerOptions(const Napi::Object& from, ListenerOptions& out);
// The `policies` option alone (an array in the compact form of src/config/policy-native.ts).
bool readPolicies(const Napi::Value& from, std::vector<PolicyRules>& out);

}  // namespace splicegate
