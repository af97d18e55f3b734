// Unit tests for the PROXY protocol parser and writer (cpp/core/proxy_protocol.h): every valid
// form, fed whole and byte by byte; one test per malformed class, including how early it is
// caught; exact writer output; parse(write(x)) == x; and the fuzz seed corpus, whose file names
// say what each seed must parse to.

#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../core/proxy_protocol.h"
#include "test_harness.h"

using namespace splicegate;
using namespace splicegate::proxy_protocol;
using splicegate::testing::run;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const Bytes kV2Sig = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// A v2 header: signature, ver/cmd, family, big-endian length of `rest`, then `rest`.
Bytes v2(uint8_t verCmd, uint8_t fam, const Bytes& rest) {
  Bytes out = kV2Sig;
  out.push_back(verCmd);
  out.push_back(fam);
  out.push_back(static_cast<uint8_t>(rest.size() >> 8));
  out.push_back(static_cast<uint8_t>(rest.size() & 0xFF));
  return concat(out, rest);
}

const Bytes kInet4Block = {192, 0, 2, 1, 198, 51, 100, 7, 0xDB, 0xC4, 0x01, 0xBB};  // :56260 -> :443

Bytes inet6Block() {
  Bytes b(36, 0);
  b[0] = 0x20; b[1] = 0x01; b[2] = 0x0d; b[3] = 0xb8; b[15] = 0x01;  // 2001:db8::1
  b[31] = 0x01;                                                        // ::1
  b[32] = 0x00; b[33] = 0x50;                                          // 80
  b[34] = 0xFF; b[35] = 0xFF;                                          // 65535
  return b;
}

Bytes tlv(uint8_t type, const Bytes& value) {
  Bytes out = {type, static_cast<uint8_t>(value.size() >> 8), static_cast<uint8_t>(value.size() & 0xFF)};
  return concat(out, value);
}

ParseResult parseAll(const Bytes& b) { return parse(b.data(), b.size()); }

// Parses exactly the first n bytes from a buffer of exactly n bytes, so a read past the end is a
// heap overflow the sanitizers would see, not a read of the rest of the vector.
ParseResult parsePrefix(const Bytes& b, size_t n) {
  Bytes copy(b.begin(), b.begin() + static_cast<long>(n));
  return parse(copy.data(), copy.size());
}

bool sameResult(const ParseResult& a, const ParseResult& b) {
  if (a.status != b.status) return false;
  if (a.status == ParseStatus::need_more) return a.want == b.want;
  if (a.status == ParseStatus::error) return a.error == b.error;
  return a.header.version == b.header.version && a.header.command == b.header.command &&
         a.header.family == b.header.family && a.header.length == b.header.length &&
         a.header.source == b.header.source && a.header.destination == b.header.destination;
}

// Feeds `b` one byte more at a time. Returns the result of the first prefix that is not
// need_more (and checks every longer prefix answers the same), or the last need_more. Also checks
// each need_more's `want` points past the prefix and never past where a decision came.
ParseResult feedByteByByte(const Bytes& b, size_t* decidedAt) {
  *decidedAt = 0;
  ParseResult first;
  for (size_t n = 0; n <= b.size(); ++n) {
    const ParseResult r = parsePrefix(b, n);
    if (*decidedAt == 0 && r.status == ParseStatus::need_more) {
      CHECK(r.want > n);
      first = r;
      continue;
    }
    if (*decidedAt == 0) {
      *decidedAt = n;
      first = r;
      continue;
    }
    CHECK(sameResult(r, first));
  }
  return first;
}

// The prefix at which `b` first fails, and with which reason.
void checkFailsAt(const Bytes& b, ParseError expected, size_t expectedAt) {
  size_t at = 0;
  const ParseResult r = feedByteByByte(b, &at);
  if (r.status != ParseStatus::error || r.error != expected || at != expectedAt) {
    std::fprintf(stderr, "  got status %d error %s at %zu; expected %s at %zu\n", static_cast<int>(r.status),
                 r.status == ParseStatus::error ? parseErrorName(r.error) : "-", at, parseErrorName(expected),
                 expectedAt);
  }
  CHECK(r.status == ParseStatus::error);
  CHECK(r.error == expected);
  CHECK_EQ(at, expectedAt);
}

