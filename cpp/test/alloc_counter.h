// Counts heap allocations, to prove a hot path makes none: replaces the global operator new and
// delete, so include it from exactly one source file of a test program. (GCC cannot see that the
// replaced new and delete are a matching malloc/free pair and warns; they are.)
#pragma once

#include <cstdlib>
#include <new>

#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static size_t g_allocations = 0;
void* operator new(size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
