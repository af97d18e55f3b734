// Loops whose owner died. A worker's JS thread can end abruptly (an exception, process.exit in
// the thread) while its native loop (LoopThread) relays connections that have nothing wrong with
// them. Instead of cutting those, the addon hands the loop over here: it stops accepting at once
// (the other workers and the replacement take new connections from the shared listening sockets),
// keeps relaying until its last connection ends (or its deadline cuts the rest with resets), and is
// then joined and freed by the registry's reaper thread. Nothing here knows about Node: the addon
// adopts, and the main thread reads counts and counters and ends orphans at process drain.
//
// The process-wide registry is never destroyed (process()): a static destructor that joins
// threads at exit is a trap. The main thread instead ends the orphans during its drain
// (endAll + count() == 0) before the process exits. Tests make their own instances.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "access_log.h"
#include "loop_thread.h"
#include "stats.h"

namespace splicegate {

// Whose access log an orphan's records belong to: its rule names and worker id, for the lines.
// names null: the access log is off.
struct OrphanAccessLog {
  std::shared_ptr<const AccessLogNames> names;
  uint32_t workerId = 0;
};

class OrphanRegistry {
 public:
  using Counters = std::array<uint64_t, Stats::size()>;
  using AccessLogOwner = OrphanAccessLog;
  // Records waiting for the main thread (takeAccessLines); more are dropped and counted.
  static constexpr size_t kMaxQueuedRecords = 16384;

  OrphanRegistry() = default;
  // Ends every orphan now (resets), joins them and the reaper. For tests: process()'s never runs.
  ~OrphanRegistry();
  OrphanRegistry(const OrphanRegistry&) = delete;
  OrphanRegistry& operator=(const OrphanRegistry&) = delete;

  // The process's registry (allocated once, never freed).
  static OrphanRegistry& process();

  // Takes over a running loop whose owner is gone. reported: the counters the owner already
  // handed out (its control layer keeps those in its retired totals), so only what the orphan
  // counts after them is added here; all zero if it never reported. timeoutMs bounds its life.
  // accessLog: the orphan's records go on being taken (about every 100 ms on its loop, and at its
  // end) into a bounded queue here, formatted and written by the main thread (takeAccessLines).
  void adopt(std::unique_ptr<LoopThread> loop, const Counters& reported, uint64_t timeoutMs,
             AccessLogOwner accessLog = {});
  // Queues access-log records of a dead worker for takeAccessLines (those its owner had taken but
  // not yet written when its thread died); beyond kMaxQueuedRecords they are dropped and counted.
  void queueAccessRecords(const std::vector<AccessRecord>& records, const OrphanAccessLog& owner);
  // The queued access-log records as JSON lines (access_log.h), formatted on the calling thread;
  // returns how many.
  size_t takeAccessLines(std::string& out);
  // Orphans not yet joined and freed.
  size_t count() const;
  // Orphans ever adopted.
  uint64_t adoptedTotal() const;
  // Stats::size() values in Stat order: for counters, what orphans counted since adoption (those
  // that ended included, so it never goes backwards); for gauges, the live orphans' values now.
  void readStats(double* out) const;
  // Every orphan closes its connections now (with resets) and ends; count() reaches 0 once the
  // reaper has joined them. For the process's drain at drain_timeout.
  void endAll();
  // Waits (bounded) until count() == 0; true if it did.
  bool waitEmpty(int timeoutMs);

  static bool isGauge(Stat s);

 private:
  struct Orphan {
    std::unique_ptr<LoopThread> loop;
    Counters reported{};
    AccessLogOwner accessLog;
    uint64_t lastCollectUs = 0;  // its loop thread only
  };
  struct QueuedRecord {
    AccessRecord record;
    std::shared_ptr<const AccessLogNames> names;
    uint32_t workerId;
  };
  void ended(Orphan* orphan);
  // On the orphan's loop thread, after each batch: moves its access-log records into queued_.
  void collect(Orphan& orphan, WorkerCore& core, bool last);
  void reap();

  mutable std::mutex mutex_;
  std::condition_variable reapCv_;
  std::condition_variable emptyCv_;
  std::list<Orphan> orphans_;       // guarded by mutex_
  std::vector<Orphan*> ended_;      // guarded: loops that returned, for the reaper to join
  Counters endedCounts_{};          // guarded: what orphans that ended counted after adoption
                                    // (and access-log records the queue had no room for)
  std::vector<QueuedRecord> queued_;  // guarded
  uint64_t adopted_ = 0;            // guarded
  bool stopping_ = false;           // guarded
  std::thread reaper_;              // started by the first adopt
};

}  // namespace splicegate