// Fails with `expected` once the whole of `b` is in (where exactly is not the point of the test).
void checkFails(const Bytes& b, ParseError expected) {
  const ParseResult r = parseAll(b);
  if (r.status != ParseStatus::error || r.error != expected) {
    std::fprintf(stderr, "  %s: got status %d error %s; expected %s\n", std::string(b.begin(), b.end()).c_str(),
                 static_cast<int>(r.status), r.status == ParseStatus::error ? parseErrorName(r.error) : "-",
                 parseErrorName(expected));
  }
  CHECK(r.status == ParseStatus::error);
  CHECK(r.error == expected);
}

// A valid header: done exactly when its last byte arrives, whether fed whole, byte by byte, or
// followed by stream bytes (which it leaves alone).
Header checkValid(const Bytes& header) {
  size_t at = 0;
  const ParseResult r = feedByteByByte(header, &at);
  CHECK(r.status == ParseStatus::done);
  CHECK_EQ(at, header.size());
  CHECK_EQ(r.header.length, header.size());
  const ParseResult withData = parseAll(concat(header, bytes("GET / HTTP/1.1\r\n\r\n")));
  CHECK(sameResult(withData, r));
  return r.header;
}

SocketAddress addr(const char* ip, uint16_t port) {
  auto a = SocketAddress::fromIp(ip, port);
  CHECK(a.has_value());
  return *a;
}

std::string writeText(Version v, const SocketAddress& s, const SocketAddress& d) {
  uint8_t buf[kMaxWrittenLength];
  const size_t n = write(v, s, d, buf, sizeof buf);
  CHECK(n > 0);
  return std::string(reinterpret_cast<char*>(buf), n);
}

// The address a header carries for `a` when written beside `other`: IPv4 stays IPv4 only if both are.
SocketAddress expectedOnWire(const SocketAddress& a, const SocketAddress& other) {
  if (a.family() == AF_INET && other.family() == AF_INET6) {
    return addr(("::ffff:" + a.ipString()).c_str(), a.port());
  }
  return a;
}

void checkRoundTrip(const SocketAddress& s, const SocketAddress& d) {
  for (Version v : {Version::v1, Version::v2}) {
    uint8_t buf[kMaxWrittenLength];
    const size_t n = write(v, s, d, buf, sizeof buf);
    CHECK(n > 0);
    const ParseResult r = parse(buf, n);
    CHECK(r.status == ParseStatus::done);
    CHECK_EQ(r.header.length, n);
    CHECK_EQ(r.header.version, static_cast<uint8_t>(v));
    CHECK(r.header.command == Command::proxy);
    CHECK(r.header.source == expectedOnWire(s, d));
    CHECK(r.header.destination == expectedOnWire(d, s));
  }
}

// xorshift64*: deterministic, so a failure reproduces.
struct Rng {
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  uint64_t next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
  }
};

SocketAddress randomAddress(Rng& rng) {
  uint8_t raw[16];
  for (auto& b : raw) b = static_cast<uint8_t>(rng.next());
  // Bias towards zero runs, so "::" compression is exercised in every position.
  const uint64_t zeroMask = rng.next();
  for (int g = 0; g < 8; ++g) {
    if ((zeroMask >> g) & 1) raw[2 * g] = raw[2 * g + 1] = 0;
  }
  const uint16_t port = static_cast<uint16_t>(rng.next());
  if (rng.next() & 1) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, raw, 4);
    sin.sin_port = htons(port);
    return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, raw, 16);
  sin6.sin6_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
}

bool readFile(const std::string& path, Bytes* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  uint8_t chunk[4096];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) out->insert(out->end(), chunk, chunk + n);
  std::fclose(f);
  return true;
}

}  // namespace

