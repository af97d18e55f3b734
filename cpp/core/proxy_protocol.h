// PROXY protocol v1 (text) and v2 (binary) headers, as specified in HAProxy's
// doc/proxy-protocol.txt: a parser for the header a trusted load balancer puts in front of a
// connection, and a writer for the header splicegate puts in front of an upstream connection.
//
// The parser is incremental without keeping state: the caller accumulates the bytes received so
// far (from the first byte of the connection) in a small fixed buffer of kMaxHeaderLength bytes and
// calls parse() after each read; parse() re-reads that prefix (at most 536 bytes, so re-reading is
// cheaper than keeping a state machine) and answers NeedMore, Done or Error. It is strict: a byte
// that cannot start or continue a valid header is an Error as soon as it arrives, so a sender
// that gets it wrong is cut off at once, and a prefix that is neither signature is reported as
// ParseError::not_proxy from its first differing byte (a listener that does not require the header
// can then relay the connection as plain traffic). Neither the parser nor the writer allocates,
// throws or makes a system call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "socket_address.h"

namespace splicegate::proxy_protocol {

// v1: the longest line the spec allows, CRLF included ("PROXY UNKNOWN <v6> <v6> 65535 65535\r\n").
constexpr size_t kV1MaxLength = 107;
// v2: the fixed part (signature, version/command, family/transport, length).
constexpr size_t kV2FixedLength = 16;
// Bound on a whole v2 header, TLVs included: the smallest TCP segment every host must accept
// (576 - 40), which the spec says the header is designed to fit in. Longer headers are refused
// (ParseError::v2_too_long) before any of their payload is waited for.
constexpr size_t kMaxHeaderLength = 536;
constexpr size_t kV2MaxPayload = kMaxHeaderLength - kV2FixedLength;
// The writer's longest output: a TCP6 v1 line with the longest addresses (104) is longer than
// any v2 header it writes (16 + 36 = 52).
constexpr size_t kMaxWrittenLength = 104;

// Why a prefix can never become a valid header. The names are the suffixes of the per-reason
// counters, so they are a contract: add, never rename.
#define SPLICEGATE_PROXY_PARSE_ERRORS(X)                                                          \
  X(not_proxy)             /* the first bytes match neither the v1 nor the v2 signature */      \
  X(v1_too_long)           /* no CRLF within the first kV1MaxLength bytes */                     \
  X(v1_bad_syntax)         /* a space, CR or LF out of place, a missing field, a stray byte */   \
  X(v1_bad_protocol)       /* not TCP4, TCP6 or UNKNOWN */                                       \
  X(v1_bad_address)        /* not a canonical IP literal of the announced family */             \
  X(v1_bad_port)           /* not a decimal 0..65535 without leading zeros */                   \
  X(v2_bad_version)        /* version nibble other than 2 */                                     \
  X(v2_bad_command)        /* command nibble other than LOCAL (0) or PROXY (1) */                \
  X(v2_bad_family)         /* family or transport nibble not assigned by the spec */            \
  X(v2_too_long)           /* the announced length would pass kMaxHeaderLength */                \
  X(v2_bad_address_length) /* a PROXY header shorter than its family's addresses */             \
  X(v2_bad_tlv)            /* a TLV that runs past the end of the header */

enum class ParseError : uint8_t {
#define SPLICEGATE_PP_ENUM(name) name,
  SPLICEGATE_PROXY_PARSE_ERRORS(SPLICEGATE_PP_ENUM)
#undef SPLICEGATE_PP_ENUM
};

#define SPLICEGATE_PP_COUNT(name) +1
constexpr size_t kParseErrorCount = 0 SPLICEGATE_PROXY_PARSE_ERRORS(SPLICEGATE_PP_COUNT);
#undef SPLICEGATE_PP_COUNT

// "v1_bad_port" for ParseError::v1_bad_port; a static string.
const char* parseErrorName(ParseError error);

enum class Command : uint8_t {
  proxy,    // relayed on behalf of a client: the addresses are the client's and its destination
  local,    // v2 LOCAL: the sender's own connection (health check); use the socket's own addresses
  unknown,  // v1 "PROXY UNKNOWN": the sender could not tell; use the socket's own addresses
};

struct Header {
  uint8_t version = 0;  // 1 or 2
  Command command = Command::unknown;
  // AF_INET or AF_INET6 when source and destination were decoded; AF_UNSPEC otherwise: LOCAL,
  // UNKNOWN, and v2 PROXY headers for a transport this TCP proxy does not interpret (UDP, UNIX,
  // UNSPEC), which the spec says a receiver handles as if it carried no addresses.
  int family = AF_UNSPEC;
  SocketAddress source;       // the client
  SocketAddress destination;  // where the client connected to (the original destination)
  size_t length = 0;          // header bytes, TLVs included; the stream's own bytes follow
};

enum class ParseStatus : uint8_t { need_more, done, error };

struct ParseResult {
  ParseStatus status = ParseStatus::need_more;
  // need_more: the total prefix length at which parse() can next decide (for v2, the whole header
  // once its length field has arrived; otherwise one more byte). A reader that must not take
  // stream bytes past the header reads at most want - length more bytes.
  size_t want = 0;
  ParseError error = ParseError::not_proxy;  // meaningful when status == error
  Header header;                              // meaningful when status == done
};

// Parses the first `length` bytes of a connection. Only bytes [0, header.length) belong to the
// header; any after it are the stream's. Once a prefix gives done or error, every longer prefix
// gives the same answer.
ParseResult parse(const uint8_t* data, size_t length);

enum class Version : uint8_t { v1 = 1, v2 = 2 };

// Writes a header naming `source` (the client) and `destination` (its original destination) into
// out[0, capacity); returns the bytes written, or 0 when capacity is too small (kMaxWrittenLength
// always suffices). Both IPv4: TCP4 / INET. Otherwise both are written as IPv6, an IPv4 one as
// its IPv4-mapped form (::ffff:a.b.c.d), so a v4 client of a dual-stack listener keeps its
// address. A family other than AF_INET/AF_INET6 on either side writes "PROXY UNKNOWN\r\n" (v1) or
// a v2 PROXY header with family UNSPEC and no addresses.
size_t write(Version version, const SocketAddress& source, const SocketAddress& destination,
             uint8_t* out, size_t capacity);

}  // namespace splicegate::proxy_protocol
