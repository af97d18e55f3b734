// Unit tests for the own-socket registry (own_sockets.h) as a data structure: IPv4 entries in their
// open-addressing table and every other pair of families in the node map, side by side; duplicates
// counted; lookups after removals in long probe runs (checked against a plain model); growth and
// shrinking while registrations are live; moved registrations; registries apart; threads sharing
// one; and the heap an IPv4 entry costs. (How the registry catches a real loop: stream_tests.)
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

// Under a sanitizer (CI runs these tests only under ASan and TSan) the sanitizer's allocator
// serves malloc and mallinfo2() says nothing: heapInUse() asks that allocator instead.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SPLICEGATE_SANITIZED_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SPLICEGATE_SANITIZED_HEAP 1
#endif
#endif

#ifdef SPLICEGATE_SANITIZED_HEAP
// From <sanitizer/allocator_interface.h>, which not every compiler installs; the ASan and TSan
// runtimes both define it: the bytes the program has allocated and not freed.
extern "C" size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "loopback.h"
#include "test_harness.h"
#include "../core/own_sockets.h"

using namespace splicegate;
using namespace splicegate::testing;

namespace {

// The heap in use, in bytes.
#ifdef SPLICEGATE_SANITIZED_HEAP
size_t heapInUse() { return __sanitizer_get_current_allocated_bytes(); }
#else
size_t heapInUse() {
  const struct mallinfo2 m = ::mallinfo2();
  return m.uordblks + m.hblkhd;
}
#endif

SocketAddress v4(uint32_t ip, uint16_t port) { return SocketAddress::fromIpv4(ip, port); }

void familyTests() {
  run("among entries that differ only in one field, each is found only with its own value of it (both families)", [] {
    // One table, densely filled with keys that share every field but one: a lookup for a value not
    // registered walks past entries that match in all the other fields, and must pass them by.
    for (const bool six : {false, true}) {
      OwnSockets reg;
      const SocketAddress localIp = addr(six ? "fd00::1" : "10.0.0.1", 0);
      const SocketAddress remoteIp = addr(six ? "fd00::9" : "10.0.9.9", 0);
      auto at = [](SocketAddress a, uint16_t port) {
        a.setPort(port);
        return a;
      };
      std::vector<OwnSockets::Registration> regs;
      for (uint16_t port = 1; port <= 1000; ++port) {
        regs.push_back(reg.add({at(localIp, 40000), at(remoteIp, port)}));  // remote ports differ
        regs.push_back(reg.add({at(localIp, static_cast<uint16_t>(port + 1000)), at(remoteIp, 443)}));  // local ports
      }
      for (uint16_t port = 1; port <= 1000; ++port) {
        CHECK(reg.contains(at(localIp, 40000), at(remoteIp, port)));
        CHECK(reg.contains(at(localIp, static_cast<uint16_t>(port + 1000)), at(remoteIp, 443)));
      }
      for (uint16_t port = 1001; port <= 3000; ++port) CHECK(!reg.contains(at(localIp, 40000), at(remoteIp, port)));
      for (uint16_t port = 3001; port <= 5000; ++port) CHECK(!reg.contains(at(localIp, port), at(remoteIp, 443)));
    }
  });

  run("IPv4 and IPv6 entries side by side, same ports: each found only as itself", [] {
    OwnSockets reg;
    const SocketAddress local4 = addr("10.0.0.1", 40000), remote4 = addr("10.0.9.9", 80);
    const SocketAddress local6 = addr("fd00::1", 40000), remote6 = addr("fd00::9:9", 80);
    // The IPv4-mapped forms of the IPv4 pair: another entry today (SocketAddress equality), not
    // the IPv4 one, in either direction.
    const SocketAddress mappedLocal = addr("::ffff:10.0.0.1", 40000), mappedRemote = addr("::ffff:10.0.9.9", 80);
    auto a = reg.add({local4, remote4});
    auto b = reg.add({local6, remote6});
    CHECK_EQ(reg.size(), 2u);
    CHECK(reg.contains(local4, remote4));
    CHECK(reg.contains(local6, remote6));
    CHECK(!reg.contains(mappedLocal, mappedRemote));
    CHECK(!reg.contains(mappedLocal, remote4));
    CHECK(!reg.contains(local4, mappedRemote));
    CHECK(!reg.contains(local4, remote6));
    CHECK(!reg.contains(local6, remote4));
    // Mixed pairs are entries of their own, and do not make the IPv4 pair ambiguous.
    auto mixed = reg.add({local4, mappedRemote});
    auto mapped = reg.add({mappedLocal, mappedRemote});
    CHECK(reg.contains(local4, mappedRemote));
    CHECK(reg.contains(mappedLocal, mappedRemote));
    CHECK(!reg.contains(mappedLocal, remote4));
    a.reset();
    CHECK(!reg.contains(local4, remote4));
    CHECK(reg.contains(local6, remote6) && reg.contains(local4, mappedRemote) && reg.contains(mappedLocal, mappedRemote));
    mixed.reset();
    mapped.reset();
    CHECK(reg.contains(local6, remote6));
    CHECK_EQ(reg.size(), 1u);
    b.reset();
    CHECK_EQ(reg.size(), 0u);
    CHECK(!reg.contains(local6, remote6));
  });

  run("an IPv4 pair with local port 0 is kept and found", [] {
    OwnSockets reg;
    const SocketAddress local = addr("10.0.0.1", 0), remote = addr("10.0.9.9", 80);
    auto r = reg.add({local, remote});
    CHECK(r);
    CHECK(reg.contains(local, remote));
    CHECK(!reg.contains(addr("10.0.0.1", 1), remote));
    r.reset();
    CHECK(!reg.contains(local, remote));
  });

  run("the same 4-tuple registered three times stays until the third registration ends", [] {
    OwnSockets reg;
    for (const char* family : {"v4", "v6"}) {
      const bool six = family[1] == '6';
      const SocketAddress local = six ? addr("fd00::1", 40001) : addr("10.0.0.1", 40001);
      const SocketAddress remote = six ? addr("fd00::9", 443) : addr("10.0.9.9", 443);
      auto a = reg.add({local, remote});
      auto b = reg.add({local, remote});
      auto c = reg.add({local, remote});
      CHECK_EQ(reg.size(), 3u);
      b.reset();
      CHECK(reg.contains(local, remote));
      a.reset();
      CHECK(reg.contains(local, remote));
      CHECK_EQ(reg.size(), 1u);
      c.reset();
      CHECK(!reg.contains(local, remote));
      CHECK_EQ(reg.size(), 0u);
    }
  });
}

void tableTests() {
  // Every key on one shard (local ports equal modulo 16) and few distinct remotes, so probe runs
  // are long, removals shift slots back across them and freed entries are reused; a model says
  // what must be found. Both tables: IPv4, and IPv6 in the other one.
  for (const bool six : {false, true}) {
    run(six ? "IPv6: contains() after removals in long probe runs matches a model (10,000 random steps)"
            : "IPv4: contains() after removals in long probe runs matches a model (10,000 random steps)",
        [six] {
      OwnSockets reg;
      std::mt19937 rng(12);
      using Tuple = std::tuple<uint32_t, uint16_t, uint32_t>;  // local IP, local port, remote IP
      auto ip = [six](uint32_t host, uint16_t port) {
        if (!six) return v4(host, port);
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr.s6_addr[0] = 0xfd;
        const uint32_t be = htonl(host);
        std::memcpy(&sin6.sin6_addr.s6_addr[12], &be, 4);
        sin6.sin6_port = htons(port);
        return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
      };
      auto local = [&ip](const Tuple& t) { return ip(std::get<0>(t), std::get<1>(t)); };
      auto remote = [&ip](const Tuple& t) { return ip(std::get<2>(t), 80); };
      std::vector<std::pair<Tuple, OwnSockets::Registration>> live;
      std::map<Tuple, int> model;
      for (int step = 0; step < 10000; ++step) {
        // Few distinct tuples: duplicates happen too.
        const Tuple t{0x0a000001u + rng() % 4, static_cast<uint16_t>(16 * (1 + rng() % 64)), 0x0a090000u + rng() % 4};
        if (live.empty() || rng() % 5 < 3) {
          live.emplace_back(t, reg.add({local(t), remote(t)}));
          ++model[t];
        } else {
          const size_t victim = rng() % live.size();
          const Tuple gone = live[victim].first;
          live[victim].second.reset();
          std::swap(live[victim], live.back());  // moves registrations around, too
          live.pop_back();
          if (--model[gone] == 0) model.erase(gone);
          CHECK_EQ(reg.contains(local(gone), remote(gone)), model.count(gone) == 1);
        }
        if (step % 100 == 0) {
          for (const auto& entry : model) CHECK(reg.contains(local(entry.first), remote(entry.first)));
        }
      }
      CHECK_EQ(reg.size(), live.size());
      // Every tuple ever drawn: present exactly when the model has it.
      for (uint32_t l = 0; l < 4; ++l)
        for (uint16_t p = 1; p <= 64; ++p)
          for (uint32_t r = 0; r < 4; ++r) {
            const Tuple t{0x0a000001u + l, static_cast<uint16_t>(16 * p), 0x0a090000u + r};
            CHECK_EQ(reg.contains(local(t), remote(t)), model.count(t) == 1);
          }
      live.clear();
      CHECK_EQ(reg.size(), 0u);
    });
  }

  run("50,000 entries: tables grow and shrink while registrations live, each leaves with its own", [] {
    OwnSockets reg;
    const SocketAddress remote4 = addr("93.184.216.34", 443), remote6 = addr("2001:db8::1", 443);
    auto local4 = [](size_t i) { return v4(0x0a000001u + static_cast<uint32_t>(i / 60000), static_cast<uint16_t>(1 + i % 60000)); };
    auto local6 = [](size_t i) {
      SocketAddress a = addr("fd00::1", static_cast<uint16_t>(1 + i % 60000));
      return a;
    };
    std::vector<OwnSockets::Registration> regs;
    const size_t n = 50000;
    auto first = reg.add({local4(0), remote4});  // made before every resize, checked after each
    for (size_t i = 1; i < n; ++i) {
      regs.push_back(reg.add({local4(i), remote4}));  // the vector moves them as it grows
      if (i % 5 == 0) regs.push_back(reg.add({local6(i), remote6}));
    }
    CHECK_EQ(reg.size(), regs.size() + 1);
    CHECK(reg.contains(local4(0), remote4));
    for (size_t i = 1; i < n; i += 97) CHECK(reg.contains(local4(i), remote4));
    // Drop all but every 1000th: the tables shrink under the live registrations.
    std::vector<OwnSockets::Registration> kept;
    for (size_t i = 0; i < regs.size(); ++i) {
      if (i % 1000 == 0) kept.push_back(std::move(regs[i]));
    }
    regs.clear();
    CHECK_EQ(reg.size(), kept.size() + 1);
    CHECK(reg.contains(local4(0), remote4));
    CHECK(!reg.contains(local4(2), remote4));
    kept.clear();
    first.reset();
    CHECK_EQ(reg.size(), 0u);
    CHECK(!reg.contains(local4(0), remote4));
  });

  run("moved registrations: construct, assign over a live one, self-assign, moved-from is empty", [] {
    OwnSockets reg;
    const SocketAddress l1 = addr("10.0.0.1", 40010), l2 = addr("10.0.0.1", 40011), l6 = addr("fd00::1", 40012);
    const SocketAddress r = addr("10.0.9.9", 80), r6 = addr("fd00::9", 80);
    OwnSockets::Registration a = reg.add({l1, r});
    OwnSockets::Registration moved(std::move(a));
    CHECK(!a);  // NOLINT: moved-from on purpose
    CHECK(moved);
    a.reset();  // empty: removes nothing
    CHECK(reg.contains(l1, r));
    OwnSockets::Registration b = reg.add({l2, r});
    b = std::move(moved);  // b's own entry goes, moved's entry now belongs to b
    CHECK(!reg.contains(l2, r));
    CHECK(reg.contains(l1, r));
    CHECK_EQ(reg.size(), 1u);
    OwnSockets::Registration& alias = b;
    b = std::move(alias);  // self-assignment keeps the entry
    CHECK(b);
    CHECK(reg.contains(l1, r));
    OwnSockets::Registration c = reg.add({l6, r6});
    b = std::move(c);  // an IPv6 entry moved over an IPv4 one
    CHECK(!reg.contains(l1, r));
    CHECK(reg.contains(l6, r6));
    b = OwnSockets::Registration{};
    CHECK(!reg.contains(l6, r6));
    CHECK_EQ(reg.size(), 0u);
    static_assert(sizeof(OwnSockets::Registration) <= 8, "a registration is in every connection");
  });

  run("two registries apart: a registration removes from its own; a destroyed one's slot is reused", [] {
    OwnSockets one;
    auto other = std::make_unique<OwnSockets>();
    const SocketAddress l = addr("10.0.0.1", 40020), r = addr("10.0.9.9", 80);
    auto a = one.add({l, r});
    auto b = other->add({l, r});
    CHECK(one.contains(l, r) && other->contains(l, r));
    b.reset();
    CHECK(one.contains(l, r));
    CHECK(!other->contains(l, r));
    other.reset();
    // More registries, one after another, than can be alive at once.
    for (size_t i = 0; i < 2 * OwnSockets::kMaxRegistries; ++i) {
      OwnSockets temp;
      auto t = temp.add({l, r});
      CHECK(temp.contains(l, r));
    }
    CHECK(one.contains(l, r));
    a.reset();
    CHECK(!one.contains(l, r));
  });

  run("threads adding, removing and looking up on one registry (shared shards)", [] {
    OwnSockets reg;
    const SocketAddress r = addr("10.0.9.9", 80);
    const SocketAddress pinned = addr("10.0.0.200", 16);
    auto pin = reg.add({pinned, r});  // on the shard every thread also uses
    std::atomic<bool> lost{false};
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < 4; ++t) {
      threads.emplace_back([&reg, &lost, &pinned, &r, t] {
        std::vector<OwnSockets::Registration> mine;
        for (uint32_t i = 0; i < 4000; ++i) {
          const SocketAddress l = v4(0x0a000001u + t, static_cast<uint16_t>(16 * (1 + i % 200)));
          mine.push_back(reg.add({l, r}));
          if (!reg.contains(l, r) || !reg.contains(pinned, r)) lost = true;
          if (i % 3 == 0) mine.erase(mine.begin() + static_cast<long>(i % mine.size()));
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(!lost.load());
    CHECK_EQ(reg.size(), 1u);
    CHECK(reg.contains(pinned, r));
  });
}

void memoryTests() {
  run("an IPv4 entry costs at most 32 heap bytes, and an emptied registry gives its tables back", [] {
    const size_t n = 100000;
    std::vector<OwnSockets::Registration> regs;
    regs.reserve(n);
    OwnSockets reg;
    const SocketAddress remote = addr("93.184.216.34", 443);
    const size_t before = heapInUse();
    for (size_t i = 0; i < n; ++i) {
      regs.push_back(reg.add({v4(0x0a000001u + static_cast<uint32_t>(i / 60000), static_cast<uint16_t>(1024 + i % 60000)), remote}));
    }
    const size_t grown = heapInUse() - before;
    std::printf("  %zu IPv4 entries: %zu heap bytes, %.1f per entry\n", n, grown, static_cast<double>(grown) / n);
    CHECK(grown <= 32 * n);  // a map node and its bucket were 77 bytes
    regs.clear();
    const size_t left = heapInUse() - before;
    CHECK(left < 64 * 1024);  // the node map's bucket array stayed (1.3 MB for 100,000)
  });
}

}  // namespace

int main() {
  familyTests();
  tableTests();
  memoryTests();
  return splicegate::testing::finish();
}