int main() {
  // ---- valid v1 ------------------------------------------------------------------------------

  run("v1 TCP4: addresses, ports, command, length", [] {
    const Header h = checkValid(bytes("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"));
    CHECK_EQ(h.version, 1);
    CHECK(h.command == Command::proxy);
    CHECK_EQ(h.family, AF_INET);
    CHECK(h.source == addr("192.168.0.1", 56324));
    CHECK(h.destination == addr("192.168.0.11", 443));
  });

  run("v1 TCP4: longest line (56 bytes), ports 0 and 65535", [] {
    const Header h = checkValid(bytes("PROXY TCP4 255.255.255.255 255.255.255.255 0 65535\r\n"));
    CHECK(h.source == addr("255.255.255.255", 0));
    CHECK(h.destination == addr("255.255.255.255", 65535));
    checkValid(bytes("PROXY TCP4 0.0.0.0 10.20.30.40 65535 65535\r\n"));
  });

  run("v1 TCP6: compressed, full and upper-case forms", [] {
    const Header h = checkValid(bytes("PROXY TCP6 2001:db8::1 ::1 65535 80\r\n"));
    CHECK_EQ(h.family, AF_INET6);
    CHECK(h.source == addr("2001:db8::1", 65535));
    CHECK(h.destination == addr("::1", 80));
    const Header full = checkValid(bytes(
        "PROXY TCP6 FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"));
    CHECK_EQ(full.length, 104u);  // the spec's TCP6 maximum
    CHECK(full.source == addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535));
    checkValid(bytes("PROXY TCP6 :: fe80::1:2 1 2\r\n"));
  });

  run("v1 UNKNOWN: short form, and anything before CRLF ignored up to 107 bytes", [] {
    const Header h = checkValid(bytes("PROXY UNKNOWN\r\n"));
    CHECK(h.command == Command::unknown);
    CHECK_EQ(h.family, AF_UNSPEC);
    CHECK_EQ(h.length, 15u);
    checkValid(bytes("PROXY UNKNOWN 1.2.3.4 whatever \x01\xff goes\r\n"));
    // The spec's worst case: exactly 107 bytes with the CRLF.
    std::string worst = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    CHECK_EQ(worst.size(), kV1MaxLength);
    CHECK_EQ(checkValid(bytes(worst)).length, kV1MaxLength);
  });

  // ---- valid v2 ------------------------------------------------------------------------------

  run("v2 PROXY TCP over IPv4", [] {
    const Header h = checkValid(v2(0x21, 0x11, kInet4Block));
    CHECK_EQ(h.version, 2);
    CHECK(h.command == Command::proxy);
    CHECK_EQ(h.family, AF_INET);
    CHECK(h.source == addr("192.0.2.1", 56260));
    CHECK(h.destination == addr("198.51.100.7", 443));
    CHECK_EQ(h.length, 28u);
  });

  run("v2 PROXY TCP over IPv6", [] {
    const Header h = checkValid(v2(0x21, 0x21, inet6Block()));
    CHECK_EQ(h.family, AF_INET6);
    CHECK(h.source == addr("2001:db8::1", 80));
    CHECK(h.destination == addr("::1", 65535));
    CHECK_EQ(h.length, 52u);
  });

  run("v2 with TLVs: skipped, addresses still decoded, length covers them", [] {
    Bytes rest = kInet4Block;
    rest = concat(rest, tlv(0x02, bytes("example.com")));      // AUTHORITY
    rest = concat(rest, tlv(0x04, {}));                         // NOOP, empty
    rest = concat(rest, tlv(0x20, {0x01, 0, 0, 0, 0}));         // SSL
    rest = concat(rest, tlv(0xE0, Bytes(100, 0xAB)));           // custom
    const Header h = checkValid(v2(0x21, 0x11, rest));
    CHECK(h.source == addr("192.0.2.1", 56260));
    CHECK_EQ(h.length, 16 + rest.size());
  });

  run("v2 at the size bound: 536 bytes accepted, 537 refused at the length field", [] {
    Bytes rest = inet6Block();
    rest = concat(rest, tlv(0x04, Bytes(kV2MaxPayload - 36 - 3, 0)));
    CHECK_EQ(rest.size(), kV2MaxPayload);
    CHECK_EQ(checkValid(v2(0x21, 0x21, rest)).length, kMaxHeaderLength);
    rest = concat(inet6Block(), tlv(0x04, Bytes(kV2MaxPayload - 36 - 2, 0)));
    checkFailsAt(v2(0x21, 0x21, rest), ParseError::v2_too_long, 16);
  });

  run("v2 LOCAL: no addresses, or addresses and TLVs that are skipped", [] {
    Header h = checkValid(v2(0x20, 0x00, {}));
    CHECK(h.command == Command::local);
    CHECK_EQ(h.family, AF_UNSPEC);
    CHECK_EQ(h.length, 16u);
    h = checkValid(v2(0x20, 0x11, concat(kInet4Block, tlv(0x05, bytes("id-1")))));
    CHECK(h.command == Command::local);
    CHECK_EQ(h.family, AF_UNSPEC);  // the receiver uses the real endpoints
    // LOCAL may announce a family with fewer bytes than its addresses: they are skipped unread.
    CHECK_EQ(checkValid(v2(0x20, 0x21, Bytes(5, 0x77))).length, 21u);
  });

  run("v2 PROXY over UDP, UNIX or UNSPEC: accepted without addresses (the spec's UNSPEC fallback)", [] {
    Header h = checkValid(v2(0x21, 0x12, kInet4Block));
    CHECK(h.command == Command::proxy);
    CHECK_EQ(h.family, AF_UNSPEC);
    CHECK_EQ(checkValid(v2(0x21, 0x22, inet6Block())).family, AF_UNSPEC);
    CHECK_EQ(checkValid(v2(0x21, 0x31, Bytes(216, 'u'))).family, AF_UNSPEC);
    CHECK_EQ(checkValid(v2(0x21, 0x32, Bytes(216, 'u'))).family, AF_UNSPEC);
    // UNSPEC: whatever follows is opaque, not TLVs (5 bytes could not be a TLV list).
    CHECK_EQ(checkValid(v2(0x21, 0x00, Bytes(5, 0xFF))).length, 21u);
  });

  run("need_more's want: one byte at a time, then the exact v2 length once known", [] {
    const Bytes h = v2(0x21, 0x11, concat(kInet4Block, tlv(0x04, Bytes(10, 0))));
    CHECK_EQ(parsePrefix(h, 0).want, 1u);
    CHECK_EQ(parsePrefix(h, 5).want, 16u);
    CHECK_EQ(parsePrefix(h, 16).want, h.size());
    CHECK_EQ(parsePrefix(h, h.size() - 1).want, h.size());
    const Bytes line = bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    CHECK_EQ(parsePrefix(line, 3).want, 4u);
    CHECK_EQ(parsePrefix(line, 20).want, 21u);
  });

  // ---- not a PROXY header --------------------------------------------------------------------

  run("not_proxy: decided at the first byte that matches neither signature", [] {
    checkFailsAt(bytes("GET / HTTP/1.1\r\n\r\n"), ParseError::not_proxy, 1);
    checkFailsAt({0x16, 0x03, 0x01, 0x00, 0xA5}, ParseError::not_proxy, 1);  // TLS ClientHello
    checkFailsAt(bytes("SSH-2.0-OpenSSH\r\n"), ParseError::not_proxy, 1);
    checkFailsAt(bytes("PRI * HTTP/2.0\r\n"), ParseError::not_proxy, 3);
    checkFailsAt(bytes("PROXZ TCP4"), ParseError::not_proxy, 5);
    checkFailsAt(bytes("proxy TCP4"), ParseError::not_proxy, 1);
    checkFailsAt(bytes("\r\n\r\nHELO"), ParseError::not_proxy, 5);
    Bytes almost = kV2Sig;
    almost[11] = 0x0B;
    checkFailsAt(almost, ParseError::not_proxy, 12);
  });

  run("a signature prefix alone is need_more, not a verdict", [] {
    CHECK(parseAll(bytes("PROX")).status == ParseStatus::need_more);
    CHECK(parseAll(bytes("PROXY")).status == ParseStatus::need_more);
    CHECK(parseAll(Bytes(kV2Sig.begin(), kV2Sig.begin() + 7)).status == ParseStatus::need_more);
    CHECK(parseAll({}).status == ParseStatus::need_more);
  });

  // ---- malformed v1 --------------------------------------------------------------------------

  run("v1_bad_syntax: spaces, CR and LF out of place, missing fields, control bytes", [] {
    checkFailsAt(bytes("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_syntax, 7);
    checkFailsAt(bytes("PROXYTCP4"), ParseError::v1_bad_syntax, 6);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), ParseError::v1_bad_syntax, 20);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), ParseError::v1_bad_syntax, 31);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ParseError::v1_bad_syntax, 31);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), ParseError::v1_bad_syntax, 32);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), ParseError::v1_bad_syntax, 29);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), ParseError::v1_bad_syntax, 31);
    checkFailsAt(bytes("PROXY TCP4\r\n"), ParseError::v1_bad_syntax, 11);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"), ParseError::v1_bad_syntax, 19);
    checkFailsAt(bytes("PROXY UNKNOWN\n"), ParseError::v1_bad_syntax, 14);
    checkFailsAt(bytes("PROXY UNKNOWN junk\nmore\r\n"), ParseError::v1_bad_syntax, 19);
    checkFailsAt(bytes("PROXY UNKNOWN junk\rX\r\n"), ParseError::v1_bad_syntax, 20);
    checkFailsAt(bytes("PROXY \r\n"), ParseError::v1_bad_syntax, 7);
  });

  run("v1_bad_protocol: decided as soon as the word cannot become TCP4, TCP6 or UNKNOWN", [] {
    checkFailsAt(bytes("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_protocol, 10);
    checkFailsAt(bytes("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_protocol, 7);
    checkFailsAt(bytes("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_protocol, 8);
    checkFailsAt(bytes("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_protocol, 10);
    checkFailsAt(bytes("PROXY UNKNOWNX\r\n"), ParseError::v1_bad_protocol, 14);
    checkFailsAt(bytes("PROXY TCP44 1.2.3.4\r\n"), ParseError::v1_bad_protocol, 11);
    // A bad word stays the reason when a byte that is not even a letter follows (fuzzer find).
    checkFailsAt(bytes("PROXY UD\xff 1.2.3.4\r\n"), ParseError::v1_bad_protocol, 8);
    checkFailsAt(bytes("PROXY TCP5\n"), ParseError::v1_bad_protocol, 10);
  });

  run("v1_bad_address: IPv4 literals", [] {
    checkFails(bytes("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);  // octal-looking
    checkFails(bytes("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP4 1.2.3.4 1234.6.7.8 1 2\r\n"), ParseError::v1_bad_address);
    // Characters that cannot belong to the family are refused when they arrive.
    checkFailsAt(bytes("PROXY TCP4 ::1 ::1 1 2\r\n"), ParseError::v1_bad_address, 12);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 localhost 1 2\r\n"), ParseError::v1_bad_address, 20);
    checkFailsAt(bytes("PROXY TCP4 1111111111111111 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address, 27);
  });

  run("v1_bad_address: IPv6 literals", [] {
    checkFails(bytes("PROXY TCP6 1::2::3 ::1 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP6 12345::1 ::1 1 2\r\n"), ParseError::v1_bad_address);
    checkFails(bytes("PROXY TCP6 ::1 :::1 1 2\r\n"), ParseError::v1_bad_address);
    // No dotted-quad tail (the spec's form is hex groups only), no zone, no brackets, no v4 in TCP6.
    checkFailsAt(bytes("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"), ParseError::v1_bad_address, 20);
    checkFailsAt(bytes("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ParseError::v1_bad_address, 19);
    checkFailsAt(bytes("PROXY TCP6 [::1] ::1 1 2\r\n"), ParseError::v1_bad_address, 12);
    checkFailsAt(bytes("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), ParseError::v1_bad_address, 13);
  });

  run("v1_bad_port: leading zeros, range, non-digits, length", [] {
    checkFails(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n"), ParseError::v1_bad_port);
    checkFails(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 80 00\r\n"), ParseError::v1_bad_port);
    checkFails(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n"), ParseError::v1_bad_port);
    checkFails(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 80 99999\r\n"), ParseError::v1_bad_port);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n"), ParseError::v1_bad_port, 33);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n"), ParseError::v1_bad_port, 28);
    checkFailsAt(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 80 https\r\n"), ParseError::v1_bad_port, 31);
  });

  run("v1_too_long: no CRLF within 107 bytes, even if one comes later", [] {
    std::string line = "PROXY UNKNOWN " + std::string(92, 'x') + "\r\n";  // 108 bytes
    CHECK_EQ(line.size(), kV1MaxLength + 1);
    checkFailsAt(bytes(line), ParseError::v1_too_long, kV1MaxLength);
    // A CR as the 107th byte is no CRLF either.
    line = "PROXY UNKNOWN " + std::string(92, 'x') + "\r";
    CHECK_EQ(line.size(), kV1MaxLength);
    checkFailsAt(concat(bytes(line), bytes("\n")), ParseError::v1_too_long, kV1MaxLength);
  });

  // ---- malformed v2 --------------------------------------------------------------------------

  run("v2_bad_version and v2_bad_command: judged at byte 13", [] {
    checkFailsAt(v2(0x11, 0x11, kInet4Block), ParseError::v2_bad_version, 13);
    checkFailsAt(v2(0x31, 0x11, kInet4Block), ParseError::v2_bad_version, 13);
    checkFailsAt(v2(0x01, 0x11, kInet4Block), ParseError::v2_bad_version, 13);
    checkFailsAt(v2(0x22, 0x11, kInet4Block), ParseError::v2_bad_command, 13);
    checkFailsAt(v2(0x2F, 0x11, kInet4Block), ParseError::v2_bad_command, 13);
  });

  run("v2_bad_family: family or transport not assigned, judged at byte 14", [] {
    for (uint8_t fam : {0x01, 0x10, 0x13, 0x20, 0x30, 0x33, 0x41, 0xF1, 0xFF}) {
      checkFailsAt(v2(0x21, fam, kInet4Block), ParseError::v2_bad_family, 14);
    }
  });

  run("v2_bad_address_length: a PROXY header shorter than its family's addresses", [] {
    checkFailsAt(v2(0x21, 0x11, Bytes(kInet4Block.begin(), kInet4Block.end() - 1)),
                 ParseError::v2_bad_address_length, 16);
    checkFailsAt(v2(0x21, 0x21, Bytes(35, 0)), ParseError::v2_bad_address_length, 16);
    checkFailsAt(v2(0x21, 0x21, kInet4Block), ParseError::v2_bad_address_length, 16);  // v4 block, v6 family
    checkFailsAt(v2(0x21, 0x12, {}), ParseError::v2_bad_address_length, 16);
    checkFailsAt(v2(0x21, 0x31, Bytes(215, 0)), ParseError::v2_bad_address_length, 16);
  });

  run("v2_too_long: refused at the length field, before the payload is waited for", [] {
    checkFailsAt(v2(0x21, 0x11, concat(kInet4Block, tlv(0x04, Bytes(kV2MaxPayload - 12 - 2, 0)))),
                 ParseError::v2_too_long, 16);
    Bytes huge = kV2Sig;
    huge.insert(huge.end(), {0x21, 0x11, 0xFF, 0xFF});
    checkFailsAt(huge, ParseError::v2_too_long, 16);
  });

  run("v2_bad_tlv: a TLV past the header's end, or stray bytes after the last TLV", [] {
    // The TLV's length says 10 but only 3 value bytes are inside the header: refused as soon as
    // the TLV's length field arrives (16 + 12 + 3 bytes).
    Bytes rest = concat(kInet4Block, {0x02, 0x00, 0x0A, 'a', 'b', 'c'});
    checkFailsAt(v2(0x21, 0x11, rest), ParseError::v2_bad_tlv, 31);
    // One byte past the end is past it too, and known as early.
    checkFailsAt(v2(0x21, 0x11, concat(kInet4Block, {0x02, 0x00, 0x04, 'a', 'b', 'c'})), ParseError::v2_bad_tlv, 31);
    checkFailsAt(v2(0x21, 0x11, concat(kInet4Block, {0x04})), ParseError::v2_bad_tlv, 29);
    checkFailsAt(v2(0x21, 0x11, concat(kInet4Block, {0x04, 0x00})), ParseError::v2_bad_tlv, 30);
    checkFailsAt(v2(0x21, 0x21, concat(inet6Block(), concat(tlv(0x04, {}), {0x01, 0x00}))),
                 ParseError::v2_bad_tlv, 16 + 36 + 3 + 2);
    checkFailsAt(v2(0x20, 0x11, concat(kInet4Block, {0x05, 0xFF, 0xFF})), ParseError::v2_bad_tlv, 31);
  });

  run("every reason has a distinct name", [] {
    CHECK_EQ(kParseErrorCount, 12u);
    for (size_t i = 0; i < kParseErrorCount; ++i) {
      const char* a = parseErrorName(static_cast<ParseError>(i));
      CHECK(std::strcmp(a, "unknown") != 0);
      for (size_t j = 0; j < i; ++j) CHECK(std::strcmp(a, parseErrorName(static_cast<ParseError>(j))) != 0);
    }
    CHECK(std::strcmp(parseErrorName(ParseError::v2_bad_tlv), "v2_bad_tlv") == 0);
  });

  // ---- writer --------------------------------------------------------------------------------

  run("write v1: exact lines for IPv4, IPv6 and mixed families", [] {
    CHECK(writeText(Version::v1, addr("192.168.0.1", 56324), addr("192.168.0.11", 443)) ==
          "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    CHECK(writeText(Version::v1, addr("2001:db8::1", 0), addr("::1", 65535)) ==
          "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n");
    // A v4 client of a dual-stack listener to a v6 destination: the client as ::ffff:a.b.c.d in
    // hex groups (the v1 grammar has no dotted quad in TCP6).
    CHECK(writeText(Version::v1, addr("1.2.3.4", 5), addr("2001:db8::", 6)) ==
          "PROXY TCP6 ::ffff:102:304 2001:db8:: 5 6\r\n");
  });

  run("write v1: IPv6 text is RFC 5952 (longest zero run, first on a tie, no single-group ::)", [] {
    const SocketAddress d = addr("::", 1);
    CHECK(writeText(Version::v1, addr("1:0:0:2:0:0:3:4", 1), d) == "PROXY TCP6 1::2:0:0:3:4 :: 1 1\r\n");
    CHECK(writeText(Version::v1, addr("1:0:0:2:0:0:0:4", 1), d) == "PROXY TCP6 1:0:0:2::4 :: 1 1\r\n");
    CHECK(writeText(Version::v1, addr("2001:db8:0:1:1:1:1:1", 1), d) == "PROXY TCP6 2001:db8:0:1:1:1:1:1 :: 1 1\r\n");
    CHECK(writeText(Version::v1, addr("1::", 1), d) == "PROXY TCP6 1:: :: 1 1\r\n");
    CHECK(writeText(Version::v1, addr("ABCD:EF01:2345:6789:abcd:ef01:2345:6789", 1), d) ==
          "PROXY TCP6 abcd:ef01:2345:6789:abcd:ef01:2345:6789 :: 1 1\r\n");
  });

  run("write v2: exact bytes for IPv4 and IPv6", [] {
    uint8_t buf[kMaxWrittenLength];
    size_t n = write(Version::v2, addr("192.0.2.1", 56260), addr("198.51.100.7", 443), buf, sizeof buf);
    CHECK(Bytes(buf, buf + n) == v2(0x21, 0x11, kInet4Block));
    n = write(Version::v2, addr("2001:db8::1", 80), addr("::1", 65535), buf, sizeof buf);
    CHECK(Bytes(buf, buf + n) == v2(0x21, 0x21, inet6Block()));
  });

  run("write: unknown families give PROXY UNKNOWN / v2 UNSPEC, which parse back", [] {
    const SocketAddress none;
    CHECK(writeText(Version::v1, none, addr("1.2.3.4", 1)) == "PROXY UNKNOWN\r\n");
    uint8_t buf[kMaxWrittenLength];
    const size_t n = write(Version::v2, addr("1.2.3.4", 1), none, buf, sizeof buf);
    CHECK(Bytes(buf, buf + n) == v2(0x21, 0x00, {}));
    const ParseResult r = parse(buf, n);
    CHECK(r.status == ParseStatus::done);
    CHECK(r.header.command == Command::proxy);
    CHECK_EQ(r.header.family, AF_UNSPEC);
  });

  run("write: a short buffer writes nothing past its end and returns 0", [] {
    const SocketAddress s = addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    for (Version v : {Version::v1, Version::v2}) {
      uint8_t full[kMaxWrittenLength];
      const size_t need = write(v, s, s, full, sizeof full);
      CHECK(need > 0 && need <= kMaxWrittenLength);
      for (size_t cap = 0; cap < need; ++cap) {
        uint8_t buf[kMaxWrittenLength + 1];
        std::memset(buf, 0xEE, sizeof buf);
        CHECK_EQ(write(v, s, s, buf, cap), 0u);
        for (size_t i = cap; i < sizeof buf; ++i) CHECK_EQ(buf[i], 0xEE);
      }
    }
    uint8_t buf[kMaxWrittenLength];
    CHECK_EQ(write(Version::v1, s, s, buf, sizeof buf), kMaxWrittenLength);  // the bound is tight
  });

  run("round trip parse(write(x)) == x: fixed cases", [] {
    checkRoundTrip(addr("10.0.0.1", 1234), addr("10.0.0.2", 80));
    checkRoundTrip(addr("0.0.0.0", 0), addr("255.255.255.255", 65535));
    checkRoundTrip(addr("::", 0), addr("::1", 1));
    checkRoundTrip(addr("fe80::1", 22), addr("2001:db8:1:2:3:4:5:6", 443));
    checkRoundTrip(addr("::ffff:10.1.2.3", 5), addr("::ffff:10.1.2.4", 6));
    checkRoundTrip(addr("192.0.2.1", 5), addr("2001:db8::7", 6));
    checkRoundTrip(addr("2001:db8::7", 5), addr("192.0.2.1", 6));
  });

  run("round trip parse(write(x)) == x: 20000 random address pairs", [] {
    Rng rng;
    for (int i = 0; i < 20000; ++i) checkRoundTrip(randomAddress(rng), randomAddress(rng));
  });

  // ---- seed corpus ---------------------------------------------------------------------------

  run("fuzz seed corpus: each seed parses to what its name says", [] {
    // Names are "<expected>--<description>": expected is done, need_more or an error's name
    // (cpp/fuzz/make_proxy_protocol_corpus.py writes them). Every reason has at least one seed.
    DIR* dir = opendir(SPLICEGATE_PROXY_CORPUS_DIR);
    CHECK(dir != nullptr);
    int seeds = 0;
    int byOutcome[3] = {0, 0, 0};
    bool reasonSeen[kParseErrorCount] = {};
    while (const dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      const size_t sep = name.find("--");
      if (sep == std::string::npos) {
        std::fprintf(stderr, "  seed %s has no \"<expected>--\" prefix\n", name.c_str());
        CHECK(false);
      }
      const std::string expected = name.substr(0, sep);
      Bytes data;
      CHECK(readFile(std::string(SPLICEGATE_PROXY_CORPUS_DIR) + "/" + name, &data));
      const ParseResult r = parseAll(data);
      std::string got = r.status == ParseStatus::done        ? "done"
                        : r.status == ParseStatus::need_more ? "need_more"
                                                             : parseErrorName(r.error);
      if (got != expected) std::fprintf(stderr, "  seed %s parsed to %s\n", name.c_str(), got.c_str());
      CHECK(got == expected);
      ++byOutcome[static_cast<int>(r.status)];
      if (r.status == ParseStatus::error) reasonSeen[static_cast<size_t>(r.error)] = true;
      ++seeds;
    }
    closedir(dir);
    CHECK(seeds >= 30);
    CHECK(byOutcome[static_cast<int>(ParseStatus::done)] >= 10);
    for (size_t i = 0; i < kParseErrorCount; ++i) {
      if (!reasonSeen[i]) std::fprintf(stderr, "  no seed for %s\n", parseErrorName(static_cast<ParseError>(i)));
      CHECK(reasonSeen[i]);
    }
  });

  return splicegate::testing::finish();
}
