// What the kernel delivers to this host itself: the `local` routes of the local routing table
// (table 255, consulted for every packet before any policy-routing rule). Each interface address
// has one as a host route, and a whole range routed as local (`ip route add local 192.0.2.0/24
// dev lo`, "AnyIP") is one route covering every address in it. deny_special treats all of them
// as "this host" (docs/POLICY.md).
//
// Local routes in other tables are deliberately not read: TPROXY setups route everything marked
// as local in a table of their own (`ip route add local 0.0.0.0/0 dev lo table 100`), which makes
// marked packets local, not every destination.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sys_error.h"

namespace splicegate {

struct LocalRoute {
  uint8_t family = 0;  // AF_INET or AF_INET6
  uint8_t length = 0;  // prefix length in bits
  uint8_t address[16] = {};  // network, in network byte order (4 bytes used for AF_INET)
};

// Asks the kernel (one rtnetlink dump per family, filtered to table local by the kernel where it
// supports strict dump checks, and always here) and replaces out with the local routes. Never
// blocks: the kernel answers a dump request synchronously; a dump that is not ready is an error.
SysError dumpLocalRoutes(std::vector<LocalRoute>& out);

// How the kernel routes a packet from this host to one address (RTM_GETROUTE, what `ip route get`
// asks; no mark, main rules): kLocal when it delivers it to this host (route type local: an
// interface address, loopback, or any address of an AnyIP range, whichever source address the
// kernel would pick for it), kNotLocal when it sends it elsewhere or has no route for it (then a
// connect to it cannot reach this host either), kFailed when the question could not be asked
// (no socket: EMFILE; err then holds the errno).
enum class RouteKind : uint8_t { kLocal, kNotLocal, kFailed };
RouteKind routeKindOf(int family, const uint8_t* address, int& err);

// The answer to routeKindOf's request, one buffer as recv() returned it (for tests).
RouteKind parseRouteAnswer(const uint8_t* data, size_t size, int& err);

// The parser behind dumpLocalRoutes, on one buffer of rtnetlink messages as recv() returned it.
// Appends each RTM_NEWROUTE of type local in table local to routes. done: an NLMSG_DONE was seen.
// Returns the error of an NLMSG_ERROR message (an errno value, > 0), -1 when a message's length
// does not fit the buffer (the rest is not read), else 0.
int parseRouteDump(const uint8_t* data, size_t size, std::vector<LocalRoute>& routes, bool& done);

// For a buffer of rtnetlink notifications (address and route groups): could any of them change
// what dumpLocalRoutes or the interface address list returns? True for an address change, for a
// route change in table local, and for anything malformed; false for other tables' route changes,
// which a router may send by the thousand.
bool noticesConcernThisHost(const uint8_t* data, size_t size);

}  // namespace splicegate
