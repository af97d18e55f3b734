#include "proxy_protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace splicegate::proxy_protocol {

namespace {

constexpr uint8_t kV1Signature[] = {'P', 'R', 'O', 'X', 'Y'};
constexpr uint8_t kV2Signature[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// v2 byte 14, the only values the spec expects ("In practice, the following protocol bytes").
constexpr uint8_t kFamUnspec = 0x00;
constexpr uint8_t kFamTcp4 = 0x11;
constexpr uint8_t kFamUdp4 = 0x12;
constexpr uint8_t kFamTcp6 = 0x21;
constexpr uint8_t kFamUdp6 = 0x22;
constexpr uint8_t kFamUnixStream = 0x31;
constexpr uint8_t kFamUnixDgram = 0x32;

constexpr uint8_t kCmdLocal = 0x0;
constexpr uint8_t kCmdProxy = 0x1;

// Longest address literals the v1 grammar admits: dotted quad, and eight groups of four hex
// digits (the spec's IPv6 form has no embedded dotted quad).
constexpr size_t kV1MaxIpv4Text = 15;
constexpr size_t kV1MaxIpv6Text = 39;
constexpr size_t kV1MaxPortText = 5;

ParseResult needMore(size_t want) {
  ParseResult r;
  r.status = ParseStatus::need_more;
  r.want = want;
  return r;
}

ParseResult fail(ParseError error) {
  ParseResult r;
  r.status = ParseStatus::error;
  r.error = error;
  return r;
}

SocketAddress ipv4Address(const uint8_t addr[4], uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  std::memcpy(&sin.sin_addr, addr, 4);
  sin.sin_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

SocketAddress ipv6Address(const uint8_t addr[16], uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, addr, 16);
  sin6.sin6_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
}

// ---- v1 -------------------------------------------------------------------------------------

enum class Step : uint8_t { ok, more, fail };

bool isDigit(uint8_t c) { return c >= '0' && c <= '9'; }
bool isHex(uint8_t c) { return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

enum class CharClass : uint8_t { protocol, ipv4, ipv6, port };

bool inClass(uint8_t c, CharClass cls) {
  switch (cls) {
    case CharClass::protocol: return (c >= 'A' && c <= 'Z') || isDigit(c);
    case CharClass::ipv4: return isDigit(c) || c == '.';
    case CharClass::ipv6: return isHex(c) || c == ':';
    case CharClass::port: return isDigit(c);
  }
  return false;
}

// A field of the line: [start, start + length), ended by a space or CR at `start + length`.
struct Token {
  size_t start = 0;
  size_t length = 0;
};

// Reads one field at *pos up to its delimiter (' ' or '\r', left unread). more: the input ended
// inside the field (token holds the part seen so far); fail: `error` says why.
Step readToken(const uint8_t* data, size_t n, size_t* pos, CharClass cls, size_t maxLength,
               ParseError fieldError, Token* token, ParseError* error) {
  token->start = *pos;
  token->length = 0;
  for (size_t i = *pos; i < n; ++i) {
    const uint8_t c = data[i];
    if (c == ' ' || c == '\r') {
      if (token->length == 0) {
        *error = ParseError::v1_bad_syntax;  // two spaces, or a space before CRLF
        return Step::fail;
      }
      *pos = i;
      return Step::ok;
    }
    if (c < 0x21 || c > 0x7e) {
      *error = ParseError::v1_bad_syntax;  // LF, tab, NUL, non-ASCII
      return Step::fail;
    }
    if (!inClass(c, cls) || token->length == maxLength) {
      *error = fieldError;
      return Step::fail;
    }
    ++token->length;
  }
  *pos = n;
  return Step::more;
}

// The byte at *pos must be `expected` (a space between fields); consumes it.
Step expectByte(const uint8_t* data, size_t n, size_t* pos, uint8_t expected, ParseError* error) {
  if (*pos >= n) return Step::more;
  if (data[*pos] != expected) {
    *error = ParseError::v1_bad_syntax;
    return Step::fail;
  }
  ++*pos;
  return Step::ok;
}

// CR LF at *pos; a lone CR or LF never ends the line.
Step expectCrlf(const uint8_t* data, size_t n, size_t* pos, ParseError* error) {
  Step s = expectByte(data, n, pos, '\r', error);
  if (s != Step::ok) return s;
  return expectByte(data, n, pos, '\n', error);
}

bool tokenEquals(const uint8_t* data, const Token& t, const char* word) {
  const size_t len = std::strlen(word);
  return t.length == len && std::memcmp(data + t.start, word, len) == 0;
}

bool tokenIsPrefixOf(const uint8_t* data, const Token& t, const char* word) {
  return t.length <= std::strlen(word) && std::memcmp(data + t.start, word, t.length) == 0;
}

// "0".."65535", no leading zeros (they could be read as octal).
bool parsePort(const uint8_t* data, const Token& t, uint16_t* port) {
  if (t.length == 0 || t.length > kV1MaxPortText) return false;
  if (t.length > 1 && data[t.start] == '0') return false;
  uint32_t value = 0;
  for (size_t i = 0; i < t.length; ++i) value = value * 10 + (data[t.start + i] - '0');
  if (value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

// Exactly four decimal parts 0..255 separated by single dots, no leading zeros. Written here
// rather than with inet_pton so the leading-zero rule does not depend on the C library.
bool parseIpv4(const uint8_t* data, const Token& t, uint8_t out[4]) {
  size_t part = 0;
  size_t digits = 0;
  uint32_t value = 0;
  for (size_t i = 0; i <= t.length; ++i) {
    const bool end = i == t.length;
    const uint8_t c = end ? '.' : data[t.start + i];
    if (c == '.') {
      if (digits == 0 || part == 4) return false;
      out[part++] = static_cast<uint8_t>(value);
      digits = 0;
      value = 0;
      continue;
    }
    if (digits == 1 && value == 0) return false;  // leading zero
    value = value * 10 + (c - '0');
    if (++digits > 3 || value > 255) return false;
  }
  return part == 4;
}

// Hex groups and colons only (checked by the token's character class), at most one "::", 128
// bits: exactly what inet_pton accepts from that alphabet.
bool parseIpv6(const uint8_t* data, const Token& t, uint8_t out[16]) {
  char text[kV1MaxIpv6Text + 1];
  if (t.length > kV1MaxIpv6Text) return false;
  std::memcpy(text, data + t.start, t.length);
  text[t.length] = '\0';
  return inet_pton(AF_INET6, text, out) == 1;
}

ParseResult parseV1(const uint8_t* data, size_t length) {
  // A valid line ends within kV1MaxLength bytes, so nothing past them is looked at: whatever a
  // longer prefix holds, it gets the answer this one gets (too long, at the latest).
  const size_t n = std::min(length, kV1MaxLength);
  const auto outOfInput = [&]() { return length >= kV1MaxLength ? fail(ParseError::v1_too_long) : needMore(length + 1); };

  ParseError error = ParseError::v1_bad_syntax;
  size_t pos = sizeof kV1Signature;
  Step s = expectByte(data, n, &pos, ' ', &error);
  if (s == Step::fail) return fail(error);
  if (s == Step::more) return outOfInput();

  Token proto;
  s = readToken(data, n, &pos, CharClass::protocol, 7, ParseError::v1_bad_protocol, &proto, &error);
  // The word is judged as its letters arrive, so check the part read before whatever stopped the
  // read: "PROXY UD" is already a bad protocol, whatever byte comes next.
  if (!tokenIsPrefixOf(data, proto, "TCP4") && !tokenIsPrefixOf(data, proto, "TCP6") &&
      !tokenIsPrefixOf(data, proto, "UNKNOWN")) {
    return fail(ParseError::v1_bad_protocol);
  }
  if (s == Step::fail) return fail(error);
  if (s == Step::more) return outOfInput();
  // The token ended: it must be one of the words, not a prefix of one.
  if (!tokenEquals(data, proto, "TCP4") && !tokenEquals(data, proto, "TCP6") &&
      !tokenEquals(data, proto, "UNKNOWN")) {
    return fail(ParseError::v1_bad_protocol);
  }

  ParseResult done;
  done.status = ParseStatus::done;
  done.header.version = 1;

  if (tokenEquals(data, proto, "UNKNOWN")) {
    // "the receiver must ignore anything presented before the CRLF"; the CRLF itself is still
    // strict: a lone CR or LF never ends (nor appears in) the line.
    if (data[pos] == ' ') {
      for (++pos; pos < n; ++pos) {
        if (data[pos] == '\n') return fail(ParseError::v1_bad_syntax);
        if (data[pos] == '\r') break;
      }
    }
    s = expectCrlf(data, n, &pos, &error);
    if (s == Step::fail) return fail(error);
    if (s == Step::more) return outOfInput();
    done.header.command = Command::unknown;
    done.header.family = AF_UNSPEC;
    done.header.length = pos;
    return done;
  }

  const bool v6 = tokenEquals(data, proto, "TCP6");
  const CharClass ipClass = v6 ? CharClass::ipv6 : CharClass::ipv4;
  const size_t ipMax = v6 ? kV1MaxIpv6Text : kV1MaxIpv4Text;

  // Four fields: source address, destination address, source port, destination port.
  Token fields[4];
  for (int f = 0; f < 4; ++f) {
    s = expectByte(data, n, &pos, ' ', &error);
    if (s == Step::fail) return fail(error);
    if (s == Step::more) return outOfInput();
    const bool isPort = f >= 2;
    s = readToken(data, n, &pos, isPort ? CharClass::port : ipClass, isPort ? kV1MaxPortText : ipMax,
                  isPort ? ParseError::v1_bad_port : ParseError::v1_bad_address, &fields[f], &error);
    if (s == Step::fail) return fail(error);
    if (s == Step::more) return outOfInput();
    // Every field but the last ends with a space; the last with CRLF.
    if ((f < 3) != (data[pos] == ' ')) return fail(ParseError::v1_bad_syntax);
  }
  s = expectCrlf(data, n, &pos, &error);
  if (s == Step::fail) return fail(error);
  if (s == Step::more) return outOfInput();

  // The whole line is here: decode. Fields are checked in line order, so the reason names the
  // first bad one.
  uint8_t src[16];
  uint8_t dst[16];
  const bool addressesOk = v6 ? parseIpv6(data, fields[0], src) && parseIpv6(data, fields[1], dst)
                              : parseIpv4(data, fields[0], src) && parseIpv4(data, fields[1], dst);
  if (!addressesOk) return fail(ParseError::v1_bad_address);
  uint16_t srcPort = 0;
  uint16_t dstPort = 0;
  if (!parsePort(data, fields[2], &srcPort) || !parsePort(data, fields[3], &dstPort)) {
    return fail(ParseError::v1_bad_port);
  }
  done.header.command = Command::proxy;
  done.header.family = v6 ? AF_INET6 : AF_INET;
  done.header.source = v6 ? ipv6Address(src, srcPort) : ipv4Address(src, srcPort);
  done.header.destination = v6 ? ipv6Address(dst, dstPort) : ipv4Address(dst, dstPort);
  done.header.length = pos;
  return done;
}

// ---- v2 -------------------------------------------------------------------------------------

// Bytes of address block a family/transport byte announces (TLVs, if any, follow it).
size_t v2AddressLength(uint8_t fam) {
  switch (fam) {
    case kFamTcp4:
    case kFamUdp4: return 12;
    case kFamTcp6:
    case kFamUdp6: return 36;
    case kFamUnixStream:
    case kFamUnixDgram: return 216;
    default: return 0;
  }
}

bool v2FamilyAssigned(uint8_t fam) {
  switch (fam) {
    case kFamUnspec:
    case kFamTcp4:
    case kFamUdp4:
    case kFamTcp6:
    case kFamUdp6:
    case kFamUnixStream:
    case kFamUnixDgram: return true;
    default: return false;
  }
}

uint16_t readBe16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

ParseResult parseV2(const uint8_t* data, size_t n) {
  // Each fixed byte is judged as soon as it arrives.
  if (n > 12) {
    const uint8_t verCmd = data[12];
    if ((verCmd >> 4) != 2) return fail(ParseError::v2_bad_version);
    const uint8_t cmd = verCmd & 0x0F;
    if (cmd != kCmdLocal && cmd != kCmdProxy) return fail(ParseError::v2_bad_command);
  }
  if (n > 13 && !v2FamilyAssigned(data[13])) return fail(ParseError::v2_bad_family);
  if (n < kV2FixedLength) return needMore(kV2FixedLength);

  const uint8_t cmd = data[12] & 0x0F;
  const uint8_t fam = data[13];
  const size_t payload = readBe16(data + 14);
  if (payload > kV2MaxPayload) return fail(ParseError::v2_too_long);
  const size_t addressLength = v2AddressLength(fam);
  if (cmd == kCmdProxy && payload < addressLength) return fail(ParseError::v2_bad_address_length);
  const size_t total = kV2FixedLength + payload;

  // TLVs follow the address block. They are walked (not interpreted) only where the block's
  // size is known and it is all there; an UNSPEC block is opaque and is skipped whole. A TLV
  // that overruns the header is refused as soon as its length field is in.
  if (fam != kFamUnspec && payload >= addressLength) {
    const size_t available = std::min(n, total);
    size_t pos = kV2FixedLength + addressLength;
    while (pos + 3 <= available) {
      const size_t end = pos + 3 + readBe16(data + pos + 1);
      if (end > total) return fail(ParseError::v2_bad_tlv);
      pos = end;
    }
    if (n >= total && pos != total) return fail(ParseError::v2_bad_tlv);  // 1 or 2 stray bytes
  }
  if (n < total) return needMore(total);

  ParseResult done;
  done.status = ParseStatus::done;
  done.header.version = 2;
  done.header.length = total;
  done.header.family = AF_UNSPEC;
  if (cmd == kCmdLocal) {
    done.header.command = Command::local;
    return done;
  }
  done.header.command = Command::proxy;
  const uint8_t* a = data + kV2FixedLength;
  if (fam == kFamTcp4) {
    done.header.family = AF_INET;
    done.header.source = ipv4Address(a, readBe16(a + 8));
    done.header.destination = ipv4Address(a + 4, readBe16(a + 10));
  } else if (fam == kFamTcp6) {
    done.header.family = AF_INET6;
    done.header.source = ipv6Address(a, readBe16(a + 32));
    done.header.destination = ipv6Address(a + 16, readBe16(a + 34));
  }
  return done;
}

// ---- writer ---------------------------------------------------------------------------------

// Bounded output: every put checks the room left; a short buffer makes the whole write fail.
struct Out {
  uint8_t* p;
  size_t capacity;
  size_t size = 0;
  bool overflow = false;

  void put(const void* bytes, size_t n) {
    if (overflow || capacity - size < n) {
      overflow = true;
      return;
    }
    std::memcpy(p + size, bytes, n);
    size += n;
  }
  void put(const char* text) { put(text, std::strlen(text)); }
  void putByte(uint8_t b) { put(&b, 1); }
  void putBe16(uint16_t v) {
    putByte(static_cast<uint8_t>(v >> 8));
    putByte(static_cast<uint8_t>(v & 0xFF));
  }
  void putDecimal(unsigned v) {
    char digits[10];
    size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) putByte(static_cast<uint8_t>(digits[--n]));
  }
  size_t result() const { return overflow ? 0 : size; }
};

// The 16 bytes of an address as IPv6; IPv4 as its mapped form ::ffff:a.b.c.d.
void asIpv6(const SocketAddress& a, uint8_t out[16]) {
  if (a.family() == AF_INET6) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(a.sockaddrPtr())->sin6_addr, 16);
    return;
  }
  std::memset(out, 0, 10);
  out[10] = 0xFF;
  out[11] = 0xFF;
  std::memcpy(out + 12, &reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr())->sin_addr, 4);
}

void ipv4Bytes(const SocketAddress& a, uint8_t out[4]) {
  std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr())->sin_addr, 4);
}

