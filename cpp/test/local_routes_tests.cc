// Unit tests for the local-routing-table reader (cpp/core/local_routes.*): which rtnetlink route
// messages are "this host" (type local in table local, whatever the attribute order, RTA_TABLE
// over rtm_table), which notices call for a re-read, malformed input, and one dump of this
// machine's real table (loopback's 127.0.0.0/8 is a local route in every network namespace).
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "test_harness.h"
#include "../core/local_routes.h"

using namespace splicegate;
using splicegate::testing::run;

namespace {

constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

// Builds a buffer of rtnetlink messages as the kernel lays them out.
class Messages {
 public:
  // A route message: family, prefix length, table and type in the header; dst (text) and an
  // RTA_TABLE attribute when given.
  Messages& route(uint16_t type, uint8_t family, const char* dst, uint8_t length, uint8_t table, uint8_t routeType,
                  int64_t tableAttr = -1, uint32_t flags = 0) {
    std::vector<uint8_t> body(sizeof(rtmsg));
    rtmsg r{};
    r.rtm_family = family;
    r.rtm_dst_len = length;
    r.rtm_table = table;
    r.rtm_type = routeType;
    r.rtm_flags = flags;
    std::memcpy(body.data(), &r, sizeof r);
    // Unrelated attributes first, as the kernel sends RTA_TABLE and others before RTA_DST.
    attribute(body, RTA_PRIORITY, uint32_t{0});
    if (tableAttr >= 0) attribute(body, RTA_TABLE, static_cast<uint32_t>(tableAttr));
    if (dst != nullptr) {
      uint8_t bytes[16] = {};
      inet_pton(family, dst, bytes);
      attributeBytes(body, RTA_DST, bytes, family == AF_INET ? 4 : 16);
    }
    return message(type, body);
  }
  Messages& address(uint16_t type) { return message(type, std::vector<uint8_t>(sizeof(ifaddrmsg))); }
  Messages& done() { return message(NLMSG_DONE, std::vector<uint8_t>(4)); }
  Messages& error(int32_t code) {
    std::vector<uint8_t> body(sizeof(nlmsgerr));
    std::memcpy(body.data(), &code, sizeof code);
    return message(NLMSG_ERROR, body);
  }
  Messages& raw(const std::vector<uint8_t>& bytes) {
    data_.insert(data_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  std::vector<uint8_t>& bytes() { return data_; }

 private:
  template <typename T>
  static void attribute(std::vector<uint8_t>& body, uint16_t type, T value) {
    attributeBytes(body, type, &value, sizeof value);
  }
  static void attributeBytes(std::vector<uint8_t>& body, uint16_t type, const void* value, size_t size) {
    const size_t at = align4(body.size());
    rtattr a{};
    a.rta_len = static_cast<unsigned short>(sizeof(rtattr) + size);
    a.rta_type = type;
    body.resize(at + align4(a.rta_len));
    std::memcpy(body.data() + at, &a, sizeof a);
    std::memcpy(body.data() + at + sizeof a, value, size);
  }
  Messages& message(uint16_t type, const std::vector<uint8_t>& body) {
    nlmsghdr h{};
    h.nlmsg_len = static_cast<uint32_t>(sizeof h + body.size());
    h.nlmsg_type = type;
    const size_t at = data_.size();
    data_.resize(at + align4(h.nlmsg_len));
    std::memcpy(data_.data() + at, &h, sizeof h);
    std::memcpy(data_.data() + at + sizeof h, body.data(), body.size());
    return *this;
  }
  std::vector<uint8_t> data_;
};

std::vector<LocalRoute> parsed(Messages& m, int& status, bool& done) {
  std::vector<LocalRoute> routes;
  done = false;
  status = parseRouteDump(m.bytes().data(), m.bytes().size(), routes, done);
  return routes;
}

bool isRoute(const LocalRoute& r, uint8_t family, const char* network, uint8_t length) {
  uint8_t bytes[16] = {};
  inet_pton(family, network, bytes);
  return r.family == family && r.length == length && std::memcmp(r.address, bytes, family == AF_INET ? 4 : 16) == 0;
}

bool concerns(Messages& m) { return noticesConcernThisHost(m.bytes().data(), m.bytes().size()); }

}  // namespace

int main() {
  run("a dump keeps type-local routes of table local only: AnyIP ranges, host routes, IPv6", [] {
    Messages m;
    m.route(RTM_NEWROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_LOCAL, RTN_LOCAL)         // AnyIP
        .route(RTM_NEWROUTE, AF_INET, "10.1.0.5", 32, RT_TABLE_LOCAL, RTN_LOCAL)       // an address
        .route(RTM_NEWROUTE, AF_INET, "10.1.0.255", 32, RT_TABLE_LOCAL, RTN_BROADCAST)  // not local
        .route(RTM_NEWROUTE, AF_INET, "0.0.0.0", 0, 100, RTN_LOCAL)                    // TPROXY's table
        .route(RTM_NEWROUTE, AF_INET, "10.9.0.0", 16, RT_TABLE_MAIN, RTN_UNICAST)
        .route(RTM_NEWROUTE, AF_INET6, "2001:db8:5::", 64, RT_TABLE_LOCAL, RTN_LOCAL)
        .route(RTM_NEWROUTE, AF_INET6, "ff00::", 8, RT_TABLE_LOCAL, RTN_MULTICAST)
        .done();
    int status = 0;
    bool done = false;
    const auto routes = parsed(m, status, done);
    CHECK_EQ(status, 0);
    CHECK(done);
    CHECK_EQ(routes.size(), 3u);
    CHECK(isRoute(routes[0], AF_INET, "192.0.2.0", 24));
    CHECK(isRoute(routes[1], AF_INET, "10.1.0.5", 32));
    CHECK(isRoute(routes[2], AF_INET6, "2001:db8:5::", 64));
  });

  run("RTA_TABLE decides over rtm_table (ids above 255); cache clones and prefixes without a network are skipped", [] {
    Messages m;
    m.route(RTM_NEWROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_COMPAT, RTN_LOCAL, RT_TABLE_LOCAL)  // kept
        .route(RTM_NEWROUTE, AF_INET, "198.51.100.0", 24, RT_TABLE_LOCAL, RTN_LOCAL, 1000)     // table 1000
        .route(RTM_NEWROUTE, AF_INET, "203.0.113.1", 32, RT_TABLE_LOCAL, RTN_LOCAL, -1, RTM_F_CLONED)
        .route(RTM_NEWROUTE, AF_INET, nullptr, 24, RT_TABLE_LOCAL, RTN_LOCAL)
        .route(RTM_NEWROUTE, AF_INET, nullptr, 0, RT_TABLE_LOCAL, RTN_LOCAL)  // local default: all of it
        .route(RTM_NEWROUTE, AF_INET, "10.0.0.0", 33, RT_TABLE_LOCAL, RTN_LOCAL)
        .route(RTM_DELROUTE, AF_INET, "10.0.0.1", 32, RT_TABLE_LOCAL, RTN_LOCAL);
    int status = 0;
    bool done = true;
    const auto routes = parsed(m, status, done);
    CHECK_EQ(status, 0);
    CHECK(!done);  // no NLMSG_DONE yet: the dump goes on in the next buffer
    CHECK_EQ(routes.size(), 2u);
    CHECK(isRoute(routes[0], AF_INET, "192.0.2.0", 24));
    CHECK(isRoute(routes[1], AF_INET, "0.0.0.0", 0));
  });

  run("an NLMSG_ERROR ends the dump with its errno; a length past the buffer is malformed", [] {
    Messages failed;
    failed.error(-EINVAL);
    int status = 0;
    bool done = false;
    parsed(failed, status, done);
    CHECK_EQ(status, EINVAL);

    Messages truncated;
    truncated.route(RTM_NEWROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_LOCAL, RTN_LOCAL);
    truncated.bytes().resize(truncated.bytes().size() - 6);
    const auto routes = parsed(truncated, status, done);
    CHECK_EQ(status, -1);
    CHECK(routes.empty());

    // An attribute longer than its message: the route is not read, the walk goes on.
    Messages badAttr;
    badAttr.route(RTM_NEWROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_LOCAL, RTN_LOCAL).done();
    const size_t attrAt = sizeof(nlmsghdr) + align4(sizeof(rtmsg));
    const unsigned short huge = 0x7fff;
    std::memcpy(badAttr.bytes().data() + attrAt, &huge, sizeof huge);
    const auto none = parsed(badAttr, status, done);
    CHECK_EQ(status, 0);
    CHECK(done);
    CHECK(none.empty());
  });

  run("notices: address changes and table-local routes concern this host; other tables do not", [] {
    Messages mainOnly;
    mainOnly.route(RTM_NEWROUTE, AF_INET, "10.9.0.0", 16, RT_TABLE_MAIN, RTN_UNICAST)
        .route(RTM_DELROUTE, AF_INET6, "2001:db8::", 32, RT_TABLE_MAIN, RTN_UNICAST)
        .route(RTM_NEWROUTE, AF_INET, "0.0.0.0", 0, 100, RTN_LOCAL);
    CHECK(!concerns(mainOnly));
    Messages added;
    added.route(RTM_NEWROUTE, AF_INET, "10.9.0.0", 16, RT_TABLE_MAIN, RTN_UNICAST).address(RTM_NEWADDR);
    CHECK(concerns(added));
    Messages removed;
    removed.address(RTM_DELADDR);
    CHECK(concerns(removed));
    Messages anyIp;
    anyIp.route(RTM_DELROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_LOCAL, RTN_LOCAL);
    CHECK(concerns(anyIp));
    Messages bigTable;  // a local-table change named only through RTA_TABLE
    bigTable.route(RTM_NEWROUTE, AF_INET, "192.0.2.0", 24, RT_TABLE_COMPAT, RTN_LOCAL, RT_TABLE_LOCAL);
    CHECK(concerns(bigTable));
    Messages garbage;
    garbage.raw({0xff, 0xff, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08});
    CHECK(concerns(garbage));  // unreadable: re-read to be safe
    Messages empty;
    CHECK(!concerns(empty));
  });

  run("the kernel's own table: loopback's 127.0.0.0/8 is a local route of table local", [] {
    std::vector<LocalRoute> routes;
    const SysError e = dumpLocalRoutes(routes);
    CHECK(!e);
    bool loopback = false;
    for (const LocalRoute& r : routes) loopback = loopback || isRoute(r, AF_INET, "127.0.0.0", 8);
    CHECK(loopback);
  });

  run("a route answer: type local is this host, any other type or the kernel's error is not, garbage fails", [] {
    int err = 0;
    Messages local;
    local.route(RTM_NEWROUTE, AF_INET6, "2001:db8:7::5", 128, RT_TABLE_LOCAL, RTN_LOCAL);
    CHECK(parseRouteAnswer(local.bytes().data(), local.bytes().size(), err) == RouteKind::kLocal);
    Messages remote;
    remote.route(RTM_NEWROUTE, AF_INET, "192.0.2.5", 32, RT_TABLE_MAIN, RTN_UNICAST);
    CHECK(parseRouteAnswer(remote.bytes().data(), remote.bytes().size(), err) == RouteKind::kNotLocal);
    Messages unreachable;
    unreachable.error(-ENETUNREACH);
    CHECK(parseRouteAnswer(unreachable.bytes().data(), unreachable.bytes().size(), err) == RouteKind::kNotLocal);
    CHECK_EQ(err, ENETUNREACH);
    Messages truncated;
    truncated.route(RTM_NEWROUTE, AF_INET, "192.0.2.5", 32, RT_TABLE_LOCAL, RTN_LOCAL);
    truncated.bytes().resize(truncated.bytes().size() - 6);
    CHECK(parseRouteAnswer(truncated.bytes().data(), truncated.bytes().size(), err) == RouteKind::kFailed);
    Messages nothing;
    CHECK(parseRouteAnswer(nothing.bytes().data(), 0, err) == RouteKind::kFailed);
    // The kernel's own answers: loopback is local; TEST-NET-1 never is.
    const uint8_t lo[4] = {127, 0, 0, 1};
    const uint8_t testNet[4] = {192, 0, 2, 1};
    CHECK(routeKindOf(AF_INET, lo, err) == RouteKind::kLocal);
    CHECK(routeKindOf(AF_INET, testNet, err) == RouteKind::kNotLocal);
  });

  return splicegate::testing::finish();
}
