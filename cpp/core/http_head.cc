#include "http_head.h"

#include <cstring>

namespace splicegate::http {

namespace {

template <typename T>
T& self(llhttp_t* p) {
  return *static_cast<T*>(p->data);
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

}  // namespace

bool RequestHead::idempotent() const {
  switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
      return true;
    default:
      return false;
  }
}

// ---- RequestParser ----

const llhttp_settings_t& RequestParser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_url = onUrl;
    v.on_header_field = onHeaderField;
    v.on_header_field_complete = onHeaderFieldComplete;
    v.on_header_value = onHeaderValue;
    v.on_header_value_complete = onHeaderValueComplete;
    v.on_headers_complete = onHeadersComplete;
    v.on_message_complete = onMessageComplete;
    return v;
  }();
  return s;
}

RequestParser::RequestParser(std::string routingHeader, size_t maxHeadBytes)
    : routingHeader_(std::move(routingHeader)), maxHeadBytes_(maxHeadBytes) {
  for (char& c : routingHeader_) c = lower(c);
  reset();
}

void RequestParser::reset() {
  // A fresh llhttp state per request: cheap (a memset), and nothing of a finished request's
  // parser state (its pause, its upgrade) can leak into the next one.
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  parser_.data = this;
  head_ = RequestHead{};
  error_ = HeadError::kNone;
  reason_ = "";
  base_ = nullptr;
  parsed_ = 0;
  headDone_ = false;
  messageDone_ = false;
  counted_ = false;
  remaining_ = 0;
  inField_ = false;
  fieldMatches_ = false;
  fieldMatched_ = 0;
  fieldStart_ = 0;
  valueIsRouting_ = false;
  firstRoutingValue_ = false;
  lineOpen_ = false;
  nameLength_ = 0;
  sawTransferEncoding_ = false;
  transferEncodingLines_ = 0;
  valueIsTransferEncoding_ = false;
  transferEncodingValue_ = Span{};
  lastBodyByte_ = 0;
}

int RequestParser::fail(HeadError error, const char* reason) {
  error_ = error;
  reason_ = reason;
  llhttp_set_error_reason(&parser_, reason);
  return HPE_USER;
}

void RequestParser::closeRoutingLine(uint32_t end) {
  if (!lineOpen_) return;
  lineOpen_ = false;
  Span& line = head_.routingLines[head_.routingLineCount++];
  line.length = end - line.offset;
}

ParseStatus RequestParser::parseHead(const uint8_t* buf, size_t size) {
  if (error_ != HeadError::kNone) return ParseStatus::kError;
  if (headDone_) return ParseStatus::kDone;
  base_ = buf;
  const size_t limit = size < maxHeadBytes_ ? size : maxHeadBytes_;
  if (parsed_ < limit) {
    const char* start = reinterpret_cast<const char*>(buf) + parsed_;
    const llhttp_errno_t e = llhttp_execute(&parser_, start, limit - parsed_);
    if (e == HPE_PAUSED && headDone_) {
      head_.length = static_cast<uint32_t>(parsed_ + static_cast<size_t>(llhttp_get_error_pos(&parser_) - start));
      parsed_ = head_.length;
      // Two things llhttp lets through even in strict mode, both where parsers disagree about
      // where a header or the head ends (so a proxy must refuse them, RFC 9112 2.2 and 5.2):
      // a bare LF as the blank line that ends the head, and obs-fold (a line continued by
      // leading whitespace). One pass over the head finds both: every LF must follow a CR and
      // no line may start with SP or HTAB.
      for (uint32_t i = 0; i < head_.length; ++i) {
        if (buf[i] != '\n') continue;
        if (i == 0 || buf[i - 1] != '\r') {
          fail(HeadError::kMalformed, "bare LF in the request head");
          return ParseStatus::kError;
        }
        if (i + 1 < head_.length && (buf[i + 1] == ' ' || buf[i + 1] == '\t')) {
          fail(HeadError::kMalformed, "obs-fold (header line continued)");
          return ParseStatus::kError;
        }
      }
      // The head ends with CRLF CRLF (checked above): the last header line ends 2 bytes before.
      closeRoutingLine(head_.length - 2);
      if (head_.hasRoutingHeader) {
        // llhttp drops the leading whitespace of a value; drop the trailing one too.
        Span& v = head_.routingValue;
        while (v.length > 0 && (buf[v.end() - 1] == ' ' || buf[v.end() - 1] == '\t')) --v.length;
      }
      return ParseStatus::kDone;
    }
    if (e != HPE_OK) {
      if (error_ == HeadError::kNone) {
        error_ = HeadError::kMalformed;
        reason_ = llhttp_get_error_reason(&parser_);
        if (reason_ == nullptr) reason_ = llhttp_errno_name(e);
      }
      return ParseStatus::kError;
    }
    parsed_ = limit;
  }
  if (size >= maxHeadBytes_) {
    error_ = HeadError::kTooLarge;
    reason_ = "request head larger than max_request_head_bytes";
    return ParseStatus::kError;
  }
  return ParseStatus::kNeedMore;
}

