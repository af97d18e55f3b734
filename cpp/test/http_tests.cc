// Unit tests for the HTTP listener's parsing (cpp/core/http_head.h, http_address.h): request heads
// fed whole and byte by byte, the routing header found and stripped, every smuggling vector
// refused, the head size cap, body and response framing (Content-Length, chunked, until close,
// HEAD/204/304, 1xx, 101), the IP:PORT parser, and the fuzz seed corpus, whose file names say
// what each seed must parse to.

#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../core/http_address.h"
#include "../core/http_head.h"
#include "test_harness.h"

using namespace splicegate;
using namespace splicegate::http;
using splicegate::testing::run;

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

  run("an invalid chunk size is a framing error", [] {
    const char* bodies[] = {"zz\r\nhello\r\n0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "fffffffffffffffffff\r\n", "-5\r\n"};
    for (const char* b : bodies) {
      const Bytes req = bytes(std::string("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") + b);
      RequestParser p(kHeader, kMaxHead);
      CHECK(parseWhole(p, req) == ParseStatus::kDone);
      const Progress pr = p.body(req.data() + p.head().length, req.size() - p.head().length);
      CHECK(pr.error);
      CHECK(p.error() == HeadError::kMalformed);
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
      r.start(false);
      const Bytes cl = bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1");
      size_t used = 0;
      Progress p = feedResponse(r, cl, step, &used);
      CHECK(p.complete);
      CHECK_EQ(used, cl.size() - 8);
      CHECK_EQ(r.status(), 200);
      CHECK(r.keepAlive());

      r.start(false);
      const Bytes ch = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
      p = feedResponse(r, ch, step, &used);
      CHECK(p.complete);
      CHECK_EQ(used, ch.size());

      r.start(false);
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
    r.start(true);
    const Bytes head = bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    size_t used = 0;
    CHECK(feedResponse(r, head, 4096, &used).complete);
    CHECK_EQ(used, head.size());
    for (const char* s : {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"}) {
      for (size_t step : {size_t(1), size_t(4096)}) {
        r.start(false);
        const Bytes b = bytes(s);
        CHECK(feedResponse(r, b, step, &used).complete);
        CHECK_EQ(used, b.size());
        CHECK(r.keepAlive());
      }
    }
  });

  run("interim 1xx responses pass through to the final response; 101 is an upgrade", [] {
    ResponseParser r;
    r.start(false);
    const Bytes b = bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    size_t used = 0;
    CHECK(feedResponse(r, b, 3, &used).complete);
    CHECK_EQ(used, b.size());
    CHECK_EQ(r.status(), 201);
    CHECK(!r.upgraded());
    r.start(false);
    const Bytes u = bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
    CHECK(feedResponse(r, u, 4096, &used).complete);
    CHECK_EQ(used, u.size() - 4);
    CHECK(r.upgraded());
  });

  run("a malformed or cut-short response is an error", [] {
    ResponseParser r;
    r.start(false);
    size_t used = 0;
    CHECK(feedResponse(r, bytes("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 4096, &used).error);
    r.start(false);
    CHECK(feedResponse(r, bytes("SSH-2.0-OpenSSH\r\n"), 4096, &used).error);
    r.start(false);
    CHECK(!feedResponse(r, bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), 4096, &used).complete);
    CHECK(r.finish().error);
    r.start(false);
    CHECK(r.finish().error);  // nothing at all
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
                             " 10.1.2.3:80", "10.1.2.3:+80", "[]:80", "10.1.2.3:80, 10.1.2.4:80"};
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

}  // namespace

int main() {
  parserTests();
  responseTests();
  addressTests();
  corpusTests();
  return splicegate::testing::finish();
}
