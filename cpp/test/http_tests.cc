// Unit tests for the HTTP listener's parsing (cpp/core/http_head.h, http_address.h): request heads
// fed whole and byte by byte, the routing header found and stripped, every smuggling vector
// refused, the head size cap, body and response framing (Content-Length, chunked, until close,
// HEAD/204/304, 1xx, 101), the IP:PORT parser, and the fuzz seed corpus, whose file names say
// what each seed must parse to.

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "../core/http_address.h"
#include "../core/http_head.h"
#include "../core/http_pool.h"
#include "../core/listener.h"
#include "../core/socket_options.h"
#include "loopback.h"
#include "test_harness.h"

using namespace splicegate;
using namespace splicegate::http;
using namespace splicegate::testing;

namespace {

const char* kHeader = "x-envoy-original-dst-host";
constexpr size_t kMaxHead = 1024;  // make_http_head_corpus.py assumes the same

using Bytes = std::vector<uint8_t>;
Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }
std::string str(const Bytes& b, Span s) { return std::string(b.begin() + s.offset, b.begin() + s.end()); }

ParseStatus parseWhole(RequestParser& p, const Bytes& b) { return p.parseHead(b.data(), b.size()); }

// Feeds the bytes one at a time into a growing buffer, as slow clients send them; the result must
// match a whole-buffer parse.
ParseStatus parseByteByByte(RequestParser& p, const Bytes& b, Bytes& grown) {
  grown.clear();
  ParseStatus st = ParseStatus::kNeedMore;
  for (uint8_t c : b) {
    grown.push_back(c);
    st = p.parseHead(grown.data(), grown.size());
    if (st != ParseStatus::kNeedMore) return st;
  }
  return st;
}

const char* statusName(const RequestParser& p, ParseStatus st) {
  if (st == ParseStatus::kDone) return "done";
  if (st == ParseStatus::kNeedMore) return "need_more";
  return p.error() == HeadError::kTooLarge ? "too_large" : "malformed";
}

bool readFile(const std::string& path, Bytes* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  uint8_t buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
  std::fclose(f);
  return true;
}

// Feeds a response in slices of `step` bytes; returns total bytes consumed and the final progress.
Progress feedResponse(ResponseParser& r, const Bytes& b, size_t step, size_t* consumed) {
  *consumed = 0;
  Progress last;
  while (*consumed < b.size()) {
    const size_t n = std::min(step, b.size() - *consumed);
    last = r.feed(b.data() + *consumed, n);
    *consumed += last.consumed;
    if (last.complete || last.error) return last;
  }
  return last;
}

void parserTests() {
  run("a simple GET parses whole and byte by byte to the same head", [] {
    const Bytes req = bytes("GET /index.html?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n");
    RequestParser whole(kHeader, kMaxHead);
    CHECK(parseWhole(whole, req) == ParseStatus::kDone);
    CHECK_EQ(whole.head().length, req.size());
    CHECK(str(req, whole.head().target) == "/index.html?q=1");
    CHECK_EQ(whole.head().method, HTTP_GET);
    CHECK_EQ(whole.head().versionMinor, 1);
    CHECK(whole.head().keepAlive);
    CHECK(!whole.head().hasRoutingHeader);
    CHECK(!whole.head().upgrade);
    RequestParser slow(kHeader, kMaxHead);
    Bytes grown;
    CHECK(parseByteByByte(slow, req, grown) == ParseStatus::kDone);
    CHECK_EQ(slow.head().length, req.size());
    CHECK(str(grown, slow.head().target) == "/index.html?q=1");
  });

  run("the routing header's first value is found case-insensitively, trimmed, in pieces", [] {
    const Bytes req = bytes("GET / HTTP/1.1\r\nHost: a\r\nX-Envoy-ORIGINAL-dst-host:   10.1.2.3:8080  \r\n"
                            "x-envoy-original-dst-host: 10.9.9.9:80\r\nAccept: */*\r\n\r\n");
    for (int mode = 0; mode < 2; ++mode) {
      RequestParser p(kHeader, kMaxHead);
      Bytes grown;
      const ParseStatus st = mode == 0 ? parseWhole(p, req) : parseByteByByte(p, req, grown);
      const Bytes& buf = mode == 0 ? req : grown;
      CHECK(st == ParseStatus::kDone);
      CHECK(p.head().hasRoutingHeader);
      CHECK(str(buf, p.head().routingValue) == "10.1.2.3:8080");
      CHECK_EQ(p.head().routingLineCount, 2);
    }
  });

  run("stripping removes every routing header line and keeps the rest byte for byte", [] {
    Bytes req = bytes("GET / HTTP/1.1\r\nx-envoy-original-dst-host: 10.1.2.3:80\r\nHost: a\r\n"
                      "X-ENVOY-ORIGINAL-DST-HOST: 10.9.9.9:80\r\n\r\nBODY");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, req) == ParseStatus::kDone);
    const size_t n = stripRoutingHeaders(req.data(), req.size(), p.head());
    CHECK(std::string(req.begin(), req.begin() + n) == "GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY");
    // The stripped head parses again, with no routing header left.
    RequestParser again(kHeader, kMaxHead);
    CHECK(again.parseHead(req.data(), n) == ParseStatus::kDone);
    CHECK(!again.head().hasRoutingHeader);
  });

  run("a routing header as the last line is stripped up to the blank line", [] {
    Bytes req = bytes("GET / HTTP/1.1\r\nHost: a\r\nx-envoy-original-dst-host: [::1]:80\r\n\r\n");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, req) == ParseStatus::kDone);
    CHECK(str(req, p.head().routingValue) == "[::1]:80");
    const size_t n = stripRoutingHeaders(req.data(), req.size(), p.head());
    CHECK(std::string(req.begin(), req.begin() + n) == "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  });

  run("a header whose name only starts like the routing header is not it", [] {
    const Bytes req = bytes("GET / HTTP/1.1\r\nx-envoy-original-dst-hostname: 10.0.0.1:80\r\nx-envoy: 1\r\n\r\n");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, req) == ParseStatus::kDone);
    CHECK(!p.head().hasRoutingHeader);
    CHECK_EQ(p.head().routingLineCount, 0);
  });

  run("smuggling vectors and syntax errors are malformed, whole and byte by byte", [] {
    const char* vectors[] = {
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "GET / HTTP/1.1\r\nX: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\r\nX: one\r\n\ttwo\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\n",
        "GET /\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x7f" "b\r\n\r\n",
        // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (a 1.0 server may ignore
        // it and take the chunked body for the next request on a pooled connection).
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        // An empty Transfer-Encoding is a Transfer-Encoding without chunked last (llhttp 8 sees
        // none, and with it a Content-Length body that a server reading TE first does not).
        "POST / HTTP/1.1\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding:  \r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
        // A Transfer-Encoding other than the one coding "chunked": the head goes up as it came,
        // and servers that match "chunked" exactly (gunicorn before 22, CVE-2024-1135) or know
        // no other coding read no body, then the chunked body as their next request. Envoy too
        // takes "chunked" alone.
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding:\r\nTransfer-Encoding: chunked\r\n\r\n",
        // A field name must be a token: an empty one is no header a server agrees on.
        "GET / HTTP/1.1\r\n: a\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\r\n:\r\n\r\n",
    };
    for (const char* v : vectors) {
      const Bytes req = bytes(v);
      RequestParser whole(kHeader, kMaxHead);
      RequestParser slow(kHeader, kMaxHead);
      Bytes grown;
      const ParseStatus a = parseWhole(whole, req);
      const ParseStatus b = parseByteByByte(slow, req, grown);
      if (a != ParseStatus::kError || b != ParseStatus::kError) std::fprintf(stderr, "  accepted: %s\n", v);
      CHECK(a == ParseStatus::kError);
      CHECK(b == ParseStatus::kError);
      CHECK(whole.error() == HeadError::kMalformed);
      CHECK(slow.error() == HeadError::kMalformed);
      CHECK(std::strlen(whole.errorReason()) > 0);
    }
  });

  run("more than kMaxRoutingHeaders copies of the routing header are malformed", [] {
    std::string s = "GET / HTTP/1.1\r\n";
    for (size_t i = 0; i < kMaxRoutingHeaders; ++i) s += "x-envoy-original-dst-host: 10.0.0.1:80\r\n";
    RequestParser ok(kHeader, kMaxHead);
    CHECK(parseWhole(ok, bytes(s + "\r\n")) == ParseStatus::kDone);
    CHECK_EQ(ok.head().routingLineCount, kMaxRoutingHeaders);
    RequestParser over(kHeader, kMaxHead);
    CHECK(parseWhole(over, bytes(s + "x-envoy-original-dst-host: 10.0.0.1:80\r\n\r\n")) == ParseStatus::kError);
    CHECK(over.error() == HeadError::kMalformed);
  });

  run("a head at the cap is done; one byte over is too large, however it arrives", [] {
    std::string prefix = "GET / HTTP/1.1\r\nX: ";
    std::string exact = prefix + std::string(kMaxHead - prefix.size() - 4, 'a') + "\r\n\r\n";
    CHECK_EQ(exact.size(), kMaxHead);
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, bytes(exact + "trailing body bytes")) == ParseStatus::kDone);
    CHECK_EQ(p.head().length, kMaxHead);
    std::string over = prefix + std::string(kMaxHead - prefix.size() - 3, 'a') + "\r\n\r\n";
    RequestParser q(kHeader, kMaxHead);
    CHECK(parseWhole(q, bytes(over)) == ParseStatus::kError);
    CHECK(q.error() == HeadError::kTooLarge);
    RequestParser r(kHeader, kMaxHead);
    Bytes grown;
    CHECK(parseByteByByte(r, bytes(over), grown) == ParseStatus::kError);
    CHECK(r.error() == HeadError::kTooLarge);
    CHECK_EQ(grown.size(), kMaxHead);  // refused as soon as the cap was reached, not later
  });

  run("keep-alive follows the version and Connection", [] {
    struct Case { const char* req; bool keep; } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
    };
    for (const Case& c : cases) {
      RequestParser p(kHeader, kMaxHead);
      CHECK(parseWhole(p, bytes(c.req)) == ParseStatus::kDone);
      CHECK_EQ(p.head().keepAlive, c.keep);
    }
  });

  run("CONNECT and Upgrade requests are flagged, with the authority as target", [] {
    const Bytes c = bytes("CONNECT 10.0.0.7:443 HTTP/1.1\r\nHost: 10.0.0.7:443\r\n\r\n");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, c) == ParseStatus::kDone);
    CHECK(p.head().isConnect());
    CHECK(p.head().upgrade);
    CHECK(str(c, p.head().target) == "10.0.0.7:443");
    const Bytes u = bytes("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    RequestParser q(kHeader, kMaxHead);
    CHECK(parseWhole(q, u) == ParseStatus::kDone);
    CHECK(q.head().upgrade);
    CHECK(!q.head().isConnect());
    CHECK(q.body(nullptr, 0).complete);
  });

  run("bodies end exactly: Content-Length, chunked, none; the next request is left alone", [] {
    const Bytes cl = bytes("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, cl) == ParseStatus::kDone);
    CHECK(p.head().hasContentLength);
    CHECK_EQ(p.head().contentLength, 5u);
    // In slices of 2.
    size_t at = p.head().length;
    Progress pr;
    size_t used = 0;
    while (!pr.complete) {
      pr = p.body(cl.data() + at, std::min<size_t>(2, cl.size() - at));
      CHECK(!pr.error);
      at += pr.consumed;
      used += pr.consumed;
    }
    CHECK_EQ(used, 5u);
    p.reset();
    CHECK(p.parseHead(cl.data() + at, cl.size() - at) == ParseStatus::kDone);
    CHECK(p.body(nullptr, 0).complete);

    const Bytes ch = bytes("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT");
    RequestParser q(kHeader, kMaxHead);
    CHECK(parseWhole(q, ch) == ParseStatus::kDone);
    CHECK(q.head().chunked);
    const size_t start = q.head().length;
    size_t total = 0;
    Progress qr;
    for (size_t i = start; i < ch.size() && !qr.complete; ++i) {
      qr = q.body(ch.data() + i, 1);
      CHECK(!qr.error);
      total += qr.consumed;
    }
    CHECK(qr.complete);
    CHECK_EQ(start + total, ch.size() - 4);  // "NEXT" is the next request's
  });

  run("Transfer-Encoding: chunked is taken in any case and with whitespace around it", [] {
    for (const char* te : {"chunked", "Chunked", "CHUNKED", " chunked", "chunked ", "\tchunked"}) {
      RequestParser p(kHeader, kMaxHead);
      const Bytes req = bytes(std::string("POST / HTTP/1.1\r\nTransfer-Encoding:") + te + "\r\n\r\n0\r\n\r\n");
      const ParseStatus st = parseWhole(p, req);
      if (st != ParseStatus::kDone) std::fprintf(stderr, "  refused: Transfer-Encoding:%s (%s)\n", te, p.errorReason());
      CHECK(st == ParseStatus::kDone);
      CHECK(p.head().chunked);
      CHECK(p.body(req.data() + p.head().length, req.size() - p.head().length).complete);
      RequestParser slow(kHeader, kMaxHead);
      Bytes grown;
      CHECK(parseByteByByte(slow, req, grown) == ParseStatus::kDone);
      CHECK(slow.head().chunked);
    }
  });

  run("an invalid chunk size is a framing error", [] {
    const char* bodies[] = {"zz\r\nhello\r\n0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "fffffffffffffffffff\r\n", "-5\r\n",
                            // A bare LF as the trailer section's end (llhttp 8 takes it even in strict
                            // mode, as it does at a head's end); with trailers, and without.
                            "5\r\nhello\r\n0\r\n\n", "0\r\nT: x\r\n\n", "0\n\r\n"};
    for (const char* b : bodies) {
      const Bytes req = bytes(std::string("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") + b);
      RequestParser p(kHeader, kMaxHead);
      CHECK(parseWhole(p, req) == ParseStatus::kDone);
      const Progress pr = p.body(req.data() + p.head().length, req.size() - p.head().length);
      if (!pr.error) std::fprintf(stderr, "  accepted chunked body: %s\n", b);
      CHECK(pr.error);
      CHECK(p.error() == HeadError::kMalformed);
      // The same a byte at a time: the framing error is found whatever the slicing.
      RequestParser q(kHeader, kMaxHead);
      CHECK(parseWhole(q, req) == ParseStatus::kDone);
      bool error = false;
      for (size_t i = q.head().length; i < req.size() && !error; ++i) {
        const Progress one = q.body(req.data() + i, 1);
        error = one.error;
        if (one.complete) break;
      }
      CHECK(error);
    }
  });

  run("idempotent methods are the RFC's", [] {
    struct Case { const char* m; bool idem; } cases[] = {{"GET", true}, {"HEAD", true}, {"PUT", true}, {"DELETE", true},
                                                         {"OPTIONS", true}, {"POST", false}, {"PATCH", false}};
    for (const Case& c : cases) {
      RequestParser p(kHeader, kMaxHead);
      CHECK(parseWhole(p, bytes(std::string(c.m) + " / HTTP/1.1\r\n\r\n")) == ParseStatus::kDone);
      CHECK_EQ(p.head().idempotent(), c.idem);
    }
  });
}

void responseTests() {
  run("responses end at Content-Length, after the last chunk, or at close", [] {
    for (size_t step : {size_t(1), size_t(7), size_t(4096)}) {
      ResponseParser r;
      r.start(false, false);
      const Bytes cl = bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1");
      size_t used = 0;
      Progress p = feedResponse(r, cl, step, &used);
      CHECK(p.complete);
      CHECK_EQ(used, cl.size() - 8);
      CHECK_EQ(r.status(), 200);
      CHECK(r.keepAlive());

      r.start(false, false);
      const Bytes ch = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
      p = feedResponse(r, ch, step, &used);
      CHECK(p.complete);
      CHECK_EQ(used, ch.size());

      r.start(false, false);
      const Bytes eof = bytes("HTTP/1.1 200 OK\r\n\r\nall of it");
      p = feedResponse(r, eof, step, &used);
      CHECK(!p.complete);
      CHECK_EQ(used, eof.size());
      CHECK(r.finish().complete);
      CHECK(!r.keepAlive());
    }
  });

  run("HEAD, 204, 304 and Content-Length: 0 responses end with their head, in one read or in pieces", [] {
    ResponseParser r;
    r.start(true, false);
    const Bytes head = bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    size_t used = 0;
    CHECK(feedResponse(r, head, 4096, &used).complete);
    CHECK_EQ(used, head.size());
    for (const char* s : {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"}) {
      for (size_t step : {size_t(1), size_t(4096)}) {
        r.start(false, false);
        const Bytes b = bytes(s);
        CHECK(feedResponse(r, b, step, &used).complete);
        CHECK_EQ(used, b.size());
        CHECK(r.keepAlive());
      }
    }
  });

  run("interim 1xx responses pass through to the final response; 101 is an upgrade", [] {
    ResponseParser r;
    r.start(false, false);
    const Bytes b = bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    size_t used = 0;
    CHECK(feedResponse(r, b, 3, &used).complete);
    CHECK_EQ(used, b.size());
    CHECK_EQ(r.status(), 201);
    CHECK(!r.upgraded());
    r.start(false, true);
    const Bytes u = bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
    CHECK(feedResponse(r, u, 4096, &used).complete);
    CHECK_EQ(used, u.size() - 4);
    CHECK(r.upgraded());
    // RFC 9110 15.2.2: a server switches only to a protocol the request's Upgrade named. A 101
    // to a request that named none is not HTTP we can frame: an error, never a tunnel.
    r.start(false, false);
    const Progress bad = feedResponse(r, u, 4096, &used);
    CHECK(bad.error);
    CHECK(!r.upgraded());
    CHECK(std::string(r.errorReason()).find("101") != std::string::npos);
  });

  run("a malformed or cut-short response is an error", [] {
    ResponseParser r;
    r.start(false, false);
    size_t used = 0;
    CHECK(feedResponse(r, bytes("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 4096, &used).error);
    r.start(false, false);
    CHECK(feedResponse(r, bytes("SSH-2.0-OpenSSH\r\n"), 4096, &used).error);
    r.start(false, false);
    CHECK(!feedResponse(r, bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), 4096, &used).complete);
    CHECK(r.finish().error);
    r.start(false, false);
    CHECK(r.finish().error);  // nothing at all
  });
}

void bodyCountingTests() {
  run("a Content-Length body counted by body() and bodyMoved() in any mix ends at the same byte", [] {
    const Bytes req = bytes("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n");
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, req) == ParseStatus::kDone);
    CHECK_EQ(p.bodyRemaining(), 10u);
    Progress pr = p.body(req.data() + p.head().length, 3);  // 3 bytes read along with the head
    CHECK_EQ(pr.consumed, 3u);
    CHECK_EQ(pr.body, 3u);
    CHECK(!pr.complete);
    CHECK_EQ(p.bodyRemaining(), 7u);
    p.bodyMoved(5);  // spliced
    CHECK_EQ(p.bodyRemaining(), 2u);
    CHECK(!p.body(nullptr, 0).complete);
    // The last 2 and the next request in one slice: only the 2 are this body's.
    const size_t at = p.head().length + 8;
    pr = p.body(req.data() + at, req.size() - at);
    CHECK(pr.complete);
    CHECK_EQ(pr.consumed, 2u);
    CHECK_EQ(p.bodyRemaining(), 0u);
    RequestParser q(kHeader, kMaxHead);
    CHECK(parseWhole(q, req) == ParseStatus::kDone);
    q.bodyMoved(10);
    CHECK(q.body(nullptr, 0).complete);
  });

  run("a chunked request body is never offered for splicing; Transfer-Encoding without chunked is refused", [] {
    RequestParser p(kHeader, kMaxHead);
    CHECK(parseWhole(p, bytes("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")) == ParseStatus::kDone);
    CHECK_EQ(p.bodyRemaining(), 0u);
    RequestParser none(kHeader, kMaxHead);
    CHECK(parseWhole(none, bytes("GET / HTTP/1.1\r\n\r\n")) == ParseStatus::kDone);
    CHECK_EQ(none.bodyRemaining(), 0u);
    for (const char* te : {"gzip", "identity", "chunked, gzip"}) {
      RequestParser q(kHeader, kMaxHead);
      const ParseStatus st = parseWhole(q, bytes(std::string("POST / HTTP/1.1\r\nTransfer-Encoding: ") + te + "\r\n\r\n"));
      if (st != ParseStatus::kError) std::fprintf(stderr, "  accepted: Transfer-Encoding: %s\n", te);
      CHECK(st == ParseStatus::kError);
      CHECK(q.error() == HeadError::kMalformed);
    }
  });

  run("a response body: Content-Length counted (fed or moved), close-delimited open-ended, chunked parsed", [] {
    ResponseParser r;
    r.start(false, false);
    const Bytes head = bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabcd");
    Progress p = r.feed(head.data(), head.size());
    CHECK(!p.complete);
    CHECK_EQ(p.consumed, head.size());
    CHECK_EQ(p.body, 4u);
    CHECK_EQ(r.bodyRemaining(), 96u);
    r.bodyMoved(90);
    CHECK_EQ(r.bodyRemaining(), 6u);
    CHECK(!r.complete());
    const Bytes tail = bytes("123456HTTP/1.1 200 OK");
    p = r.feed(tail.data(), tail.size());
    CHECK(p.complete);
    CHECK_EQ(p.consumed, 6u);
    CHECK(r.keepAlive());

    r.start(false, false);
    const Bytes eof = bytes("HTTP/1.1 200 OK\r\n\r\nxy");
    p = r.feed(eof.data(), eof.size());
    CHECK_EQ(p.body, 2u);
    CHECK(r.bodyRemaining() == kUntilClose);
    r.bodyMoved(1000);
    CHECK(!r.complete());
    CHECK(r.finish().complete);
    CHECK(!r.keepAlive());

    r.start(false, false);
    const Bytes te = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz");
    r.feed(te.data(), te.size());
    CHECK(r.bodyRemaining() == kUntilClose);  // a response coding that is not chunked: read to close
    CHECK(!r.keepAlive());

    r.start(false, false);
    const Bytes ch = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    p = r.feed(ch.data(), ch.size());
    CHECK(!p.complete);
    CHECK_EQ(r.bodyRemaining(), 0u);  // chunked: the parser's
    const Bytes last = bytes("0\r\n\r\nNEXT");
    p = r.feed(last.data(), last.size());
    CHECK(p.complete);
    CHECK_EQ(p.consumed, last.size() - 4);

    r.start(false, false);
    const Bytes cut = bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    r.feed(cut.data(), cut.size());
    r.bodyMoved(99);
    CHECK(r.finish().error);  // one byte short
  });

  run("a 304 or 204 ends at its head even with a Content-Length and bytes behind it", [] {
    for (const char* s : {"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"}) {
      ResponseParser r;
      r.start(false, false);
      const Bytes b = bytes(std::string(s) + "HTTP/");
      const Progress p = r.feed(b.data(), b.size());
      CHECK(p.complete);
      CHECK_EQ(p.consumed, b.size() - 5);
      CHECK_EQ(r.bodyRemaining(), 0u);
    }
  });
}

void addressTests() {
  run("IP:PORT and [v6]:PORT literals parse; anything else is invalid", [] {
    auto a = parseHostPort("10.1.2.3:8080", 13);
    CHECK(a.has_value());
    CHECK(a->toString() == "10.1.2.3:8080");
    const std::string v6 = "[2001:db8::1]:443";
    auto b = parseHostPort(v6.data(), v6.size());
    CHECK(b.has_value());
    CHECK(b->toString() == "[2001:db8::1]:443");
    const char* invalid[] = {"", "10.1.2.3", "10.1.2.3:", "10.1.2.3:0", "10.1.2.3:65536", "10.1.2.3:080",
                             "10.1.2.3:80x", "example.com:80", "010.1.2.3:80", "10.1.2:80", "2001:db8::1:443",
                             "[2001:db8::1]", "[2001:db8::1]443", "[fe80::1%eth0]:80", "[10.1.2.3]:80",
                             " 10.1.2.3:80", "10.1.2.3:+80", "[]:80", "10.1.2.3:80, 10.1.2.4:80",
                             // Other spellings of 127.0.0.1 that inet_aton or a URL parser would take:
                             // short, decimal, hex, octal, trailing dot, percent-encoded, zone id.
                             "127.1:80", "2130706433:80", "0x7f000001:80", "0x7f.0.0.1:80", "0177.0.0.1:80",
                             "127.0.0.1.:80", "127%2e0.0.1:80", "[::1%25lo]:80", "[::1]:80 ", "127.0.0.1 :80"};
    for (const char* s : invalid) {
      if (parseHostPort(s, std::strlen(s)).has_value()) std::fprintf(stderr, "  accepted: '%s'\n", s);
      CHECK(!parseHostPort(s, std::strlen(s)).has_value());
    }
  });
}

void corpusTests() {
  run("every fuzz seed parses to the outcome its name says", [] {
    DIR* dir = opendir(SPLICEGATE_HTTP_CORPUS_DIR);
    CHECK(dir != nullptr);
    int seeds = 0;
    while (const dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      const size_t sep = name.find("--");
      CHECK(sep != std::string::npos);
      const std::string expected = name.substr(0, sep);
      Bytes data;
      CHECK(readFile(std::string(SPLICEGATE_HTTP_CORPUS_DIR) + "/" + name, &data));
      RequestParser p(kHeader, kMaxHead);
      const ParseStatus st = parseWhole(p, data);
      const std::string got = statusName(p, st);
      if (got != expected) std::fprintf(stderr, "  seed %s parsed to %s (%s)\n", name.c_str(), got.c_str(), p.errorReason());
      CHECK(got == expected);
      ++seeds;
    }
    closedir(dir);
    CHECK(seeds >= 30);
  });
}


// ---- The session: a WorkerCore with a mode: http listener on loopback, real servers and clients ----

// Runs a core's loop on its own thread (the tests' clients and servers block).
struct LoopRunner {
  WorkerCore& core;
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit LoopRunner(WorkerCore& c) : core(c), thread([this] { while (!stop) core.runOnce(5); }) {}
  ~LoopRunner() {
    stop = true;
    thread.join();
  }
};

// Polls pred until it holds; the bound is a liveness limit only.
bool waitFor(const std::function<bool()>& pred, int timeoutMs = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

std::string lowerCopy(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// One whole message (head, then Content-Length bytes of body) at the front of buf; its length, or 0.
size_t messageLength(const std::string& buf) {
  const size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  const std::string head = lowerCopy(buf.substr(0, end));
  size_t body = 0;
  const size_t cl = head.find("\r\ncontent-length:");
  if (cl != std::string::npos) body = std::stoul(head.substr(cl + 17));
  return buf.size() >= end + 4 + body ? end + 4 + body : 0;
}

// An origin server: each accepted connection is served on its own thread by `serve`, which gets
// the connection and a per-connection index; heads it saw are recorded for the tests.
struct Origin {
  SocketAddress address;
  UniqueFd listenFd;
  std::atomic<int> accepted{0};
  std::atomic<int> closed{0};  // connections whose serve() returned and that were closed
  std::mutex mutex;
  std::vector<std::string> requests;  // every request head, in arrival order
  std::vector<std::thread> workers;
  std::thread acceptor;
  std::atomic<bool> stopping{false};
  std::function<void(Origin&, int fd, int index)> serve;

  explicit Origin(std::function<void(Origin&, int, int)> s) : listenFd(listenOn(address)), serve(std::move(s)) {
    acceptor = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listenFd.get(), nullptr, nullptr);
        if (fd < 0 || stopping) {
          if (fd >= 0) ::close(fd);
          return;
        }
        const int index = accepted++;
        workers.emplace_back([this, fd, index] {
          serve(*this, fd, index);
          ::close(fd);
          ++closed;
        });
      }
    });
  }
  ~Origin() {
    stopping = true;
    ::shutdown(listenFd.get(), SHUT_RDWR);
    acceptor.join();
    for (auto& t : workers) t.join();
  }
  void record(const std::string& head) {
    std::lock_guard<std::mutex> lock(mutex);
    requests.push_back(head);
  }
  std::vector<std::string> seen() {
    std::lock_guard<std::mutex> lock(mutex);
    return requests;
  }
};

