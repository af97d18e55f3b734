// One downstream connection on a `mode: http` listener (docs/HTTP.md): requests are read one at a
// time, each routed on its own, and answered from an upstream connection that may come from (and
// go back to) the keep-alive pool.
//
// Per request:  head ─► destination ─► policy ─► upstream (pool or connect) ─► exchange ─► next
//   head:        RequestParser over a buffer (request_head_timeout, max_request_head_bytes)
//   destination: the routing header's first value from a trusted client (IP:PORT literal), else
//                the connection's original destination if it was redirected, else 503
//                no_destination; upstream_port_override applied last
//   exchange:    head (routing header stripped) and body (exact framing from llhttp) to the
//                upstream while the response (framed by ResponseParser) goes to the client; heads,
//                chunked bodies and the body bytes read along with a head are copied, the rest of
//                a Content-Length (or close-delimited response) body is spliced through a pooled
//                pipe, exactly its remaining length (docs/HTTP.md, "Bodies")
//   next:        keep-alive: the upstream goes back to the pool if the response allows it, and the
//                client's next request is read (Connection: close / HTTP/1.0 end the connection)
// CONNECT ip:port and a 101 answer to an Upgrade request hand both sockets to a Relay (relay.h).
//
// A PROXY header naming one of our own listeners resets the connection, and a request whose
// destination is one is answered 508 (loop_rejected), so no configuration can make a session
// connect back into splicegate.
// Errors before any response byte reached the client are HTTP responses with
// `x-splicegate-error: <reason>` and `connection: close`; after that the client is reset, so a cut
// response never looks complete.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "access_log.h"
#include "close_reason.h"
#include "connection.h"
#include "core_options.h"
#include "event_loop.h"
#include "host_cache.h"
#include "host_latency.h"
#include "http_head.h"
#include "http_pool.h"
#include "intrusive_list.h"
#include "pipe_pool.h"
#include "relay.h"
#include "socket_address.h"
#include "stats.h"
#include "upstream_socket.h"
#include "worker_context.h"
#include "worker_latency.h"

namespace splicegate {

class HttpSession;

// What a session asks of its worker (beside the services in WorkerContext).
class HttpSessionOwner {
 public:
  // The destination policy of the listener: false (counted and logged) when denied. The decision
  // goes into access (for the access log) when the log is on.
  virtual bool allowDestination(const ListenerOptions& listener, const SocketAddress& destination,
                                const SocketAddress& client, AccessInfo& access) = 0;
  // An access-log record filled from access (kind request), or nullptr: log off, request not
  // sampled, or the buffer full (counted). Never allocates.
  virtual AccessRecord* newRequestRecord(const AccessInfo& access) = 0;
  // destination is one of splicegate's own listeners: connecting there would loop back in.
  virtual bool loopsBack(const SocketAddress& destination) = 0;
  // s has ended (sockets closed): unlink it, free it after the batch.
  virtual void sessionClosed(HttpSession& s) = 0;
  // s's tunnel used its byte budget: resume() it after the batch, as relayed connections are.
  virtual void scheduleResume(HttpSession& s) = 0;
  // s's tunnel found no copy buffer or pipe: holderAvailable() once one is free (FIFO).
  virtual void waitForHolder(HttpSession& s) = 0;
  // The upstream socket() found no fd: the worker closes idle upstreams, or else frees its spare fd
  // and pauses accepting, as for a relayed connection (ConnectionEvents::releaseSpareFd). True
  // when the caller may retry (and ask again if its retry still finds no fd).
  virtual bool releaseSpareFd() = 0;
  // Still no fd after that (another worker took it): s waits; the worker calls
  // retryUpstreamSocket() on each tick, oldest first, until it returns true.
  virtual void waitForFd(HttpSession& s) = 0;

 protected:
  ~HttpSessionOwner() = default;
};

class HttpSession final {
 public:
  // originalDst: the connection's original destination, AF_UNSPEC when it was not redirected.
  // ctx: the worker's services (worker_context.h); pool: its keep-alive pool; all outlive the session.
  // access: the access log's view of the connection (listener, client) when the log is on, else
  // nullptr; each request's record starts from it.
  HttpSession(WorkerContext& ctx, HttpPool& pool, HttpSessionOwner& owner, const ListenerOptions& listener, UniqueFd downstream,
              const SocketAddress& peer, const SocketAddress& originalDst, const AccessInfo* access = nullptr);
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  // Registers the client socket and starts reading the first request; false if it could not
  // (the session is then closed).
  bool start();
  // Housekeeping: head, connect and idle timeouts; retries a relay that waited for a buffer.
  void onTick(uint64_t nowUs);
  // The worker stopped accepting (SIGTERM, reload): this connection ends after the response in
  // progress (or the one whose head has started, or a next request that comes within a second of
  // the last response), a response whose head then says "connection: close"; idle longer between
  // requests (or since its accept, having sent nothing), it ends with FIN.
  void drain();
  // Ends the session: reset (abnormal) or FIN (complete).
  void close(CloseReason reason);
  bool closed() const { return state_ == State::kClosed; }
  // The exchange or tunnel continues after a budget-limited run / once a copy buffer or pipe came free.
  void resume();
  void holderAvailable();
  bool waitingForHolder() const { return relay_ && relay_->waitingForHolder(); }
  // The request's upstream socket waits for an fd (HttpSessionOwner::waitForFd). retry: true once
  // it no longer waits (it got one, or timed out or ended meanwhile), false while none is free.
  bool waitingForFd() const { return waitingForFd_; }
  bool retryUpstreamSocket();

