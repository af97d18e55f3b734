// HttpSession (http_session.h): what the session says itself. Its error answers (with
// x-splicegate-error and connection: close, then a linger so the client can read them), a drain's
// "connection: close" on a response head, and each request's access-log record.
#include "http_session.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace splicegate {

namespace {

// After an error response: how long the client gets to read it and close before the socket goes.
constexpr uint64_t kLingerUs = 2'000'000;

const char* statusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 508: return "Loop Detected";
    default: return "Error";
  }
}

}  // namespace

void HttpSession::respondError(int status, const char* reason, Stat counter) {
  ctx_.stats.add(counter);
  releaseUpstream(false);
  openRequestLog(AccessRecord::kNoMethod);  // no-op when the head was read (it opened then)
  if (responseStarted_) {
    close(CloseReason::kUpstreamError);  // bytes of a response already went out: no fake end
    return;
  }
  char body[64];
  const int bodyLength = std::snprintf(body, sizeof body, "%s\n", reason);
  char text[384];
  const int n = std::snprintf(text, sizeof text,
                              "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                              "connection: close\r\nx-splicegate-error: %s\r\n\r\n%s",
                              status, statusText(status), bodyLength, reason, body);
  toDown_.assign(text, text + std::min<int>(n, static_cast<int>(sizeof text) - 1));
  toDownOffset_ = 0;
  in_.clear();
  rqStatus_ = static_cast<uint16_t>(status);
  rqError_ = reason;
  // The request ends with this answer: its record says how (close_reason as for a connection
  // that ended the same way; refused ones with the refusal counter's name).
  CloseReason outcome = CloseReason::kRefused;
  switch (counter) {
    case Stat::http_rq_policy_denied:
      rqRefusal_ = Refusal::kPolicyDenied;
      break;
    case Stat::http_rq_overflow:
      rqRefusal_ = Refusal::kUpstreamOverflow;
      break;
    case Stat::http_rq_no_destination:
      rqRefusal_ = Refusal::kNoOriginalDst;
      break;
    case Stat::loop_rejected:
      rqRefusal_ = Refusal::kLoopRejected;
      break;
    case Stat::http_rq_connect_fail:
      outcome = CloseReason::kConnectFailed;
      break;
    case Stat::http_rq_connect_timeout:
      outcome = CloseReason::kConnectTimeout;
      break;
    case Stat::http_rq_upstream_error:
      outcome = CloseReason::kUpstreamError;
      break;
    case Stat::http_rq_head_timeout:
      outcome = CloseReason::kProtocolTimeout;
      break;
    case Stat::http_rq_malformed:
    case Stat::http_rq_head_too_large:
      outcome = CloseReason::kProtocolError;
      break;
    default:
      break;  // connect_disabled: refused, no refusal counter of its own
  }
  access_.bytesReceived += toDown_.size();  // the answer, queued for the client now
  closeRequestLog(outcome);
  access_.bytesReceived = 0;  // not counted again as it is flushed
  linger();
}

void HttpSession::linger() {
  state_ = State::kLingering;
  lingerUntilUs_ = ctx_.loop.nowUs() + kLingerUs;
  down_.writable = true;  // try at once (the caller pumps); EAGAIN says otherwise
}

void HttpSession::announceCloseIfDraining(size_t headEnd) {
  // A draining connection ends after this response. Saying so in its head, as a server does when
  // it stops, keeps a keep-alive client from sending its next request into the FIN that follows
  // (where it would be lost, or reset if it arrived before the close). Only when the head's final
  // CRLF is in this read (nearly always; a head split there goes out as it came).
  if (!draining_ || !response_.keepAlive() || response_.upgraded()) return;
  if (headEnd < 4 || headEnd > toDown_.size() || toDown_[headEnd - 2] != '\r' || toDown_[headEnd - 1] != '\n') return;
  static constexpr char kClose[] = "connection: close\r\n";
  toDown_.insert(toDown_.begin() + static_cast<std::ptrdiff_t>(headEnd - 2), kClose, kClose + sizeof kClose - 1);
}

void HttpSession::openRequestLog(uint8_t method) {
  if (requestOpen_) return;
  requestOpen_ = true;
  if (!logging_) return;
  access_ = connAccess_;
  rqMethod_ = method;
  rqStatus_ = 0;
  rqError_ = nullptr;
  rqRefusal_ = Refusal::kNone;
  rqStartUs_ = EventLoop::monotonicUs();
  rqConnectUs_ = AccessRecord::kNone;
  rqEstablishedUs_ = 0;
  rqFirstByteUs_ = 0;
}

void HttpSession::closeRequestLog(CloseReason reason) {
  if (!requestOpen_) return;
  requestOpen_ = false;
  if (!logging_) return;
  access_.refusal = rqRefusal_;
  AccessRecord* r = owner_.newRequestRecord(access_);
  if (!r) return;
  const uint64_t now = EventLoop::monotonicUs();
  r->reason = reason;
  r->durationUs = now - rqStartUs_;
  r->connectUs = rqConnectUs_;
  if (rqFirstByteUs_ != 0 && rqEstablishedUs_ != 0) r->ttfbUs = rqFirstByteUs_ - rqEstablishedUs_;
  r->method = rqMethod_;
  // What the client was sent: our own answer, the 200 of a CONNECT, or the upstream's status
  // once its response head was parsed.
  r->status = rqStatus_ != 0 ? rqStatus_ : static_cast<uint16_t>(responseStarted_ ? response_.status() : 0);
  if (rqError_) r->setError(rqError_);
}

}  // namespace splicegate
