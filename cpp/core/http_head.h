// HTTP/1 message parsing for the HTTP listener (docs/HTTP.md), all done by llhttp (built in strict
// mode; no lenient flag is ever set): this file only drives it and records what the listener needs.
//
// RequestParser reads one request at a time from the downstream connection:
//   parseHead(buf, size)  the head, from a buffer that holds everything received for it so far
//                         (the same buffer, grown between calls: only new bytes are parsed); stops
//                         at the end of the head. Refuses what a smuggling defence must refuse:
//                         Content-Length with Transfer-Encoding, duplicate or conflicting
//                         Content-Length, an empty Transfer-Encoding, Transfer-Encoding in
//                         HTTP/1.0, an empty header name, obs-fold, bare LF, invalid chunk sizes
//                         and a bare LF ending the trailers (in body()), versions other than
//                         HTTP/1.0 and 1.1, and heads over the size cap.
//   body(data, size)      then the body, chunk by chunk as it arrives: how many of the bytes
//                         belong to this request and whether it is complete, so the next request on
//                         a keep-alive connection starts exactly where this one ended.
//   bodyRemaining()       a Content-Length body's bytes still to come; the caller may move them
//   bodyMoved(n)          itself (splice) and report them here instead of passing them to body().
//   reset()               for the next request.
// Nothing is allocated per request or per header: header names are matched as they stream by,
// values are recorded as offsets into the caller's buffer.
//
// ResponseParser follows a response from the upstream to find its end (Content-Length, chunked,
// or the upstream closing), with no body for HEAD, 204 and 304, skipping 1xx interim responses
// (never with a body, whatever they say) except 101 (an upgrade, after which the bytes are no
// longer HTTP). Response heads are held to the request's rules (no obs-fold, no bare LF). llhttp parses heads and
// chunked framing; a Content-Length or close-delimited body is counted here (llhttp only counts
// it too), which is what lets the session splice it: bodyRemaining() / bodyMoved(n) as above.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace splicegate::http {

// A range of the caller's head buffer.
struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t end() const { return offset + length; }
};

enum class HeadError : uint8_t {
  kNone,
  kMalformed,  // 400: anything llhttp refuses, obs-fold, an HTTP version other than 1.0/1.1
  kTooLarge,   // 431: no complete head within maxHeadBytes
};

// The most copies of the routing header one request may carry (each is stripped); more is malformed.
inline constexpr size_t kMaxRoutingHeaders = 8;

// bodyRemaining() of a response that ends when the upstream closes.
inline constexpr uint64_t kUntilClose = UINT64_MAX;

struct RequestHead {
  uint8_t method = 0;  // llhttp_method_t
  uint8_t versionMajor = 0;
  uint8_t versionMinor = 0;
  uint32_t length = 0;  // bytes of the head, blank line included
  Span target;          // request-target as sent (origin-, absolute- or authority-form)
  bool hasRoutingHeader = false;
  Span routingValue;    // the routing header's first value, surrounding whitespace trimmed
  bool keepAlive = false;  // the client allows another request after this one (version + Connection)
  bool upgrade = false;    // CONNECT, or Connection: upgrade with an Upgrade header
  bool chunked = false;
  bool hasContentLength = false;
  uint64_t contentLength = 0;
  // The lines of every routing header copy, CRLF included, for stripping (stripRoutingHeaders).
  Span routingLines[kMaxRoutingHeaders];
  uint8_t routingLineCount = 0;

  bool isConnect() const { return method == HTTP_CONNECT; }
  bool isHead() const { return method == HTTP_HEAD; }
  // Idempotent methods (RFC 9110 9.2.2): the only ones retried on a fresh upstream connection.
  bool idempotent() const;
};

enum class ParseStatus : uint8_t { kNeedMore, kDone, kError };

// How far a body (or a response) got in one call.
struct Progress {
  size_t consumed = 0;    // bytes of the input that belong to this message
  size_t body = 0;        // of those, the bytes after the (final) head: body, chunk framing included
  bool complete = false;  // its last byte is among them
  bool error = false;     // the framing is invalid (bad chunk size, ...): nothing more is trusted
};

class RequestParser {
 public:
  // routingHeader: the header name to look for (compared case-insensitively); empty = none.
  RequestParser(std::string routingHeader, size_t maxHeadBytes);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // buf[0, size) holds every byte received for this request so far, from its first byte; bytes
  // beyond the head (a body, a pipelined request) may follow and are left alone.
  ParseStatus parseHead(const uint8_t* buf, size_t size);
  const RequestHead& head() const { return head_; }
  HeadError error() const { return error_; }
  // llhttp's (or our) reason for a refusal, a static string, for logs and tests.
  const char* errorReason() const { return reason_; }

  // After kDone: the body bytes that follow the head, in order, in any slices. A request without a
  // body is complete at once (body(nullptr, 0)).
  Progress body(const uint8_t* data, size_t size);
  // A Content-Length body's bytes not yet seen (by body() or bodyMoved()); 0 for a chunked body,
  // none, or a complete one.
  uint64_t bodyRemaining() const { return counted_ && !messageDone_ ? remaining_ : 0; }
  // n (<= bodyRemaining()) of those bytes went past the parser; the body completes at the last.
  void bodyMoved(uint64_t n);
  // Ready for the next request on the same connection.
  void reset();