  // The worker's counters for the listener that accepted it (they outlive the session); set by the
  // worker at accept.
  ListenerStats* listenerStats = nullptr;

  ListNode node;            // the worker's list of sessions
  ListNode readyNode;       // waiting to resume (tunnel budget used)
  ListNode holderWaitNode;  // waiting for a copy buffer or pipe
  ListNode fdWaitNode;      // waiting for an fd for its upstream socket

 private:
  enum class State : uint8_t {
    kHead,        // reading a request head
    kConnecting,  // upstream connect in flight (or its socket waiting for an fd)
    kExchange,    // request out, response in
    kTunnel,      // CONNECT or upgrade: the Relay moves bytes both ways
    kLingering,   // an error response sent and the write side shut: waiting for the client's EOF
    kClosed,
  };
  struct Side final : EventHandler, RelayEndpoint {
    HttpSession* owner = nullptr;
    bool upstream = false;
    bool eof = false;  // read returned 0
    void onEvents(uint32_t events) override;
  };

  void onEvents(Side& side, uint32_t events);
  void expire(uint64_t nowUs);
  void pump();
  bool readHead();
  // The client's EOF while a head is awaited: FIN between requests, else see the definition.
  void endAtClientEof();
  // The PROXY header in front of the first request (listeners[].proxy_protocol); true when it
  // ended the session.
  bool readProxyHeader();
  void startRequest();
  bool chooseDestination(SocketAddress& out);
  // A request goes out on an idle connection taken from the pool (its events come here already).
  void usePooledUpstream(HttpPool::Taken taken);
  void connectUpstream();
  // The rest of connectUpstream once socket() had an fd (or failed otherwise).
  void continueConnect(UpstreamOpen opened);
  void onConnected();
  void beginExchange();
  bool pumpExchange();
  void finishExchange();
  // The upstream reset, errored or answered with something that is not HTTP.
  void upstreamFailed();
  // A write of the request to the upstream failed: stop sending, read what it answered first.
  void requestWriteFailed();
  void enterTunnel();
  void pumpTunnel();
  // streamComplete: the upstream's stream ended whole (a tunnel's, both directions done), so its
  // socket closes with FIN even though no request/response exchange completed.
  void releaseUpstream(bool reusable, bool streamComplete = false);
  // An HTTP error response (status, reason for x-splicegate-error), then a graceful close; or a
  // reset when response bytes already went out.
  void respondError(int status, const char* reason, Stat counter);
  // The graceful end: flush toDown_, FIN, then read and drop what the client still sends until its
  // EOF or kLingerUs, so closing with unread bytes cannot reset away the answer.
  void linger();
  // The access log: a request begins (its head was read, or it is answered before that), and
  // ends with its record (once; a no-op when none is open or the log is off).
  void openRequestLog(uint8_t method);
  void closeRequestLog(CloseReason reason);
  // Reads from side into buf (appending, up to max bytes in buf); 1 read, 0 EOF, -1 EAGAIN, -2 error.
  int readInto(Side& side, std::vector<uint8_t>& buf, size_t max);
  // The final response head ends at toDown_[headEnd): add "connection: close" to it when draining.
  void announceCloseIfDraining(size_t headEnd);
  // Ends the connection if it is draining and has been idle between requests long enough.
  bool endIfIdleWhileDraining(uint64_t nowUs);
  // Writes from buf (front) to side; false on error.
  bool flush(Side& side, std::vector<uint8_t>& buf, size_t& offset);
  // Body splicing. spliceWanted: a body with `remaining` bytes still to read goes by splice
  // (tuning.relay_mode; in auto, from one copy buffer's worth up). startSplice lends the direction
  // a pooled pipe (false, counted, when none is free: the body stays on the copy path).
  bool spliceWanted(uint64_t remaining) const;
  bool startSplice(std::unique_ptr<Pipe>& pipe);
  enum class SpliceStep : uint8_t { kIdle, kProgress, kSrcEof, kSrcError, kDstError };
  // One round of src -> pipe -> dst: drains the pipe into dst, then reads at most `want` more
  // bytes from src (never past the body's end; `in` says how many). Returns the pipe to the pool
  // once it is empty and the body is all read or src is drained.
  SpliceStep spliceBody(Side& src, Side& dst, std::unique_ptr<Pipe>& pipe, uint64_t want, uint64_t& in);
  // Bytes written to side (flush or splice): the byte counters and the access log.
  void countWritten(const Side& side, uint64_t n);
  void countRead(const Side& side, uint64_t n);

