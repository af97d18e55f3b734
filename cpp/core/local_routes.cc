#include "local_routes.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "socket_options.h"
#include "unique_fd.h"

namespace splicegate {

namespace {

// Large enough for any dump message the kernel sizes by our reads (it grows its dump buffers up
// to 32 KiB to match the reader's); a larger one would come back truncated, which is an error.
constexpr size_t kReceiveBuffer = 32 * 1024;

constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

// A route message's table: RTA_TABLE when present (ids above 255 only fit there), else rtm_table.
struct RouteFacts {
  bool ok = false;
  rtmsg head{};
  uint32_t table = 0;
  const uint8_t* dst = nullptr;
  size_t dstLength = 0;
};

RouteFacts readRoute(const uint8_t* payload, size_t size) {
  RouteFacts f;
  if (size < sizeof(rtmsg)) return f;
  std::memcpy(&f.head, payload, sizeof(rtmsg));
  f.table = f.head.rtm_table;
  for (size_t at = align4(sizeof(rtmsg)); at + sizeof(rtattr) <= size;) {
    rtattr attr{};
    std::memcpy(&attr, payload + at, sizeof attr);
    if (attr.rta_len < sizeof(rtattr) || attr.rta_len > size - at) return f;  // malformed
    const uint8_t* value = payload + at + align4(sizeof(rtattr));
    const size_t valueLength = attr.rta_len - align4(sizeof(rtattr));
    if (attr.rta_type == RTA_TABLE && valueLength >= sizeof(uint32_t)) std::memcpy(&f.table, value, sizeof(uint32_t));
    if (attr.rta_type == RTA_DST) {
      f.dst = value;
      f.dstLength = valueLength;
    }
    at += align4(attr.rta_len);
  }
  f.ok = true;
  return f;
}

// Walks the messages of one buffer; visit(header, payload, payloadSize) returns false to stop.
// Returns false when a length does not fit what is left of the buffer.
template <typename Visit>
bool forEachMessage(const uint8_t* data, size_t size, Visit visit) {
  size_t at = 0;
  while (size - at >= sizeof(nlmsghdr)) {
    nlmsghdr h{};
    std::memcpy(&h, data + at, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > size - at) return false;
    if (!visit(h, data + at + sizeof(nlmsghdr), h.nlmsg_len - sizeof(nlmsghdr))) return true;
    at += std::min(align4(h.nlmsg_len), size - at);
  }
  return true;
}

SysError dumpFamily(int fd, uint8_t family, uint32_t seq, std::vector<uint8_t>& buffer, std::vector<LocalRoute>& out) {
  struct {
    nlmsghdr h;
    rtmsg r;
  } request{};
  request.h.nlmsg_len = sizeof request;
  request.h.nlmsg_type = RTM_GETROUTE;
  request.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.h.nlmsg_seq = seq;
  request.r.rtm_family = family;
  // Filters the kernel applies under NETLINK_GET_STRICT_CHK; parseRouteDump applies them anyway.
  request.r.rtm_table = RT_TABLE_LOCAL;
  request.r.rtm_type = RTN_LOCAL;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &request, sizeof request, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0) {
    return SysError::fromErrno("sendto", "netlink route dump");
  }
  for (bool done = false; !done;) {
    // The kernel fills the next part of a dump before recv returns the previous one, so a dump
    // in progress always has data: MSG_DONTWAIT keeps the loop thread from ever blocking here.
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError::fromErrno("recv", "netlink route dump");
    }
    if (static_cast<size_t>(n) > buffer.size()) {
      errno = EMSGSIZE;
      return SysError::fromErrno("recv", "netlink route dump: message larger than the buffer");
    }
    const int status = parseRouteDump(buffer.data(), static_cast<size_t>(n), out, done);
    if (status != 0) {
      errno = status > 0 ? status : EPROTO;
      return SysError::fromErrno("recv", status > 0 ? "netlink route dump" : "netlink route dump: malformed message");
    }
    if (n == 0) {
      errno = EPROTO;
      return SysError::fromErrno("recv", "netlink route dump ended without NLMSG_DONE");
    }
  }
  return {};
}

}  // namespace

int parseRouteDump(const uint8_t* data, size_t size, std::vector<LocalRoute>& routes, bool& done) {
  int status = 0;
  const bool whole = forEachMessage(data, size, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadSize) {
    if (h.nlmsg_type == NLMSG_DONE) {
      done = true;
      return false;
    }
    if (h.nlmsg_type == NLMSG_ERROR) {
      int32_t code = 0;
      if (payloadSize >= sizeof code) std::memcpy(&code, payload, sizeof code);
      if (code < 0 && code > -4096) {
        status = -code;
        return false;
      }
      status = code == 0 ? 0 : EPROTO;  // an ack (0) ends nothing; anything else is garbage
      return status == 0;
    }
    if (h.nlmsg_type != RTM_NEWROUTE) return true;
    const RouteFacts f = readRoute(payload, payloadSize);
    if (!f.ok || f.table != RT_TABLE_LOCAL || f.head.rtm_type != RTN_LOCAL) return true;
    if ((f.head.rtm_flags & RTM_F_CLONED) != 0) return true;  // a cache entry, not a route
    const size_t bytes = f.head.rtm_family == AF_INET ? 4 : f.head.rtm_family == AF_INET6 ? 16 : 0;
    if (bytes == 0 || f.head.rtm_dst_len > bytes * 8) return true;
    LocalRoute r;
    r.family = f.head.rtm_family;
    r.length = f.head.rtm_dst_len;
    if (f.dst != nullptr) {
      if (f.dstLength < bytes) return true;
      std::memcpy(r.address, f.dst, bytes);
    } else if (r.length != 0) {
      return true;  // a prefix without its network: not a route the kernel would send
    }
    routes.push_back(r);
    return true;
  });
  if (!whole && status == 0) return -1;
  return status;
}

