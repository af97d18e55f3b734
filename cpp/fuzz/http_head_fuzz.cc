// libFuzzer target for the HTTP listener's request-head stage (cpp/core/http_head.h) and the
// routing header's address parser (cpp/core/http_address.h).
//
// Build and run: `bash scripts/fuzz.sh http_head` (clang, libFuzzer, ASan, UBSan). Seeds:
// cpp/fuzz/http_head_corpus/ (written by make_http_head_corpus.py; names say the expected outcome).
//
// For each input it checks, beyond "no crash, no out-of-bounds read" (ASan/UBSan):
//  1. the verdict does not depend on how the bytes arrive: whole, byte by byte, or in two pieces
//     split where the input's first byte says, into a buffer that grows (and moves) between calls;
//  2. a done head is within the input and the cap; its target, routing value and routing lines
//     lie inside it, in order, and the lines end in CRLF;
//  3. the head with its routing lines stripped parses again, to a head without the routing header,
//     shorter by exactly the stripped bytes, with the same method and target;
//  4. the body framing after a done head never claims more bytes than it was given, and a
//     Content-Length body partly moved past the parser (bodyMoved, as the session does when it
//     splices) ends at the same byte as one fed whole; chunked bodies are never offered for that;
//  5. parseHostPort on the routing value (and on the raw input) never reads out of bounds, and an
//     address it accepts prints back to the same text.
// A broken invariant aborts, which libFuzzer reports as a crash with the input saved.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../core/http_address.h"
#include "../core/http_head.h"
#include "fuzz_assert.h"

using namespace splicegate;
using namespace splicegate::http;