 private:
  static int onMessageBegin(llhttp_t* p);
  static int onUrl(llhttp_t* p, const char* at, size_t n);
  static int onHeaderField(llhttp_t* p, const char* at, size_t n);
  static int onHeaderFieldComplete(llhttp_t* p);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t n);
  static int onHeaderValueComplete(llhttp_t* p);
  static int onHeadersComplete(llhttp_t* p);
  static int onMessageComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();
  int fail(HeadError error, const char* reason);
  void closeRoutingLine(uint32_t end);

  std::string routingHeader_;  // lower case
  size_t maxHeadBytes_;
  llhttp_t parser_;
  RequestHead head_;
  HeadError error_ = HeadError::kNone;
  const char* reason_ = "";
  // During parseHead: the buffer of the current call, and how much of it earlier calls parsed.
  const uint8_t* base_ = nullptr;
  size_t parsed_ = 0;
  bool headDone_ = false;
  bool messageDone_ = false;
  // A Content-Length body (no Transfer-Encoding) is counted here, not by llhttp: remaining_ bytes.
  bool counted_ = false;
  uint64_t remaining_ = 0;
  // Header-name matching as the field streams by (it may arrive in pieces).
  bool inField_ = false;
  bool fieldMatches_ = false;
  size_t fieldMatched_ = 0;
  uint32_t fieldStart_ = 0;
  bool valueIsRouting_ = false;  // the value being read belongs to a routing header copy
  bool firstRoutingValue_ = false;
  bool valueStarted_ = false;
  uint32_t valueEnd_ = 0;  // end of the value's last span (a gap before the next one is obs-fold)
  bool lineOpen_ = false;  // a routing line whose end is the next field's start (or the head's end)
  // The field name's first bytes, lower case, to know a Transfer-Encoding line whatever its value
  // (llhttp 8 flags none for an empty one); nameLength_ counts them all (0: an empty name).
  char name_[18] = {};
  size_t nameLength_ = 0;
  bool sawTransferEncoding_ = false;
  // The Transfer-Encoding lines seen, and the value of the last (offsets as for routingValue):
  // a request's must be one line saying "chunked" and nothing else.
  uint8_t transferEncodingLines_ = 0;
  bool valueIsTransferEncoding_ = false;
  Span transferEncodingValue_;
  // A chunked body's last byte fed so far: the trailer section's final LF must follow a CR.
  uint8_t lastBodyByte_ = 0;
};

class ResponseParser {
 public:
  ResponseParser();
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // A new response, to a request with this method (HEAD: no body whatever the headers say) that
  // did or did not ask for an Upgrade (a 101 to one that did not is an error, RFC 9110 15.2.2).
  void start(bool headRequest, bool upgradeRequested);
  // Bytes from the upstream, in order. consumed < size only when the response completed: what
  // follows is not part of it.
  Progress feed(const uint8_t* data, size_t size);
  // The upstream closed: completes a response that ends at close; anything else cut short is an error.
  Progress finish();
  // Once the final head was fed: the body bytes still to come for a Content-Length body,
  // kUntilClose for one that ends with the connection, 0 otherwise (chunked, none, complete).
  uint64_t bodyRemaining() const;
  // n (<= bodyRemaining()) body bytes went past the parser; a Content-Length body completes at
  // its last byte.
  void bodyMoved(uint64_t n);

  // Valid once the final (non-1xx, or 101) response's head was read.
  bool headSeen() const { return headSeen_; }
  int status() const { return status_; }
  bool keepAlive() const { return keepAlive_; }
  bool upgraded() const { return upgraded_; }  // 101: the rest of the connection is not HTTP
  bool complete() const { return done_; }      // the final response's last byte was seen
  const char* errorReason() const { return reason_; }

 private:
  static int onHeaderField(llhttp_t* p, const char* at, size_t n);
  static int onHeaderFieldComplete(llhttp_t* p);
  static int onHeadersComplete(llhttp_t* p);
  static int onMessageComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();
  // The body bytes at data[0, size) that follow the final head; Progress as for feed().
  Progress feedBody(const char* data, size_t size);
  // What llhttp lets through in heads even in strict mode (as for requests): a bare LF ending the
  // head, obs-fold. Checked over the head bytes of each feed (interim heads included); false = bad.
  bool scanHead(const char* data, size_t size);

  // How the final response's body is framed (llhttp__after_headers_complete's rules, plus no
  // body for 204/304 whatever their Content-Length says).
  enum class Body : uint8_t { kNone, kLength, kChunked, kUntilClose };

  llhttp_t parser_;
  bool headRequest_ = false;
  bool upgradeRequested_ = false;  // the request carried Upgrade (and Connection: upgrade)
  const char* headError_ = nullptr;  // why onHeadersComplete refused the head (a 101 unasked, ...)
  bool headSeen_ = false;  // the final head was parsed (llhttp paused at its end)
  bool inBody_ = false;    // ... and feed() went past that pause
  Body body_ = Body::kNone;
  uint64_t remaining_ = 0;  // kLength: body bytes still to come
  bool done_ = false;
  bool upgraded_ = false;
  bool keepAlive_ = false;
  int status_ = 0;
  const char* reason_ = "";
  uint8_t lastByte_ = 0;  // the last head (or chunked body) byte fed, for the checks across feeds
  // As in RequestParser: a Transfer-Encoding line whatever its value (llhttp flags none for an
  // empty one).
  char name_[18] = {};
  size_t nameLength_ = 0;
  bool inField_ = false;
  bool sawTransferEncoding_ = false;
};

// Removes the routing header's lines from buf[0, size) in place (the head and whatever follows
// it); returns the new size. The head shrinks by the removed bytes.
size_t stripRoutingHeaders(uint8_t* buf, size_t size, const RequestHead& head);

}  // namespace splicegate::http