// Keep-alive origin: answers each request with "<n>:<target>" (n counts requests on this
// connection) until the client closes; closeAfter > 0 closes after that many responses.
// Reads one request head, answers 101 (upgrade: echo) followed by `after`, then echoes what comes.
std::function<void(Origin&, int, int)> switchingEchoServer(std::string after) {
  return [after](Origin&, int fd, int) {
    std::string buf;
    if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
    const std::string resp = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n" + after;
    writeAll(fd, resp.data(), resp.size());
    char b[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) return;
      if (!writeAll(fd, b, static_cast<size_t>(n))) return;
    }
  };
}

std::function<void(Origin&, int, int)> keepAliveServer(int closeAfter = 0) {
  return [closeAfter](Origin& o, int fd, int) {
    std::string buf;
    for (int n = 1;; ++n) {
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }, 10000) != End::kOpen) return;
      const size_t len = messageLength(buf);
      const std::string msg = buf.substr(0, len);
      buf.erase(0, len);
      o.record(msg);
      const size_t sp1 = msg.find(' ');
      const std::string target = msg.substr(sp1 + 1, msg.find(' ', sp1 + 1) - sp1 - 1);
      const std::string body = std::to_string(n) + ":" + target;
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      if (!writeAll(fd, resp.data(), resp.size())) return;
      if (closeAfter > 0 && n >= closeAfter) return;
    }
  };
}

struct HttpStage {
  UniqueFd listenSocket;
  std::unique_ptr<WorkerCore> core;
  SocketAddress listenAddr;
  FixedDestinationOps* ops = nullptr;
  // target: the "original destination" of every connection (AF_UNSPEC: the listener itself, i.e.
  // not redirected).
  HttpStage(const SocketAddress& target, const char* trusted = "127.0.0.0/8", CoreOptions options = {},
            HttpListenerOptions http = {}) {
    auto fake = std::make_unique<FixedDestinationOps>();
    ops = fake.get();
    SysError err;
    core = WorkerCore::create(options, std::move(fake), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "http";
    lo.address = addr("127.0.0.1", 0);
    lo.http = std::move(http);
    lo.http.enabled = true;
    if (trusted != nullptr) lo.http.trustedSources = {*parseCidr(trusted)};
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    ops->target = target.family() == AF_UNSPEC ? listenAddr : target;
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
  }
  uint64_t stat(Stat s) const { return core->stats().get(s); }
};

// Sends req and reads one response (head plus Content-Length body).
std::string exchange(int fd, const std::string& req, End* end = nullptr) {
  CHECK(writeAll(fd, req.data(), req.size()));
  std::string resp;
  const End e = readUntil(fd, resp, [](const std::string& b) { return messageLength(b) > 0; });
  if (end) *end = e;
  return resp;
}

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nhost: test\r\n" + extra + "\r\n";
}

std::string routeTo(const SocketAddress& a) { return "x-envoy-original-dst-host: " + a.toString() + "\r\n"; }

// Connects fd (a socket made beforehand, so that this takes no new fd) to `to` and sends request.
bool connectAndSend(int fd, const SocketAddress& to, const std::string& request) {
  return ::connect(fd, to.sockaddrPtr(), to.length()) == 0 && writeAll(fd, request.data(), request.size());
}

// Frees the highest of fillers (fillFdHoles) and returns the limit that leaves exactly that one
// number free: the next accept4 gets it, and nothing after.
rlim_t limitAboveLastHole(std::vector<UniqueFd>& fillers) {
  const int hole = fillers.back().get();
  fillers.pop_back();
  return static_cast<rlim_t>(hole + 1);
}

// The error response's status line and x-splicegate-error, and the connection ends with FIN.
void expectError(int fd, const std::string& resp, const char* status, const char* reason) {
  if (resp.rfind(std::string("HTTP/1.1 ") + status, 0) != 0) std::fprintf(stderr, "  got: %s\n", resp.c_str());
  CHECK(resp.rfind(std::string("HTTP/1.1 ") + status, 0) == 0);
  CHECK(lowerCopy(resp).find(std::string("x-splicegate-error: ") + reason + "\r\n") != std::string::npos);
  CHECK(lowerCopy(resp).find("connection: close\r\n") != std::string::npos);
  std::string rest;
  CHECK(readToEnd(fd, rest) == End::kEof);
}

// Allows everything (special ranges too) but 127.0.0.1:port, by a rule named `name`.
PolicyRules denyLoopbackPort(const char* name, uint16_t port) {
  PolicyRules rules;
  rules.defaultAllow = true;
  rules.denySpecial = false;
  PolicyRule deny;
  deny.name = name;
  deny.allow = false;
  deny.cidrs = {*parseCidr("127.0.0.1/32")};
  deny.ports = {PortRange{port, port}};
  rules.rules.push_back(deny);
  return rules;
}

// Accepts one connection on a bare listening socket, reads one request from it (into *request when
// given) and answers with `body` (keep-alive); returns the accepted fd.
// The next connection on listenFd, within the tests' usual 10 s: one that never comes fails the
// test (an empty UniqueFd) instead of hanging it.
UniqueFd acceptWithin(int listenFd) {
  pollfd p{listenFd, POLLIN, 0};
  UniqueFd up(::poll(&p, 1, 10000) == 1 ? ::accept(listenFd, nullptr, nullptr) : -1);
  CHECK(up);
  return up;
}

