// libFuzzer target: the rtnetlink route reader (cpp/core/local_routes.*).
//
// Input: byte 0 picks the entry point, the rest is one buffer of netlink messages as recv()
// would hand it over: even, parseRouteDump (a dump reply); odd, noticesConcernThisHost (a batch
// of address and route notices).
// Checks, beyond "no crash, no sanitizer report": every route parsed is an IPv4 or IPv6 prefix
// of a length its family has; the status is 0, -1 (malformed) or an errno; a buffer cut short
// yields a prefix of the routes of the whole buffer (the walk never reads past what it was given
// and never reorders).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "../core/local_routes.h"

using splicegate::LocalRoute;

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "local_routes_fuzz: %s\n", what);
  std::abort();
}

bool sameRoute(const LocalRoute& a, const LocalRoute& b) {
  return a.family == b.family && a.length == b.length && std::memcmp(a.address, b.address, sizeof a.address) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool notices = (data[0] & 1) != 0;
  // A copy at an aligned address, as recv() fills an aligned buffer.
  std::vector<uint8_t> buffer(data + 1, data + size);
  if (notices) {
    (void)splicegate::noticesConcernThisHost(buffer.data(), buffer.size());
    return 0;
  }
  std::vector<LocalRoute> routes;
  bool done = false;
  const int status = splicegate::parseRouteDump(buffer.data(), buffer.size(), routes, done);
  require(status == 0 || status == -1 || (status > 0 && status < 4096), "status out of range");
  for (const LocalRoute& r : routes) {
    require(r.family == AF_INET || r.family == AF_INET6, "route of another family");
    require(r.length <= (r.family == AF_INET ? 32 : 128), "prefix longer than the family's address");
  }
  // Half the buffer: what it yields comes first in what the whole buffer yields.
  std::vector<LocalRoute> partial;
  bool partialDone = false;
  (void)splicegate::parseRouteDump(buffer.data(), buffer.size() / 2, partial, partialDone);
  require(partial.size() <= routes.size() || status != 0, "a shorter buffer yielded more routes");
  if (status == 0) {
    for (size_t i = 0; i < partial.size(); ++i) require(sameRoute(partial[i], routes[i]), "a shorter buffer yielded other routes");
  }
  return 0;
}