namespace {

constexpr size_t kMaxHead = 1024;
const char* kHeader = "x-envoy-original-dst-host";

struct Outcome {
  ParseStatus status;
  HeadError error;
  RequestHead head;
};

bool sameOutcome(const Outcome& a, const Outcome& b) {
  if (a.status != b.status) return false;
  if (a.status == ParseStatus::kError) return a.error == b.error;
  if (a.status == ParseStatus::kNeedMore) return true;
  return a.head.length == b.head.length && a.head.method == b.head.method &&
         a.head.target.offset == b.head.target.offset && a.head.target.length == b.head.target.length &&
         a.head.routingLineCount == b.head.routingLineCount &&
         a.head.routingValue.offset == b.head.routingValue.offset &&
         a.head.routingValue.length == b.head.routingValue.length && a.head.keepAlive == b.head.keepAlive &&
         a.head.chunked == b.head.chunked && a.head.contentLength == b.head.contentLength;
}

// Feeds data in the given piece sizes into a std::vector that is re-created (so it moves) for
// every call, as a connection's buffer may be.
Outcome parseInPieces(const uint8_t* data, size_t size, const std::vector<size_t>& cuts) {
  RequestParser p(kHeader, kMaxHead);
  std::vector<uint8_t> buf;
  size_t given = 0;
  ParseStatus st = ParseStatus::kNeedMore;
  for (size_t i = 0; i <= cuts.size() && st == ParseStatus::kNeedMore; ++i) {
    const size_t upto = i < cuts.size() ? cuts[i] : size;
    if (upto < given) continue;
    std::vector<uint8_t> moved(buf);
    moved.insert(moved.end(), data + given, data + upto);
    buf.swap(moved);
    given = upto;
    st = p.parseHead(buf.data(), buf.size());
  }
  return Outcome{st, p.error(), p.head()};
}

void checkHead(const uint8_t* data, size_t size, const RequestHead& h) {
  FUZZ_ASSERT(h.length > 0 && h.length <= size && h.length <= kMaxHead);
  FUZZ_ASSERT(h.length >= 4 && std::memcmp(data + h.length - 4, "\r\n\r\n", 4) == 0);
  FUZZ_ASSERT(h.target.end() <= h.length);
  FUZZ_ASSERT(h.routingLineCount <= kMaxRoutingHeaders);
  FUZZ_ASSERT(h.hasRoutingHeader == (h.routingLineCount > 0));
  uint32_t prevEnd = 0;
  for (uint8_t i = 0; i < h.routingLineCount; ++i) {
    const Span& line = h.routingLines[i];
    FUZZ_ASSERT(line.offset >= prevEnd && line.end() <= h.length - 2 && line.length >= 2);
    FUZZ_ASSERT(data[line.end() - 2] == '\r' && data[line.end() - 1] == '\n');
    prevEnd = line.end();
  }
  if (h.hasRoutingHeader) {
    const Span& v = h.routingValue;
    FUZZ_ASSERT(v.end() <= h.routingLines[0].end());
    FUZZ_ASSERT(v.length == 0 || v.offset >= h.routingLines[0].offset);
    auto a = parseHostPort(reinterpret_cast<const char*>(data + v.offset), v.length);
    // A value may spell its address in a non-canonical form ([2001:db8::0]:443): what it parses to
    // must print in a form that parses back to the same address.
    if (a) {
      const std::string canonical = a->toString();
      auto again = parseHostPort(canonical.data(), canonical.size());
      FUZZ_ASSERT(again && *again == *a);
    }
  }
}

void checkStripped(const uint8_t* data, size_t size, const RequestHead& h) {
  std::vector<uint8_t> copy(data, data + h.length);
  const size_t n = stripRoutingHeaders(copy.data(), copy.size(), h);
  uint32_t removed = 0;
  for (uint8_t i = 0; i < h.routingLineCount; ++i) removed += h.routingLines[i].length;
  FUZZ_ASSERT(n == h.length - removed);
  copy.resize(n);
  RequestParser again(kHeader, kMaxHead);
  FUZZ_ASSERT(again.parseHead(copy.data(), copy.size()) == ParseStatus::kDone);
  FUZZ_ASSERT(!again.head().hasRoutingHeader);
  FUZZ_ASSERT(again.head().length == n);
  FUZZ_ASSERT(again.head().method == h.method);
  FUZZ_ASSERT(again.head().target.length == h.target.length);
  FUZZ_ASSERT(std::memcmp(copy.data() + again.head().target.offset, data + h.target.offset, h.target.length) == 0);
}

void checkBody(const uint8_t* data, size_t size, size_t headLength) {
  RequestParser p(kHeader, kMaxHead);
  std::vector<uint8_t> exact(data, data + size);
  if (p.parseHead(exact.data(), exact.size()) != ParseStatus::kDone) return;
  size_t at = headLength;
  Progress pr = p.body(nullptr, 0);
  while (!pr.complete && !pr.error && at < size) {
    const size_t n = (size - at) > 3 ? 3 : size - at;
    std::vector<uint8_t> slice(exact.begin() + static_cast<long>(at), exact.begin() + static_cast<long>(at + n));
    pr = p.body(slice.data(), slice.size());
    FUZZ_ASSERT(pr.consumed <= n);
    FUZZ_ASSERT(pr.complete || pr.error || pr.consumed == n);
    at += pr.consumed;
  }
}

void checkMoved(const uint8_t* data, size_t size, size_t headLength) {
  RequestParser fed(kHeader, kMaxHead);
  RequestParser moved(kHeader, kMaxHead);
  if (fed.parseHead(data, size) != ParseStatus::kDone) return;
  FUZZ_ASSERT(moved.parseHead(data, size) == ParseStatus::kDone);
  const uint64_t remaining = fed.bodyRemaining();
  FUZZ_ASSERT(moved.bodyRemaining() == remaining);
  if (fed.head().chunked) FUZZ_ASSERT(remaining == 0);
  if (remaining == 0) return;
  FUZZ_ASSERT(fed.head().hasContentLength && remaining == fed.head().contentLength);
  const size_t available = size - headLength;
  const Progress whole = available > 0 ? fed.body(data + headLength, available) : fed.body(nullptr, 0);
  const uint64_t m = remaining < available / 2 ? remaining : available / 2;
  moved.bodyMoved(m);
  FUZZ_ASSERT(moved.bodyRemaining() == remaining - m);
  const size_t rest = available - static_cast<size_t>(m);
  const Progress tail = rest > 0 ? moved.body(data + headLength + m, rest) : moved.body(nullptr, 0);
  FUZZ_ASSERT(!whole.error && !tail.error);
  FUZZ_ASSERT(whole.complete == tail.complete);
  FUZZ_ASSERT(whole.consumed == m + tail.consumed);
  FUZZ_ASSERT(whole.complete == (remaining <= available));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4 * kMaxHead) return 0;
  const Outcome whole = parseInPieces(data, size, {});
  std::vector<size_t> bytewise;
  for (size_t i = 1; i < size; ++i) bytewise.push_back(i);
  const Outcome slow = parseInPieces(data, size, bytewise);
  FUZZ_ASSERT(sameOutcome(whole, slow));
  const size_t cut = size > 0 ? data[0] % (size + 1) : 0;
  const Outcome split = parseInPieces(data, size, {cut});
  FUZZ_ASSERT(sameOutcome(whole, split));
  if (whole.status == ParseStatus::kNeedMore) FUZZ_ASSERT(size < kMaxHead);
  if (whole.status == ParseStatus::kDone) {
    checkHead(data, size, whole.head);
    checkStripped(data, size, whole.head);
    checkBody(data, size, whole.head.length);
    checkMoved(data, size, whole.head.length);
  }
  (void)parseHostPort(reinterpret_cast<const char*>(data), size < 64 ? size : 64);
  return 0;
}