Progress RequestParser::body(const uint8_t* data, size_t size) {
  Progress out;
  if (!headDone_ || error_ != HeadError::kNone) {
    out.error = true;
    return out;
  }
  if (messageDone_) {
    out.complete = true;
    return out;
  }
  // No body: complete without waiting for a byte (llhttp would only say so on the next one).
  if (!head_.chunked && head_.contentLength == 0) {
    messageDone_ = true;
    out.complete = true;
    return out;
  }
  if (counted_) {
    const size_t n = static_cast<uint64_t>(size) < remaining_ ? size : static_cast<size_t>(remaining_);
    remaining_ -= n;
    out.consumed = out.body = n;
    if (remaining_ == 0) {
      messageDone_ = true;
      out.complete = true;
    }
    return out;
  }
  if (size == 0) return out;
  if (llhttp_get_errno(&parser_) == HPE_PAUSED) llhttp_resume(&parser_);
  const char* start = reinterpret_cast<const char*>(data);
  const llhttp_errno_t e = llhttp_execute(&parser_, start, size);
  if (e == HPE_OK) {
    out.consumed = out.body = size;
    lastBodyByte_ = data[size - 1];
    return out;
  }
  if ((e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) && messageDone_) {
    const size_t n = static_cast<size_t>(llhttp_get_error_pos(&parser_) - start);
    // llhttp ends a chunked body's trailer section at a bare LF too (even in strict mode, as a
    // head at "\r\n\n"): a server that wants CRLF would read on, into the next request.
    const uint8_t beforeLast = n >= 2 ? data[n - 2] : lastBodyByte_;
    if (head_.chunked && (n == 0 || data[n - 1] != '\n' || beforeLast != '\r')) {
      fail(HeadError::kMalformed, "bare LF ending the chunked body's trailer section");
      out.error = true;
      return out;
    }
    out.consumed = out.body = n;
    out.complete = true;
    return out;
  }
  error_ = HeadError::kMalformed;
  reason_ = llhttp_get_error_reason(&parser_);
  if (reason_ == nullptr) reason_ = llhttp_errno_name(e);
  out.error = true;
  return out;
}

void RequestParser::bodyMoved(uint64_t n) {
  if (!counted_ || messageDone_) return;
  remaining_ -= n < remaining_ ? n : remaining_;
  if (remaining_ == 0) messageDone_ = true;
}

int RequestParser::onUrl(llhttp_t* p, const char* at, size_t n) {
  RequestParser& r = self<RequestParser>(p);
  if (r.head_.target.length == 0) r.head_.target.offset = static_cast<uint32_t>(at - reinterpret_cast<const char*>(r.base_));
  r.head_.target.length += static_cast<uint32_t>(n);
  return 0;
}

