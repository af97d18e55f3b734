// Why a relayed connection ended, declared once: the X-macro yields the enum (kCompleted, ...) and
// the per-reason counters (cx_close_completed, ...; stats.h). The counter names are a contract:
// add, never rename.
#pragma once

#include <cstddef>
#include <cstdint>

namespace splicegate {

// X(EnumSuffix, counter_suffix). Only Completed ends with FIN: every other reason resets both sockets.
#define SPLICEGATE_CLOSE_REASONS(X)                                                            \
  X(Completed, completed)                  /* both directions saw EOF and were shut down */     \
  X(DownstreamError, downstream_error)     /* client reset or errored */                        \
  X(UpstreamError, upstream_error)         /* upstream reset or errored while relaying */       \
  X(ConnectFailed, connect_failed)         /* refused, unreachable, or original source failed */ \
  X(ConnectTimeout, connect_timeout)       /* no answer within connect_timeout */               \
  X(IdleTimeout, idle_timeout)             /* nothing moved within idle_timeout */              \
  X(Drained, drained)                      /* still open at the end of drain_timeout */         \
  X(ResourceExhausted, resource_exhausted) /* no fd, epoll slot or memory */                    \
  X(ProtocolError, protocol_error)         /* PROXY header malformed, oversized or cut short */ \
  X(ProtocolTimeout, protocol_timeout)     /* PROXY header not complete within its timeout */   \
  X(Refused, refused)                      /* refused: at accept, or after the protocol stage */

enum class CloseReason : uint8_t {
#define SPLICEGATE_CLOSE_ENUM(Name, name) k##Name,
  SPLICEGATE_CLOSE_REASONS(SPLICEGATE_CLOSE_ENUM)
#undef SPLICEGATE_CLOSE_ENUM
};

#define SPLICEGATE_CLOSE_COUNT(Name, name) +1
inline constexpr size_t kCloseReasonCount = 0 SPLICEGATE_CLOSE_REASONS(SPLICEGATE_CLOSE_COUNT);
#undef SPLICEGATE_CLOSE_COUNT

}  // namespace splicegate