  // What the tunnel's relay works on, and tells this session.
  friend struct RelayIo;
  RelayIo relayIo() { return RelayIo::of(*this, ctx_.relayServices(), down_, up_); }
  void relayNeedsHolder() { owner_.waitForHolder(*this); }
  void relayDelivered(bool toUpstream, uint64_t n);
  void relayReceived(bool toUpstream, uint64_t n);

  WorkerContext& ctx_;
  HttpPool& pool_;
  HttpSessionOwner& owner_;
  const ListenerOptions& listener_;
  SocketAddress peer_;
  SocketAddress originalDst_;
  bool trusted_ = false;       // the client may route with the header
  bool proxyPending_ = false;  // a PROXY header may still precede the first request
  State state_ = State::kHead;
  Side down_;
  Side up_;
  UpstreamLink* upLink_ = nullptr;  // up_'s epoll registration (http_pool.h), while up_ has a socket
  OwnSockets::Registration upRegistration_;
  std::unique_ptr<Relay> relay_;  // tunnels only

  http::RequestParser request_;
  http::ResponseParser response_;
  std::vector<uint8_t> in_;     // from the client, not yet handled (head being read, body, next request)
  std::vector<uint8_t> toUp_;   // for the upstream, from toUpOffset_
  size_t toUpOffset_ = 0;
  std::vector<uint8_t> toDown_;  // for the client, from toDownOffset_
  size_t toDownOffset_ = 0;
  std::vector<uint8_t> sentHead_;  // the forwarded head, kept for one retry (idempotent, reused)
  // Pooled pipes for spliced bodies, held only while such a body is in flight; a pipe released
  // with bytes in it (an exchange that failed) is destroyed by the pool, never reused.
  std::unique_ptr<Pipe> upPipe_;    // request body, client -> upstream
  std::unique_ptr<Pipe> downPipe_;  // response body, upstream -> client
  bool copyRequestBody_ = false;   // no pipe was free for this request's body: copied instead
  bool copyResponseBody_ = false;  // ... nor for this response's
  size_t budget_ = 0;  // bytes pumpExchange may still move before yielding (relay_budget_bytes)

  Host* host_ = nullptr;
  HostRef latencyRef_;
  SocketAddress destination_;
  bool connectPending_ = false;
  bool waitingForFd_ = false;
  bool connect_ = false;       // this request is a CONNECT
  bool headRequest_ = false;   // HEAD: the response has no body
  bool upgradeRequested_ = false;  // Upgrade asked for: a 101 switches to a tunnel (else it is an error)
  bool keepClient_ = false;    // the client allows another request (version, Connection)
  bool closeClientAfter_ = false;  // the response ended with the upstream's close
  uint64_t requests_ = 0;      // requests completed on this connection
  bool draining_ = false;      // drain(): the connection ends after the current exchange
  bool reused_ = false;
  bool retried_ = false;
  bool requestDone_ = false;   // the whole request (head and body) is in toUp_ or sent
  bool responseStarted_ = false;  // a byte of this response reached toDown_
  bool responseDone_ = false;
  bool upstreamDirty_ = false;  // bytes after the response's end, or a framing problem: never pool
  bool upWriteFailed_ = false;  // a write to the upstream failed: its response is read, nothing more sent
  uint64_t requestStartUs_ = 0;
  uint64_t connectStartUs_ = 0;       // loop time, for the timeout
  uint64_t connectStartExactUs_ = 0;  // for the connect latency
  uint64_t sentUs_ = 0;  // request head handed to the upstream socket (ttfb starts)
  uint64_t lastActivityUs_ = 0;
  uint64_t lingerUntilUs_ = 0;
  bool firstByteSeen_ = false;

  // Access log (one record per request). access_ holds the connection's part (listener, client)
  // and this request's (destination, source, policy, bytes); the rest is kept here until the
  // record is written.
  bool logging_ = false;
  bool requestOpen_ = false;  // a request began and has no record yet
  AccessInfo connAccess_;     // listener and client: each request's record starts from it
  AccessInfo access_;
  DestinationSource originalSource_ = DestinationSource::kSoOriginalDst;  // how originalDst_ was found
  uint8_t rqMethod_ = AccessRecord::kNoMethod;
  uint16_t rqStatus_ = 0;
  const char* rqError_ = nullptr;  // a string literal (respondError's reason)
  Refusal rqRefusal_ = Refusal::kNone;
  uint64_t rqStartUs_ = 0;        // monotonic: the head read (or the error answer)
  uint64_t rqConnectUs_ = AccessRecord::kNone;
  uint64_t rqEstablishedUs_ = 0;  // upstream ready (connected or taken from the pool)
  uint64_t rqFirstByteUs_ = 0;
};

}  // namespace splicegate