UniqueFd acceptAndAnswer(int listenFd, const std::string& body, std::string* request = nullptr) {
  UniqueFd up = acceptWithin(listenFd);
  if (!up) return up;
  std::string buf;
  CHECK(readUntil(up.get(), buf, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
  if (request != nullptr) *request = buf;
  const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  CHECK(writeAll(up.get(), resp.data(), resp.size()));
  return up;
}

// Idle pooled upstream connections to bare listening sockets the test answers itself, and two
// more destinations (next, last) for the requests made while the process is out of fds: nothing
// there needs an fd of this process until the test accepts.
struct PoolUnderFdPressure {
  std::vector<SocketAddress> pooledAddrs;
  std::vector<UniqueFd> pooledServers;
  std::vector<UniqueFd> pooledUps;  // the servers' ends of the pooled connections
  SocketAddress nextAddr, lastAddr;
  UniqueFd next, last;

  explicit PoolUnderFdPressure(size_t n) : pooledAddrs(n) {
    for (SocketAddress& a : pooledAddrs) pooledServers.push_back(listenOn(a));
    next = listenOn(nextAddr);
    last = listenOn(lastAddr);
  }
  // One request from client to each pooled server, answered keep-alive: each connection goes to
  // the pool at its response's end.
  void fillPool(HttpStage& stage, int client) {
    for (size_t i = 0; i < pooledAddrs.size(); ++i) {
      const std::string req = get("/p", routeTo(pooledAddrs[i]));
      CHECK(writeAll(client, req.data(), req.size()));
      pooledUps.push_back(acceptAndAnswer(pooledServers[i].get(), "ok"));
      std::string resp;
      CHECK(readUntil(client, resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    }
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == pooledAddrs.size(); }));
  }
  // A connection waits in listenFd's backlog (poll takes no fd).
  static bool connectedTo(int listenFd) {
    pollfd p{listenFd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  // The pool closed the `closed` oldest pooled connections as an expired one is closed (with FIN),
  // and the newer ones are still open and quiet.
  void expectOldestClosedWithFin(size_t closed) {
    for (size_t i = 0; i < pooledUps.size(); ++i) {
      if (i < closed) {
        std::string rest;
        CHECK(readToEnd(pooledUps[i].get(), rest) == End::kEof);
        CHECK(rest.empty());
      } else {
        pollfd p{pooledUps[i].get(), POLLIN, 0};
        CHECK_EQ(::poll(&p, 1, 0), 0);
      }
    }
  }
};

void sessionTests() {
  run("a trusted client's header routes the request; the server never sees the header", [] {
    Origin named(keepAliveServer());
    Origin fallback(keepAliveServer());
    HttpStage stage(fallback.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string resp = exchange(client.get(), get("/a", routeTo(named.address) + "accept: */*\r\n"));
    CHECK(resp.find("\r\n\r\n1:/a") != std::string::npos);
    const auto seen = named.seen();
    CHECK_EQ(seen.size(), 1u);
    CHECK(seen[0] == "GET /a HTTP/1.1\r\nhost: test\r\naccept: */*\r\n\r\n");
    CHECK(fallback.seen().empty());
    CHECK_EQ(stage.stat(Stat::http_rq_total), 1u);
    CHECK_EQ(stage.stat(Stat::upstream_rq_total), 1u);
  });

  run("an untrusted client's header is ignored (counted, stripped): the original destination serves", [] {
    Origin named(keepAliveServer());
    Origin original(keepAliveServer());
    HttpStage stage(original.address, "10.0.0.0/8");
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string resp = exchange(client.get(), get("/u", routeTo(named.address)));
    CHECK(resp.find("\r\n\r\n1:/u") != std::string::npos);
    CHECK(named.seen().empty());
    const auto seen = original.seen();
    CHECK_EQ(seen.size(), 1u);
    CHECK(lowerCopy(seen[0]).find("x-envoy-original-dst-host") == std::string::npos);
    CHECK_EQ(stage.stat(Stat::original_dst_header_untrusted), 1u);
  });

  run("an invalid header value is counted and ignored; no original destination: 503 no_destination", [] {
    HttpStage stage(SocketAddress{});  // not redirected
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string resp = exchange(client.get(), get("/", "x-envoy-original-dst-host: example.com:80\r\n"));
    expectError(client.get(), resp, "503", "no_destination");
    CHECK_EQ(stage.stat(Stat::original_dst_host_invalid), 1u);
    CHECK_EQ(stage.stat(Stat::http_rq_no_destination), 1u);
  });

  run("with proxy_protocol, the PROXY header's destination is the original one and its source the client", [] {
    Origin named(keepAliveServer());
    Origin fallback(keepAliveServer());
    auto fake = std::make_unique<FixedDestinationOps>();
    fake->target = fallback.address;
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, std::move(fake), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "http-pp";
    lo.address = addr("127.0.0.1", 0);
    lo.http.enabled = true;
    lo.http.trustedSources = {*parseCidr("192.0.2.0/24")};  // the header's client, not the TCP peer
    lo.proxyProtocol.enabled = true;
    lo.proxyProtocol.trustedSources = {*parseCidr("127.0.0.0/8")};
    SocketAddress listenAddr;
    UniqueFd listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    LoopRunner loop(*core);
    UniqueFd client = connectTo(listenAddr);
    const std::string pp = "PROXY TCP4 192.0.2.9 " + named.address.ipString() + " 40000 " +
                           std::to_string(named.address.port()) + "\r\n";
    CHECK(exchange(client.get(), pp + get("/pp")).find("\r\n\r\n1:/pp") != std::string::npos);
    CHECK_EQ(named.seen().size(), 1u);
    CHECK(fallback.seen().empty());
    // The client the header named is trusted: its routing header wins over the header's destination.
    UniqueFd second = connectTo(listenAddr);
    CHECK(exchange(second.get(), pp + get("/r", routeTo(fallback.address))).find("1:/r") != std::string::npos);
    CHECK_EQ(fallback.seen().size(), 1u);
    CHECK_EQ(core->stats().get(Stat::proxy_protocol_accepted), 2u);
  });

  run("a PROXY header or a routing header naming splicegate's own listener is refused as a loop", [] {
    Origin fallback(keepAliveServer());
    auto fake = std::make_unique<FixedDestinationOps>();
    fake->target = fallback.address;
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, std::move(fake), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "http-pp";
    lo.address = addr("127.0.0.1", 0);
    lo.http.enabled = true;
    lo.http.trustedSources = {*parseCidr("127.0.0.0/8")};
    lo.http.stripHeader = false;  // a looped request would carry its header into the next hop
    lo.proxyProtocol.enabled = true;
    lo.proxyProtocol.trustedSources = {*parseCidr("127.0.0.0/8")};
    SocketAddress listenAddr;
    UniqueFd listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    LoopRunner loop(*core);
    // The PROXY header's destination is the listener itself: reset, as on a relaying listener.
    UniqueFd client = connectTo(listenAddr);
    const std::string pp = "PROXY TCP4 127.0.0.1 " + listenAddr.ipString() + " 40000 " +
                           std::to_string(listenAddr.port()) + "\r\n";
    CHECK(writeAll(client.get(), (pp + get("/pp")).data(), pp.size() + get("/pp").size()));
    std::string got;
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK(got.empty());
    CHECK_EQ(core->stats().get(Stat::loop_rejected), 1u);
    // A trusted client's routing header naming the listener (behind a PROXY header that names a
    // real destination): 508, and no connection goes out.
    UniqueFd second = connectTo(listenAddr);
    const std::string pp2 = "PROXY TCP4 127.0.0.1 " + fallback.address.ipString() + " 40001 " +
                            std::to_string(fallback.address.port()) + "\r\n";
    expectError(second.get(), exchange(second.get(), pp2 + get("/h", routeTo(listenAddr))), "508", "loop_rejected");
    CHECK_EQ(core->stats().get(Stat::loop_rejected), 2u);
    CHECK_EQ(core->listenerStats().at(0)->get(ListenerStat::loop_rejected), 2u);  // the listener's share: all
    CHECK_EQ(core->stats().get(Stat::upstream_cx_total), 0u);
    CHECK_EQ(core->stats().get(Stat::http_rq_total), 1u);
    CHECK(fallback.seen().empty());
    // The listener's address in IPv4-mapped form (an IPv6 socket connects it over IPv4): a loop too.
    UniqueFd third = connectTo(listenAddr);
    // (v1 takes hex groups only: ::ffff:7f00:1 is ::ffff:127.0.0.1, the listener's address.)
    const std::string pp6 = "PROXY TCP6 ::ffff:7f00:1 ::ffff:7f00:1 40002 " + std::to_string(listenAddr.port()) + "\r\n";
    CHECK(writeAll(third.get(), (pp6 + get("/pp6")).data(), pp6.size() + get("/pp6").size()));
    got.clear();
    CHECK(readToEnd(third.get(), got) == End::kReset);
    CHECK(got.empty());
    CHECK_EQ(core->stats().get(Stat::loop_rejected), 3u);
    CHECK_EQ(core->stats().get(Stat::upstream_cx_total), 0u);
    CHECK(fallback.seen().empty());
  });

  run("a routing header or CONNECT target naming the listener as ::ffff:IP or 0.0.0.0 is a loop too", [] {
    // Linux connects ::ffff:127.0.0.1 over IPv4 and 0.0.0.0 to 127.0.0.1: both reach the listener.
    Origin fallback(keepAliveServer());
    HttpListenerOptions http;
    http.connect = true;
    HttpStage stage(fallback.address, "127.0.0.0/8", CoreOptions{}, http);
    LoopRunner loop(*stage.core);
    const std::string port = std::to_string(stage.listenAddr.port());
    for (const std::string& host : {"[::ffff:127.0.0.1]:" + port, "0.0.0.0:" + port, "[::ffff:0.0.0.0]:" + port}) {
      UniqueFd c = connectTo(stage.listenAddr);
      expectError(c.get(), exchange(c.get(), get("/", "x-envoy-original-dst-host: " + host + "\r\n")), "508",
                  "loop_rejected");
      UniqueFd t = connectTo(stage.listenAddr);
      expectError(t.get(), exchange(t.get(), "CONNECT " + host + " HTTP/1.1\r\n\r\n"), "508", "loop_rejected");
    }
    CHECK_EQ(stage.stat(Stat::loop_rejected), 6u);
    CHECK_EQ(stage.stat(Stat::upstream_cx_total), 0u);
    CHECK(fallback.seen().empty());
  });

  run("keep-alive: requests on one client connection share one pooled upstream connection", [] {
    Origin server(keepAliveServer());
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    for (int i = 1; i <= 5; ++i) {
      const std::string resp = exchange(client.get(), get("/k" + std::to_string(i)));
      CHECK(resp.find("\r\n\r\n" + std::to_string(i) + ":/k" + std::to_string(i)) != std::string::npos);
    }
    CHECK_EQ(server.accepted.load(), 1);
    CHECK_EQ(stage.stat(Stat::upstream_cx_reuse), 4u);
    CHECK_EQ(stage.stat(Stat::http_pool_hit), 4u);
    CHECK_EQ(stage.stat(Stat::http_pool_miss), 1u);
    // Between requests the upstream waits in the pool, where the next client's request finds it.
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
    client.reset();
    UniqueFd second = connectTo(stage.listenAddr);
    CHECK(exchange(second.get(), get("/other")).find("\r\n\r\n6:/other") != std::string::npos);
    CHECK_EQ(server.accepted.load(), 1);
  });

  run("a pooled connection the server closes leaves the pool at once, and is never used for a request", [] {
    // The server answers (keep-alive advertised), then closes once the connection sits idle; the
    // second connection stays open to the end (its close would be one more discard).
    std::atomic<bool> gate{false};
    std::atomic<bool> done{false};
    Origin server([&gate, &done](Origin& o, int fd, int index) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      o.record(buf);
      const std::string body = std::to_string(index);
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      writeAll(fd, resp.data(), resp.size());
      waitFor([&] { return index == 0 ? gate.load() : done.load(); });
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(exchange(client.get(), get("/1")).find("\r\n\r\n0") != std::string::npos);
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
    gate = true;
    CHECK(waitFor([&] { return server.closed.load() == 1; }));
    // The idle connection's FIN is an event the pool handles: it closes the connection then, with
    // no request asking for it (nor the idle timeout, 60 s here).
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 0; }));
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);
    CHECK(waitFor([&] { return stage.stat(Stat::upstream_cx_active) == 0; }));
    // So the second request is answered by a new connection (index 1), never sent into the dead one.
    CHECK(exchange(client.get(), get("/2")).find("\r\n\r\n1") != std::string::npos);
    CHECK_EQ(server.accepted.load(), 2);
    CHECK_EQ(server.seen().size(), 2u);
    done = true;
    CHECK_EQ(stage.stat(Stat::upstream_rq_retry), 0u);
  });

  run("the pool's total bound (httpPoolMaxIdle): a connection pooled beyond it closes the oldest idle one, whatever its host", [] {
    CoreOptions options;
    options.httpPoolMaxIdle = 2;
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    std::vector<SocketAddress> addrs(3);
    std::vector<UniqueFd> servers;
    std::vector<UniqueFd> ups;
    for (SocketAddress& a : addrs) servers.push_back(listenOn(a));
    UniqueFd c = connectTo(stage.listenAddr);
    // Three hosts in turn on one client connection: each upstream goes to the pool at its response.
    for (size_t i = 0; i < addrs.size(); ++i) {
      const std::string req = get("/p", routeTo(addrs[i]));
      CHECK(writeAll(c.get(), req.data(), req.size()));
      ups.push_back(acceptAndAnswer(servers[i].get(), "ok"));
      std::string resp;
      CHECK(readUntil(c.get(), resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    }
    CHECK(waitFor([&] { return stage.stat(Stat::http_pool_evicted_max_idle) == 1; }));
    CHECK(waitFor([&] { return stage.stat(Stat::upstream_cx_active) == 2; }));
    // The loop thread counts the eviction before it adds the new connection: wait for both.
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 2u; }));
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 0u);
    // The oldest (the first host's) was closed as an expired one is, with FIN; the others wait.
    std::string rest;
    CHECK(readToEnd(ups[0].get(), rest) == End::kEof);
    for (size_t i = 1; i < ups.size(); ++i) {
      pollfd p{ups[i].get(), POLLIN, 0};
      CHECK_EQ(::poll(&p, 1, 0), 0);
    }
    // The newest are there to be reused: the third host's request goes on its pooled connection.
    const std::string again = get("/again", routeTo(addrs[2]));
    CHECK(writeAll(c.get(), again.data(), again.size()));
    std::string head;
    CHECK(readUntil(ups[2].get(), head, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    CHECK(head.rfind("GET /again HTTP/1.1\r\n", 0) == 0);
    const std::string ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(ups[2].get(), ok.data(), ok.size()));
    std::string resp;
    CHECK(readUntil(c.get(), resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK_EQ(stage.stat(Stat::http_pool_hit), 1u);
  });

  run("a pooled connection on which the server sends bytes nobody asked for leaves the pool at once, though it stays open", [] {
    // A server may answer an idle connection (a 408 before it closes, say) and keep it open a
    // while: those bytes would be read as the next request's response. Readable alone is enough.
    std::atomic<bool> gate{false};
    std::atomic<bool> done{false};
    Origin server([&gate, &done](Origin& o, int fd, int index) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      o.record(buf);
      const std::string body = std::to_string(index);
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      writeAll(fd, resp.data(), resp.size());
      if (index == 0) {
        waitFor([&] { return gate.load(); });
        const std::string stray = "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
        writeAll(fd, stray.data(), stray.size());
      }
      waitFor([&] { return done.load(); });  // no FIN: only the bytes say it is unusable
    });
    HttpStage stage(server.address);
    std::optional<LoopRunner> loop;
    loop.emplace(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(exchange(client.get(), get("/1")).find("\r\n\r\n0") != std::string::npos);
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
    gate = true;
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 0; }));
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);
    const std::string second = exchange(client.get(), get("/2"));
    CHECK(second.find("408") == std::string::npos);
    CHECK(second.find("\r\n\r\n1") != std::string::npos);  // a new connection answered
    // The discarded connection was given back to its host: only the new one (pooled) counts
    // against max_connections.
    loop.reset();  // the core's state is read on this thread from here on
    uint64_t hostActive = 0;
    stage.core->hosts().forEach([&](const Host& h) { hostActive += h.active(); });
    CHECK_EQ(hostActive, 1u);
    done = true;
  });

  run("an upstream the full pool refuses is closed and leaves upstream_cx_active (max_idle_per_host 1, and 0)", [] {
    for (const uint32_t maxIdle : {1u, 0u}) {
      Origin server([](Origin& o, int fd, int) {
        std::string buf;
        const auto headRead = [](const std::string& b) { return messageLength(b) > 0; };
        if (readUntil(fd, buf, headRead) != End::kOpen) return;
        waitFor([&] { return o.accepted.load() >= 3; });
        const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        writeAll(fd, resp.data(), resp.size());
        buf.clear();
        readUntil(fd, buf, headRead);  // until the proxy closes it
      });
      CoreOptions options;
      options.httpPoolMaxIdlePerHost = maxIdle;
      HttpStage stage(server.address, "127.0.0.0/8", options);
      LoopRunner loop(*stage.core);
      // Three requests at once, each on its own upstream (the server answers once all three are
      // connected); each upstream is offered to the pool as its response ends.
      std::vector<UniqueFd> clients;
      for (int i = 0; i < 3; ++i) clients.push_back(connectTo(stage.listenAddr));
      for (UniqueFd& c : clients) CHECK(writeAll(c.get(), get("/p").data(), get("/p").size()));
      for (UniqueFd& c : clients) {
        std::string resp;
        CHECK(readUntil(c.get(), resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
        CHECK(resp.find("\r\n\r\nok") != std::string::npos);
      }
      CHECK_EQ(server.accepted.load(), 3);
      CHECK(waitFor([&] { return server.closed.load() == static_cast<int>(3 - maxIdle); }));
      // The gauge counts the upstream connections that are open: the pooled ones. (Waited for: the
      // server can see a close before the loop thread has counted it.)
      CHECK(waitFor([&] { return stage.stat(Stat::upstream_cx_active) == maxIdle; }));
      CHECK_EQ(stage.core->httpPoolIdle(), maxIdle);
      CHECK_EQ(stage.stat(Stat::http_pool_discarded), static_cast<uint64_t>(3 - maxIdle));
    }
  });

  run("idle pooled connections let the tick rest when idle_timeout is 10 s or more; a shorter one keeps the 50 ms tick", [] {
    for (const uint32_t idleMs : {60000u, 5000u}) {
      Origin server(keepAliveServer());
      CoreOptions options;
      options.httpPoolIdleTimeoutMs = idleMs;
      HttpStage stage(server.address, "127.0.0.0/8", options);
      {
        LoopRunner loop(*stage.core);
        UniqueFd client = connectTo(stage.listenAddr);
        CHECK(exchange(client.get(), get("/rest")).find(":/rest") != std::string::npos);
        client.reset();
        CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0 && stage.core->httpPoolIdle() == 1; }));
      }
      // The loop on this thread now (resting() is the loop thread's): a tick that may rest does
      // so within a busy period or two; 1.5 s is many of them.
      bool rested = false;
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
      while (!rested && std::chrono::steady_clock::now() < until) {
        stage.core->runOnce(100);
        rested = stage.core->resting();
      }
      CHECK_EQ(stage.core->httpPoolIdle(), 1u);  // still pooled: resting did not drop it
      CHECK_EQ(rested, idleMs >= 10000);
    }
  });

  run("smuggling vectors get 400 malformed and the connection ends", [] {
    Origin server(keepAliveServer());
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    const char* vectors[] = {
        "POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcd",
        "GET / HTTP/1.1\r\nhost: t\r\nx-a: 1\r\n folded\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.0\r\nhost: t\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding:\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\nGET /smuggled HTTP/1.1\r\n\r\n",
    };
    for (const char* v : vectors) {
      UniqueFd client = connectTo(stage.listenAddr);
      expectError(client.get(), exchange(client.get(), v), "400", "malformed");
    }
    CHECK_EQ(stage.stat(Stat::http_rq_malformed), 7u);
    for (const std::string& seen : server.seen()) CHECK(seen.find("/smuggled") == std::string::npos);
    // The bad chunk size reached the parser after the head went up: that upstream is not pooled.
    CHECK_EQ(stage.core->httpPoolIdle(), 0u);
  });

  run("a head over max_request_head_bytes gets 431; a slow head gets 408", [] {
    Origin server(keepAliveServer());
    HttpListenerOptions http;
    http.maxRequestHeadBytes = 2048;
    http.requestHeadTimeoutMs = 200;
    HttpStage stage(server.address, "127.0.0.0/8", CoreOptions{}, http);
    LoopRunner loop(*stage.core);
    UniqueFd big = connectTo(stage.listenAddr);
    expectError(big.get(), exchange(big.get(), get("/", "x-big: " + std::string(4000, 'a') + "\r\n")), "431",
                "head_too_large");
    UniqueFd slow = connectTo(stage.listenAddr);
    std::string resp;
    CHECK(writeAll(slow.get(), "GET / HTTP/1.1\r\nhost", 20));
    CHECK(readUntil(slow.get(), resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    expectError(slow.get(), resp, "408", "head_timeout");
    CHECK_EQ(stage.stat(Stat::http_rq_head_too_large), 1u);
    CHECK_EQ(stage.stat(Stat::http_rq_head_timeout), 1u);
    CHECK(server.seen().empty());
  });

  run("a denied destination gets 403 policy_denied; a refused connect 503 connect_failed", [] {
    SocketAddress closedAddr;
    { UniqueFd gone = listenOn(closedAddr); }  // a port nobody listens on any more
    Origin server(keepAliveServer());
    CoreOptions options;
    options.policies = {denyLoopbackPort("no_server", server.address.port())};
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    expectError(a.get(), exchange(a.get(), get("/", routeTo(server.address))), "403", "policy_denied");
    UniqueFd b = connectTo(stage.listenAddr);
    expectError(b.get(), exchange(b.get(), get("/", routeTo(closedAddr))), "503", "connect_failed");
    // Other spellings of the denied address: 0.0.0.0 (Linux connects it to 127.0.0.1), its
    // IPv4-mapped form and the mapped loopback address are judged as 127.0.0.1.
    const std::string port = std::to_string(server.address.port());
    for (const std::string& host : {"0.0.0.0:" + port, "[::ffff:0.0.0.0]:" + port, "[::ffff:127.0.0.1]:" + port}) {
      UniqueFd c = connectTo(stage.listenAddr);
      expectError(c.get(), exchange(c.get(), get("/", "x-envoy-original-dst-host: " + host + "\r\n")), "403",
                  "policy_denied");
    }
    CHECK(server.seen().empty());
    CHECK_EQ(stage.stat(Stat::http_rq_policy_denied), 4u);
    CHECK_EQ(stage.stat(Stat::http_rq_connect_fail), 1u);
  });

  run("an allow-list with a deny inside holds against every spelling of the denied address (header and CONNECT)", [] {
    // allow 127.0.0.0/8 (it names the loopback range, so deny_special lets it open it) with a deny
    // of 127.0.0.1:<server> before it, default deny. Every valid spelling of the server's address
    // is denied by that rule (or, as IPv6 loopback, by the default); every other spelling is not
    // an address at all (no destination / bad CONNECT target). The server sees nothing.
    Origin server(keepAliveServer());
    const uint16_t port = server.address.port();
    PolicyRules rules;
    rules.defaultAllow = false;
    rules.denySpecial = true;
    PolicyRule db;
    db.name = "db";
    db.allow = false;
    db.cidrs = {*parseCidr("127.0.0.1/32")};
    db.ports = {PortRange{port, port}};
    PolicyRule lo;
    lo.name = "lo";
    lo.allow = true;
    lo.cidrs = {*parseCidr("127.0.0.0/8")};
    rules.rules = {db, lo};
    CoreOptions options;
    options.policies = {rules};
    HttpListenerOptions http;
    http.connect = true;
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options, http);
    LoopRunner loop(*stage.core);
    const std::string p = std::to_string(port);
    const std::vector<std::string> denied = {"127.0.0.1:" + p, "[::ffff:127.0.0.1]:" + p, "[::ffff:7f00:1]:" + p,
                                             "[0:0:0:0:0:ffff:7f00:0001]:" + p, "0.0.0.0:" + p, "[::ffff:0.0.0.0]:" + p,
                                             "[64:ff9b::7f00:1]:" + p, "[2002:7f00:1::]:" + p, "[::1]:" + p, "[::]:" + p};
    const std::vector<std::string> invalid = {"127.1:" + p, "2130706433:" + p, "0177.0.0.1:" + p, "0x7f000001:" + p,
                                              "127.0.0.01:" + p, "[::ffff:0177.0.0.1]:" + p, "[fe80::1%lo]:" + p,
                                              "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+" + p, "127.0.0.1:0" + p,
                                              "[::ffff:127.0.0.1%lo]:" + p, "127.0.0.1:" + p + ",127.0.0.1:" + p};
    uint64_t expected403 = 0;
    for (const std::string& host : denied) {
      for (const char* name : {"x-envoy-original-dst-host", "X-Envoy-Original-DST-Host"}) {
        UniqueFd c = connectTo(stage.listenAddr);
        expectError(c.get(), exchange(c.get(), get("/", std::string(name) + ": " + host + "\r\n")), "403", "policy_denied");
        ++expected403;
      }
      UniqueFd t = connectTo(stage.listenAddr);
      expectError(t.get(), exchange(t.get(), "CONNECT " + host + " HTTP/1.1\r\n\r\n"), "403", "policy_denied");
      ++expected403;
    }
    for (const std::string& host : invalid) {
      UniqueFd c = connectTo(stage.listenAddr);
      expectError(c.get(), exchange(c.get(), get("/", "x-envoy-original-dst-host: " + host + "\r\n")), "503", "no_destination");
      UniqueFd t = connectTo(stage.listenAddr);
      expectError(t.get(), exchange(t.get(), "CONNECT " + host + " HTTP/1.1\r\n\r\n"), "400", "bad_connect_target");
    }
    // Two copies: the first decides (an invalid first one is not skipped for a later valid one).
    UniqueFd two = connectTo(stage.listenAddr);
    expectError(two.get(), exchange(two.get(), get("/", "x-envoy-original-dst-host: 127.0.0.1:" + p +
                                                            "\r\nx-envoy-original-dst-host: 198.51.100.1:80\r\n")),
                "403", "policy_denied");
    ++expected403;
    UniqueFd firstBad = connectTo(stage.listenAddr);
    expectError(firstBad.get(), exchange(firstBad.get(), get("/", "x-envoy-original-dst-host: 127.1:" + p +
                                                                      "\r\nx-envoy-original-dst-host: 127.0.0.1:" + p + "\r\n")),
                "503", "no_destination");
    CHECK_EQ(server.accepted.load(), 0);
    CHECK(server.seen().empty());
    CHECK_EQ(stage.stat(Stat::http_rq_policy_denied), expected403);
    CHECK_EQ(stage.stat(Stat::upstream_cx_total), 0u);
    DestinationPolicy* policy = const_cast<PolicySet&>(stage.core->policies()).at(0);
    CHECK(policy != nullptr);
    CHECK_EQ(policy->deniedTotal(), expected403);
    // Loopback is special: a deny rule on it changes nothing, the built-in deny is what counts.
    CHECK_EQ(policy->deniedSpecial(), expected403);
    CHECK_EQ(stage.core->listenerStats().at(0)->get(ListenerStat::policy_denied), expected403);
  });

  run("keep-alive: every request is judged, also after an allowed one on the same connection", [] {
    Origin allowed(keepAliveServer());
    Origin server(keepAliveServer());
    CoreOptions options;
    options.policies = {denyLoopbackPort("no_server", server.address.port())};
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    CHECK(exchange(a.get(), get("/ok", routeTo(allowed.address))).find("\r\n\r\n1:/ok") != std::string::npos);
    expectError(a.get(), exchange(a.get(), get("/no", routeTo(server.address))), "403", "policy_denied");
    CHECK(server.seen().empty());
    CHECK_EQ(allowed.seen().size(), 1u);
    CHECK_EQ(stage.stat(Stat::http_rq_policy_denied), 1u);
  });

  run("upstream socket() out of fds even after the spare (another worker took it): the request waits for an fd, then is answered; past connect_timeout it gets 504", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    UniqueFd waiter(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK(waiter && late);
    // As in core_tests: the fillers take every low number first, so the stage's own fds (its
    // spare among them) land above them; then one filler goes and the limit drops to just above
    // it. accept4 gets that number, and freeing the spare gives socket() nothing under the limit,
    // as when another worker of the process took the fd the spare released.
    std::vector<UniqueFd> fillers = fillFdHoles();
    CoreOptions patient;
    patient.connectTimeoutMs = 30000;
    HttpStage stage(serverAddr, "127.0.0.0/8", patient);
    {
      LoopRunner loop(*stage.core);
      NofileLimit limit(limitAboveLastHole(fillers));
      const bool sent = connectAndSend(waiter.get(), stage.listenAddr, get("/wait"));
      const bool waited = waitFor([&] { return stage.stat(Stat::upstream_cx_fd_wait) == 1; });
      // Ticks pass (50 ms each) with still no fd: the request keeps waiting, unanswered.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      const uint64_t failed = stage.stat(Stat::http_rq_connect_fail) + stage.stat(Stat::upstream_cx_connect_timeout);
      const uint64_t active = stage.stat(Stat::upstream_cx_active);
      limit.restore();
      fillers.clear();
      CHECK(sent);
      CHECK(waited);
      CHECK_EQ(failed, 0u);  // was: 503 connect_failed for a request already accepted
      CHECK_EQ(active, 0u);
      // Fds are back: the next tick gives the request its upstream.
      std::string head;
      UniqueFd up = acceptAndAnswer(server.get(), "ok", &head);
      CHECK(head.rfind("GET /wait HTTP/1.1\r\n", 0) == 0);
      std::string resp;
      CHECK(readUntil(waiter.get(), resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
      CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
      CHECK_EQ(stage.stat(Stat::upstream_cx_fd_wait), 1u);
    }

    // A wait longer than connect_timeout ends as an unanswered connect would: 504 connect_timeout.
    std::vector<UniqueFd> moreFillers = fillFdHoles();
    CoreOptions quick;
    quick.connectTimeoutMs = 200;
    HttpStage impatient(serverAddr, "127.0.0.0/8", quick);
    LoopRunner loop(*impatient.core);
    NofileLimit limit(limitAboveLastHole(moreFillers));
    const bool sent = connectAndSend(late.get(), impatient.listenAddr, get("/late"));
    const bool timedOut = waitFor([&] { return impatient.stat(Stat::http_rq_connect_timeout) == 1; });
    limit.restore();
    moreFillers.clear();
    CHECK(sent);
    CHECK(timedOut);
    CHECK_EQ(impatient.stat(Stat::upstream_cx_fd_wait), 1u);
    std::string resp;
    readUntil(late.get(), resp, [](const std::string& b) { return messageLength(b) > 0; });
    expectError(late.get(), resp, "504", "connect_timeout");
  });

  run("upstream socket() out of fds: the spare fd serves the request already accepted and accepting pauses", [] {
    // A bare listening socket, accepted from only once fds are back (an Origin's acceptor thread
    // would need an fd of this same process while none is left).
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    LoopRunner loop(*stage.core);
    // Made now, so that connecting it later takes no fd of this process.
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK(client);
    std::vector<UniqueFd> fillers = fillFdHoles();
    NofileLimit limit(limitAboveLastHole(fillers));
    // accept4 takes the last fd; the request's upstream socket() then fails with EMFILE.
    const bool sent = connectAndSend(client.get(), stage.listenAddr, get("/fd"));
    const bool opened = waitFor([&] { return stage.stat(Stat::upstream_cx_total) + stage.stat(Stat::http_rq_connect_fail) >= 1; });
    const uint64_t paused = stage.stat(Stat::downstream_cx_accept_paused);
    const uint64_t failed = stage.stat(Stat::http_rq_connect_fail);
    limit.restore();
    fillers.clear();
    CHECK(sent);
    CHECK(opened);
    CHECK_EQ(failed, 0u);  // was: 503 connect_failed for a client already accepted
    CHECK(paused >= 1u);
    std::string head;
    UniqueFd up = acceptAndAnswer(server.get(), "ok", &head);
    CHECK(head.rfind("GET /fd HTTP/1.1\r\n", 0) == 0);
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(resp.find("\r\n\r\nok") != std::string::npos);
  });

  run("out of fds with idle pooled upstreams: requests on accepted clients get the pool's fds instead of waiting for one (was 504 connect_timeout while the pool held them)", [] {
    // 33 idle pooled connections, one to each of 33 bare listening sockets that the test accepts
    // and answers itself (a server thread would need fds of this process while none is left);
    // then every fd number below the limit is taken.
    PoolUnderFdPressure p(33);
    CoreOptions options;
    options.connectTimeoutMs = 2000;  // before the fix: the second request's 504 at its end (room for a loaded machine)
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    UniqueFd b = connectTo(stage.listenAddr);
    p.fillPool(stage, a.get());
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_total) == 2; }));  // b accepted too
    std::vector<UniqueFd> fillers = fillEveryFdBelowTop();
    NofileLimit limit(static_cast<rlim_t>(fillers.back().get()));  // nothing free below it
    // a's request: socket() fails with EMFILE. b's request after it: before the fix the spare fd
    // went to a, so b waited for an fd (upstream_cx_fd_wait) until connect_timeout, while the
    // four idle connections it could have had sat in the pool.
    CHECK(writeAll(a.get(), get("/next", routeTo(p.nextAddr)).data(), get("/next", routeTo(p.nextAddr)).size()));
    CHECK(waitFor([&] { return p.connectedTo(p.next.get()) || stage.stat(Stat::upstream_cx_fd_wait) > 0; }));
    CHECK(writeAll(b.get(), get("/last", routeTo(p.lastAddr)).data(), get("/last", routeTo(p.lastAddr)).size()));
    const bool settled = waitFor([&] {
      return (p.connectedTo(p.next.get()) && p.connectedTo(p.last.get())) || stage.stat(Stat::http_rq_connect_timeout) > 0;
    });
    const uint64_t fdWaits = stage.stat(Stat::upstream_cx_fd_wait);
    const uint64_t timeouts = stage.stat(Stat::http_rq_connect_timeout);
    const size_t idle = stage.core->httpPoolIdle();
    limit.restore();
    fillers.clear();
    CHECK(settled);
    CHECK_EQ(timeouts, 0u);
    CHECK_EQ(fdWaits, 0u);
    // a's shortage gave up one batch (32), oldest first, which served b's request too: the
    // newest pooled connection is still there.
    CHECK_EQ(idle, 1u);
    CHECK_EQ(stage.stat(Stat::http_pool_evicted_fd_pressure), 32u);
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 0u);
    p.expectOldestClosedWithFin(32);
    // Both requests reached their servers and are answered.
    for (auto [client, server] : {std::pair{a.get(), p.next.get()}, std::pair{b.get(), p.last.get()}}) {
      UniqueFd up = acceptAndAnswer(server, "ok");
      std::string resp;
      CHECK(readUntil(client, resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
      CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    }
  });

  run("out of fds at accept4 with idle pooled upstreams: the pool gives its fds up and the client is served (was left in the backlog until idle_timeout)", [] {
    PoolUnderFdPressure p(4);
    HttpStage stage(SocketAddress{});
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    p.fillPool(stage, a.get());
    UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // made now: connecting takes no fd
    CHECK(late);
    std::vector<UniqueFd> fillers = fillEveryFdBelowTop();
    NofileLimit limit(static_cast<rlim_t>(fillers.back().get()));
    // accept4 fails with EMFILE: before the fix the listener paused, and every tick's retry failed
    // the same way while the pool held four fds for nobody (for idle_timeout, 60 s).
    const bool sent = connectAndSend(late.get(), stage.listenAddr, get("/late", routeTo(p.nextAddr)));
    const bool reached = waitFor([&] { return p.connectedTo(p.next.get()); });
    const size_t idle = stage.core->httpPoolIdle();
    limit.restore();
    fillers.clear();
    CHECK(sent);
    CHECK(reached);
    CHECK_EQ(idle, 0u);
    CHECK_EQ(stage.stat(Stat::http_pool_evicted_fd_pressure), 4u);
    CHECK_EQ(stage.stat(Stat::downstream_cx_accept_paused), 0u);  // it never had to pause
    p.expectOldestClosedWithFin(4);
    UniqueFd up = acceptAndAnswer(p.next.get(), "ok");
    std::string resp;
    CHECK(readUntil(late.get(), resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  });

  run("a request waiting for an fd gets one from a connection pooled while it waits (the tick's retry gives the pool's up, was 504 connect_timeout)", [] {
    SocketAddress xAddr, yAddr, zAddr;
    UniqueFd x = listenOn(xAddr);
    UniqueFd y = listenOn(yAddr);
    UniqueFd z = listenOn(zAddr);
    CoreOptions options;
    options.connectTimeoutMs = 2000;  // before the fix: the 504 at its end
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    UniqueFd b = connectTo(stage.listenAddr);
    UniqueFd c = connectTo(stage.listenAddr);
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_total) == 3; }));
    // a's exchange with x is under way (the request is read, not yet answered).
    const std::string toX = get("/x", routeTo(xAddr));
    CHECK(writeAll(a.get(), toX.data(), toX.size()));
    UniqueFd upX = acceptWithin(x.get());
    std::string head;
    CHECK(readUntil(upX.get(), head, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    std::vector<UniqueFd> fillers = fillEveryFdBelowTop();
    NofileLimit limit(static_cast<rlim_t>(fillers.back().get()));
    // b's request takes the spare fd (the pool is empty); c's then waits for an fd.
    const std::string toY = get("/y", routeTo(yAddr));
    CHECK(writeAll(b.get(), toY.data(), toY.size()));
    const bool yConnected = waitFor([&] { return PoolUnderFdPressure::connectedTo(y.get()); });
    const std::string toZ = get("/z", routeTo(zAddr));
    CHECK(writeAll(c.get(), toZ.data(), toZ.size()));
    const bool waiting = waitFor([&] { return stage.stat(Stat::upstream_cx_fd_wait) == 1; });
    // x answers: its connection goes to the pool, holding an fd that serves nobody.
    const std::string ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(upX.get(), ok.data(), ok.size()));
    std::string resp;
    CHECK(readUntil(a.get(), resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    const bool settled = waitFor([&] {
      return PoolUnderFdPressure::connectedTo(z.get()) || stage.stat(Stat::http_rq_connect_timeout) > 0;
    });
    const uint64_t timeouts = stage.stat(Stat::http_rq_connect_timeout);
    const uint64_t evicted = stage.stat(Stat::http_pool_evicted_fd_pressure);
    limit.restore();
    fillers.clear();
    CHECK(yConnected);
    CHECK(waiting);
    CHECK(settled);
    CHECK_EQ(timeouts, 0u);
    CHECK_EQ(evicted, 1u);
    std::string rest;
    CHECK(readToEnd(upX.get(), rest) == End::kEof);  // closed as an expired one is: FIN
    UniqueFd upZ = acceptAndAnswer(z.get(), "z");
    std::string zResp;
    CHECK(readUntil(c.get(), zResp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    CHECK(zResp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  });

  run("out of fds, pooled connections closed that free no usable fd: the spare fd still serves the request (was held while it waited, 504 connect_timeout)", [] {
    // What another worker's accept4 does to the fds this one frees (they share the fd table), made
    // deterministic: every pooled connection's fd is numbered at or above the limit, so closing it
    // frees no number socket() may use.
    PoolUnderFdPressure p(4);
    CoreOptions options;
    options.connectTimeoutMs = 2000;  // before the fix: the 504 at its end (room for a loaded machine)
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_total) == 1; }));
    std::vector<UniqueFd> below = fillEveryFdBelowTop();  // the pool's sockets are numbered above these
    const rlim_t limit = static_cast<rlim_t>(below.back().get()) + 1;
    p.fillPool(stage, a.get());
    NofileLimit lowered(limit);  // no number below it is free, and none of the pool's is below it
    const std::string req = get("/next", routeTo(p.nextAddr));
    CHECK(writeAll(a.get(), req.data(), req.size()));
    const bool settled = waitFor([&] {
      return p.connectedTo(p.next.get()) || stage.stat(Stat::http_rq_connect_timeout) > 0;
    });
    const uint64_t timeouts = stage.stat(Stat::http_rq_connect_timeout);
    const uint64_t evicted = stage.stat(Stat::http_pool_evicted_fd_pressure);
    lowered.restore();
    below.clear();
    CHECK(settled);
    CHECK_EQ(timeouts, 0u);
    CHECK_EQ(evicted, 4u);  // the pool still went first
    UniqueFd up = acceptAndAnswer(p.next.get(), "ok");
    std::string resp;
    CHECK(readUntil(a.get(), resp, [](const std::string& r) { return messageLength(r) > 0; }) == End::kOpen);
    CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  });

  run("the same on an original_dst listener of that worker: the spare fd serves the accepted client (was held while it waited, reset at connect_timeout)", [] {
    PoolUnderFdPressure p(4);
    CoreOptions options;
    options.connectTimeoutMs = 2000;  // before the fix: the reset at its end (room for a loaded machine)
    HttpStage stage(p.nextAddr, "127.0.0.0/8", options);  // every original destination: next
    ListenerOptions relay;
    relay.name = "relay";
    relay.address = addr("127.0.0.1", 0);
    SysError err;
    SocketAddress relayAddr;
    UniqueFd relaySocket = openListenSocket(relay, &relayAddr, err);
    CHECK(relaySocket);
    CHECK(!stage.core->attachListener(relay, relaySocket.get(), nullptr));
    LoopRunner loop(*stage.core);
    {
      // One connection relayed from start to end first: UBSan's first check of a type needs fds
      // (loopback.h, NofileLimit), and no earlier test of this binary relays one.
      UniqueFd warmup = connectTo(relayAddr);
      UniqueFd up = acceptWithin(p.next.get());
      CHECK(writeAll(warmup.get(), "w", 1));
      char byte;
      CHECK(::recv(up.get(), &byte, 1, MSG_WAITALL) == 1);
      ::shutdown(warmup.get(), SHUT_WR);
      ::shutdown(up.get(), SHUT_WR);
      std::string rest;
      CHECK(readToEnd(up.get(), rest) == End::kEof);
      CHECK(readToEnd(warmup.get(), rest) == End::kEof);
    }
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0; }));
    UniqueFd a = connectTo(stage.listenAddr);
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_total) == 2; }));
    UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // connecting it takes no fd
    CHECK(late);
    std::vector<UniqueFd> below = fillEveryFdBelowTop();  // the pool's sockets are numbered above these
    const int hole = below.back().get();
    p.fillPool(stage, a.get());
    below.pop_back();  // the one number under the limit: accept4 takes it
    NofileLimit lowered(static_cast<rlim_t>(hole + 1));
    CHECK(::connect(late.get(), relayAddr.sockaddrPtr(), relayAddr.length()) == 0);
    const bool settled = waitFor([&] {
      return p.connectedTo(p.next.get()) || stage.stat(Stat::upstream_cx_connect_timeout) > 0;
    });
    const uint64_t timeouts = stage.stat(Stat::upstream_cx_connect_timeout);
    const uint64_t evicted = stage.stat(Stat::http_pool_evicted_fd_pressure);
    lowered.restore();
    below.clear();
    CHECK(settled);
    CHECK_EQ(timeouts, 0u);
    CHECK_EQ(evicted, 4u);
    UniqueFd up = acceptWithin(p.next.get());
    CHECK(writeAll(late.get(), "hi", 2));
    char got[2];
    CHECK(::recv(up.get(), got, 2, MSG_WAITALL) == 2 && std::memcmp(got, "hi", 2) == 0);
  });

  run("a Content-Length body and a pipelined request behind it are framed exactly on one connection", [] {
    Origin server(keepAliveServer());
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string pipelined = "POST /l HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello" + get("/after");
    CHECK(writeAll(client.get(), pipelined.data(), pipelined.size()));
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& b) {
      const size_t first = messageLength(b);
      return first > 0 && messageLength(b.substr(first)) > 0;
    }) == End::kOpen);
    CHECK(resp.find("1:/l") != std::string::npos);
    CHECK(resp.find("2:/after") != std::string::npos);
    const auto seen = server.seen();
    CHECK_EQ(seen.size(), 2u);
    CHECK(seen[0] == "POST /l HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello");
  });

  run("a chunked request body reaches the server unchanged and ends where the framing says", [] {
    // The origin reads the chunked body itself (until the last chunk) and answers.
    Origin server([](Origin& o, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return b.find("0\r\n\r\n") != std::string::npos; }) != End::kOpen) return;
      o.record(buf);
      const std::string resp = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
      writeAll(fd, resp.data(), resp.size());
      std::string more;
      readUntil(fd, more, [](const std::string&) { return false; });
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string req = "POST /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& b) { return b.find("0\r\n\r\n") != std::string::npos; }) ==
          End::kOpen);
    CHECK(resp.find("2\r\nok\r\n0\r\n\r\n") != std::string::npos);
    const auto seen = server.seen();
    CHECK_EQ(seen.size(), 1u);
    CHECK(seen[0] == req);
    // The exchange completed and the client may go on: a second request is read (and routed).
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
  });

  run("an upstream that resets before answering gets 502; after part of a response, the client is reset", [] {
    Origin silent([](Origin&, int fd, int) {
      std::string buf;
      readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; });
      resetOnClose(fd);
    });
    std::atomic<bool> partReceived{false};
    Origin partial([&partReceived](Origin&, int fd, int) {
      std::string buf;
      readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; });
      const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part";
      writeAll(fd, head.data(), head.size());
      // Reset only once the client holds the first part, so the proxy has certainly sent it.
      waitFor([&partReceived] { return partReceived.load(); });
      resetOnClose(fd);
    });
    HttpStage stage(SocketAddress{});
    LoopRunner loop(*stage.core);
    UniqueFd a = connectTo(stage.listenAddr);
    expectError(a.get(), exchange(a.get(), get("/", routeTo(silent.address))), "502", "upstream_reset");
    UniqueFd b = connectTo(stage.listenAddr);
    const std::string req = get("/", routeTo(partial.address));
    CHECK(writeAll(b.get(), req.data(), req.size()));
    std::string got;
    CHECK(readUntil(b.get(), got, [](const std::string& r) { return r.find("only part") != std::string::npos; }) ==
          End::kOpen);
    partReceived = true;
    CHECK(readToEnd(b.get(), got) == End::kReset);
    CHECK_EQ(stage.stat(Stat::http_rq_upstream_error), 2u);
  });

  run("a tunnel's upstream reset reaches a client that is not reading, at once", [] {
    std::atomic<bool> reset{false};
    Origin flood([&](Origin&, int fd, int) {
      // Sends until the proxy takes no more (the client does not read), then resets.
      const std::string chunk(65536, 'z');
      for (int i = 0; i < 1000; ++i) {
        while (::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
        }
        pollfd out{fd, POLLOUT, 0};
        if (::poll(&out, 1, 200) == 0) break;
      }
      linger lg{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      reset = true;  // Origin closes fd when this returns: RST
    });
    HttpStage stage(SocketAddress{}, "127.0.0.0/8");
    LoopRunner loop(*stage.core);
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int small = 4096;
    ::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    CHECK(::connect(client.get(), stage.listenAddr.sockaddrPtr(), stage.listenAddr.length()) == 0);
    const std::string req = "CONNECT " + flood.address.toString() + " HTTP/1.1\r\n\r\n";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) ==
          End::kOpen);
    CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
    // From here the client reads nothing; its socket must still report the reset.
    pollfd p{client.get(), 0, 0};
    CHECK(::poll(&p, 1, 20000) == 1 && (p.revents & POLLERR));
    CHECK(reset);
    CHECK(getIntOption(client.get(), SOL_SOCKET, SO_ERROR) == ECONNRESET);
  });
  run("CONNECT ip:port: 200, then bytes both ways through the relay; refused when connect is off", [] {
    Origin echo([](Origin&, int fd, int) {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return;
        if (!writeAll(fd, buf, static_cast<size_t>(n))) return;
      }
    });
    // A small relay budget, so the tunnel yields (and must be resumed) many times on the way.
    CoreOptions small;
    small.relayBudgetBytes = 4096;
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", small);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string req = "CONNECT " + echo.address.toString() + " HTTP/1.1\r\nhost: " + echo.address.toString() +
                            "\r\n\r\nearly";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("early") != std::string::npos; }) ==
          End::kOpen);
    CHECK(got == "HTTP/1.1 200 Connection established\r\n\r\nearly");
    std::string big(2000000, 'x');
    for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + (i / 997) % 26);
    std::thread writer([&] { writeAll(client.get(), big.data(), big.size()); ::shutdown(client.get(), SHUT_WR); });
    std::string echoed;
    const End end = readUntil(client.get(), echoed, [](const std::string&) { return false; }, 10000);
    writer.join();
    CHECK(end == End::kEof);
    CHECK(echoed == big);
    CHECK_EQ(stage.stat(Stat::http_tunnel_total), 1u);

    HttpListenerOptions off;
    off.connect = false;
    HttpStage noConnect(SocketAddress{}, "127.0.0.0/8", CoreOptions{}, off);
    LoopRunner loop2(*noConnect.core);
    UniqueFd c2 = connectTo(noConnect.listenAddr);
    expectError(c2.get(), exchange(c2.get(), "CONNECT " + echo.address.toString() + " HTTP/1.1\r\n\r\n"), "405",
                "connect_disabled");
  });

  run("CONNECT from a client outside trusted_sources: 403 connect_untrusted, counted, and the server sees nothing", [] {
    Origin server(keepAliveServer());
    // The client (127.0.0.1) is not in trusted_sources: its routing header is ignored, and so is
    // the destination its CONNECT names. An empty list (the default) trusts nobody.
    for (const char* trusted : {"192.0.2.0/24", static_cast<const char*>(nullptr)}) {
      HttpStage stage(SocketAddress{}, trusted);
      LoopRunner loop(*stage.core);
      for (const std::string& target : {server.address.toString(), std::string("not-an-address")}) {
        UniqueFd c = connectTo(stage.listenAddr);
        expectError(c.get(), exchange(c.get(), "CONNECT " + target + " HTTP/1.1\r\nhost: " + target + "\r\n\r\n"),
                    "403", "connect_untrusted");
      }
      CHECK_EQ(stage.stat(Stat::http_rq_connect_untrusted), 2u);
      CHECK_EQ(stage.stat(Stat::http_tunnel_total), 0u);
      CHECK_EQ(stage.stat(Stat::upstream_cx_total), 0u);
    }
    CHECK_EQ(server.accepted.load(), 0);
  });

  run("CONNECT behind a PROXY header: trusted or not by the client the header names, not by the balancer", [] {
    SocketAddress targetAddr;
    UniqueFd target = listenOn(targetAddr);
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, std::make_unique<FixedDestinationOps>(), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "http-pp";
    lo.address = addr("127.0.0.1", 0);
    lo.http.enabled = true;
    // The balancer (127.0.0.1) is trusted for both: its own PROXY header and the routing header.
    lo.http.trustedSources = {*parseCidr("127.0.0.0/8"), *parseCidr("192.0.2.0/24")};
    lo.proxyProtocol.enabled = true;
    lo.proxyProtocol.trustedSources = {*parseCidr("127.0.0.0/8")};
    SocketAddress listenAddr;
    UniqueFd listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    LoopRunner loop(*core);
    const std::string connect = "CONNECT " + targetAddr.toString() + " HTTP/1.1\r\n\r\n";
    const auto proxyHeader = [&](const char* client) {
      return "PROXY TCP4 " + std::string(client) + " " + targetAddr.ipString() + " 40000 " +
             std::to_string(targetAddr.port()) + "\r\n";
    };
    // A client outside trusted_sources behind the trusted balancer: 403, nothing reaches the target.
    UniqueFd untrusted = connectTo(listenAddr);
    expectError(untrusted.get(), exchange(untrusted.get(), proxyHeader("198.51.100.7") + connect), "403", "connect_untrusted");
    CHECK_EQ(core->stats().get(Stat::http_rq_connect_untrusted), 1u);
    CHECK_EQ(core->stats().get(Stat::upstream_cx_total), 0u);
    // A trusted one (192.0.2.9): the tunnel is made.
    UniqueFd trusted = connectTo(listenAddr);
    CHECK(exchange(trusted.get(), proxyHeader("192.0.2.9") + connect).rfind("HTTP/1.1 200 Connection established\r\n", 0) == 0);
    UniqueFd up = acceptWithin(target.get());
    CHECK(writeAll(trusted.get(), "hi", 2));
    char got[2];
    CHECK(::recv(up.get(), got, 2, MSG_WAITALL) == 2 && std::memcmp(got, "hi", 2) == 0);
    CHECK_EQ(core->stats().get(Stat::http_rq_connect_untrusted), 1u);
    CHECK_EQ(core->stats().get(Stat::http_tunnel_total), 1u);
  });

  run("the access log: one request record per request, with method, status, error and destination_source", [] {
    Origin server(keepAliveServer());
    Origin denied(keepAliveServer());
    Origin echo([](Origin&, int fd, int) {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return;
        if (!writeAll(fd, buf, static_cast<size_t>(n))) return;
      }
    });
    CoreOptions options;
    options.accessLogSample = 1;
    options.accessLogCapacity = 64;
    options.policies = {denyLoopbackPort("no_denied", denied.address.port())};
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    std::string first, second, tunnelled;
    {
      LoopRunner loop(*stage.core);
      UniqueFd a = connectTo(stage.listenAddr);
      first = exchange(a.get(), get("/one", routeTo(server.address)));
      second = exchange(a.get(), get("/two", routeTo(server.address)));
      CHECK(second.find("\r\n\r\n2:/two") != std::string::npos);  // the same pooled upstream
      a.reset();
      UniqueFd b = connectTo(stage.listenAddr);
      expectError(b.get(), exchange(b.get(), "POST / HTTP/1.1\r\ncontent-length: 0\r\n" + routeTo(denied.address) + "\r\n"),
                  "403", "policy_denied");
      UniqueFd c = connectTo(stage.listenAddr);
      const std::string req = "CONNECT " + echo.address.toString() + " HTTP/1.1\r\n\r\nping";
      CHECK(writeAll(c.get(), req.data(), req.size()));
      CHECK(readUntil(c.get(), tunnelled, [](const std::string& t) { return t.find("ping") != std::string::npos; }) ==
            End::kOpen);
      ::shutdown(c.get(), SHUT_WR);
      std::string rest;
      CHECK(readUntil(c.get(), rest, [](const std::string&) { return false; }) == End::kEof);
      UniqueFd d = connectTo(stage.listenAddr);
      expectError(d.get(), exchange(d.get(), "GET / HTTP/1.1\r\nhost: a\r\nhost b\r\n\r\n"), "400", "malformed");
      b.reset();
      c.reset();
      d.reset();
      CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0; }));
    }
    std::vector<AccessRecord> records;
    CHECK_EQ(stage.core->takeAccessRecords(records), 0u);
    // One record per request head read, plus one for the head answered before it was complete.
    CHECK_EQ(records.size(), stage.stat(Stat::http_rq_total) + 1);
    CHECK_EQ(records.size(), 5u);
    for (const AccessRecord& r : records) {
      CHECK(r.kind == AccessRecord::Kind::kRequest);
      CHECK(std::string(r.listener) == "http");
    }
    const AccessRecord& one = records[0];
    CHECK_EQ(one.method, static_cast<uint8_t>(HTTP_GET));
    CHECK_EQ(one.status, 200u);
    CHECK(one.error[0] == '\0');
    CHECK(one.source == DestinationSource::kHeader);
    CHECK(one.destination.get() == server.address);
    CHECK(one.policy == AccessRecord::Policy::kAllow);
    CHECK(one.reason == CloseReason::kCompleted);
    CHECK_EQ(one.bytesReceived, first.size());
    CHECK_EQ(one.bytesSent, get("/one").size());  // the routing header stripped
    CHECK(one.connectUs != AccessRecord::kNone && one.connectUs > 0);
    CHECK(one.ttfbUs != AccessRecord::kNone && one.ttfbUs > 0);  // measured: the response came after the request went up
    CHECK(one.durationUs >= one.connectUs + one.ttfbUs);
    CHECK_EQ(records[1].connectUs, 0u);  // the pooled connection: no connect of its own
    CHECK_EQ(records[1].bytesReceived, second.size());
    const AccessRecord& no = records[2];
    CHECK_EQ(no.method, static_cast<uint8_t>(HTTP_POST));
    CHECK_EQ(no.status, 403u);
    CHECK(std::string(no.error) == "policy_denied");
    CHECK(no.policy == AccessRecord::Policy::kDeny);
    CHECK(no.reason == CloseReason::kRefused);
    CHECK(no.refusal == Refusal::kPolicyDenied);
    CHECK(no.destination.get() == denied.address);
    CHECK(no.connectUs == AccessRecord::kNone);
    const AccessRecord& tunnel = records[3];
    CHECK_EQ(tunnel.method, static_cast<uint8_t>(HTTP_CONNECT));
    CHECK_EQ(tunnel.status, 200u);
    CHECK(tunnel.source == DestinationSource::kConnect);
    CHECK(tunnel.destination.get() == echo.address);
    CHECK(tunnel.reason == CloseReason::kCompleted);
    CHECK_EQ(tunnel.bytesSent, 4u);  // "ping"
    CHECK_EQ(tunnel.bytesReceived, tunnelled.size());
    const AccessRecord& bad = records[4];
    CHECK_EQ(bad.method, AccessRecord::kNoMethod);
    CHECK_EQ(bad.status, 400u);
    CHECK(std::string(bad.error) == "malformed");
    CHECK(bad.reason == CloseReason::kProtocolError);
    CHECK(!bad.destination.known());
    std::string line;
    AccessLogNames names(options.policies);
    appendAccessLine(no, names, 2, line);
    CHECK(line.find("\"type\":\"request\"") != std::string::npos);
    CHECK(line.find("\"destination_source\":\"header\",\"policy\":\"deny\",\"rule\":\"no_denied\"") != std::string::npos);
    CHECK(line.find("\"refusal\":\"policy_denied\",\"worker\":2,\"method\":\"POST\",\"status\":403,\"error\":\"policy_denied\"}\n") !=
          std::string::npos);
    line.clear();
    appendAccessLine(bad, names, 0, line);
    CHECK(line.find("\"method\":null,\"status\":400,\"error\":\"malformed\"}") != std::string::npos);
  });

  run("a denied second request on a keep-alive connection gets its own 403 and its own record", [] {
    Origin server(keepAliveServer());
    CoreOptions options;
    options.accessLogSample = 1;
    options.accessLogCapacity = 16;
    options.policies = {denyLoopbackPort("port_one", 1)};
    HttpStage stage(SocketAddress{}, "127.0.0.0/8", options);
    {
      LoopRunner loop(*stage.core);
      UniqueFd a = connectTo(stage.listenAddr);
      const std::string ok = exchange(a.get(), get("/", routeTo(server.address)));
      CHECK(ok.find("\r\n\r\n1:/") != std::string::npos);
      // The second request on a's keep-alive connection is denied: a 403 of its own, not a reset.
      expectError(a.get(), exchange(a.get(), get("/", routeTo(addr("127.0.0.1", 1)))), "403", "policy_denied");
      a.reset();
      CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0; }));
    }
    std::vector<AccessRecord> records;
    stage.core->takeAccessRecords(records);
    CHECK_EQ(records.size(), 2u);
    CHECK_EQ(stage.stat(Stat::http_rq_total), 2u);
    CHECK_EQ(records[0].status, 200u);
    CHECK(records[0].reason == CloseReason::kCompleted);
    CHECK_EQ(records[1].status, 403u);
    CHECK(records[1].refusal == Refusal::kPolicyDenied);
    CHECK(std::string(records[1].error) == "policy_denied");
  });

  run("Upgrade: after the server's 101 both directions are relayed", [] {
    Origin ws(switchingEchoServer("hi"));
    HttpStage stage(ws.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string req = "GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("\r\n\r\nhi") != std::string::npos; }) ==
          End::kOpen);
    CHECK(writeAll(client.get(), "ping", 4));
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("hiping") != std::string::npos; }) ==
          End::kOpen);
    ::shutdown(client.get(), SHUT_WR);
    std::string rest;
    CHECK(readToEnd(client.get(), rest) == End::kEof);
  });

  run("drain (stopAccepting): a keep-alive connection idle for a second ends with FIN; one with a head under way, or whose next request comes within that second, gets its response, saying connection: close, then FIN", [] {
    Origin server(keepAliveServer());
    HttpListenerOptions http;
    http.requestHeadTimeoutMs = 60000;  // an idle connection is not ended by the head timeout here
    HttpStage stage(server.address, "127.0.0.0/8", CoreOptions{}, http);
    UniqueFd idle = connectTo(stage.listenAddr);
    UniqueFd busy = connectTo(stage.listenAddr);
    UniqueFd quiet = connectTo(stage.listenAddr);
    std::chrono::steady_clock::time_point quietSince;
    const std::string partial = "GET /b HTTP/1.1\r\n";
    {
      LoopRunner loop(*stage.core);
      CHECK(exchange(idle.get(), get("/a")).find("\r\n\r\n1:/a") != std::string::npos);
      CHECK(exchange(quiet.get(), get("/q")).find(":/q") != std::string::npos);
      quietSince = std::chrono::steady_clock::now();
      const std::string before = exchange(busy.get(), get("/a"));
      CHECK(before.find(":/a") != std::string::npos);
      CHECK(before.find("connection: close") == std::string::npos);  // not draining yet
      CHECK(writeAll(busy.get(), partial.data(), partial.size()));
      CHECK(waitFor([&] { return stage.stat(Stat::http_rq_total) == 3; }));
    }
    // The loop is stopped: this thread is the loop's now, as the posted call would be.
    stage.core->stopAccepting();
    LoopRunner loop(*stage.core);
    // Its next request within the grace, as a busy client's would be: answered, closing.
    const std::string late = exchange(idle.get(), get("/late"));
    CHECK(late.find(":/late") != std::string::npos);
    CHECK(late.find("\r\nconnection: close\r\n\r\n") != std::string::npos);
    std::string rest;
    CHECK(readToEnd(idle.get(), rest, 5000) == End::kEof);
    CHECK(rest.empty());
    // A third connection, idle when the drain came: ends with FIN once idle for the grace. Before
    // drain(), such a one stayed open until drain_timeout reset it (or the head timeout).
    const End quietEnd = readToEnd(quiet.get(), rest, 5000);
    if (quietEnd != End::kEof) std::fprintf(stderr, "  idle connection: %s\n", endName(quietEnd));
    CHECK(quietEnd == End::kEof);
    CHECK(rest.empty());
    CHECK(std::chrono::steady_clock::now() - quietSince >= std::chrono::milliseconds(500));  // not at once
    const std::string more = "host: t\r\n\r\n";
    CHECK(writeAll(busy.get(), more.data(), more.size()));
    std::string resp;
    const End busyEnd = readToEnd(busy.get(), resp, 2000);
    CHECK(busyEnd == End::kEof);
    CHECK(resp.find(":/b") != std::string::npos);
    // The client learns from the head that this response is the last, before it could send a
    // next request into the FIN; the message is otherwise intact (its length, its body).
    CHECK(resp.find("\r\nconnection: close\r\n\r\n") != std::string::npos);
    CHECK_EQ(messageLength(resp), resp.size());
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0; }));  // all three sessions ended
  });

  run("a 101 to a request without Upgrade is a 502, never a tunnel: the next request is routed, not relayed raw", [] {
    // The server switches protocols nobody asked for, then echoes; as a tunnel it would carry the
    // client's next request (meant for `other`, judged by the policy) raw to this server.
    Origin rogue(switchingEchoServer(""));
    Origin other(keepAliveServer());
    HttpStage stage(rogue.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string req = get("/plain") + get("/next", routeTo(other.address));
    const std::string resp = exchange(client.get(), req);
    expectError(client.get(), resp, "502", "upstream_reset");
    CHECK_EQ(stage.stat(Stat::http_tunnel_total), 0u);
    CHECK_EQ(stage.stat(Stat::http_rq_upstream_error), 1u);
    CHECK(other.seen().empty());
  });
}