// RFC 5952 text: lowercase hex groups without leading zeros, the longest run (first on a tie) of
// two or more zero groups as "::". Never the dotted-quad tail inet_ntop writes for ::ffff:0:0/96,
// which the v1 grammar does not allow.
void putIpv6Text(Out& out, const uint8_t addr[16]) {
  uint16_t groups[8];
  for (int i = 0; i < 8; ++i) groups[i] = readBe16(addr + 2 * i);
  int bestStart = -1;
  int bestLen = 0;
  for (int i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestStart = -1;
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    if (i == bestStart) {
      out.put("::");
      i += bestLen - 1;
      continue;
    }
    if (i > 0 && i != bestStart + bestLen) out.putByte(':');
    const uint16_t g = groups[i];
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned nibble = (g >> shift) & 0xF;
      if (nibble == 0 && !started && shift != 0) continue;
      started = true;
      out.putByte(static_cast<uint8_t>(kHex[nibble]));
    }
  }
}

void putIpv4Text(Out& out, const uint8_t addr[4]) {
  for (int i = 0; i < 4; ++i) {
    if (i > 0) out.putByte('.');
    out.putDecimal(addr[i]);
  }
}

bool isInet(const SocketAddress& a) { return a.family() == AF_INET || a.family() == AF_INET6; }

