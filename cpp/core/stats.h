// Per-worker counters and gauges, declared once: the X-macro yields both the storage layout and the
// exported names, so the addon can hand the whole block to JS as one typed array.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "close_reason.h"
#include "proxy_protocol.h"

namespace splicegate {

#define SPLICEGATE_STATS(X)                                                                   \
  X(downstream_cx_total)          /* connections accepted */                                  \
  X(downstream_cx_active)         /* gauge: accepted and not yet closed */                    \
  X(downstream_cx_destroy_remote) /* closed because the client reset or errored */            \
  X(downstream_cx_accept_error)   /* accept4 failed with something other than EAGAIN */       \
  X(downstream_cx_overflow)       /* refused: max_downstream_connections reached */           \
  X(downstream_cx_accept_paused)  /* accept paused: out of file descriptors */                \
  X(no_original_dst)              /* not redirected: dialled the listener directly */         \
  X(loop_rejected)                /* refused: own listener or own upstream looped back */     \
  X(upstream_cx_total)            /* upstream connects attempted */                           \
  X(upstream_cx_active)           /* gauge: upstream sockets open */                          \
  X(upstream_cx_connect_fail)     /* refused, unreachable or reset while connecting */        \
  X(upstream_cx_connect_timeout)  /* no answer within connect_timeout */                      \
  X(upstream_cx_fd_wait)          /* accepted clients that waited for an fd for their upstream socket */ \
  X(upstream_cx_destroy_remote)   /* upstream reset or errored while relaying */              \
  X(upstream_cx_overflow)         /* refused by a per-host limit or the host bound */         \
  X(upstream_cx_preconnect)       /* warm upstream sockets opened ahead of use */             \
  X(upstream_cx_preconnect_used)  /* warm sockets handed to a client: handshakes saved */      \
  X(upstream_cx_preconnect_dropped) /* warm sockets closed: server close, data, error, ttl */  \
  X(upstream_cx_preconnect_evicted_fd_pressure) /* warm sockets closed, oldest first, because the worker ran out of fds */ \
  X(upstream_cx_rx_bytes_total)   /* read from upstreams */                                   \
  X(upstream_cx_tx_bytes_total)   /* written to upstreams */                                  \
  X(host_count)                   /* gauge: original-destination hosts cached */              \
  X(host_evictions)               /* idle hosts evicted to make room (max_hosts) */           \
  X(host_removed_idle)            /* hosts removed after cleanup_interval unused */           \
  X(host_overflow)                /* new destination refused: max_hosts, none idle */         \
  X(cx_idle_timeout)              /* relayed connections closed by idle_timeout */            \
  X(cx_drained)                   /* closed at the end of drain_timeout */                    \
  X(bytes_received)               /* read from clients */                                     \
  X(bytes_sent)                   /* written to clients */                                    \
  X(splice_bytes)                 /* of all relayed bytes, those moved by splice(2) */        \
  X(copy_bytes)                   /* of all relayed bytes, those moved by recv/send */        \
  X(pipes_in_use)                 /* gauge */                                                 \
  X(pipes_idle)                   /* gauge */                                                 \
  X(pipe_unavailable)             /* a direction fell back to copying: pipe bound reached */  \
  X(buffer_unavailable)           /* a direction found no copy buffer (nor pipe) and waited */ \
  X(listeners_active)             /* gauge */                                                 \
  X(proxy_protocol_accepted)      /* PROXY headers read from trusted senders (any command) */ \
  X(proxy_protocol_local)         /* of those, LOCAL/UNKNOWN: the socket's own destination */ \
  X(proxy_protocol_plain)         /* no header where optional: relayed as plain traffic */    \
  X(proxy_protocol_error)         /* reset: malformed, oversized or cut-short header */       \
  X(proxy_protocol_timeout)       /* reset: header incomplete after proxy_protocol.timeout */ \
  X(proxy_protocol_untrusted)     /* reset: sender outside trusted_sources sent a header (or any, where required) */ \
  X(proxy_protocol_sent)          /* PROXY headers written to upstreams */                    \
  X(original_source_failed)       /* upstream could not bind the client's address: reset */ \
  X(http_rq_total)                /* HTTP listener: request heads read (CONNECT included) */  \
  X(http_rq_malformed)            /* 400: refused by the parser (smuggling vectors, syntax) */ \
  X(http_rq_head_timeout)         /* 408: head incomplete after request_head_timeout */       \
  X(http_rq_head_too_large)       /* 431: head over max_request_head_bytes */                 \
  X(http_rq_no_destination)       /* 503: no trusted header and no original destination */    \
  X(http_rq_policy_denied)        /* 403: the destination policy denied the destination */    \
  X(http_rq_overflow)             /* 503: host limits or max_hosts */                         \
  X(http_rq_connect_fail)         /* 503: the upstream connect failed */                      \
  X(http_rq_connect_timeout)      /* 504: the upstream connect timed out */                   \
  X(http_rq_upstream_error)       /* 502 (or a reset once the response began): upstream reset or bad response */ \
  X(http_rq_connect_disabled)     /* 405: CONNECT on a listener with connect: false */        \
  X(http_rq_connect_untrusted)    /* 403: CONNECT from a client outside http.trusted_sources */\
  X(http_tunnel_total)            /* CONNECT tunnels and 101 upgrades handed to the relay */  \
  X(original_dst_host_invalid)    /* routing header from a trusted client not an IP:PORT literal: ignored */ \
  X(original_dst_header_untrusted) /* routing header from an untrusted client: ignored */    \
  X(upstream_rq_total)            /* requests sent upstream (retries included) */             \
  X(upstream_rq_retry)            /* idempotent requests retried on a fresh connection */     \
  X(upstream_cx_reuse)            /* requests sent on a pooled keep-alive connection */       \
  X(http_pool_hit)                /* a live idle connection was taken from the pool */        \
  X(http_pool_miss)               /* none was: a new connection was opened */                 \
  X(http_pool_discarded)          /* idle connections closed: server closed, data, idle_timeout, full */ \
  X(http_pool_evicted_fd_pressure) /* idle connections closed, oldest first, because the worker ran out of fds */ \
  X(http_pool_evicted_max_idle)   /* idle connections closed, oldest first, at the pool's total bound */ \
  X(http_body_bytes_spliced)      /* HTTP listener: body bytes moved socket -> pipe -> socket (splice) */ \
  X(http_body_bytes_copied)       /* HTTP listener: body bytes (chunk framing included) copied through user space */ \
  X(access_log_records)           /* access-log records buffered for the writer (sampled ones) */ \
  X(access_log_dropped)           /* access-log records lost: the worker's buffer was full */ \
  X(udp_sessions_active)          /* gauge: UDP (client, original destination) sessions */    \
  X(udp_sessions_total)           /* UDP sessions created */                                  \
  X(udp_sessions_expired)         /* UDP sessions closed after udp_session_timeout idle */    \
  X(udp_sessions_evicted)         /* UDP sessions closed to make room (session cap, LRU) */   \
  X(udp_datagrams_in)             /* datagrams read from clients, relayed or dropped */       \
  X(udp_datagrams_upstream)       /* datagrams sent on to original destinations */            \
  X(udp_datagrams_out)            /* replies sent to clients (from the original destination) */ \
  X(udp_bytes_in)                 /* payload bytes read from clients */                       \
  X(udp_bytes_out)                /* payload bytes of replies sent to clients */              \
  X(udp_dropped_policy)           /* client datagrams dropped: destination policy denied */   \
  X(udp_dropped_overflow)         /* datagrams dropped: a socket's send buffer was full */    \
  X(udp_dropped_error)            /* datagrams dropped: no fd, not redirected, truncated, send error */

enum class Stat : size_t {
#define SPLICEGATE_STAT_ENUM(name) name,
  SPLICEGATE_STATS(SPLICEGATE_STAT_ENUM)
#undef SPLICEGATE_STAT_ENUM
// One counter per CloseReason, in its order (closeStat()).
#define SPLICEGATE_CLOSE_STAT_ENUM(Name, name) cx_close_##name,
  SPLICEGATE_CLOSE_REASONS(SPLICEGATE_CLOSE_STAT_ENUM)
#undef SPLICEGATE_CLOSE_STAT_ENUM
// One counter per PROXY header parse error (proxyErrorStat()); their sum is proxy_protocol_error
// minus headers cut short by the client's EOF.
#define SPLICEGATE_PP_ERROR_STAT_ENUM(name) proxy_protocol_error_##name,
  SPLICEGATE_PROXY_PARSE_ERRORS(SPLICEGATE_PP_ERROR_STAT_ENUM)
#undef SPLICEGATE_PP_ERROR_STAT_ENUM
      kCount
};

inline constexpr const char* kStatNames[] = {
#define SPLICEGATE_STAT_NAME(name) #name,
    SPLICEGATE_STATS(SPLICEGATE_STAT_NAME)
#undef SPLICEGATE_STAT_NAME
#define SPLICEGATE_CLOSE_STAT_NAME(Name, name) "cx_close_" #name,
    SPLICEGATE_CLOSE_REASONS(SPLICEGATE_CLOSE_STAT_NAME)
#undef SPLICEGATE_CLOSE_STAT_NAME
#define SPLICEGATE_PP_ERROR_STAT_NAME(name) "proxy_protocol_error_" #name,
    SPLICEGATE_PROXY_PARSE_ERRORS(SPLICEGATE_PP_ERROR_STAT_NAME)
#undef SPLICEGATE_PP_ERROR_STAT_NAME
};

inline constexpr Stat proxyErrorStat(proxy_protocol::ParseError error) {
  return static_cast<Stat>(static_cast<size_t>(Stat::proxy_protocol_error_not_proxy) + static_cast<size_t>(error));
}

inline constexpr Stat closeStat(CloseReason reason) {
  return static_cast<Stat>(static_cast<size_t>(Stat::cx_close_completed) + static_cast<size_t>(reason));
}

// One writer (the worker's loop); readers may sit on another thread. Single-writer updates are a
// relaxed load plus store: a plain add on x86, no locked instruction on the hot path.
// E: an enum of counter slots ending in kCount.
template <typename E>
class Counters {
 public:
  void add(E s, uint64_t n = 1) {
    auto& v = values_[static_cast<size_t>(s)];
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void sub(E s, uint64_t n = 1) {
    auto& v = values_[static_cast<size_t>(s)];
    v.store(v.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  void set(E s, uint64_t n) { values_[static_cast<size_t>(s)].store(n, std::memory_order_relaxed); }
  uint64_t get(E s) const { return values_[static_cast<size_t>(s)].load(std::memory_order_relaxed); }
  static constexpr size_t size() { return static_cast<size_t>(E::kCount); }

 private:
  std::atomic<uint64_t> values_[static_cast<size_t>(E::kCount)] = {};
};

using Stats = Counters<Stat>;

// One worker's counters for one listener (Envoy's listener.<address>.* stats, keyed here by the
// listener's name: listener.<name>.<stat> in /stats). Each has the meaning of the worker-wide
// counter of the same name, restricted to the connections this listener accepted, so the sum over
// listeners is that counter (policy_denied: the merged policy counter, HTTP requests included).
#define SPLICEGATE_LISTENER_STATS(X)                                                      \
  X(downstream_cx_total)    /* connections accepted */                                    \
  X(downstream_cx_active)   /* gauge: accepted and not yet closed */                      \
  X(downstream_cx_overflow) /* refused or left in the backlog: max_downstream_connections */ \
  X(no_original_dst)        /* refused: not redirected */                                 \
  X(loop_rejected)          /* refused: would connect back into the proxy */              \
  X(policy_denied)          /* refused (an HTTP request: 403) by the listener's policy */

enum class ListenerStat : size_t {
#define SPLICEGATE_LISTENER_STAT_ENUM(name) name,
  SPLICEGATE_LISTENER_STATS(SPLICEGATE_LISTENER_STAT_ENUM)
#undef SPLICEGATE_LISTENER_STAT_ENUM
      kCount
};

inline constexpr const char* kListenerStatNames[] = {
#define SPLICEGATE_LISTENER_STAT_NAME(name) #name,
    SPLICEGATE_LISTENER_STATS(SPLICEGATE_LISTENER_STAT_NAME)
#undef SPLICEGATE_LISTENER_STAT_NAME
};

static_assert(sizeof kListenerStatNames / sizeof kListenerStatNames[0] == static_cast<size_t>(ListenerStat::kCount));

using ListenerStats = Counters<ListenerStat>;

}  // namespace splicegate