// ---- Bodies: Content-Length bodies spliced, exactly their length; what came with the head copied ----

// n bytes of a pattern that differs per seed and per position (a shifted or repeated byte shows).
std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = 2166136261u ^ seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 16777619u + static_cast<uint32_t>(i);
    s[i] = static_cast<char>('a' + (x >> 24) % 26);
  }
  return s;
}

std::string post(const std::string& target, const std::string& body, const std::string& extra = "") {
  return "POST " + target + " HTTP/1.1\r\nhost: t\r\ncontent-length: " + std::to_string(body.size()) + "\r\n" + extra +
         "\r\n" + body;
}

std::string bodyOf(const std::string& message) { return message.substr(message.find("\r\n\r\n") + 4); }

// Keep-alive echo origin: each request's body comes back as the response's body (Content-Length);
// every whole request (head and body) is recorded.
std::function<void(Origin&, int, int)> echoServer() {
  return [](Origin& o, int fd, int) {
    std::string buf;
    for (;;) {
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }, 10000) != End::kOpen) return;
      const size_t len = messageLength(buf);
      const std::string msg = buf.substr(0, len);
      buf.erase(0, len);
      o.record(msg);
      const std::string body = bodyOf(msg);
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      if (!writeAll(fd, resp.data(), resp.size())) return;
    }
  };
}