int RequestParser::onHeaderField(llhttp_t* p, const char* at, size_t n) {
  RequestParser& r = self<RequestParser>(p);
  const uint32_t offset = static_cast<uint32_t>(at - reinterpret_cast<const char*>(r.base_));
  if (!r.inField_) {
    // A new header line: the routing line before it (if any) ends here.
    r.closeRoutingLine(offset);
    r.inField_ = true;
    r.fieldMatches_ = !r.routingHeader_.empty();
    r.fieldMatched_ = 0;
    r.fieldStart_ = offset;
    r.nameLength_ = 0;
  }
  for (size_t i = 0; i < n; ++i, ++r.nameLength_) {
    if (r.nameLength_ < sizeof r.name_) r.name_[r.nameLength_] = lower(at[i]);
  }
  for (size_t i = 0; i < n && r.fieldMatches_; ++i) {
    if (r.fieldMatched_ >= r.routingHeader_.size() || lower(at[i]) != r.routingHeader_[r.fieldMatched_]) {
      r.fieldMatches_ = false;
    } else {
      ++r.fieldMatched_;
    }
  }
  return 0;
}

int RequestParser::onHeaderFieldComplete(llhttp_t* p) {
  RequestParser& r = self<RequestParser>(p);
  // llhttp 8 takes a line that starts with ':' as a header with an empty name; a field name is a
  // token (RFC 9110 5.1), and servers disagree about such a line.
  if (!r.inField_ || r.nameLength_ == 0) return r.fail(HeadError::kMalformed, "empty header name");
  static constexpr char kTransferEncoding[] = "transfer-encoding";
  r.valueIsTransferEncoding_ =
      r.nameLength_ == sizeof kTransferEncoding - 1 && std::memcmp(r.name_, kTransferEncoding, r.nameLength_) == 0;
  if (r.valueIsTransferEncoding_) {
    r.sawTransferEncoding_ = true;
    if (r.transferEncodingLines_ < 2) ++r.transferEncodingLines_;
    r.transferEncodingValue_ = Span{0, 0};
  }
  r.inField_ = false;
  r.valueIsRouting_ = r.fieldMatches_ && r.fieldMatched_ == r.routingHeader_.size();
  r.firstRoutingValue_ = false;
  if (r.valueIsRouting_) {
    if (r.head_.routingLineCount == kMaxRoutingHeaders) {
      return r.fail(HeadError::kMalformed, "too many copies of the routing header");
    }
    r.head_.routingLines[r.head_.routingLineCount] = Span{r.fieldStart_, 0};
    r.lineOpen_ = true;
    r.firstRoutingValue_ = !r.head_.hasRoutingHeader;
    if (r.firstRoutingValue_) r.head_.routingValue = Span{0, 0};
    r.head_.hasRoutingHeader = true;
  }
  return 0;
}

int RequestParser::onHeaderValue(llhttp_t* p, const char* at, size_t n) {
  RequestParser& r = self<RequestParser>(p);
  const uint32_t offset = static_cast<uint32_t>(at - reinterpret_cast<const char*>(r.base_));
  if (r.valueIsTransferEncoding_) {
    Span& te = r.transferEncodingValue_;
    if (te.length == 0) te.offset = offset;
    te.length = offset + static_cast<uint32_t>(n) - te.offset;
  }
  if (!r.firstRoutingValue_) return 0;
  Span& v = r.head_.routingValue;
  if (v.length == 0) v.offset = offset;
  v.length = offset + static_cast<uint32_t>(n) - v.offset;
  return 0;
}

int RequestParser::onHeaderValueComplete(llhttp_t* p) {
  RequestParser& r = self<RequestParser>(p);
  r.valueIsRouting_ = false;
  r.firstRoutingValue_ = false;
  r.valueIsTransferEncoding_ = false;
  return 0;
}

