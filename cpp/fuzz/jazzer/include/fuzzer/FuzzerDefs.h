// The two declarations Jazzer.js's addon takes from libFuzzer's internal FuzzerDefs.h, which
// Debian ships compiled (libclang-rt-14-dev) but not as a header. They match libFuzzer 14.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fuzzer {
typedef int (*UserCallback)(const uint8_t *Data, size_t Size);
int FuzzerDriver(int *argc, char ***argv, UserCallback Callback);
}  // namespace fuzzer