size_t writeV1(const SocketAddress& src, const SocketAddress& dst, Out out) {
  if (!isInet(src) || !isInet(dst)) {
    out.put("PROXY UNKNOWN\r\n");
    return out.result();
  }
  if (src.family() == AF_INET && dst.family() == AF_INET) {
    uint8_t s[4];
    uint8_t d[4];
    ipv4Bytes(src, s);
    ipv4Bytes(dst, d);
    out.put("PROXY TCP4 ");
    putIpv4Text(out, s);
    out.putByte(' ');
    putIpv4Text(out, d);
  } else {
    uint8_t s[16];
    uint8_t d[16];
    asIpv6(src, s);
    asIpv6(dst, d);
    out.put("PROXY TCP6 ");
    putIpv6Text(out, s);
    out.putByte(' ');
    putIpv6Text(out, d);
  }
  out.putByte(' ');
  out.putDecimal(src.port());
  out.putByte(' ');
  out.putDecimal(dst.port());
  out.put("\r\n");
  return out.result();
}

size_t writeV2(const SocketAddress& src, const SocketAddress& dst, Out out) {
  out.put(kV2Signature, sizeof kV2Signature);
  out.putByte(0x20 | kCmdProxy);
  if (!isInet(src) || !isInet(dst)) {
    out.putByte(kFamUnspec);
    out.putBe16(0);
    return out.result();
  }
  if (src.family() == AF_INET && dst.family() == AF_INET) {
    uint8_t s[4];
    uint8_t d[4];
    ipv4Bytes(src, s);
    ipv4Bytes(dst, d);
    out.putByte(kFamTcp4);
    out.putBe16(12);
    out.put(s, 4);
    out.put(d, 4);
  } else {
    uint8_t s[16];
    uint8_t d[16];
    asIpv6(src, s);
    asIpv6(dst, d);
    out.putByte(kFamTcp6);
    out.putBe16(36);
    out.put(s, 16);
    out.put(d, 16);
  }
  out.putBe16(src.port());
  out.putBe16(dst.port());
  return out.result();
}

}  // namespace