int RequestParser::onHeadersComplete(llhttp_t* p) {
  RequestParser& r = self<RequestParser>(p);
  if (p->http_major != 1 || p->http_minor > 1) return r.fail(HeadError::kMalformed, "HTTP version is not 1.0 or 1.1");
  RequestHead& h = r.head_;
  h.method = p->method;
  h.versionMajor = p->http_major;
  h.versionMinor = p->http_minor;
  h.keepAlive = llhttp_should_keep_alive(p) != 0;
  h.upgrade = p->upgrade != 0;
  h.chunked = (p->flags & F_CHUNKED) != 0;
  h.hasContentLength = (p->flags & F_CONTENT_LENGTH) != 0;
  h.contentLength = h.hasContentLength ? p->content_length : 0;
  // Transfer-Encoding without a final chunked has no length a proxy can trust (RFC 9112 6.3):
  // llhttp refuses it only once the body is parsed; refuse it with the head. An empty one too,
  // which llhttp 8 does not even flag (and so lets a Content-Length stand beside it).
  const bool transferEncoding = (p->flags & F_TRANSFER_ENCODING) != 0 || r.sawTransferEncoding_;
  if (transferEncoding && !h.chunked) {
    return r.fail(HeadError::kMalformed, "Transfer-Encoding without chunked as the final coding");
  }
  // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing (a 1.0 server may
  // ignore it and read the chunked body as the next request).
  if (transferEncoding && h.versionMinor == 0) {
    return r.fail(HeadError::kMalformed, "Transfer-Encoding in an HTTP/1.0 request");
  }
  // Only the one coding "chunked", on one line ("gzip, chunked", ",chunked", or a second line are
  // refused, as Envoy does): the head goes up unchanged, and a server that matches "chunked"
  // exactly, or knows no other coding, would read no body and then the chunked body as its next
  // request (gunicorn before 22, CVE-2024-1135). Clients send no other request coding.
  if (transferEncoding) {
    static constexpr char kChunked[] = "chunked";
    Span v = r.transferEncodingValue_;
    const uint8_t* b = r.base_;
    while (v.length > 0 && (b[v.end() - 1] == ' ' || b[v.end() - 1] == '\t')) --v.length;
    bool chunkedOnly = r.transferEncodingLines_ == 1 && v.length == sizeof kChunked - 1;
    for (uint32_t i = 0; chunkedOnly && i < v.length; ++i) {
      chunkedOnly = lower(static_cast<char>(b[v.offset + i])) == kChunked[i];
    }
    if (!chunkedOnly) return r.fail(HeadError::kMalformed, "Transfer-Encoding other than chunked alone");
  }
  // Content-Length with Transfer-Encoding was refused above (llhttp, strict): a length body is
  // plain counting, done in body()/bodyMoved() rather than by llhttp, so it can be spliced.
  r.counted_ = h.hasContentLength && h.contentLength > 0;
  r.remaining_ = h.contentLength;
  r.headDone_ = true;
  return HPE_PAUSED;  // parseHead stops at the end of the head; body() resumes
}

int RequestParser::onMessageComplete(llhttp_t* p) {
  self<RequestParser>(p).messageDone_ = true;
  return HPE_PAUSED;  // whatever follows is the next request
}

// ---- ResponseParser ----

const llhttp_settings_t& ResponseParser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_header_field = onHeaderField;
    v.on_header_field_complete = onHeaderFieldComplete;
    v.on_headers_complete = onHeadersComplete;
    v.on_message_complete = onMessageComplete;
    return v;
  }();
  return s;
}

ResponseParser::ResponseParser() { start(false, false); }

int ResponseParser::onHeaderField(llhttp_t* p, const char* at, size_t n) {
  ResponseParser& r = self<ResponseParser>(p);
  if (!r.inField_) {
    r.inField_ = true;
    r.nameLength_ = 0;
  }
  for (size_t i = 0; i < n; ++i, ++r.nameLength_) {
    if (r.nameLength_ < sizeof r.name_) r.name_[r.nameLength_] = lower(at[i]);
  }
  return 0;
}

int ResponseParser::onHeaderFieldComplete(llhttp_t* p) {
  ResponseParser& r = self<ResponseParser>(p);
  r.inField_ = false;
  static constexpr char kTransferEncoding[] = "transfer-encoding";
  if (r.nameLength_ == sizeof kTransferEncoding - 1 && std::memcmp(r.name_, kTransferEncoding, r.nameLength_) == 0) {
    r.sawTransferEncoding_ = true;
  }
  return 0;
}

bool ResponseParser::scanHead(const char* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    const uint8_t c = static_cast<uint8_t>(data[i]);
    if (c == '\n' && lastByte_ != '\r') {
      reason_ = "bare LF in the response head";
      return false;
    }
    if ((c == ' ' || c == '\t') && lastByte_ == '\n') {
      reason_ = "obs-fold in the response head";  // RFC 9112 5.2: a proxy rejects it (502) or unfolds it
      return false;
    }
    lastByte_ = c;
  }
  return true;
}

