#include "orphan_registry.h"

#include <algorithm>
#include <chrono>
#include <csignal>

#include "event_loop.h"

namespace splicegate {

OrphanRegistry& OrphanRegistry::process() {
  // Leaked on purpose: its reaper may be waiting at exit, and nothing may join threads then.
  static OrphanRegistry* registry = new OrphanRegistry;
  return *registry;
}

OrphanRegistry::~OrphanRegistry() {
  endAll();
  waitEmpty(30000);
  std::list<Orphan> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    left.swap(orphans_);
  }
  reapCv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  // Only if an orphan did not end in time (a failing test): stop it the hard way, without the
  // lock (its end may be waiting for it), then drop what it listed.
  for (Orphan& o : left) o.loop->stop();
  left.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  ended_.clear();
}

bool OrphanRegistry::isGauge(Stat s) {
  switch (s) {
    case Stat::downstream_cx_active:
    case Stat::upstream_cx_active:
    case Stat::pipes_in_use:
    case Stat::pipes_idle:
    case Stat::listeners_active:
    case Stat::host_count:
    case Stat::udp_sessions_active:
      return true;
    default:
      return false;
  }
}

namespace {
// How often an orphan hands its access-log records over: as often as a live worker's drain.
constexpr uint64_t kCollectUs = 100 * 1000;
}  // namespace

void OrphanRegistry::adopt(std::unique_ptr<LoopThread> loop, const Counters& reported, uint64_t timeoutMs,
                           AccessLogOwner accessLog) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!reaper_.joinable()) reaper_ = std::thread([this] { reap(); });
  orphans_.push_back(Orphan{std::move(loop), reported, std::move(accessLog)});
  Orphan* orphan = &orphans_.back();
  ++adopted_;
  // Listed before the loop hears of it, so its end always finds it here.
  const uint64_t maxMs = UINT64_MAX / 2000;
  const uint64_t deadline = EventLoop::monotonicUs() + std::min(timeoutMs, maxMs) * 1000;
  orphan->loop->orphan(
      deadline, [this, orphan](WorkerCore& core, bool last) { collect(*orphan, core, last); },
      [this, orphan] { ended(orphan); });
}

void OrphanRegistry::collect(Orphan& orphan, WorkerCore& core, bool last) {
  if (!orphan.accessLog.names) return;
  const uint64_t now = EventLoop::monotonicUs();
  if (!last && now - orphan.lastCollectUs < kCollectUs) return;
  orphan.lastCollectUs = now;
  std::vector<AccessRecord> records;
  core.takeAccessRecords(records);  // what did not fit in the core's buffer is counted there
  if (!records.empty()) queueAccessRecords(records, orphan.accessLog);
}

void OrphanRegistry::queueAccessRecords(const std::vector<AccessRecord>& records, const OrphanAccessLog& owner) {
  if (!owner.names) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const AccessRecord& r : records) {
    if (queued_.size() >= kMaxQueuedRecords) {
      ++endedCounts_[static_cast<size_t>(Stat::access_log_dropped)];  // the main thread is late
      continue;
    }
    queued_.push_back(QueuedRecord{r, owner.names, owner.workerId});
  }
}

size_t OrphanRegistry::takeAccessLines(std::string& out) {
  std::vector<QueuedRecord> records;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    records.swap(queued_);
  }
  for (const QueuedRecord& q : records) appendAccessLine(q.record, *q.names, q.workerId, out);
  return records.size();
}

void OrphanRegistry::ended(Orphan* orphan) {
  // On the orphan's loop thread, its last act.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ended_.push_back(orphan);
  }
  reapCv_.notify_all();
}

void OrphanRegistry::reap() {
  // Signals belong to the main thread (Node's handlers), as on the loop threads.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    reapCv_.wait(lock, [this] { return stopping_ || !ended_.empty(); });
    if (stopping_) return;
    for (Orphan* orphan : ended_) {
      // The loop returned right after listing itself: the join is short. The counters are final.
      orphan->loop->join();
      const Stats& stats = orphan->loop->stats();
      for (size_t i = 0; i < Stats::size(); ++i) {
        const auto s = static_cast<Stat>(i);
        if (isGauge(s)) continue;
        const uint64_t now = stats.get(s);
        endedCounts_[i] += now > orphan->reported[i] ? now - orphan->reported[i] : 0;
      }
      // Access-log records nobody will drain any more (the owner's env is gone): lost, and counted.
      std::vector<AccessRecord> unwritten;
      orphan->loop->core().takeAccessRecords(unwritten);
      endedCounts_[static_cast<size_t>(Stat::access_log_dropped)] += unwritten.size();
      // Frees the core (its epoll, timers, pools) here, on the reaper thread.
      orphans_.remove_if([orphan](const Orphan& o) { return &o == orphan; });
    }
    ended_.clear();
    if (orphans_.empty()) emptyCv_.notify_all();
  }
}

size_t OrphanRegistry::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return orphans_.size();
}

uint64_t OrphanRegistry::adoptedTotal() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return adopted_;
}

void OrphanRegistry::readStats(double* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t i = 0; i < Stats::size(); ++i) out[i] = static_cast<double>(endedCounts_[i]);
  for (const Orphan& o : orphans_) {
    // An orphan that ended but is not reaped yet is read here once more: its counts join
    // endedCounts_ only when it leaves the list, under this same lock.
    const Stats& stats = o.loop->stats();
    for (size_t i = 0; i < Stats::size(); ++i) {
      const auto s = static_cast<Stat>(i);
      const uint64_t now = stats.get(s);
      if (isGauge(s)) out[i] += static_cast<double>(now);
      else if (now > o.reported[i]) out[i] += static_cast<double>(now - o.reported[i]);
    }
  }
}

void OrphanRegistry::endAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Orphan& o : orphans_) o.loop->endOrphanNow();
}

bool OrphanRegistry::waitEmpty(int timeoutMs) {
  std::unique_lock<std::mutex> lock(mutex_);
  return emptyCv_.wait_for(lock, std::chrono::milliseconds(timeoutMs), [this] { return orphans_.empty(); });
}

}  // namespace splicegate