// Reads n whole responses (head plus Content-Length body) from fd.
std::vector<std::string> readResponses(int fd, size_t n, End* end = nullptr) {
  std::string buf;
  std::vector<std::string> out;
  const End e = readUntil(fd, buf, [&](const std::string&) {
    for (;;) {
      if (out.size() == n) return true;
      const size_t len = messageLength(buf);
      if (len == 0) return false;
      out.push_back(buf.substr(0, len));
      buf.erase(0, len);
    }
  }, 20000);
  if (end) *end = e;
  return out;
}

void bodyTests() {
  run("two keep-alive requests back to back with large Content-Length bodies: exact boundaries, bodies spliced both ways", [] {
    Origin server(echoServer());
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string one = pattern(3 << 20, 1);
    const std::string two = pattern((5 << 20) + 7, 2);
    // Both requests in one stream: the second's head follows the first body's last byte.
    const std::string stream = post("/one", one) + post("/two", two);
    std::thread writer([&] { CHECK(writeAll(client.get(), stream.data(), stream.size())); });
    End end;
    const auto responses = readResponses(client.get(), 2, &end);
    writer.join();
    CHECK(end == End::kOpen);
    CHECK_EQ(responses.size(), 2u);
    CHECK(bodyOf(responses[0]) == one);
    CHECK(bodyOf(responses[1]) == two);
    const auto seen = server.seen();
    CHECK_EQ(seen.size(), 2u);
    CHECK(seen[0] == post("/one", one));
    CHECK(seen[1] == post("/two", two));
    CHECK_EQ(server.accepted.load(), 1);  // one upstream connection, reused for the second request
    // Every body byte went one way or the other, and nearly all by splice.
    const uint64_t total = 2 * (one.size() + two.size());
    const uint64_t spliced = stage.stat(Stat::http_body_bytes_spliced);
    const uint64_t copied = stage.stat(Stat::http_body_bytes_copied);
    CHECK_EQ(spliced + copied, total);
    // At most what the reads that completed each head brought along: one read each as a rule, two
    // when a head arrives split (seen: 69,627 bytes copied, a 4 KiB first read), for the four
    // heads (two requests, two responses): under 1 % of the 16 MiB moved.
    CHECK(copied <= 8 * 16384);
  });

  run("body bytes read along with the head go first (copied), the rest is spliced", [] {
    Origin server(echoServer());
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string body = pattern(1 << 20, 3);
    const std::string req = post("/h", body);
    const size_t headLength = req.size() - body.size();
    // The head and the first 1000 body bytes in one write; the rest only once the proxy has
    // parsed the head and forwarded those (the server sees its head and the 1000 bytes).
    CHECK(writeAll(client.get(), req.data(), headLength + 1000));
    CHECK(waitFor([&] { return stage.stat(Stat::http_body_bytes_copied) == 1000; }));
    CHECK(writeAll(client.get(), req.data() + headLength + 1000, req.size() - headLength - 1000));
    const auto responses = readResponses(client.get(), 1);
    CHECK_EQ(responses.size(), 1u);
    CHECK(bodyOf(responses[0]) == body);
    CHECK(server.seen().at(0) == req);
    // The request: 1000 copied, the rest spliced; the response: whatever came with its head copied.
    const uint64_t spliced = stage.stat(Stat::http_body_bytes_spliced);
    const uint64_t copied = stage.stat(Stat::http_body_bytes_copied);
    CHECK_EQ(spliced + copied, 2 * body.size());
    CHECK(spliced >= body.size() - 1000 + body.size() - 16384);
  });

  run("small bodies stay on the copy path; relay_mode copy copies large ones, relay_mode splice splices small ones", [] {
    Origin server(echoServer());
    const std::string small = pattern(2000, 4);
    const std::string large = pattern(300000, 5);
    {
      HttpStage stage(server.address);
      LoopRunner loop(*stage.core);
      UniqueFd client = connectTo(stage.listenAddr);
      const std::string req = post("/s", small);
      CHECK(writeAll(client.get(), req.data(), 80));  // the head alone first: the body arrives separately
      CHECK(waitFor([&] { return stage.stat(Stat::http_rq_total) == 1; }));
      CHECK(writeAll(client.get(), req.data() + 80, req.size() - 80));
      CHECK(bodyOf(readResponses(client.get(), 1).at(0)) == small);
      CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced), 0u);
      CHECK_EQ(stage.stat(Stat::http_body_bytes_copied), 2 * small.size());
    }
    CoreOptions copy;
    copy.relayMode = CoreOptions::RelayMode::kCopy;
    {
      HttpStage stage(server.address, "127.0.0.0/8", copy);
      LoopRunner loop(*stage.core);
      UniqueFd client = connectTo(stage.listenAddr);
      const std::string req = post("/l", large);
      std::thread writer([&] { CHECK(writeAll(client.get(), req.data(), req.size())); });
      const auto r = readResponses(client.get(), 1);
      writer.join();
      CHECK(bodyOf(r.at(0)) == large);
      CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced), 0u);
      CHECK_EQ(stage.stat(Stat::http_body_bytes_copied), 2 * large.size());
    }
    CoreOptions always;
    always.relayMode = CoreOptions::RelayMode::kSplice;
    {
      HttpStage stage(server.address, "127.0.0.0/8", always);
      LoopRunner loop(*stage.core);
      UniqueFd client = connectTo(stage.listenAddr);
      const std::string req = post("/s", small);
      CHECK(writeAll(client.get(), req.data(), 80));
      CHECK(waitFor([&] { return stage.stat(Stat::http_rq_total) == 1; }));
      CHECK(writeAll(client.get(), req.data() + 80, req.size() - 80));
      CHECK(bodyOf(readResponses(client.get(), 1).at(0)) == small);
      CHECK(stage.stat(Stat::http_body_bytes_spliced) >= small.size() - (80 - (req.size() - small.size())));
      CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced) + stage.stat(Stat::http_body_bytes_copied), 2 * small.size());
    }
  });

  run("a spliced response ends at its Content-Length: bytes the server sends after it never reach the client", [] {
    // The first response is followed, in the same write, by a response nobody asked for.
    Origin server([](Origin& o, int fd, int index) {
      std::string buf;
      for (int n = 0;; ++n) {
        if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
        const size_t len = messageLength(buf);
        o.record(buf.substr(0, len));
        buf.erase(0, len);
        const std::string body = pattern(200000, static_cast<unsigned>(10 + index * 2 + n));
        std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        if (index == 0 && n == 0) resp += "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra";
        if (!writeAll(fd, resp.data(), resp.size())) return;
      }
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(writeAll(client.get(), get("/1").data(), get("/1").size()));
    const auto first = readResponses(client.get(), 1);
    CHECK(bodyOf(first.at(0)) == pattern(200000, 10));
    CHECK(stage.stat(Stat::http_body_bytes_spliced) > 100000);
    // The next request: the "extra" response waits in the first upstream connection, which the
    // check at the response's end (the splice read exactly the body) keeps out of the pool; a new
    // connection answers.
    CHECK(writeAll(client.get(), get("/2").data(), get("/2").size()));
    std::string rest;
    End end = readUntil(client.get(), rest, [](const std::string& b) { return messageLength(b) > 0; });
    CHECK(end == End::kOpen);
    CHECK(rest.find("extra") == std::string::npos);
    CHECK(bodyOf(rest.substr(0, messageLength(rest))) == pattern(200000, 12));
    CHECK_EQ(server.accepted.load(), 2);
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);
  });

  run("a close-delimited response is spliced to the upstream's EOF and ends with FIN", [] {
    const std::string body = pattern(2 << 20, 6);
    Origin server([&body](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\n" + body;
      writeAll(fd, resp.data(), resp.size());
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(writeAll(client.get(), get("/eof").data(), get("/eof").size()));
    std::string got;
    CHECK(readToEnd(client.get(), got, 20000) == End::kEof);
    CHECK(bodyOf(got) == body);
    CHECK(stage.stat(Stat::http_body_bytes_spliced) >= body.size() - 16384);
    CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced) + stage.stat(Stat::http_body_bytes_copied), body.size());
  });

  run("an upstream reset in the middle of a spliced response body resets the client", [] {
    std::atomic<bool> clientHasPart{false};
    Origin server([&clientHasPart](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      const std::string part = "HTTP/1.1 200 OK\r\ncontent-length: 4000000\r\n\r\n" + pattern(1 << 20, 7);
      writeAll(fd, part.data(), part.size());
      waitFor([&clientHasPart] { return clientHasPart.load(); }, 10000);
      resetOnClose(fd);
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(writeAll(client.get(), get("/cut").data(), get("/cut").size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.size() > (1 << 20); }) == End::kOpen);
    CHECK(stage.stat(Stat::http_body_bytes_spliced) > 0);  // the cut came on the splice path
    clientHasPart = true;
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK_EQ(stage.stat(Stat::http_rq_upstream_error), 1u);
    CHECK(got.size() < 4000000);
  });

  run("a client gone in the middle of a spliced request body: the upstream is reset, never pooled", [] {
    std::atomic<size_t> received{0};
    std::atomic<int> serverEnd{-1};
    Origin server([&](Origin&, int fd, int) {
      char b[65536];
      for (;;) {
        const ssize_t n = ::recv(fd, b, sizeof b, 0);
        if (n <= 0) {
          serverEnd = n == 0 ? static_cast<int>(End::kEof) : (errno == ECONNRESET ? static_cast<int>(End::kReset) : static_cast<int>(End::kError));
          return;
        }
        received += static_cast<size_t>(n);
      }
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    {
      UniqueFd client = connectTo(stage.listenAddr);
      const std::string req = post("/up", pattern(4 << 20, 8));
      CHECK(writeAll(client.get(), req.data(), 1 << 20));
      CHECK(waitFor([&] { return received.load() >= (1 << 20) - 100000; }));
      CHECK(stage.stat(Stat::http_body_bytes_spliced) > 0);
      ::shutdown(client.get(), SHUT_WR);  // a clean EOF from the client, 3 MiB short
    }
    CHECK(waitFor([&] { return serverEnd.load() != -1; }));
    CHECK_EQ(serverEnd.load(), static_cast<int>(End::kReset));
    CHECK_EQ(stage.core->httpPoolIdle(), 0u);
    CHECK(waitFor([&] { return stage.stat(Stat::downstream_cx_active) == 0; }));
  });

  run("a client reset while its request body waits for a stalled upstream resets the upstream at once", [] {
    std::atomic<int> serverEnd{-1};
    Origin server([&](Origin&, int fd, int) {
      // Reads nothing, so the body backs up in the proxy; only a reset from the proxy ends the wait.
      pollfd p{fd, 0, 0};
      const int n = ::poll(&p, 1, 20000);
      serverEnd = n == 1 && (p.revents & POLLERR) ? static_cast<int>(End::kReset) : static_cast<int>(End::kTimeout);
    });
    const int small = 4096;  // inherited by the accepted socket: a small window, soon shut
    ::setsockopt(server.listenFd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    ::setsockopt(client.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    const std::string req = post("/up", pattern(32 << 20, 4));
    // Until the proxy takes no more of it.
    size_t sent = 0;
    for (int i = 0; i < 1000 && sent < req.size(); ++i) {
      ssize_t n;
      while (sent < req.size() && (n = ::send(client.get(), req.data() + sent, req.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL)) > 0) {
        sent += static_cast<size_t>(n);
      }
      pollfd out{client.get(), POLLOUT, 0};
      if (::poll(&out, 1, 200) == 0) break;
    }
    CHECK(sent < req.size());  // backed up, not all taken
    linger lg{1, 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    client.reset();  // RST
    CHECK(waitFor([&] { return serverEnd.load() != -1; }, 30000));
    CHECK_EQ(serverEnd.load(), static_cast<int>(End::kReset));
    CHECK_EQ(stage.core->httpPoolIdle(), 0u);
  });

  run("pipelined requests: answered in order, one upstream exchange at a time; nothing after Connection: close is sent", [] {
    std::atomic<int> maxInFlight{0};
    Origin server([&](Origin& o, int fd, int) {
      std::string buf;
      for (int n = 1;; ++n) {
        if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
        // A second request already here while this one is unanswered would mean the proxy sent
        // it ahead of this response.
        const size_t len = messageLength(buf);
        o.record(buf.substr(0, len));
        buf.erase(0, len);
        if (!buf.empty()) maxInFlight = 2;
        const std::string body = std::to_string(n);
        const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        if (!writeAll(fd, resp.data(), resp.size())) return;
      }
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string two = pattern(40000, 20);  // long enough to be spliced once its head is out
    const std::string stream = get("/1") + post("/2", two) + get("/3", "connection: close\r\n") + get("/4");
    CHECK(writeAll(client.get(), stream.data(), stream.size()));
    std::string got;
    CHECK(readToEnd(client.get(), got) == End::kEof);  // closed (FIN) after the third response
    std::vector<std::string> responses;
    for (size_t len; (len = messageLength(got)) > 0;) {
      responses.push_back(got.substr(0, len));
      got.erase(0, len);
    }
    CHECK(got.empty());
    CHECK_EQ(responses.size(), 3u);
    for (size_t i = 0; i < responses.size(); ++i) CHECK(bodyOf(responses[i]) == std::to_string(i + 1));
    const auto seen = server.seen();
    CHECK_EQ(seen.size(), 3u);  // never /4
    CHECK(seen.at(1) == post("/2", two));
    CHECK(seen.at(2).rfind("GET /3 ", 0) == 0);
    CHECK_EQ(maxInFlight.load(), 0);
    CHECK_EQ(stage.stat(Stat::http_rq_total), 3u);
  });

  run("a body spliced under a small relay budget yields and resumes to the end", [] {
    Origin server(echoServer());
    CoreOptions small;
    small.relayBudgetBytes = 65536;
    HttpStage stage(server.address, "127.0.0.0/8", small);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string body = pattern(3 << 20, 9);
    const std::string req = post("/b", body);
    std::thread writer([&] { CHECK(writeAll(client.get(), req.data(), req.size())); });
    const auto r = readResponses(client.get(), 1);
    writer.join();
    CHECK(bodyOf(r.at(0)) == body);
    CHECK(stage.stat(Stat::http_body_bytes_spliced) > body.size());
  });

  run("a 101 that comes while the upgrade request's body is still spliced: the tunnel starts after its last byte, none lost", [] {
    // The server reads the head and nothing more for a while (the body backs up through its socket
    // buffers into the session's pipe), then answers 101. The tunnel must carry on from the body's
    // last byte, not drop what the pipe holds.
    std::atomic<bool> answered{false};
    Origin server([&answered](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) != End::kOpen) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the body backs up meanwhile
      const std::string resp = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
      writeAll(fd, resp.data(), resp.size());
      answered = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the session sees the 101 with its pipe full
      const std::string early = buf.substr(buf.find("\r\n\r\n") + 4);
      if (!writeAll(fd, early.data(), early.size())) return;
      char b[65536];
      for (;;) {
        const ssize_t n = ::recv(fd, b, sizeof b, 0);
        if (n <= 0) return;
        if (!writeAll(fd, b, static_cast<size_t>(n))) return;
      }
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string body = pattern(16 << 20, 11);  // more than the socket buffers on the way hold
    const std::string after = "after-the-body";
    const std::string req = "POST /up HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: echo\r\ncontent-length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body + after;
    std::thread writer([&] { CHECK(writeAll(client.get(), req.data(), req.size())); });
    const std::string head = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
    std::string got;
    const End e = readUntil(client.get(), got, [&](const std::string& b) { return b.size() >= head.size() + body.size() + after.size(); }, 20000);
    writer.join();
    if (e != End::kOpen || got != head + body + after) {
      std::fprintf(stderr, "  end %d, %zu of %zu bytes\n", static_cast<int>(e), got.size(), head.size() + body.size() + after.size());
    }
    CHECK(e == End::kOpen);
    CHECK(answered.load());
    CHECK_EQ(got.size(), head.size() + body.size() + after.size());
    CHECK(got == head + body + after);
    CHECK_EQ(stage.stat(Stat::http_tunnel_total), 1u);
  });

  run("a close-delimited response ends with FIN, whole, even when the client sent more behind its request", [] {
    // The response's end is the upstream's close, so the client's only sign of a complete response
    // is a clean FIN. Bytes the client pipelined behind its request (unread, in the socket) must
    // not turn the close into a reset, which says "truncated" and can destroy the response's tail.
    std::atomic<bool> pipelined{false};
    const std::string body = pattern(200000, 21);
    Origin server([&pipelined, &body](Origin& o, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      o.record(buf);
      const std::string head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n";
      writeAll(fd, head.data(), head.size());
      if (!waitFor([&] { return pipelined.load(); })) return;
      writeAll(fd, body.data(), body.size());
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string first = get("/stream");
    CHECK(writeAll(client.get(), first.data(), first.size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) ==
          End::kOpen);
    const std::string second = get("/next");
    CHECK(writeAll(client.get(), second.data(), second.size()));
    pipelined = true;
    const End e = readToEnd(client.get(), got);
    if (e != End::kEof) std::fprintf(stderr, "  end %s after %zu bytes\n", endName(e), got.size());
    CHECK(e == End::kEof);
    CHECK(bodyOf(got) == body);
    CHECK_EQ(server.seen().size(), 1u);  // nothing behind a close-delimited response goes anywhere
    CHECK_EQ(server.accepted.load(), 1);
  });

  run("a response that comes before the request body's end reaches the client whole, with FIN; the body's rest is dropped", [] {
    // The server answers after the head (413) and reads nothing more. The client is still uploading:
    // its bytes sit unread in the session's socket, and closing that would reset the client.
    Origin server([](Origin& o, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) != End::kOpen) return;
      o.record(buf.substr(0, buf.find("\r\n\r\n") + 4));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the body backs up to the session meanwhile
      const std::string resp = "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big!";
      writeAll(fd, resp.data(), resp.size());
      std::string rest;
      readToEnd(fd, rest);
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string body = pattern(8 << 20, 5);
    const std::string req = post("/upload", body);
    std::thread writer([&] {
      writeAll(client.get(), req.data(), req.size());  // may end early once the session closed
      ::shutdown(client.get(), SHUT_WR);
    });
    std::string got;
    const End e = readToEnd(client.get(), got);
    writer.join();
    if (e != End::kEof) std::fprintf(stderr, "  end %s after %zu bytes\n", endName(e), got.size());
    CHECK(e == End::kEof);
    CHECK(got.rfind("HTTP/1.1 413 ", 0) == 0);
    CHECK(bodyOf(got) == "too big!");
  });
}

// ---- The shared pool between a client's requests: what keeping an upstream with its client got wrong ----

// Everything written to fd has reached its peer's socket (acknowledged: nothing left in the send
// queue); with the peer's loop stopped, it waits there for the next batch.
bool deliveredToPeer(int fd) {
  return waitFor([fd] {
    int unsent = -1;
    return ::ioctl(fd, SIOCOUTQ, &unsent) == 0 && unsent == 0;
  });
}

// fd's FIN has reached its peer (acknowledged: this side is in FIN_WAIT2).
bool finDelivered(int fd) {
  return waitFor([fd] {
    tcp_info info{};
    socklen_t len = sizeof info;
    return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_state == TCP_FIN_WAIT2;
  });
}

// One request answered on a fresh upstream from `listenFd`; returns the server's side of it, idle
// in the pool afterwards.
UniqueFd firstExchange(HttpStage& stage, int client, int listenFd, const std::string& request) {
  LoopRunner loop(*stage.core);
  CHECK(writeAll(client, request.data(), request.size()));
  UniqueFd up = acceptAndAnswer(listenFd, "first");
  std::string resp;
  CHECK(readUntil(client, resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
  CHECK(bodyOf(resp) == "first");
  CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
  return up;
}

void sharedPoolTests() {
  // The first three put the client's next request and an event of the idle upstream into one
  // epoll batch, the client's first: the loop is stopped while both reach the proxy's sockets.
  run("bytes a server sends on an idle upstream in the batch of the client's next request are never that request's response", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd up = firstExchange(stage, client.get(), server.get(), get("/1"));
    CHECK(writeAll(client.get(), get("/2").data(), get("/2").size()));
    CHECK(deliveredToPeer(client.get()));
    const std::string stale = "HTTP/1.1 408 Request Timeout\r\ncontent-length: 5\r\n\r\nSTALE";
    CHECK(writeAll(up.get(), stale.data(), stale.size()));
    CHECK(deliveredToPeer(up.get()));
    LoopRunner loop(*stage.core);
    // /2 goes out on a new connection (the idle one is spoiled), which answers it.
    UniqueFd next = acceptAndAnswer(server.get(), "FRESH");
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(bodyOf(resp) == "FRESH");
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);
  });

  run("a reset of an idle upstream in the batch of the client's request to another destination does not fail that request", [] {
    SocketAddress aAddr;
    UniqueFd aListen = listenOn(aAddr);
    Origin b(keepAliveServer());
    HttpStage stage(aAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd upA = firstExchange(stage, client.get(), aListen.get(), get("/a1", routeTo(aAddr)));
    const std::string toB = get("/b1", routeTo(b.address));
    CHECK(writeAll(client.get(), toB.data(), toB.size()));
    CHECK(deliveredToPeer(client.get()));
    resetOnClose(upA.get());
    upA.reset();  // the RST leaves in close() itself
    LoopRunner loop(*stage.core);
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& x) { return messageLength(x) > 0; }) == End::kOpen);
    CHECK(resp.find("\r\n\r\n1:/b1") != std::string::npos);  // b's answer, not a 503
    CHECK_EQ(stage.stat(Stat::http_rq_connect_fail), 0u);
  });

  run("a FIN of an idle upstream in the batch of the client's request to another (pooled) destination leaves that destination's connection reusable", [] {
    SocketAddress aAddr;
    UniqueFd aListen = listenOn(aAddr);
    Origin b(keepAliveServer());
    HttpStage stage(aAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    {
      LoopRunner loop(*stage.core);
      UniqueFd other = connectTo(stage.listenAddr);  // b's connection goes to the pool
      CHECK(exchange(other.get(), get("/b0", routeTo(b.address))).find(":/b0") != std::string::npos);
      CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
    }
    UniqueFd upA;
    {
      LoopRunner loop(*stage.core);
      const std::string first = get("/a1", routeTo(aAddr));
      CHECK(writeAll(client.get(), first.data(), first.size()));
      upA = acceptAndAnswer(aListen.get(), "a1");
      std::string resp;
      CHECK(readUntil(client.get(), resp, [](const std::string& x) { return messageLength(x) > 0; }) == End::kOpen);
      CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 2; }));
    }
    const std::string toB = get("/b1", routeTo(b.address));
    CHECK(writeAll(client.get(), toB.data(), toB.size()));
    CHECK(deliveredToPeer(client.get()));
    ::shutdown(upA.get(), SHUT_WR);
    CHECK(finDelivered(upA.get()));
    LoopRunner loop(*stage.core);
    std::string resp;
    CHECK(readUntil(client.get(), resp, [](const std::string& x) { return messageLength(x) > 0; }) == End::kOpen);
    CHECK(resp.find(":/b1") != std::string::npos);
    // b's connection went back to the pool and serves the next request to b.
    CHECK(exchange(client.get(), get("/b2", routeTo(b.address))).find(":/b2") != std::string::npos);
    CHECK_EQ(b.accepted.load(), 1);
    CHECK_EQ(b.closed.load(), 0);
  });

  run("a client between requests does not lock other clients out of a host at max_connections: its idle upstream serves them", [] {
    Origin server(keepAliveServer());
    CoreOptions options;
    options.maxConnectionsPerHost = 1;
    HttpStage stage(server.address, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd first = connectTo(stage.listenAddr);
    CHECK(exchange(first.get(), get("/1")).find(":/1") != std::string::npos);
    for (int i = 0; i < 3; ++i) {
      UniqueFd other = connectTo(stage.listenAddr);
      CHECK(exchange(other.get(), get("/o")).find(":/o") != std::string::npos);
      CHECK(exchange(first.get(), get("/f")).find(":/f") != std::string::npos);
    }
    CHECK_EQ(server.accepted.load(), 1);
    CHECK_EQ(stage.stat(Stat::http_rq_overflow), 0u);
  });

  run("pipelined requests to a, b, a on one connection: answered in order; a's upstream comes back from the pool", [] {
    Origin a(keepAliveServer());
    Origin b(keepAliveServer());
    HttpStage stage(a.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string reqs = get("/a1", routeTo(a.address)) + get("/b1", routeTo(b.address)) + get("/a2", routeTo(a.address));
    CHECK(writeAll(client.get(), reqs.data(), reqs.size()));
    const auto resps = readResponses(client.get(), 3);
    CHECK_EQ(resps.size(), 3u);
    CHECK(bodyOf(resps.at(0)) == "1:/a1");
    CHECK(bodyOf(resps.at(1)) == "1:/b1");
    CHECK(bodyOf(resps.at(2)) == "2:/a2");
    CHECK_EQ(a.accepted.load(), 1);
  });
}


// ---- Bytes queued behind a response with their edge already spent (the pool would never hear of them) ----

// After the client's next request: answers it on whichever upstream connection it came on, the
// idle one `up` (then "WRONG") or a new one from listenFd ("FRESH"); returns what the client got.
std::string answerNext(int client, int listenFd, int up) {
  bool upOpen = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p[2] = {{listenFd, POLLIN, 0}, {up, upOpen ? static_cast<short>(POLLIN) : static_cast<short>(0), 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    if (p[1].revents != 0) {
      char c;
      if (::recv(up, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
        std::fprintf(stderr, "  the next request was sent into the idle connection that held unread bytes\n");
        std::string req;
        readUntil(up, req, [](const std::string& b) { return messageLength(b) > 0; });
        const std::string answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nWRONG";
        writeAll(up, answer.data(), answer.size());
        break;
      }
      upOpen = false;  // closed (FIN or reset) by the proxy: not reused
    }
    if (p[0].revents & POLLIN) {
      UniqueFd next(::accept(listenFd, nullptr, nullptr));
      std::string req;
      CHECK(readUntil(next.get(), req, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
      const std::string answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nFRESH";
      CHECK(writeAll(next.get(), answer.data(), answer.size()));
      std::string r;
      readUntil(client, r, [](const std::string& b) { return messageLength(b) > 0; });
      return r;
    }
  }
  std::string r;
  readUntil(client, r, [](const std::string& b) { return messageLength(b) > 0; });
  return r;
}

// The client sends /2; true when a new upstream connection answered it, never `up` (which holds
// bytes it must not answer with), saying what the client got otherwise.
bool nextAnsweredByNewConnection(int client, int listenFd, int up) {
  if (!writeAll(client, get("/2").data(), get("/2").size())) return false;
  const std::string r = answerNext(client, listenFd, up);
  if (r.find("\r\n\r\nFRESH") != std::string::npos) return true;
  std::fprintf(stderr, "  the client got for /2: %s\n", r.c_str());
  return false;
}

// The client's request /1, read by a new upstream connection from listenFd (returned) while the
// loop runs; then the loop stops, so that the response the caller sends arrives whole before the
// proxy reads any of it (one edge for all of it).
UniqueFd requestOnStoppedLoop(HttpStage& stage, int client, int listenFd) {
  LoopRunner loop(*stage.core);
  CHECK(writeAll(client, get("/1").data(), get("/1").size()));
  UniqueFd up = acceptWithin(listenFd);
  std::string req;
  CHECK(readUntil(up.get(), req, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
  return up;
}

void queuedBehindResponseTests() {
  run("bytes behind a spliced response body (read to its exact end, the socket not drained) keep the connection out of the pool", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd up = requestOnStoppedLoop(stage, client.get(), server.get());
    const std::string body = pattern(60000, 21);
    const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n" + body +
                             "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTALE";
    CHECK(writeAll(up.get(), resp.data(), resp.size()));
    CHECK(deliveredToPeer(up.get()));
    LoopRunner loop(*stage.core);
    const auto first = readResponses(client.get(), 1);
    CHECK(bodyOf(first.at(0)) == body);
    CHECK(stage.stat(Stat::http_body_bytes_spliced) > 0);
    CHECK(waitFor([&] { return stage.stat(Stat::upstream_cx_active) == 0; }));
    CHECK_EQ(stage.core->httpPoolIdle(), 0u);
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);
    // The next request goes on a new connection, never into the one that still holds "STALE".
    CHECK(nextAnsweredByNewConnection(client.get(), server.get(), up.get()));
  });

  run("bytes behind a chunked response that filled a copy read exactly keep the connection out of the pool", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd up = requestOnStoppedLoop(stage, client.get(), server.get());
    // A chunked response of exactly one copy read (16384 bytes), a response nobody asked for behind it.
    const std::string head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    const std::string tail = "\r\n0\r\n\r\n";
    const size_t dataLen = 16384 - head.size() - tail.size() - 6;  // "xxxx\r\n": 4 hex digits
    char sizeLine[16];
    std::snprintf(sizeLine, sizeof sizeLine, "%04zx\r\n", dataLen);
    const std::string first = head + sizeLine + pattern(dataLen, 31) + tail;
    CHECK_EQ(first.size(), 16384u);
    const std::string resp = first + "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTALE";
    CHECK(writeAll(up.get(), resp.data(), resp.size()));
    CHECK(deliveredToPeer(up.get()));
    LoopRunner loop(*stage.core);
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.size() >= 16384; }) == End::kOpen);
    CHECK(got == first);
    CHECK(waitFor([&] { return stage.stat(Stat::upstream_cx_active) == 0; }));
    CHECK_EQ(stage.core->httpPoolIdle(), 0u);
    CHECK(nextAnsweredByNewConnection(client.get(), server.get(), up.get()));
  });
}

// ---- The pool on its own ----

void poolTests() {
  run("take() checks a pooled connection before handing it out when asked to (a request it could not retry), else trusts the pool's events", [] {
    Stats stats;
    HostCache hosts(HostLimits{16, 16, 16}, nullptr);
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Host* host = nullptr;
    CHECK(hosts.admit(serverAddr, 0, &host) == HostCache::Admit::kOk);
    CHECK(hosts.admit(serverAddr, 0, &host) == HostCache::Admit::kOk);
    hosts.connectDone(*host);
    hosts.connectDone(*host);
    HttpPool pool(4, 60'000'000, hosts, stats);
    struct Holder final : EventHandler {
      void onEvents(uint32_t) override {}
    } holder;
    // Two connections to the server, pooled without an event loop: the pool hears nothing of them.
    std::vector<UniqueFd> serverSides;
    for (int i = 0; i < 2; ++i) {
      UniqueFd c = connectTo(serverAddr);
      serverSides.emplace_back(::accept(server.get(), nullptr, nullptr));
      CHECK(pool.put(*host, RegisteredUpstream{std::move(c), {}}, pool.newLink(holder), 0));
    }
    CHECK_EQ(pool.idleCount(), 2u);
    // The server closes both.
    for (UniqueFd& s : serverSides) ::shutdown(s.get(), SHUT_WR);
    CHECK(finDelivered(serverSides[0].get()) && finDelivered(serverSides[1].get()));
    // verify: both are found closed and discarded, nothing is handed out.
    HttpPool::Taken none = pool.take(serverAddr, holder, true);
    CHECK(!none);
    CHECK_EQ(pool.idleCount(), 0u);
    CHECK_EQ(stats.get(Stat::http_pool_discarded), 2u);
    pool.disposeRetired();
  });

  run("take() without verify hands out a connection whose news the pool has not had (no event): the loop's events are what it trusts", [] {
    Stats stats;
    HostCache hosts(HostLimits{16, 16, 16}, nullptr);
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Host* host = nullptr;
    CHECK(hosts.admit(serverAddr, 0, &host) == HostCache::Admit::kOk);
    hosts.connectDone(*host);
    HttpPool pool(4, 60'000'000, hosts, stats);
    struct Holder final : EventHandler {
      void onEvents(uint32_t) override {}
    } holder;
    UniqueFd c = connectTo(serverAddr);
    UniqueFd serverSide(::accept(server.get(), nullptr, nullptr));
    CHECK(pool.put(*host, RegisteredUpstream{std::move(c), {}}, pool.newLink(holder), 0));
    ::shutdown(serverSide.get(), SHUT_WR);
    CHECK(finDelivered(serverSide.get()));
    HttpPool::Taken taken = pool.take(serverAddr, holder, false);
    CHECK(taken);  // no syscall spent: a retryable request meets the close and goes again
    CHECK_EQ(stats.get(Stat::http_pool_discarded), 0u);
    taken.upstream.fd.reset();
    pool.retire(taken.link);
    pool.disposeRetired();
  });
}

// ---- Events that reach the pool late, and reads that stop short with bytes still queued ----

CoreOptions alwaysSplice() {
  CoreOptions options;
  options.relayMode = CoreOptions::RelayMode::kSplice;
  return options;
}

// Reads from fd into got until a head's end has arrived.
bool headArrived(int fd, std::string& got) {
  return readUntil(fd, got, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) == End::kOpen;
}

// A 9-byte body "abc!defgh" whose "!" is TCP urgent data (the mark inside the body), in three
// segments (TCP_NODELAY).
bool sendBodyWithUrgentByte(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return ::send(fd, "abc", 3, 0) == 3 && ::send(fd, "!", 1, MSG_OOB) == 1 && ::send(fd, "defgh", 5, 0) == 5;
}

void edgeCaseTests() {
  run("TCP urgent data behind a response (a read stops short at its mark, bytes still queued): the connection is not pooled, and the next request is not answered by those bytes", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd up = requestOnStoppedLoop(stage, client.get(), server.get());
    const int one = 1;
    ::setsockopt(up.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // The response, then one urgent byte (TCP's urgent mark right after the response), then a
    // response nobody asked for: recv(2) stops at the urgent mark, so the proxy's read of the
    // response comes up short although "STALE" is already queued (no edge will follow for it).
    const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(up.get(), resp.data(), resp.size()));
    CHECK(::send(up.get(), "!", 1, MSG_OOB) == 1);
    const std::string stale = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTALE";
    CHECK(writeAll(up.get(), stale.data(), stale.size()));
    CHECK(deliveredToPeer(up.get()));
    LoopRunner loop(*stage.core);
    const auto first = readResponses(client.get(), 1);
    CHECK_EQ(first.size(), 1u);
    if (!first.empty()) CHECK(bodyOf(first.at(0)) == "ok");
    CHECK(nextAnsweredByNewConnection(client.get(), server.get(), up.get()));
  });

  // splice(2) never gets past an urgent mark (relay.h, copyPastUrgentMark): without the check a
  // spliced body would wait there for an edge that never comes, until a timeout reset the stream.
  // In both tests the head goes alone first, so that the whole body goes by splice.
  run("TCP urgent data inside a spliced response body: every byte reaches the client, the urgent one in its place, without more traffic", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr, "127.0.0.0/8", alwaysSplice());
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    CHECK(writeAll(client.get(), get("/1").data(), get("/1").size()));
    UniqueFd up = acceptWithin(server.get());
    std::string req;
    CHECK(readUntil(up.get(), req, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n";
    CHECK(writeAll(up.get(), head.data(), head.size()));
    std::string got;
    CHECK(headArrived(client.get(), got));
    CHECK(sendBodyWithUrgentByte(up.get()));
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(got == head + "abc!defgh");
    CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced), 9u);
  });

  run("TCP urgent data inside a spliced request body: every byte reaches the server, the urgent one in its place, without more traffic", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr, "127.0.0.0/8", alwaysSplice());
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string req = post("/u", "abc!defgh");
    const std::string head = req.substr(0, req.size() - 9);
    CHECK(writeAll(client.get(), head.data(), head.size()));
    UniqueFd up = acceptWithin(server.get());
    std::string got;
    CHECK(headArrived(up.get(), got));
    CHECK(sendBodyWithUrgentByte(client.get()));
    CHECK(readUntil(up.get(), got, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(got == req);
    CHECK_EQ(stage.stat(Stat::http_body_bytes_spliced), 9u);
  });

  run("a response's last bytes read through the client's event, in the batch that also carries their upstream edge: that edge, stale when it reaches the pool, does not close the healthy connection", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Origin b(keepAliveServer());
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kCopy;
    options.relayBudgetBytes = 16384;  // one copy read and its flush per pump
    HttpStage stage(serverAddr, "127.0.0.0/8", options);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd up = requestOnStoppedLoop(stage, client.get(), server.get());
    const size_t total = 2 * 16384 + 5;
    const std::string head0 = "HTTP/1.1 200 OK\r\ncontent-length: ";
    const size_t bodyLen = total - head0.size() - 5 - 4;
    const std::string head = head0 + std::to_string(bodyLen) + "\r\n\r\n";
    CHECK_EQ(head.size() + bodyLen, total);
    const std::string full = head + pattern(bodyLen, 7);
    const std::string p1 = full.substr(0, 2 * 16384);
    const std::string rest = full.substr(2 * 16384);
    stage.core->runOnce(0);  // whatever was pending (the tick) goes before the response arrives
    CHECK(writeAll(up.get(), p1.data(), p1.size()));
    CHECK(deliveredToPeer(up.get()));
    // One batch on this thread: the upstream's edge reads and forwards 16384 bytes (the budget),
    // the ready queue the next 16384. Both reads were full: up_.readable stays true.
    stage.core->runOnce(0);
    CHECK(waitFor([&] {
      int n = 0;
      return ::ioctl(client.get(), FIONREAD, &n) == 0 && n == static_cast<int>(p1.size());
    }, 2000));
    // The client's next request (to another destination) and then the response's last 5 bytes:
    // one batch, the client's event first. Its pump reads the 5 bytes (readable was still true),
    // completes the response and pools the connection; then the upstream's edge for those same
    // bytes reaches the pool.
    const std::string toB = get("/b1", routeTo(b.address));
    CHECK(writeAll(client.get(), toB.data(), toB.size()));
    CHECK(deliveredToPeer(client.get()));
    CHECK(writeAll(up.get(), rest.data(), rest.size()));
    CHECK(deliveredToPeer(up.get()));
    stage.core->runOnce(0);
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 0u);
    CHECK_EQ(stage.core->httpPoolIdle(), 1u);
    char c;
    const ssize_t peek = ::recv(up.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    CHECK(peek < 0 && errno == EAGAIN);  // the proxy did not close it
    LoopRunner loop(*stage.core);
    const auto resps = readResponses(client.get(), 2);
    CHECK_EQ(resps.size(), 2u);
    if (resps.size() == 2) {
      CHECK(bodyOf(resps.at(0)) == full.substr(head.size()));
      CHECK(bodyOf(resps.at(1)) == "1:/b1");
    }
  });

  run("a request that cannot be retried checks its pooled connection before use: a server's close that lands after the batch was collected sends it on a new connection, not into the closed one", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectTo(stage.listenAddr);
    UniqueFd idle = firstExchange(stage, client.get(), server.get(), get("/1"));
    CHECK_EQ(stage.core->httpPoolIdle(), 1u);
    // A POST (not retried if its connection fails) waits in the proxy's client socket: the next
    // batch holds its event. The server closes the idle connection once that batch is collected,
    // so the pool hears nothing of it before the POST takes the connection.
    const std::string req = post("/p", "payload");
    CHECK(writeAll(client.get(), req.data(), req.size()));
    CHECK(deliveredToPeer(client.get()));
    bool closed = false;
    stage.core->loop().setBatchCollectedHookForTests([&] {
      if (closed) return;
      closed = true;
      ::shutdown(idle.get(), SHUT_WR);
      CHECK(finDelivered(idle.get()));
      idle.reset();
    });
    stage.core->runOnce(0);
    stage.core->loop().setBatchCollectedHookForTests(nullptr);
    CHECK(closed);
    LoopRunner loop(*stage.core);
    std::string seen;
    UniqueFd fresh = acceptAndAnswer(server.get(), "fresh", &seen);
    CHECK(seen == req);
    const auto resps = readResponses(client.get(), 1);
    if (!resps.empty() && bodyOf(resps.at(0)) != "fresh") std::fprintf(stderr, "  the client got: %s\n", resps.at(0).c_str());
    CHECK_EQ(resps.size(), 1u);
    if (!resps.empty()) CHECK(bodyOf(resps.at(0)) == "fresh");
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 1u);  // the check found it closed
  });
}

// ---- Framing (request smuggling, response desync): where splicegate and a conforming
// peer could disagree on where a message ends ----

// A client's view of a response stream: the interim 1xx heads (no content, RFC 9110 15.2) and
// then one final response (head plus Content-Length body); its length, or 0 while incomplete.
size_t finalResponseLength(const std::string& buf) {
  size_t at = 0;
  for (;;) {
    const size_t end = buf.find("\r\n\r\n", at);
    if (end == std::string::npos) return 0;
    if (buf.compare(at, 10, "HTTP/1.1 1") != 0) break;
    at = end + 4;
  }
  const size_t len = messageLength(buf.substr(at));
  return len == 0 ? 0 : at + len;
}

void framingTests() {
  run("a 1xx interim response has no content whatever its Content-Length or Transfer-Encoding say", [] {
    const char* interims[] = {"HTTP/1.1 100 Continue\r\n", "HTTP/1.1 103 Early Hints\r\n", "HTTP/1.1 150 X\r\n"};
    const char* framings[] = {"content-length: 40\r\n", "transfer-encoding: chunked\r\n"};
    for (const char* interim : interims) {
      for (const char* framing : framings) {
        for (size_t step : {size_t(1), size_t(4096)}) {
          ResponseParser r;
          r.start(false, false);
          const Bytes b = bytes(std::string(interim) + framing + "\r\n" +
                                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" +
                                "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged");
          size_t used = 0;
          const Progress p = feedResponse(r, b, step, &used);
          CHECK(p.complete);
          CHECK(!p.error);
          CHECK_EQ(r.status(), 200);
          CHECK_EQ(used, b.size() - 44);  // the final response is the 200 "ok"; the rest is not this one
        }
      }
    }
  });

  run("a response head with obs-fold or a bare LF, a version other than 1.x, a status under 100 is an upstream error", [] {
    const char* heads[] = {
        // RFC 9112 5.2: a proxy must reject obs-fold in a response (502) or unfold it; relayed
        // as is, a client that does neither takes " Content-Length: 2" for a header of its own.
        "HTTP/1.1 200 OK\r\nX: y\r\n Content-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nX: y\r\n\tz\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 103 Early Hints\r\nLink: a\r\n b\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        // A bare LF as the head's blank line (llhttp 8 takes "\r\n\n" even in strict mode).
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
        "HTTP/1.1 100 Continue\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
    };
    for (const char* h : heads) {
      for (size_t step : {size_t(1), size_t(4096)}) {
        ResponseParser r;
        r.start(false, false);
        size_t used = 0;
        const Progress p = feedResponse(r, bytes(h), step, &used);
        if (!p.error) std::fprintf(stderr, "  accepted (step %zu): %s\n", step, h);
        CHECK(p.error);
      }
    }
  });

  run("a chunked response whose trailer section ends with a bare LF is an upstream error", [] {
    for (const char* b : {"3\r\nabc\r\n0\r\n\nNEXT", "0\r\nT: x\r\n\nNEXT"}) {
      for (size_t step : {size_t(1), size_t(4096)}) {
        ResponseParser r;
        r.start(false, false);
        size_t used = 0;
        const Progress p = feedResponse(r, bytes(std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") + b), step, &used);
        if (!p.error) std::fprintf(stderr, "  accepted (step %zu): %s\n", step, b);
        CHECK(p.error);
      }
    }
  });

  run("Transfer-Encoding in an HTTP/1.0 response, or an empty one beside Content-Length: read to close, never pooled", [] {
    // RFC 9112 6.1 (faulty framing, close after it) and 6.3 (Transfer-Encoding overrides
    // Content-Length; without chunked last, the body ends at close).
    for (const char* h : {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 2\r\n\r\nok",
                          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: \r\n\r\nok"}) {
      ResponseParser r;
      r.start(false, false);
      const Bytes b = bytes(h);
      const Progress p = r.feed(b.data(), b.size());
      CHECK(!p.error);
      CHECK(!p.complete);
      CHECK(r.bodyRemaining() == kUntilClose);
      CHECK(!r.keepAlive());
      CHECK(r.finish().complete);
    }
  });

  run("a response head with obs-fold gets the client a 502, not the folded head", [] {
    Origin folded([](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      const std::string resp = "HTTP/1.1 200 OK\r\nX: y\r\n Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";
      writeAll(fd, resp.data(), resp.size());
      std::string rest;
      readToEnd(fd, rest, 3000);
    });
    HttpStage stage(folded.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    expectError(client.get(), exchange(client.get(), get("/a")), "502", "upstream_reset");
  });

  run("an upstream that was sent Connection: close (or an HTTP/1.0 request without keep-alive) is never pooled", [] {
    // The request's Connection goes up as the client wrote it: the server must close after its
    // response (RFC 9112 9.6), and need not say so. Pooled, that connection takes another
    // client's request, a POST that cannot be retried, just before the server's close.
    for (const char* first : {"GET /a HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n", "GET /a HTTP/1.0\r\nhost: t\r\n\r\n"}) {
      Origin server([](Origin& o, int fd, int index) {
        if (index > 0) return keepAliveServer()(o, fd, index);
        std::string buf;
        if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
        const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst";
        writeAll(fd, resp.data(), resp.size());
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // then closes, unread bytes and all
      });
      HttpStage stage(server.address);
      LoopRunner loop(*stage.core);
      UniqueFd a = connectTo(stage.listenAddr);
      std::string resp = exchange(a.get(), first);
      CHECK(bodyOf(resp) == "first");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      UniqueFd b = connectTo(stage.listenAddr);
      End e = End::kOpen;
      resp = exchange(b.get(), post("/b", "hello"), &e);
      if (resp.rfind("HTTP/1.1 200", 0) != 0) std::fprintf(stderr, "  the POST got: %s (%s)\n", resp.c_str(), endName(e));
      CHECK(resp.rfind("HTTP/1.1 200", 0) == 0);
      CHECK_EQ(stage.stat(Stat::upstream_cx_reuse), 0u);
    }
  });

  run("Expect: 100-continue: a 100 then the body keeps both connections; a final answer before the body ends the exchange, never pooled", [] {
    // index 0 answers 100, reads the body, answers 200 (keep-alive); index 1 answers 417 at the
    // head and reads nothing more (its connection must not be pooled: the body's bytes, if the
    // client sent them after all, would be the next request there).
    Origin server([](Origin& o, int fd, int) {
      std::string buf;
      for (;;) {
        if (readUntil(fd, buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }, 10000) != End::kOpen) return;
        const std::string head = buf.substr(0, buf.find("\r\n\r\n") + 4);
        buf.erase(0, head.size());
        o.record(head);
        if (head.find("/refused") != std::string::npos) {
          const std::string resp = "HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n";
          writeAll(fd, resp.data(), resp.size());
          std::string rest;
          readToEnd(fd, rest, 3000);
          return;
        }
        const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
        writeAll(fd, cont.data(), cont.size());
        if (readUntil(fd, buf, [](const std::string& b) { return b.size() >= 5; }, 10000) != End::kOpen) return;
        buf.erase(0, 5);
        const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        writeAll(fd, resp.data(), resp.size());
      }
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string head = "POST /accepted HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n";
    CHECK(writeAll(client.get(), head.data(), head.size()));
    std::string buf;
    CHECK(readUntil(client.get(), buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) == End::kOpen);
    CHECK(buf == "HTTP/1.1 100 Continue\r\n\r\n");
    buf.clear();
    CHECK(writeAll(client.get(), "hello", 5));
    CHECK(readUntil(client.get(), buf, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(bodyOf(buf) == "ok");
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 1; }));
    // The refused one: the client sends no body (as curl does after a final answer).
    const std::string refused = "POST /refused HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n";
    std::string got;
    CHECK(writeAll(client.get(), refused.data(), refused.size()));
    CHECK(readToEnd(client.get(), got) == End::kEof);  // the answer, then FIN: the body never came
    CHECK(got.rfind("HTTP/1.1 417 ", 0) == 0);
    CHECK(waitFor([&] { return stage.core->httpPoolIdle() == 0; }));
    CHECK_EQ(stage.stat(Stat::upstream_cx_reuse), 1u);
  });

  run("a 1xx with a Content-Length cannot hide a forged response for the client's next request (to another destination)", [] {
    // A hostile server's 103 claims the 40 bytes behind it as its body. A client (RFC 9110 15.2:
    // a 1xx ends at its head) reads those bytes as the final response, "ok"; the server then sends
    // a second response, which the client would take for its next request's, meant for `other`.
    Origin rogue([](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      const std::string inner = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
      const std::string first = "HTTP/1.1 103 Early Hints\r\ncontent-length: " + std::to_string(inner.size()) +
                                "\r\n\r\n" + inner;
      writeAll(fd, first.data(), first.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the client sends its next request
      const std::string forged = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";
      writeAll(fd, forged.data(), forged.size());
      std::string rest;
      readToEnd(fd, rest, 3000);
    });
    Origin other(keepAliveServer());
    HttpStage stage(rogue.address);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string a = get("/a");
    CHECK(writeAll(client.get(), a.data(), a.size()));
    std::string buf;
    CHECK(readUntil(client.get(), buf, [](const std::string& b) { return finalResponseLength(b) > 0; }) == End::kOpen);
    const size_t first = finalResponseLength(buf);
    CHECK(buf.compare(first - 6, 6, "\r\n\r\nok") == 0);  // the client's final response to /a: "ok"
    buf.erase(0, first);
    const std::string b = get("/b", routeTo(other.address));
    CHECK(writeAll(client.get(), b.data(), b.size()));
    const End e = readUntil(client.get(), buf, [](const std::string& x) { return messageLength(x) > 0; });
    if (buf.find("forged") != std::string::npos) std::fprintf(stderr, "  the client got the forged response: %s\n", buf.c_str());
    CHECK(e == End::kOpen);
    CHECK(bodyOf(buf.substr(0, messageLength(buf))) == "1:/b");
    CHECK_EQ(other.seen().size(), 1u);
  });
}

// ---- How streams end: abnormal ends reach the peer as resets, complete ones with FIN ----

void streamEndTests() {
  // A server that rejects an upload answers at the head and closes without reading the body; the
  // kernel resets such a close (unread bytes). Its answer is complete and in the session's socket,
  // ahead of the reset: the client must get it, not a 502 or a reset, whether the session next
  // writes body bytes upstream (and meets the reset there) or reads the answer first.
  for (const CoreOptions::RelayMode mode : {CoreOptions::RelayMode::kCopy, CoreOptions::RelayMode::kSplice}) {
    const std::string name = std::string("an answer before the request body's end, then the server's reset: the client gets the answer whole and a FIN (") +
                             (mode == CoreOptions::RelayMode::kCopy ? "copied" : "spliced") + " body)";
    run(name.c_str(), [mode] {
      SocketAddress serverAddr;
      UniqueFd server = listenOn(serverAddr);
      CoreOptions options;
      options.relayMode = mode;
      HttpStage stage(serverAddr, "127.0.0.0/8", options);
      UniqueFd client = connectClient(stage.listenAddr);
      const std::string first(20000, 'a');
      const std::string req = "POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n" + first;
      CHECK(writeAll(client.get(), req.data(), req.size()));
      UniqueFd up;
      {
        LoopRunner loop(*stage.core);
        up = acceptWithin(server.get());
        std::string seen;
        CHECK(readUntil(up.get(), seen, [&](const std::string& b) { return b.size() >= req.size(); }) == End::kOpen);
      }
      // The loop is stopped: more of the body, then the answer and the reset, all wait for one batch
      // (the client's bytes first, so the session writes upstream before it reads the answer).
      const std::string more(20000, 'b');
      CHECK(writeAll(client.get(), more.data(), more.size()));
      CHECK(deliveredToPeer(client.get()));
      const std::string resp = "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big!";
      CHECK(writeAll(up.get(), resp.data(), resp.size()));
      CHECK(deliveredToPeer(up.get()));
      resetOnClose(up.get());
      up.reset();
      LoopRunner loop(*stage.core);
      std::string got;
      const End e = readUntil(client.get(), got, [](const std::string& b) { return messageLength(b) > 0; });
      if (e != End::kOpen || got.rfind("HTTP/1.1 413 ", 0) != 0) std::fprintf(stderr, "  end %s, got: %s\n", endName(e), got.c_str());
      CHECK(e == End::kOpen);
      CHECK(got.rfind("HTTP/1.1 413 ", 0) == 0);
      CHECK(bodyOf(got) == "too big!");
      ::shutdown(client.get(), SHUT_WR);  // the client stops uploading; the session ends cleanly
      std::string rest;
      CHECK(readToEnd(client.get(), rest) == End::kEof);
      CHECK(rest.empty());
      CHECK_EQ(stage.stat(Stat::http_rq_upstream_error), 0u);
    });
  }
  // On an http listener with proxy_protocol, the header is what the original_dst listener reads:
  // one that has not arrived within proxy_protocol.timeout is reset (docs/CONFIG.md), never
  // answered in HTTP (a load balancer gets no 408 for a header it was sending) nor left to wait
  // for request_head_timeout.
  run("http listener with proxy_protocol: a PROXY header not complete within its timeout is reset, counted", [] {
    auto fake = std::make_unique<FixedDestinationOps>();
    SocketAddress unused;
    UniqueFd never = listenOn(unused);
    fake->target = unused;
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, std::move(fake), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "http-pp";
    lo.address = addr("127.0.0.1", 0);
    lo.http.enabled = true;
    lo.http.requestHeadTimeoutMs = 10000;
    lo.proxyProtocol.enabled = true;
    lo.proxyProtocol.required = true;
    lo.proxyProtocol.timeoutMs = 200;
    lo.proxyProtocol.trustedSources = {*parseCidr("127.0.0.0/8")};
    SocketAddress listenAddr;
    UniqueFd listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    for (const char* sent : {"", "PROXY TCP4 "}) {
      UniqueFd client = connectClient(listenAddr);
      CHECK(writeAll(client.get(), sent, std::strlen(sent)) || *sent == '\0');
      const uint64_t before = core->stats().get(Stat::proxy_protocol_timeout);
      const auto started = std::chrono::steady_clock::now();
      std::string got;
      End end = End::kTimeout;
      std::thread reader([&] { end = readToEnd(client.get(), got, 5000); });
      runUntil(*core, [&] { return core->stats().get(Stat::proxy_protocol_timeout) == before + 1; }, 3000);
      runUntil(*core, [&] { return core->activeConnections() == 0; }, 3000);
      reader.join();
      if (end != End::kReset) std::fprintf(stderr, "  sent '%s': end %s, got: %s\n", sent, endName(end), got.c_str());
      CHECK(end == End::kReset);
      CHECK(got.empty());
      CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(200));
      CHECK_EQ(core->stats().get(Stat::proxy_protocol_timeout), before + 1);
    }
    CHECK_EQ(core->stats().get(Stat::cx_close_protocol_timeout), 2u);
    CHECK_EQ(core->stats().get(Stat::http_rq_head_timeout), 0u);
  });
  // A client that resets while its request's upstream connect is in flight has abandoned it: on an
  // original_dst listener the connection ends there (Connection::onSideEvent); so must the
  // session, instead of sending the request (a DELETE here) to a server once the connect completes.
  run("a client reset while the upstream connect is in flight ends the session at once; the request never goes up", [] {
    // A server whose accept queue is full: the session's SYN is dropped and its connect stays in flight.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr, 0);
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 2; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), serverAddr.sockaddrPtr(), serverAddr.length());
      fillers.push_back(std::move(f));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    HttpStage stage(serverAddr);
    UniqueFd client = connectClient(stage.listenAddr);
    const std::string req = "DELETE /x HTTP/1.1\r\nhost: t\r\n\r\n";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::upstream_cx_total) == 1; }));
    for (int i = 0; i < 5; ++i) stage.core->runOnce(10);
    CHECK(stage.core->activeConnections() == 1);  // still connecting
    resetOnClose(client.get());
    client.reset();
    const bool ended = runUntil(*stage.core, [&] { return stage.core->activeConnections() == 0; }, 1000);
    if (!ended) std::fprintf(stderr, "  the session outlived its client's reset\n");
    CHECK(ended);
    CHECK_EQ(stage.stat(Stat::cx_close_downstream_error), 1u);
    // The server's queue frees up: nothing from the session reaches it.
    fillers.clear();
    std::vector<UniqueFd> accepted;
    for (int i = 0; i < 3; ++i) {
      pollfd p{server.get(), POLLIN, 0};
      if (::poll(&p, 1, 300) != 1) break;
      accepted.emplace_back(::accept(server.get(), nullptr, nullptr));
    }
    for (int i = 0; i < 100; ++i) stage.core->runOnce(10);
    for (auto& a : accepted) {
      char b[256];
      const ssize_t n = ::recv(a.get(), b, sizeof b, MSG_DONTWAIT);
      CHECK(n <= 0);
    }
  });
  // A client's half-close (shutdown(SHUT_WR)) says "no more requests", not "stop answering": what
  // it sent before its FIN is answered, each response whole, and the connection then ends with FIN.
  run("a client that half-closes after its request (or two pipelined) gets every response whole, then FIN", [] {
    Origin origin(keepAliveServer());
    HttpStage stage(origin.address);
    LoopRunner loop(*stage.core);
    for (int requests : {1, 2, 3}) {
      UniqueFd client = connectClient(stage.listenAddr);
      std::string req;
      for (int i = 0; i < requests; ++i) req += get("/h" + std::to_string(i));
      CHECK(writeAll(client.get(), req.data(), req.size()));
      ::shutdown(client.get(), SHUT_WR);
      std::string got;
      const End e = readToEnd(client.get(), got);
      int responses = 0;
      for (size_t at = 0; (at = got.find("HTTP/1.1 200", at)) != std::string::npos; ++at) ++responses;
      if (e != End::kEof || responses != requests) {
        std::fprintf(stderr, "  %d requests: end %s, %d responses: %s\n", requests, endName(e), responses, got.c_str());
      }
      CHECK(e == End::kEof);
      CHECK_EQ(responses, requests);
      CHECK(got.find(":/h" + std::to_string(requests - 1)) != std::string::npos);
    }
  });

  // A CONNECT tunnel is a relayed stream: each direction's FIN is passed on once its bytes are
  // delivered, and the tunnel ends with FIN when both directions have.
  run("a CONNECT tunnel passes the client's half-close on; the server's answer after it and its FIN reach the client", [] {
    Origin server([](Origin&, int fd, int) {
      std::string buf;
      if (readToEnd(fd, buf) != End::kEof) return;  // everything up to the client's FIN
      const std::string reply = "got " + std::to_string(buf.size());
      writeAll(fd, reply.data(), reply.size());
    });
    HttpStage stage(SocketAddress{});
    LoopRunner loop(*stage.core);
    UniqueFd client = connectClient(stage.listenAddr);
    const std::string req = "CONNECT " + server.address.toString() + " HTTP/1.1\r\n\r\n" + std::string(100000, 'c');
    CHECK(writeAll(client.get(), req.data(), req.size()));
    ::shutdown(client.get(), SHUT_WR);
    std::string got;
    const End e = readToEnd(client.get(), got);
    if (e != End::kEof) std::fprintf(stderr, "  end %s: %s\n", endName(e), got.c_str());
    CHECK(e == End::kEof);
    CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(bodyOf(got) == "got 100000");
    CHECK(waitFor([&] { return stage.stat(Stat::cx_close_completed) == 1; }));
  });
  // A response the upstream ends early with a clean FIN is cut all the same: the client, which
  // has its head, must get a reset (a FIN would make the cut look complete to anyone reading to
  // the close); with nothing of the response sent yet, a 502. Copied and spliced bodies, chunked.
  // (Part of a head is passed on as it comes, so a head cut short is a reset too.)
  run("an upstream FIN before the response's end: a reset for the client once the head went out, else 502", [] {
    struct Case {
      const char* name;
      std::string sent;  // what the server sends before its FIN
      bool headOut;      // the client has part of a response
      CoreOptions::RelayMode mode;
    };
    const std::string big(300000, 'x');
    const std::vector<Case> cases = {
        {"no response", "", false, CoreOptions::RelayMode::kAuto},
        {"short copied body", "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..", true, CoreOptions::RelayMode::kCopy},
        {"long spliced body", "HTTP/1.1 200 OK\r\ncontent-length: 400000\r\n\r\n" + big, true, CoreOptions::RelayMode::kSplice},
        {"chunked, no last chunk", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", true, CoreOptions::RelayMode::kAuto},
        {"chunked, cut in a chunk", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nhello", true, CoreOptions::RelayMode::kAuto},
    };
    for (const Case& k : cases) {
      std::atomic<bool> seen{false};
      Origin server([&k, &seen](Origin&, int fd, int) {
        std::string buf;
        if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
        writeAll(fd, k.sent.data(), k.sent.size());
        waitFor([&seen] { return seen.load(); }, 2000);  // the client holds what went out first
        ::shutdown(fd, SHUT_WR);
        std::string rest;
        readToEnd(fd, rest, 2000);
      });
      CoreOptions options;
      options.relayMode = k.mode;
      HttpStage stage(server.address, "127.0.0.0/8", options);
      LoopRunner loop(*stage.core);
      UniqueFd client = connectClient(stage.listenAddr);
      const std::string req = get("/cut");
      CHECK(writeAll(client.get(), req.data(), req.size()));
      std::string got;
      if (k.headOut) {
        CHECK(readUntil(client.get(), got, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) == End::kOpen);
      }
      seen = true;
      const End e = readToEnd(client.get(), got);
      const End want = k.headOut ? End::kReset : End::kEof;
      if (e != want) std::fprintf(stderr, "  %s: end %s after %zu bytes\n", k.name, endName(e), got.size());
      CHECK(e == want);
      if (!k.headOut) CHECK(got.rfind("HTTP/1.1 502 ", 0) == 0);
      if (k.headOut) CHECK(got.rfind("HTTP/1.1 200 ", 0) == 0);
      CHECK_EQ(stage.stat(Stat::http_rq_upstream_error), 1u);
    }
  });
  // A connection that has sent nothing since its accept when the drain comes has no request to
  // cut: idle for the grace, it ends with FIN like an idle keep-alive one, not with the reset
  // drain_timeout would give it (or a 408 for a request it never began).
  run("drain: a connection that never sent a request ends with FIN once idle for the grace, not at drain_timeout", [] {
    Origin server(keepAliveServer());
    HttpListenerOptions http;
    http.requestHeadTimeoutMs = 60000;
    HttpStage stage(server.address, "127.0.0.0/8", CoreOptions{}, http);
    UniqueFd fresh = connectClient(stage.listenAddr);
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::downstream_cx_active) == 1; }));
    stage.core->stopAccepting();
    LoopRunner loop(*stage.core);
    std::string rest;
    const End e = readToEnd(fresh.get(), rest, 5000);
    if (e != End::kEof) std::fprintf(stderr, "  fresh idle connection: %s\n", endName(e));
    CHECK(e == End::kEof);
    CHECK(rest.empty());
    // close() sends the FIN (the fd's close) before it counts the close: the client can see its EOF
    // first, so the count is waited for, not read at once (it failed so under TSan).
    CHECK(waitFor([&] { return stage.stat(Stat::cx_close_completed) == 1; }));
  });
  // An idle keep-alive connection ends with FIN at request_head_timeout. A next request already in
  // its socket when the timeout is seen (the tick ahead of the client's event in one batch) must
  // not be closed over: close() with unread bytes resets, and the request would be lost with a
  // reset. It is read and answered instead.
  run("request_head_timeout on an idle keep-alive connection whose next request is already in the socket: answered, not reset", [] {
    Origin server(keepAliveServer());
    HttpListenerOptions http;
    http.requestHeadTimeoutMs = 100;
    HttpStage stage(server.address, "127.0.0.0/8", CoreOptions{}, http);
    UniqueFd client = connectClient(stage.listenAddr);
    {
      LoopRunner loop(*stage.core);
      CHECK(exchange(client.get(), get("/one")).find(":/one") != std::string::npos);
    }
    // The loop is stopped past the timeout; the next request arrives before the loop sees either.
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    const std::string req = get("/two");
    CHECK(writeAll(client.get(), req.data(), req.size()));
    CHECK(deliveredToPeer(client.get()));
    LoopRunner loop(*stage.core);
    std::string got;
    const End e = readUntil(client.get(), got, [](const std::string& b) { return messageLength(b) > 0; });
    if (e != End::kOpen) std::fprintf(stderr, "  end %s: %s\n", endName(e), got.c_str());
    CHECK(e == End::kOpen);
    CHECK(got.find(":/two") != std::string::npos);
  });
  // The other order: the server half-closes first, the client sends its rest and its FIN last.
  // The tunnel's last FIN (to the server) is sent by the session's close: it must be a FIN after
  // every byte, not a reset that says the client's stream was cut (and may drop its last bytes).
  run("a CONNECT tunnel whose server half-closes first: the client's rest and its FIN reach the server, no reset", [] {
    std::atomic<int> serverEnd{-1};
    std::atomic<size_t> serverGot{0};
    Origin server([&](Origin&, int fd, int) {
      writeAll(fd, "banner", 6);
      ::shutdown(fd, SHUT_WR);
      std::string buf;
      const End e = readToEnd(fd, buf);
      serverGot = buf.size();
      serverEnd = static_cast<int>(e);
    });
    HttpStage stage(SocketAddress{});
    LoopRunner loop(*stage.core);
    UniqueFd client = connectClient(stage.listenAddr);
    const std::string req = "CONNECT " + server.address.toString() + " HTTP/1.1\r\n\r\n";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    std::string got;
    CHECK(readToEnd(client.get(), got) == End::kEof);  // the 200, the banner, the server's FIN
    CHECK(bodyOf(got) == "banner");
    const std::string rest(1 << 20, 'r');
    CHECK(writeAll(client.get(), rest.data(), rest.size()));
    ::shutdown(client.get(), SHUT_WR);
    CHECK(waitFor([&] { return serverEnd.load() >= 0; }, 10000));
    if (serverEnd.load() != static_cast<int>(End::kEof)) {
      std::fprintf(stderr, "  the server's stream ended with %s after %zu of %zu bytes\n",
                   endName(static_cast<End>(serverEnd.load())), serverGot.load(), rest.size());
    }
    CHECK(serverEnd.load() == static_cast<int>(End::kEof));
    CHECK_EQ(serverGot.load(), rest.size());
    CHECK(waitFor([&] { return stage.stat(Stat::cx_close_completed) == 1; }));
  });
  // A server may answer before it has read the whole request body while the session still holds
  // bytes of that body for it (the client sent everything; the server reads slowly). The exchange
  // ends there (the response is complete) and those bytes are dropped: the server's request stream
  // was cut, so it must end with a reset, never a FIN that makes the cut body look sent whole.
  run("a response before the server read the whole body, the rest still held by the session: the server gets a reset, not a FIN", [] {
    SocketAddress serverAddr;
    UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int small = 4096;
    ::setsockopt(server.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    auto any = addr("127.0.0.1", 0);
    CHECK(::bind(server.get(), any.sockaddrPtr(), any.length()) == 0);
    CHECK(::listen(server.get(), 8) == 0);
    socklen_t len = SocketAddress::capacity();
    ::getsockname(server.get(), serverAddr.sockaddrPtr(), &len);
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kCopy;
    HttpStage stage(serverAddr, "127.0.0.0/8", options);
    LoopRunner loop(*stage.core);
    UniqueFd client = connectClient(stage.listenAddr);
    const std::string body(200000, 'q');
    const std::string req = post("/slow", body);
    const size_t headLength = req.size() - body.size();
    CHECK(writeAll(client.get(), req.data(), headLength));
    UniqueFd up = acceptWithin(server.get());
    std::string head;
    CHECK(readUntil(up.get(), head, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) == End::kOpen);
    // The session's upstream socket is in this process: a small send buffer there (no autotuning)
    // keeps most of the body in the session, as a slow server's full window does.
    SocketAddress upLocal;
    len = SocketAddress::capacity();
    ::getpeername(up.get(), upLocal.sockaddrPtr(), &len);
    int sessionUp = -1;
    for (int fd = 3; fd < 1024 && sessionUp < 0; ++fd) {
      SocketAddress a;
      socklen_t l = SocketAddress::capacity();
      if (fd != up.get() && ::getsockname(fd, a.sockaddrPtr(), &l) == 0 && a == upLocal) sessionUp = fd;
    }
    CHECK(sessionUp >= 0);
    ::setsockopt(sessionUp, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    CHECK(writeAll(client.get(), req.data() + headLength, body.size()));
    // Everything the client sent has reached the session, which read it all (it holds up to
    // 256 KiB for a server that is not reading): the whole request is in.
    CHECK(waitFor([&] { return stage.stat(Stat::bytes_received) >= req.size(); }));
    const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(up.get(), resp.data(), resp.size()));
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(bodyOf(got) == "ok");
    std::string rest;
    const End e = readToEnd(up.get(), rest, 3000);
    const size_t bodyGot = head.size() - (head.find("\r\n\r\n") + 4) + rest.size();
    if (e != End::kReset) std::fprintf(stderr, "  the server's stream ended with %s after %zu of %zu body bytes\n", endName(e), bodyGot, body.size());
    CHECK(e == End::kReset);
    CHECK(bodyGot < body.size());
  });
  // A client that half-closes behind the start of a next request it never finishes has abandoned
  // that request, but the response before it is complete and may still be on its way (the client
  // reads slowly): a reset now would discard its unsent tail. It ends with FIN after it.
  run("a half-close behind an unfinished pipelined head: the response before it arrives whole, then FIN", [] {
    const std::string big = pattern(4 << 20, 9);
    Origin server([&big](Origin&, int fd, int) {
      std::string buf;
      if (readUntil(fd, buf, [](const std::string& b) { return messageLength(b) > 0; }) != End::kOpen) return;
      const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(big.size()) + "\r\n\r\n" + big;
      writeAll(fd, resp.data(), resp.size());
      std::string rest;
      readToEnd(fd, rest, 5000);
    });
    HttpStage stage(server.address);
    LoopRunner loop(*stage.core);
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int small = 8192;
    ::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    bindAsClient(client.get());
    CHECK(::connect(client.get(), stage.listenAddr.sockaddrPtr(), stage.listenAddr.length()) == 0);
    const std::string req = get("/big") + "GET /next HT";
    CHECK(writeAll(client.get(), req.data(), req.size()));
    ::shutdown(client.get(), SHUT_WR);
    // The client reads slowly: the response's last bytes are still queued for it when the session
    // has passed them all on and turns to the unfinished head.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::string got;
    const End e = readToEnd(client.get(), got);
    if (e != End::kEof) std::fprintf(stderr, "  end %s after %zu bytes\n", endName(e), got.size());
    CHECK(e == End::kEof);
    CHECK(bodyOf(got) == big);
  });

  // A write of the request's end met the server's reset (it answered whole, then reset): the
  // answer goes to the client, but the connection is dead and must not go to the pool, where a
  // next request would be sent into it (and need a retry, or fail if it could not be retried).
  run("a request whose last bytes met the server's reset after its whole answer: that connection is never pooled", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    HttpStage stage(serverAddr);
    UniqueFd client = connectClient(stage.listenAddr);
    const std::string head = "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n";
    CHECK(writeAll(client.get(), (head + "12345").data(), head.size() + 5));
    UniqueFd up;
    {
      LoopRunner loop(*stage.core);
      up = acceptWithin(server.get());
      std::string seen;
      CHECK(readUntil(up.get(), seen, [&](const std::string& b) { return b.size() >= head.size() + 5; }) == End::kOpen);
    }
    // The loop is stopped: the body's end (and a next request behind it), then the server's whole
    // answer and its reset, all wait for one batch, the client's bytes first.
    const std::string rest = "67890" + get("/next");
    CHECK(writeAll(client.get(), rest.data(), rest.size()));
    CHECK(deliveredToPeer(client.get()));
    const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(up.get(), resp.data(), resp.size()));
    CHECK(deliveredToPeer(up.get()));
    resetOnClose(up.get());
    up.reset();
    LoopRunner loop(*stage.core);
    std::string got;
    CHECK(readUntil(client.get(), got, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(bodyOf(got) == "ok");
    // The next request goes on a new connection, never into the reset one.
    UniqueFd second = acceptAndAnswer(server.get(), "second");
    std::string got2;
    CHECK(readUntil(client.get(), got2, [](const std::string& b) { return messageLength(b) > 0; }) == End::kOpen);
    CHECK(bodyOf(got2) == "second");
    // It never entered the pool: nothing there was found dead and closed (the pool's own checks
    // caught it here only because its reset's event was still pending in the batch).
    CHECK_EQ(stage.stat(Stat::http_pool_discarded), 0u);
    CHECK_EQ(stage.stat(Stat::upstream_cx_reuse), 0u);
    CHECK_EQ(stage.stat(Stat::upstream_rq_retry), 0u);
  });
}