bool noticesConcernThisHost(const uint8_t* data, size_t size) {
  bool concerns = false;
  const bool whole = forEachMessage(data, size, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadSize) {
    switch (h.nlmsg_type) {
      case RTM_NEWADDR:
      case RTM_DELADDR:
        concerns = true;
        return false;
      case RTM_NEWROUTE:
      case RTM_DELROUTE: {
        const RouteFacts f = readRoute(payload, payloadSize);
        concerns = !f.ok || f.table == RT_TABLE_LOCAL;
        return !concerns;
      }
      default:
        return true;
    }
  });
  return concerns || !whole;
}

RouteKind parseRouteAnswer(const uint8_t* data, size_t size, int& err) {
  RouteKind kind = RouteKind::kFailed;
  err = EPROTO;
  forEachMessage(data, size, [&](const nlmsghdr& h, const uint8_t* payload, size_t payloadSize) {
    if (h.nlmsg_type == NLMSG_ERROR) {
      int32_t code = 0;
      if (payloadSize >= sizeof code) std::memcpy(&code, payload, sizeof code);
      if (code < 0 && code > -4096) {
        // The kernel's own answer: no route (ENETUNREACH), unreachable, prohibit or blackhole
        // route. A connect to it fails the same way: it reaches nothing, this host included.
        kind = RouteKind::kNotLocal;
        err = -code;
      }
      return false;
    }
    if (h.nlmsg_type != RTM_NEWROUTE) return true;
    const RouteFacts f = readRoute(payload, payloadSize);
    if (!f.ok) return false;
    kind = f.head.rtm_type == RTN_LOCAL ? RouteKind::kLocal : RouteKind::kNotLocal;
    err = 0;
    return false;
  });
  return kind;
}

RouteKind routeKindOf(int family, const uint8_t* address, int& err) {
  const size_t bytes = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
  if (bytes == 0) {
    err = EAFNOSUPPORT;
    return RouteKind::kFailed;
  }
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) {
    err = errno;
    return RouteKind::kFailed;
  }
  struct {
    nlmsghdr h;
    rtmsg r;
    rtattr a;
    uint8_t dst[16];
  } request{};
  static_assert(sizeof(nlmsghdr) % 4 == 0 && sizeof(rtmsg) % 4 == 0 && sizeof(rtattr) == 4, "no padding in the request");
  request.h.nlmsg_len = static_cast<uint32_t>(sizeof(nlmsghdr) + sizeof(rtmsg) + sizeof(rtattr) + bytes);
  request.h.nlmsg_type = RTM_GETROUTE;
  request.h.nlmsg_flags = NLM_F_REQUEST;
  request.h.nlmsg_seq = 1;
  request.r.rtm_family = static_cast<uint8_t>(family);
  request.r.rtm_dst_len = static_cast<uint8_t>(bytes * 8);
  request.a.rta_type = RTA_DST;
  request.a.rta_len = static_cast<uint16_t>(sizeof(rtattr) + bytes);
  std::memcpy(request.dst, address, bytes);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd.get(), &request, request.h.nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0) {
    err = errno;
    return RouteKind::kFailed;
  }
  // The kernel answers a route request while sendto runs: the answer is queued already.
  uint8_t answer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), answer, sizeof answer, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      return RouteKind::kFailed;
    }
    return parseRouteAnswer(answer, static_cast<size_t>(n), err);
  }
}

SysError dumpLocalRoutes(std::vector<LocalRoute>& out) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return SysError::fromErrno("socket", "netlink route dump");
  // Kernels from 4.20 then dump table local alone (a router's full table never crosses here);
  // older ones ignore the filter and send every route, which the parser sorts out.
  setIntOption(fd.get(), SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
  std::vector<LocalRoute> routes;
  std::vector<uint8_t> buffer(kReceiveBuffer);  // one for both dumps
  if (SysError e = dumpFamily(fd.get(), AF_INET, 1, buffer, routes)) return e;
  if (SysError e = dumpFamily(fd.get(), AF_INET6, 2, buffer, routes)) {
    // A kernel without IPv6 has no IPv6 routes to dump.
    if (e.err != EAFNOSUPPORT && e.err != EOPNOTSUPP) return e;
  }
  out = std::move(routes);
  return {};
}

}  // namespace splicegate