const char* parseErrorName(ParseError error) {
  switch (error) {
#define SPLICEGATE_PP_NAME(name) \
  case ParseError::name: return #name;
    SPLICEGATE_PROXY_PARSE_ERRORS(SPLICEGATE_PP_NAME)
#undef SPLICEGATE_PP_NAME
  }
  return "unknown";
}

ParseResult parse(const uint8_t* data, size_t length) {
  if (length == 0) return needMore(1);
  // The two signatures differ in their first byte, so one byte picks the version; every byte of
  // the signature that has arrived must match it.
  if (data[0] == kV1Signature[0]) {
    const size_t n = std::min(length, sizeof kV1Signature);
    if (std::memcmp(data, kV1Signature, n) != 0) return fail(ParseError::not_proxy);
    if (length <= sizeof kV1Signature) return needMore(length + 1);
    return parseV1(data, length);
  }
  if (data[0] == kV2Signature[0]) {
    const size_t n = std::min(length, sizeof kV2Signature);
    if (std::memcmp(data, kV2Signature, n) != 0) return fail(ParseError::not_proxy);
    return parseV2(data, length);
  }
  return fail(ParseError::not_proxy);
}

size_t write(Version version, const SocketAddress& source, const SocketAddress& destination,
             uint8_t* out, size_t capacity) {
  Out o{out, capacity};
  return version == Version::v1 ? writeV1(source, destination, o) : writeV2(source, destination, o);
}

}  // namespace splicegate::proxy_protocol