// ---- Review: the new head checks hold whatever the read boundaries ----

// Feeds b to a fresh ResponseParser in three reads split at i and j (i <= j): the outcome must
// not depend on where the reads end (a head split at a CR/LF, interim heads and the final one in
// one read or in several, a chunked body's trailer CRLF split off).
Progress feedSplit(ResponseParser& r, const Bytes& b, size_t i, size_t j, size_t* used) {
  r.start(false, false);
  *used = 0;
  Progress last;
  const size_t cuts[] = {i, j, b.size()};
  size_t at = 0;
  for (size_t cut : cuts) {
    while (at < cut) {
      last = r.feed(b.data() + at, cut - at);
      *used += last.consumed;
      at += last.consumed;
      if (last.complete || last.error) return last;
      if (last.consumed == 0) break;
    }
  }
  return last;
}

// Response s fed to a fresh parser in reads cut at i and j, for every pair i <= j; check(i, j,
// parser, last progress, bytes used) judges each.
template <typename Check>
void forEverySplit(const std::string& s, Check check) {
  const Bytes b = bytes(s);
  for (size_t i = 0; i <= b.size(); ++i) {
    for (size_t j = i; j <= b.size(); ++j) {
      ResponseParser r;
      size_t used = 0;
      const Progress p = feedSplit(r, b, i, j, &used);
      check(i, j, r, p, used);
    }
  }
}

