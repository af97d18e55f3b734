// libFuzzer target for the HTTP listener's response framing (cpp/core/http_head.h, ResponseParser):
// where a response from the upstream ends decides what reaches the client and whether the
// connection may go back to the pool, so it must not depend on how the bytes arrive.
//
// Build and run: `bash scripts/fuzz.sh http_response` (clang, libFuzzer, ASan, UBSan). Seeds:
// cpp/fuzz/http_response_corpus/ (written by make_http_response_corpus.py).
//
// Input: byte 0 holds the request's kind (bit 0: HEAD, bit 1: it asked for an Upgrade, bit 2: the
// upstream closes after the bytes), byte 1 where to cut for the two-piece feed; the rest is what
// the upstream sends. For each input it checks, beyond "no crash, no out-of-bounds read":
//  1. the outcome (error or not, complete or not, where the response ends, status, keep-alive,
//     upgrade, body bytes) is the same fed whole, byte by byte, or in two pieces into a buffer
//     that moves between calls;
//  2. each feed claims no more than it was given, its body no more than it claims, and stops
//     short of its input only when the response completed there;
//  3. a Content-Length body partly moved past the parser (bodyMoved, as the session does when it
//     splices) ends at the same byte as one fed whole;
//  4. a response that completes has seen its final head; a bodiless one (HEAD, 204, 304) ends at
//     its head.
// A broken invariant aborts, which libFuzzer reports as a crash with the input saved.

#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/http_head.h"
#include "fuzz_assert.h"

using namespace splicegate;
using namespace splicegate::http;

namespace {

constexpr size_t kMaxInput = 8192;

struct Request {
  bool head = false;
  bool upgrade = false;
  bool closes = false;
};

struct Outcome {
  bool error = false;
  bool complete = false;
  size_t end = 0;   // bytes of the stream that belong to the response (all of them when not complete)
  size_t body = 0;  // of those, after the final head
  int status = 0;
  bool headSeen = false;
  bool keepAlive = false;
  bool upgraded = false;
};

bool same(const Outcome& a, const Outcome& b) {
  if (a.error != b.error) return false;
  if (a.error) return true;  // where an error is seen may differ with the cuts; that one is, may not
  return a.complete == b.complete && a.end == b.end && a.body == b.body && a.status == b.status &&
         a.headSeen == b.headSeen && a.keepAlive == b.keepAlive && a.upgraded == b.upgraded;
}

// Feeds stream[0, size) cut at the given offsets, each piece copied into a fresh buffer (so the
// parser never sees the bytes at the same address twice), as a session's reads arrive.
Outcome feedInPieces(const Request& rq, const uint8_t* stream, size_t size, const std::vector<size_t>& cuts) {
  ResponseParser p;
  p.start(rq.head, rq.upgrade);
  Outcome o;
  size_t at = 0;
  for (size_t i = 0; i <= cuts.size() && at < size; ++i) {
    const size_t upto = i < cuts.size() ? (cuts[i] > size ? size : cuts[i]) : size;
    if (upto <= at) continue;
    std::vector<uint8_t> piece(stream + at, stream + upto);
    const Progress pr = p.feed(piece.data(), piece.size());
    FUZZ_ASSERT(pr.consumed <= piece.size());
    FUZZ_ASSERT(pr.body <= pr.consumed);
    if (pr.error) {
      o.error = true;
      return o;
    }
    FUZZ_ASSERT(pr.complete || pr.consumed == piece.size());
    o.end += pr.consumed;
    o.body += pr.body;
    if (pr.complete) {
      o.complete = true;
      break;
    }
    at = upto;
  }
  if (!o.complete && rq.closes) {
    const Progress pr = p.finish();
    if (pr.error) {
      o.error = true;
      return o;
    }
    FUZZ_ASSERT(pr.complete && pr.consumed == 0);
    o.complete = true;
  }
  FUZZ_ASSERT(o.complete == p.complete());
  if (o.complete) FUZZ_ASSERT(p.headSeen());
  o.status = p.status();
  o.headSeen = p.headSeen();
  o.keepAlive = p.keepAlive();
  o.upgraded = p.upgraded();
  if (o.complete && (rq.head || o.status == 204 || o.status == 304)) FUZZ_ASSERT(o.body == 0);
  return o;
}

// The session's splice path: once the final head is in, part of a Content-Length body goes past
// the parser (bodyMoved) and the rest is fed; the response must end where feeding it all ends it.
void checkMoved(const Request& rq, const uint8_t* stream, size_t size, const Outcome& whole) {
  ResponseParser p;
  p.start(rq.head, rq.upgrade);
  size_t at = 0;
  // Byte by byte up to the end of the final head (a feed that starts the body would count it).
  while (at < size && !p.headSeen()) {
    const Progress pr = p.feed(stream + at, 1);
    if (pr.error || pr.complete) return;
    at += pr.consumed;
  }
  const uint64_t remaining = p.bodyRemaining();
  if (!p.headSeen() || remaining == 0 || remaining == kUntilClose) return;
  const size_t available = size - at;
  const uint64_t m = remaining < available / 2 ? remaining : available / 2;
  p.bodyMoved(m);
  FUZZ_ASSERT(p.bodyRemaining() == remaining - m);
  size_t end = at + static_cast<size_t>(m);
  bool complete = p.complete();
  if (!complete && end < size) {
    const Progress pr = p.feed(stream + end, size - end);
    FUZZ_ASSERT(!pr.error);
    end += pr.consumed;
    complete = pr.complete;
  }
  // A Content-Length body completes by its bytes only (the upstream's close would cut it short,
  // an error), so both runs agree on whether it completed and where.
  FUZZ_ASSERT(!whole.error);
  FUZZ_ASSERT(complete == whole.complete);
  if (complete) FUZZ_ASSERT(end == whole.end);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > kMaxInput) return 0;
  const Request rq{(data[0] & 1) != 0, (data[0] & 2) != 0, (data[0] & 4) != 0};
  const uint8_t* stream = data + 2;
  const size_t n = size - 2;
  const Outcome whole = feedInPieces(rq, stream, n, {});
  std::vector<size_t> bytewise;
  for (size_t i = 1; i < n; ++i) bytewise.push_back(i);
  FUZZ_ASSERT(same(whole, feedInPieces(rq, stream, n, bytewise)));
  const size_t cut = n > 0 ? data[1] % (n + 1) : 0;
  FUZZ_ASSERT(same(whole, feedInPieces(rq, stream, n, {cut})));
  if (!whole.error) checkMoved(rq, stream, n, whole);
  return 0;
}
