// The fuzz targets' invariant check: a broken invariant traps, which libFuzzer reports as a crash
// and saves the input (an assert() would vanish under NDEBUG).
#pragma once

#define FUZZ_ASSERT(cond) \
  do {                    \
    if (!(cond)) {        \
      __builtin_trap();   \
    }                     \
  } while (0)