// The request side: the head into a growing buffer cut at i, then the body fed in reads cut at j.
bool requestSplitOk(const Bytes& req, size_t i, size_t j, size_t* bodyUsed, bool* complete) {
  RequestParser p(kHeader, kMaxHead);
  Bytes grown(req.begin(), req.begin() + static_cast<long>(std::min(i, req.size())));
  ParseStatus st = grown.empty() ? ParseStatus::kNeedMore : p.parseHead(grown.data(), grown.size());
  if (st == ParseStatus::kNeedMore) {
    grown = req;
    st = p.parseHead(grown.data(), grown.size());
  }
  if (st != ParseStatus::kDone) {
    std::fprintf(stderr, "  head refused: %s\n", p.errorReason());
    return false;
  }
  size_t at = p.head().length;
  *bodyUsed = 0;
  *complete = false;
  const size_t cuts[] = {std::max(at, j), req.size()};
  for (size_t cut : cuts) {
    while (at < cut) {
      const Progress pr = p.body(req.data() + at, cut - at);
      if (pr.error) {
        std::fprintf(stderr, "  body refused: %s\n", p.errorReason());
        return false;
      }
      at += pr.consumed;
      *bodyUsed += pr.consumed;
      if (pr.complete) {
        *complete = true;
        return true;
      }
      if (pr.consumed == 0) break;
    }
  }
  return true;
}

