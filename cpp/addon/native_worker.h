// JS face of one worker's data plane: a WorkerCore on its own LoopThread. Options arrive once as a
// plain object (already validated in TS); afterwards only control calls and bulk counter reads
// cross the boundary, never anything per connection or per byte.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "../core/access_log.h"
#include "../core/loop_driver.h"
#include "../core/orphan_registry.h"

namespace splicegate {

// Whether the worker's JS environment may still be called through a thread-safe function. The
// env cleanup hook closes it; a loop thread holds the lock across its whole call, so the env
// cannot go between the check and the call. Node frees an env's thread-safe functions right after
// its cleanup hooks, so past this gate none may be touched, not even released.
struct JsGate {
  std::mutex mutex;
  bool open = true;
};

// Access-log records the loop thread took for JS and JS has not formatted yet. Kept here rather
// than in the thread-safe function's queue, so that when the worker thread dies first they are
// not lost with that queue: the env cleanup hook hands them to the orphan registry.
struct AccessHandoff {
  std::mutex mutex;
  std::vector<AccessRecord> records;
  uint64_t dropped = 0;
};

class NativeWorker : public Napi::ObjectWrap<NativeWorker> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit NativeWorker(const Napi::CallbackInfo& info);
  ~NativeWorker() override;

 private:
  // attachListener(options, fd): accept on a ListenSocket's fd (this worker keeps its own dup).
  Napi::Value attachListener(const Napi::CallbackInfo& info);
  Napi::Value start(const Napi::CallbackInfo& info);
  Napi::Value stopAccepting(const Napi::CallbackInfo& info);
  Napi::Value closeAll(const Napi::CallbackInfo& info);
  Napi::Value stats(const Napi::CallbackInfo& info);
  // hosts(callback): snapshots the host cache on the loop thread (the only thread that may read
  // it) and calls back on the JS thread with { addresses: string[], values: Float64Array }.
  Napi::Value hosts(const Napi::CallbackInfo& info);
  // latency(callback): the worker's histograms (latency_export.h format v1), built on the loop thread.
  Napi::Value latency(const Napi::CallbackInfo& info);
  // drainEvents(callback): takes the worker's buffered events (deny log) on the loop thread and
  // calls back with { dropped, events: [{ kind, timeMs, source, destination, listener, rule }] }.
  Napi::Value drainEvents(const Napi::CallbackInfo& info);
  // drainAccessLog(workerId, callback): takes the buffered access-log records on the loop thread
  // (a swap, no copy) and formats them here on the JS thread: calls back with
  // { lines: string (JSON lines, access_log.h), count, dropped }.
  Napi::Value drainAccessLog(const Napi::CallbackInfo& info);
  // holdsEvents() / holdsAccessRecords(): whether the drain above would find anything, read here
  // without waking the loop thread, so the periodic drains leave a resting loop asleep.
  Napi::Value holdsEvents(const Napi::CallbackInfo& info);
  Napi::Value holdsAccessRecords(const Napi::CallbackInfo& info);
  template <typename T>
  Napi::Value snapshotOnLoop(const Napi::CallbackInfo& info, const char* name, T* (*build)(WorkerCore&),
                             Napi::Value (*toJs)(Napi::Env, const T&));
  Napi::Value close(const Napi::CallbackInfo& info);
  bool ensureOpen(Napi::Env env);
  static void onEnvCleanup(void* self);

  napi_env env_;
  std::unique_ptr<LoopDriver> loop_;
  // A LoopThread (not the uv driver, which dies with the worker thread's loop): it can outlive
  // the thread as an orphan (orphan_registry.h).
  bool threaded_ = false;
  // How long an orphan may keep relaying before the rest is cut (the config's drain_timeout).
  uint64_t orphanTimeoutMs_ = 30000;
  // The counters stats() last handed to JS: the control layer retires exactly those when this
  // worker dies, so an orphan reports only what it counts after them.
  OrphanRegistry::Counters reported_{};
  std::shared_ptr<JsGate> gate_ = std::make_shared<JsGate>();
  // An orphan's access-log lines name the worker: the id drainAccessLog was last given.
  bool accessLogOn_ = false;
  std::shared_ptr<AccessHandoff> accessHandoff_ = std::make_shared<AccessHandoff>();
  uint32_t accessWorkerId_ = 0;
  // Rule names for the access log's lines, copied from the options: formatting runs on the JS
  // thread and must not read the core's policies. Shared with callbacks still in flight.
  std::shared_ptr<const AccessLogNames> accessNames_;
};

}  // namespace splicegate
