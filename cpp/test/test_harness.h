// The few lines both C++ test programs share: CHECK macros, a named-test runner, and the closing
// "N passed, N failed" line that ctest logs and CI read. Tests use exceptions only to abort a
// failed test case; the core itself is built without them.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

namespace splicegate::testing {

struct TestFailure {};

inline int& failedCount() {
  static int n = 0;
  return n;
}
inline int& passedCount() {
  static int n = 0;
  return n;
}
inline std::string& currentTest() {
  static std::string name;
  return name;
}

// SPLICEGATE_TEST_FILTER=<substring>: run only the tests whose name contains it (to repeat one
// test in a loop, e.g. under a sanitizer); unset, every test runs.
inline void run(const char* name, const std::function<void()>& fn) {
  const char* filter = std::getenv("SPLICEGATE_TEST_FILTER");
  if (filter && *filter && !std::strstr(name, filter)) return;
  currentTest() = name;
  bool ok = true;
  try {
    fn();
  } catch (const TestFailure&) {
    ok = false;
  }
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", name);
  (ok ? passedCount() : failedCount())++;
}

// Prints the summary line; the process exit status.
// A run in which no test ran (a SPLICEGATE_TEST_FILTER that matches nothing, say) tested nothing:
// it fails rather than pass quietly.
inline int finish() {
  std::printf("%d passed, %d failed\n", passedCount(), failedCount());
  if (passedCount() + failedCount() == 0) {
    std::fprintf(stderr, "no test ran (SPLICEGATE_TEST_FILTER=%s)\n", std::getenv("SPLICEGATE_TEST_FILTER") ? std::getenv("SPLICEGATE_TEST_FILTER") : "");
    return 1;
  }
  return failedCount() == 0 ? 0 : 1;
}

}  // namespace splicegate::testing

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "  FAILED %s:%d in %s: %s\n", __FILE__, __LINE__,                     \
                   ::splicegate::testing::currentTest().c_str(), #cond);                         \
      throw ::splicegate::testing::TestFailure{};                                                \
    }                                                                                            \
  } while (0)

#define CHECK_EQ(a, b)                                                                           \
  do {                                                                                           \
    const auto va = (a);                                                                         \
    const auto vb = (b);                                                                         \
    if (!(va == vb)) {                                                                           \
      std::fprintf(stderr, "  FAILED %s:%d in %s: %s == %s (%llu vs %llu)\n", __FILE__, __LINE__, \
                   ::splicegate::testing::currentTest().c_str(), #a, #b,                         \
                   static_cast<unsigned long long>(va), static_cast<unsigned long long>(vb));    \
      throw ::splicegate::testing::TestFailure{};                                                \
    }                                                                                            \
  } while (0)