void readBoundaryTests() {
  run("responses split at every pair of read boundaries: legitimate ones complete at their last byte", [] {
    const std::vector<std::string> good = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding-Extension-Long-Name: x\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    };
    for (const std::string& s : good) {
      forEverySplit(s, [&](size_t i, size_t j, const ResponseParser& r, const Progress& p, size_t used) {
        if (!p.complete || used != s.size()) {
          std::fprintf(stderr, "  %s split at %zu,%zu: complete %d error %d used %zu (%s)\n", s.c_str(), i, j, p.complete,
                       p.error, used, r.errorReason());
        }
        CHECK(p.complete);
        CHECK_EQ(used, s.size());
      });
    }
  });

  run("responses split at every pair of read boundaries: bare LF, obs-fold and a bare LF ending the trailers are refused", [] {
    const std::vector<std::string> bad = {
        "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 100 Continue\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n",
    };
    for (const std::string& s : bad) {
      forEverySplit(s, [&](size_t i, size_t j, const ResponseParser&, const Progress& p, size_t) {
        if (!p.error) std::fprintf(stderr, "  %s split at %zu,%zu: not refused\n", s.c_str(), i, j);
        CHECK(p.error);
      });
    }
  });

  run("requests split at every pair of read boundaries: chunked ones (any case, trailing space, trailers) complete at their last byte", [] {
    const std::vector<std::string> good = {
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:   CHUNKED\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding-Not-Really: gzip\r\nContent-Length: 3\r\n\r\nabc",
    };
    for (const std::string& s : good) {
      const Bytes b = bytes(s);
      for (size_t i = 1; i <= b.size(); ++i) {
        for (size_t j = 0; j <= b.size(); ++j) {
          size_t used = 0;
          bool complete = false;
          const bool ok = requestSplitOk(b, i, j, &used, &complete);
          if (!ok || !complete) std::fprintf(stderr, "  %s split at %zu,%zu: ok %d complete %d\n", s.c_str(), i, j, ok, complete);
          CHECK(ok);
          CHECK(complete);
        }
      }
    }
  });
}

}  // namespace


// ---- In a network namespace of this thread's own: real routes, the kernel's own answers ----

// Runs body in a new network namespace of this thread (lo up, then `setup`, shell commands run by
// a child that inherits it), then returns the thread to the tests' namespace. Without the
// privilege to make one (not root) the test fails: it never skips quietly.
void inPrivateNetns(const std::string& setup, const std::function<void()>& body) {
  UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  CHECK(home);
  if (::unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "  unshare(CLONE_NEWNET): %s (this test needs root)\n", std::strerror(errno));
    CHECK(false);
  }
  struct Back {
    int fd;
    ~Back() {
      if (::setns(fd, CLONE_NEWNET) != 0) std::abort();  // every later test would run in the wrong place
    }
  } back{home.get()};
  const std::string command = "ip link set lo up && " + setup;
  CHECK(std::system(command.c_str()) == 0);
  body();
}

UniqueFd connectFrom(const SocketAddress& to) {
  UniqueFd fd(::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(::connect(fd.get(), to.sockaddrPtr(), to.length()) == 0);
  return fd;
}

void netnsTests() {
  run("a routing header naming a wildcard listener through an AnyIP address of this host is a loop (508)", [] {
    // ip route add local 2001:db8:7::/64 dev lo: every address in it is this host's, so a
    // connect to [2001:db8:7::5]:P reaches a listener on [::]:P, though the kernel picks ::1 as
    // the source for it (no interface has the address). Likewise an IPv4 AnyIP range with a
    // preferred source of its own. Relayed, each would be a request into splicegate itself.
    inPrivateNetns("ip -6 route add local 2001:db8:7::/64 dev lo && "
                   "ip route add local 192.0.2.0/24 dev lo src 127.0.0.1", [] {
      KernelOriginalDstOps probe;
      CHECK(probe.isLocalIp(addr("2001:db8:7::5", 0)) == LocalIp::kYes);
      CHECK(probe.isLocalIp(addr("192.0.2.5", 0)) == LocalIp::kYes);
      CHECK(probe.isLocalIp(addr("2001:db8:8::5", 0)) != LocalIp::kYes);  // no route at all here
      CHECK(probe.isLocalIp(addr("198.51.100.5", 0)) != LocalIp::kYes);
      SysError err;
      auto core = WorkerCore::create(CoreOptions{}, std::make_unique<KernelOriginalDstOps>(), err);
      CHECK(core);
      std::vector<UniqueFd> sockets;
      std::vector<SocketAddress> bound;
      for (const char* any : {"::", "0.0.0.0"}) {
        ListenerOptions lo;
        lo.name = std::string("http-") + (any[0] == ':' ? "v6" : "v4");
        lo.address = addr(any, 0);
        lo.http.enabled = true;
        lo.http.trustedSources = {*parseCidr("::/0"), *parseCidr("0.0.0.0/0")};
        SocketAddress at;
        sockets.push_back(openListenSocket(lo, &at, err));
        CHECK(sockets.back());
        CHECK(!core->attachListener(lo, sockets.back().get(), nullptr));
        bound.push_back(at);
      }
      LoopRunner loop(*core);
      const std::string p6 = std::to_string(bound[0].port());
      const std::string p4 = std::to_string(bound[1].port());
      UniqueFd c6 = connectFrom(addr("::1", bound[0].port()));
      expectError(c6.get(), exchange(c6.get(), get("/", "x-envoy-original-dst-host: [2001:db8:7::5]:" + p6 + "\r\n")),
                  "508", "loop_rejected");
      UniqueFd c4 = connectFrom(addr("127.0.0.1", bound[1].port()));
      expectError(c4.get(), exchange(c4.get(), get("/", "x-envoy-original-dst-host: 192.0.2.5:" + p4 + "\r\n")),
                  "508", "loop_rejected");
      CHECK_EQ(core->stats().get(Stat::loop_rejected), 2u);
      CHECK_EQ(core->stats().get(Stat::upstream_cx_total), 0u);
    });
  });
}

int main() {
  readBoundaryTests();
  parserTests();
  responseTests();
  bodyCountingTests();
  addressTests();
  corpusTests();
  sessionTests();
  bodyTests();
  sharedPoolTests();
  queuedBehindResponseTests();
  poolTests();
  edgeCaseTests();
  framingTests();
  streamEndTests();
  netnsTests();
  return splicegate::testing::finish();
}