void ResponseParser::start(bool headRequest, bool upgradeRequested) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  headRequest_ = headRequest;
  upgradeRequested_ = upgradeRequested;
  headError_ = nullptr;
  headSeen_ = false;
  inBody_ = false;
  body_ = Body::kNone;
  remaining_ = 0;
  done_ = false;
  upgraded_ = false;
  keepAlive_ = false;
  status_ = 0;
  reason_ = "";
  lastByte_ = 0;
  nameLength_ = 0;
  inField_ = false;
  sawTransferEncoding_ = false;
}

int ResponseParser::onHeadersComplete(llhttp_t* p) {
  ResponseParser& r = self<ResponseParser>(p);
  r.status_ = p->status_code;
  // Not an HTTP/1.x response a client frames as we do (llhttp 8 takes HTTP/0.9 and 2.0 status
  // lines, and any three digits as a status).
  if (p->http_major != 1 || p->http_minor > 1) {
    r.headError_ = "response version is not HTTP/1.0 or 1.1";
    return -1;
  }
  if (r.status_ < 100) {
    r.headError_ = "response status under 100";
    return -1;
  }
  // Each head (interim ones too) starts afresh.
  const bool transferEncoding = (p->flags & F_TRANSFER_ENCODING) != 0 || r.sawTransferEncoding_;
  r.sawTransferEncoding_ = false;
  // Interim: a 1xx ends at its head, whatever Content-Length or Transfer-Encoding it carries (RFC
  // 9110 15.2, and what every client does). llhttp 8 would read such a body (it knows only that 1xx
  // never reads to close): bytes the client takes for the final response (and for responses behind
  // it, to its next requests) would be skipped here. 1 = no body.
  if (r.status_ >= 100 && r.status_ < 200 && r.status_ != 101) return 1;
  if (r.status_ == 101 && !r.upgradeRequested_) {
    // Not framable as HTTP and not a tunnel the client asked for: relayed raw, it would carry
    // the client's next requests to this server unrouted and unjudged by the policy.
    r.headError_ = "101 to a request without Upgrade";
    return -1;
  }
  r.headSeen_ = true;
  // The final head: its framing, decided as llhttp__after_headers_complete would, except that
  // 204 and 304 never have a body (llhttp 8 would read a Content-Length after them).
  if (r.headRequest_ || r.status_ == 101 || r.status_ == 204 || r.status_ == 304) {
    r.body_ = Body::kNone;
  } else if ((p->flags & F_CHUNKED) != 0 && p->http_minor > 0) {
    r.body_ = Body::kChunked;
  } else if (transferEncoding) {
    // (Transfer-Encoding in HTTP/1.0 is faulty framing, closed after: RFC 9112 6.1.)
    // A response coding that is not chunked, or none (an empty Transfer-Encoding, which llhttp 8
    // does not flag and so lets a Content-Length stand beside): read to close (RFC 9112 6.3).
    r.body_ = Body::kUntilClose;
  } else if ((p->flags & F_CONTENT_LENGTH) != 0) {
    r.body_ = p->content_length == 0 ? Body::kNone : Body::kLength;
    r.remaining_ = p->content_length;
  } else {
    r.body_ = Body::kUntilClose;
  }
  const bool connectionAllows = (p->http_major > 0 && p->http_minor > 0) ? (p->flags & F_CONNECTION_CLOSE) == 0
                                                                         : (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
  r.keepAlive_ = connectionAllows && r.body_ != Body::kUntilClose;
  return HPE_PAUSED;  // feed() goes on with the body itself
}

int ResponseParser::onMessageComplete(llhttp_t* p) {
  ResponseParser& r = self<ResponseParser>(p);
  if (!r.headSeen_) return 0;  // the end of an interim response: the final one follows
  r.done_ = true;  // the last chunk (only chunked bodies are parsed by llhttp past the head)
  return HPE_PAUSED;
}

Progress ResponseParser::feed(const uint8_t* data, size_t size) {
  Progress out;
  if (done_) {
    out.complete = true;
    return out;
  }
  if (size == 0) return out;
  const char* start = reinterpret_cast<const char*>(data);
  if (inBody_) return feedBody(start, size);
  const llhttp_errno_t e = llhttp_execute(&parser_, start, size);
  if (e == HPE_OK) {  // still in the head (or in interim responses)
    if (!scanHead(start, size)) {
      out.error = true;
      return out;
    }
    out.consumed = size;
    return out;
  }
  if (e == HPE_PAUSED && headSeen_) {
    const size_t head = static_cast<size_t>(llhttp_get_error_pos(&parser_) - start);
    if (!scanHead(start, head)) {
      out.error = true;
      return out;
    }
    inBody_ = true;
    if (body_ == Body::kNone) {
      done_ = true;
      upgraded_ = status_ == 101;
      out.consumed = head;
      out.complete = true;
      return out;
    }
    out = feedBody(start + head, size - head);
    out.consumed += head;
    return out;
  }
  reason_ = headError_ != nullptr ? headError_ : llhttp_get_error_reason(&parser_);
  if (reason_ == nullptr) reason_ = llhttp_errno_name(e);
  out.error = true;
  return out;
}

Progress ResponseParser::feedBody(const char* data, size_t size) {
  Progress out;
  if (size == 0) return out;
  switch (body_) {
    case Body::kLength: {
      const size_t n = static_cast<uint64_t>(size) < remaining_ ? size : static_cast<size_t>(remaining_);
      remaining_ -= n;
      out.consumed = out.body = n;
      if (remaining_ == 0) {
        done_ = true;
        out.complete = true;
      }
      return out;
    }
    case Body::kUntilClose:
      out.consumed = out.body = size;
      return out;
    case Body::kChunked: {
      if (llhttp_get_errno(&parser_) == HPE_PAUSED) llhttp_resume(&parser_);  // the pause at the head
      const llhttp_errno_t e = llhttp_execute(&parser_, data, size);
      if (e == HPE_OK) {
        out.consumed = out.body = size;
        lastByte_ = static_cast<uint8_t>(data[size - 1]);
        return out;
      }
      if (e == HPE_PAUSED && done_) {
        const size_t n = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
        // As for requests: llhttp ends the trailer section at a bare LF too.
        const uint8_t beforeLast = n >= 2 ? static_cast<uint8_t>(data[n - 2]) : lastByte_;
        if (n == 0 || data[n - 1] != '\n' || beforeLast != '\r') {
          done_ = false;
          reason_ = "bare LF ending the chunked body's trailer section";
          out.error = true;
          return out;
        }
        out.consumed = out.body = n;
        out.complete = true;
        return out;
      }
      reason_ = llhttp_get_error_reason(&parser_);
      if (reason_ == nullptr) reason_ = llhttp_errno_name(e);
      out.error = true;
      return out;
    }
    case Body::kNone:
      break;
  }
  out.error = true;  // never: a bodiless response is done at its head
  return out;
}

Progress ResponseParser::finish() {
  Progress out;
  if (!done_) {
    if (!inBody_ || body_ != Body::kUntilClose) {
      reason_ = "response cut short";
      out.error = true;
      return out;
    }
    done_ = true;  // it ended with the connection
    keepAlive_ = false;
  }
  out.complete = true;
  return out;
}

uint64_t ResponseParser::bodyRemaining() const {
  if (!inBody_ || done_) return 0;
  if (body_ == Body::kLength) return remaining_;
  return body_ == Body::kUntilClose ? kUntilClose : 0;
}

void ResponseParser::bodyMoved(uint64_t n) {
  if (!inBody_ || done_ || body_ != Body::kLength) return;
  remaining_ -= n < remaining_ ? n : remaining_;
  if (remaining_ == 0) done_ = true;
}

size_t stripRoutingHeaders(uint8_t* buf, size_t size, const RequestHead& head) {
  size_t write = 0;
  size_t read = 0;
  for (uint8_t i = 0; i < head.routingLineCount; ++i) {
    const Span& line = head.routingLines[i];
    if (line.offset < read || line.end() > size) break;  // not ours to trust; never the case
    std::memmove(buf + write, buf + read, line.offset - read);
    write += line.offset - read;
    read = line.end();
  }
  std::memmove(buf + write, buf + read, size - read);
  return write + (size - read);
}

}  // namespace splicegate::http
