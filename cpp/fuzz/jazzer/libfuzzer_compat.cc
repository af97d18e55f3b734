// What Jazzer.js 2.1's addon expects from its own fork of libFuzzer, provided on top of stock
// libFuzzer 14 (Debian's libclang-rt-14-dev):
//
// 1. The fork hands the addon its "print and save the crashing input" callback through
//    `__jazzer_set_death_callback`. Stock libFuzzer hands the same callback to the sanitizer
//    runtime through `__sanitizer_set_death_callback` when that symbol exists; defining it here
//    routes it to the addon, so a JS finding still writes `crash-<sha1>`.
// 2. The fork stops the fuzzing loop when the callback returns -2 (the addon's RETURN_EXIT: the JS
//    target threw, the finding is printed and the input already saved). Stock libFuzzer treats any
//    non-zero return as "reject this input" and goes on, then ends with exit(0), which would turn
//    a finding into a pass. The link wraps fuzzer::FuzzerDriver (-Wl,--wrap, see CMakeLists.txt)
//    so that -2 ends the process with the addon's finding exit code.
// 3. The fork adds `_with_pc` variants of two comparison/indirect-call hooks, so that each JS
//    comparison site gets its own id. Stock libFuzzer only has the variants that take the caller's
//    return address. The id only feeds the value profile (-use_value_profile=1, off by default);
//    the comparison operands, which guide the mutations (the TORC tables), still reach libFuzzer.
#include <cstdlib>

#include <fuzzer/FuzzerDefs.h>
#include "shared/libfuzzer.h"

namespace libfuzzer {
extern void (*PrintCrashingInput)();
}

extern "C" __attribute__((visibility("default"))) void __sanitizer_set_death_callback(void (*callback)()) {
  libfuzzer::PrintCrashingInput = callback;
}

extern "C" {
void __sanitizer_cov_trace_const_cmp8(uint64_t arg1, uint64_t arg2);
void __sanitizer_cov_trace_pc_indir(uintptr_t callee);

__attribute__((visibility("default"))) void __sanitizer_cov_trace_const_cmp8_with_pc(uintptr_t, uint64_t arg1,
                                                                                     uint64_t arg2) {
  __sanitizer_cov_trace_const_cmp8(arg1, arg2);
}
__attribute__((visibility("default"))) void __sanitizer_cov_trace_pc_indir_with_pc(void *, uintptr_t callee) {
  __sanitizer_cov_trace_pc_indir(callee);
}
}

namespace {
fuzzer::UserCallback gJsCallback = nullptr;

int StopOnExit(const uint8_t *data, size_t size) {
  int rc = gJsCallback(data, size);
  if (rc == libfuzzer::RETURN_EXIT) _Exit(libfuzzer::EXIT_ERROR_CODE);
  return rc;
}
}  // namespace

// The mangled names of fuzzer::FuzzerDriver(int*, char***, UserCallback) under --wrap.
extern "C" int __real__ZN6fuzzer12FuzzerDriverEPiPPPcPFiPKhmE(int *argc, char ***argv, fuzzer::UserCallback cb);
extern "C" int __wrap__ZN6fuzzer12FuzzerDriverEPiPPPcPFiPKhmE(int *argc, char ***argv, fuzzer::UserCallback cb) {
  gJsCallback = cb;
  return __real__ZN6fuzzer12FuzzerDriverEPiPPPcPFiPKhmE(argc, argv, StopOnExit);
}
