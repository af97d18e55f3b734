#include "native_worker.h"

#include <algorithm>
#include <string>
#include <vector>

#include "../core/loop_thread.h"
#include "../core/shared_host_counts.h"
#include "../core/latency_export.h"
#include "../core/stats.h"
#include "uv_poll_driver.h"
#include "option_reader.h"
#include "system_error.h"

namespace splicegate {

Napi::Function NativeWorker::define(Napi::Env env) {
  return DefineClass(env, "NativeWorker",
                     {
                         InstanceMethod<&NativeWorker::attachListener>("attachListener"),
                         InstanceMethod<&NativeWorker::start>("start"),
                         InstanceMethod<&NativeWorker::stopAccepting>("stopAccepting"),
                         InstanceMethod<&NativeWorker::closeAll>("closeAll"),
                         InstanceMethod<&NativeWorker::stats>("stats"),
                         InstanceMethod<&NativeWorker::hosts>("hosts"),
                         InstanceMethod<&NativeWorker::latency>("latency"),
                         InstanceMethod<&NativeWorker::drainEvents>("drainEvents"),
                         InstanceMethod<&NativeWorker::drainAccessLog>("drainAccessLog"),
                         InstanceMethod<&NativeWorker::holdsEvents>("holdsEvents"),
                         InstanceMethod<&NativeWorker::holdsAccessRecords>("holdsAccessRecords"),
                         InstanceMethod<&NativeWorker::close>("close"),
                     });
}

NativeWorker::NativeWorker(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeWorker>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "NativeWorker(options): options must be an object").ThrowAsJavaScriptException();
    return;
  }
  CoreOptions options;
  if (!readCoreOptions(info[0].As<Napi::Object>(), options)) return;  // a TypeError is pending
  // Per-host limits hold for the process: every worker, generation and orphan counts in one place.
  options.sharedHostCounts = &SharedHostCounts::process();
  accessNames_ = std::make_shared<const AccessLogNames>(options.policies);
  accessLogOn_ = options.accessLogSample > 0;
  SysError err;
  std::unique_ptr<WorkerCore> core = WorkerCore::create(options, err);
  if (!core) {
    makeSystemError(env, err).ThrowAsJavaScriptException();
    return;
  }
  Napi::Value driver = info[0].As<Napi::Object>().Get("driver");
  const std::string driverName = driver.IsString() ? driver.As<Napi::String>().Utf8Value() : "thread";
  if (driverName == "uv") {
    uv_loop_t* uvLoop = nullptr;
    napi_get_uv_event_loop(env, &uvLoop);
    loop_ = std::make_unique<UvPollDriver>(uvLoop, std::move(core));
  } else if (driverName == "thread") {
    loop_ = std::make_unique<LoopThread>(std::move(core));
    threaded_ = true;
  } else {
    Napi::TypeError::New(env, "option driver must be \"thread\" or \"uv\"").ThrowAsJavaScriptException();
    return;
  }
  Napi::Value orphanTimeout = info[0].As<Napi::Object>().Get("orphanTimeoutMs");
  if (orphanTimeout.IsNumber() && orphanTimeout.As<Napi::Number>().DoubleValue() >= 0) {
    orphanTimeoutMs_ = static_cast<uint64_t>(orphanTimeout.As<Napi::Number>().DoubleValue());
  }
  // A worker thread can end without anyone calling close(): the env cleanup hook hands a running
  // loop thread to the orphan registry (it finishes what it relays, then ends) or closes the rest.
  napi_add_env_cleanup_hook(env_, &NativeWorker::onEnvCleanup, this);
}

NativeWorker::~NativeWorker() {
  if (loop_) {
    napi_remove_env_cleanup_hook(env_, &NativeWorker::onEnvCleanup, this);
    loop_.reset();
  }
}

void NativeWorker::onEnvCleanup(void* self) {
  // The JS thread is ending without close() (an exception, process.exit in the thread). Runs
  // after the cleanup hooks of this env's thread-safe functions (Node runs them newest first), so
  // those are closing but not yet freed: closing the gate now is in time.
  auto* worker = static_cast<NativeWorker*>(self);
  {
    std::lock_guard<std::mutex> lock(worker->gate_->mutex);
    worker->gate_->open = false;
  }
  if (worker->threaded_ && worker->loop_->running()) {
    // The connections it relays have nothing wrong with them: it keeps relaying them, accepting
    // nothing new, and ends once they are done (orphan_registry.h). No N-API from here on.
    std::unique_ptr<LoopThread> loop(static_cast<LoopThread*>(worker->loop_.release()));
    OrphanRegistry::AccessLogOwner accessLog;
    if (worker->accessLogOn_) {
      accessLog = {worker->accessNames_, worker->accessWorkerId_};
      // Records taken for a drain whose answer will never run: written from the queue instead.
      std::vector<AccessRecord> handedOff;
      {
        std::lock_guard<std::mutex> h(worker->accessHandoff_->mutex);
        handedOff.swap(worker->accessHandoff_->records);
      }
      OrphanRegistry::process().queueAccessRecords(handedOff, accessLog);
    }
    OrphanRegistry::process().adopt(std::move(loop), worker->reported_, worker->orphanTimeoutMs_, std::move(accessLog));
  } else {
    worker->loop_.reset();
  }
}

bool NativeWorker::ensureOpen(Napi::Env env) {
  if (loop_) return true;
  Napi::Error error = Napi::Error::New(env, "NativeWorker is closed");
  error.Set("code", Napi::String::New(env, "ERR_WORKER_CLOSED"));
  error.ThrowAsJavaScriptException();
  return false;
}

Napi::Value NativeWorker::attachListener(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  if (loop_->running()) {
    Napi::Error::New(env, "attachListener must be called before start()").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "attachListener(options, fd): options must be an object, fd a number")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ListenerOptions options;
  if (!readListenerOptions(info[0].As<Napi::Object>(), options)) return env.Undefined();
  const int fd = info[1].As<Napi::Number>().Int32Value();
  SocketAddress bound;
  if (SysError err = loop_->core().attachListener(options, fd, &bound)) {
    makeSystemError(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::String::New(env, bound.toString());
}

Napi::Value NativeWorker::start(const Napi::CallbackInfo& info) {
  if (ensureOpen(info.Env())) loop_->start();
  return info.Env().Undefined();
}

Napi::Value NativeWorker::stopAccepting(const Napi::CallbackInfo& info) {
  if (ensureOpen(info.Env())) loop_->post([](WorkerCore& core) { core.stopAccepting(); });
  return info.Env().Undefined();
}

Napi::Value NativeWorker::closeAll(const Napi::CallbackInfo& info) {
  if (ensureOpen(info.Env())) {
    loop_->post([](WorkerCore& core) { core.closeAllConnections(CloseReason::kDrained); });
  }
  return info.Env().Undefined();
}

Napi::Value NativeWorker::stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  // One bulk copy of every counter: the module's statNames, then the policy counters named by
  // policyCounterNames(policies), then listenerStatNames for each attached listener in attach
  // order (all read once by the control layer). The listener table only grows in attachListener,
  // which runs on this thread before start().
  const WorkerCore& core = loop_->core();
  const PolicySet& policies = core.policies();
  const auto& listeners = core.listenerStats();
  const size_t policyCount = policies.counterNames().size();
  Napi::Float64Array out =
      Napi::Float64Array::New(env, Stats::size() + policyCount + listeners.size() * ListenerStats::size());
  const Stats& stats = loop_->stats();
  for (size_t i = 0; i < Stats::size(); ++i) {
    reported_[i] = stats.get(static_cast<Stat>(i));
    out[i] = static_cast<double>(reported_[i]);
  }
  policies.exportCounters(out.Data() + Stats::size());
  size_t at = Stats::size() + policyCount;
  for (const auto& listener : listeners) {
    for (size_t i = 0; i < ListenerStats::size(); ++i) {
      out[at++] = static_cast<double>(listener->get(static_cast<ListenerStat>(i)));
    }
  }
  return out;
}

namespace {

struct HostSnapshot {
  std::vector<std::string> addresses;
  std::vector<double> values;  // HostStat::kCount per host, in kHostStatNames order
};

Napi::Float64Array toFloat64Array(Napi::Env env, const std::vector<double>& values) {
  Napi::Float64Array out = Napi::Float64Array::New(env, values.size());
  std::copy(values.begin(), values.end(), out.Data());
  return out;
}

Napi::Array toStringArray(Napi::Env env, const std::vector<std::string>& values) {
  Napi::Array out = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = Napi::String::New(env, values[i]);
  return out;
}

}  // namespace

namespace {

// Whether JS can run in env now: a property set is refused once the env is terminating.
bool canRunJs(napi_env env) {
  napi_value probe;
  return env != nullptr && napi_create_object(env, &probe) == napi_ok &&
         napi_set_named_property(env, probe, "probe", probe) == napi_ok;
}

// Calls back into JS from a thread-safe function's call_js. While the worker thread is being
// terminated, JS can no longer run: napi_call_function then fails, and Napi::Function::Call would
// turn that into a JS exception it cannot throw either (a fatal error). The answer is moot then,
// so the failure is ignored.
void callIfAlive(Napi::Env env, Napi::Function callback, napi_value arg) {
  if (static_cast<napi_env>(env) == nullptr || callback.IsEmpty()) return;
  napi_value result;
  (void)napi_call_function(env, env.Undefined(), callback, 1, &arg, &result);
}

}  // namespace

// Builds a snapshot on the loop thread (the only thread that may read the core's tables) and
// hands it to the JS callback through a thread-safe function. T is owned by the callback.
template <typename T>
Napi::Value NativeWorker::snapshotOnLoop(const Napi::CallbackInfo& info, const char* name,
                                        T* (*build)(WorkerCore&), Napi::Value (*toJs)(Napi::Env, const T&)) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, std::string(name) + "(callback): callback must be a function").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), name, 0, 1);
  loop_->post([tsfn, build, toJs, gate = gate_](WorkerCore& core) mutable {
    std::lock_guard<std::mutex> lock(gate->mutex);
    if (!gate->open) return;  // the env and its thread-safe functions are gone: nobody to answer
    T* snapshot = build(core);
    const napi_status status = tsfn.BlockingCall(snapshot, [toJs](Napi::Env env, Napi::Function callback, T* data) {
      if (!canRunJs(env)) {  // the worker thread is being torn down: nobody to answer
        delete data;
        return;
      }
      Napi::Value value = toJs(env, *data);
      delete data;
      callIfAlive(env, callback, value);
    });
    if (status != napi_ok) delete snapshot;  // the environment is going away
    tsfn.Release();
  });
  return env.Undefined();
}

Napi::Value NativeWorker::hosts(const Napi::CallbackInfo& info) {
  return snapshotOnLoop<HostSnapshot>(
      info, "hosts",
      [](WorkerCore& core) {
        auto* snapshot = new HostSnapshot;
        constexpr size_t kStats = static_cast<size_t>(HostStat::kCount);
        snapshot->addresses.reserve(core.hosts().size());
        snapshot->values.reserve(core.hosts().size() * kStats);
        core.hosts().forEach([snapshot](const Host& host) {
          snapshot->addresses.push_back(host.address.toString());
          for (size_t i = 0; i < kStats; ++i) snapshot->values.push_back(static_cast<double>(host.stats[i]));
        });
        return snapshot;
      },
      [](Napi::Env env, const HostSnapshot& data) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("addresses", toStringArray(env, data.addresses));
        out.Set("values", toFloat64Array(env, data.values));
        return out;
      });
}

Napi::Value NativeWorker::latency(const Napi::CallbackInfo& info) {
  return snapshotOnLoop<LatencyExport>(
      info, "latency", [](WorkerCore& core) { return new LatencyExport(exportLatency(core.latency())); },
      [](Napi::Env env, const LatencyExport& data) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("global", toFloat64Array(env, data.global));
        out.Set("hostAddresses", toStringArray(env, data.hostAddresses));
        out.Set("hosts", toFloat64Array(env, data.hosts));
        out.Set("otherHosts", toFloat64Array(env, data.otherHosts));
        return out;
      });
}

namespace {

struct EventSnapshot {
  struct Item {
    const char* kind;
    double timeMs;
    std::string source;
    std::string destination;
    std::string listener;
    std::string rule;
  };
  std::vector<Item> items;
  double dropped = 0;
};

const char* eventKindName(WorkerEventKind kind) {
  switch (kind) {
    case WorkerEventKind::kPolicyDenied:
      return "policy_denied";
  }
  return "unknown";
}

}  // namespace

Napi::Value NativeWorker::drainEvents(const Napi::CallbackInfo& info) {
  return snapshotOnLoop<EventSnapshot>(
      info, "drainEvents",
      [](WorkerCore& core) {
        auto* snapshot = new EventSnapshot;
        std::vector<WorkerEvent> events;
        snapshot->dropped = static_cast<double>(core.takeEvents(events));
        snapshot->items.reserve(events.size());
        for (const WorkerEvent& e : events) {
          snapshot->items.push_back({eventKindName(e.kind), static_cast<double>(e.wallTimeMs),
                                     e.source.family() == AF_UNSPEC ? std::string("unknown") : e.source.toString(),
                                     e.destination.toString(), e.listener,
                                     core.policies().decidedBy(e.policy, e.decision)});
        }
        return snapshot;
      },
      [](Napi::Env env, const EventSnapshot& data) -> Napi::Value {
        Napi::Array events = Napi::Array::New(env, data.items.size());
        for (size_t i = 0; i < data.items.size(); ++i) {
          const EventSnapshot::Item& item = data.items[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("kind", item.kind);
          o.Set("timeMs", item.timeMs);
          o.Set("source", item.source);
          o.Set("destination", item.destination);
          o.Set("listener", item.listener);
          o.Set("rule", item.rule);
          events[i] = o;
        }
        Napi::Object out = Napi::Object::New(env);
        out.Set("dropped", data.dropped);
        out.Set("events", events);
        return out;
      });
}

Napi::Value NativeWorker::holdsEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  return Napi::Boolean::New(env, loop_->core().holdsEvents());
}

Napi::Value NativeWorker::holdsAccessRecords(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  return Napi::Boolean::New(env, loop_->core().holdsAccessRecords());
}

Napi::Value NativeWorker::drainAccessLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ensureOpen(env)) return env.Undefined();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "drainAccessLog(workerId, callback): workerId must be a number, callback a function")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const uint32_t workerId = info[0].As<Napi::Number>().Uint32Value();
  accessWorkerId_ = workerId;
  auto tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "drainAccessLog", 0, 1);
  std::shared_ptr<const AccessLogNames> names = accessNames_;
  loop_->post([tsfn, names, workerId, gate = gate_, handoff = accessHandoff_](WorkerCore& core) mutable {
    std::lock_guard<std::mutex> lock(gate->mutex);
    if (!gate->open) return;  // the env is gone: the records stay in the core for the orphan registry
    // The loop thread's whole share: swap the full buffer for an empty one, into the handoff.
    std::vector<AccessRecord> taken;
    const uint64_t dropped = core.takeAccessRecords(taken);
    {
      std::lock_guard<std::mutex> h(handoff->mutex);
      if (handoff->records.empty()) handoff->records.swap(taken);
      else handoff->records.insert(handoff->records.end(), taken.begin(), taken.end());
      handoff->dropped += dropped;
    }
    tsfn.BlockingCall([names, workerId, handoff](Napi::Env env, Napi::Function callback) {
      // While the worker thread is being torn down this can still run but JS cannot: then the
      // records stay in the handoff, where the env cleanup hook finds them (none is lost).
      if (!canRunJs(env)) return;
      std::vector<AccessRecord> records;
      uint64_t lost = 0;
      {
        std::lock_guard<std::mutex> h(handoff->mutex);
        records.swap(handoff->records);
        std::swap(lost, handoff->dropped);
      }
      std::string lines;
      lines.reserve(records.size() * 400);
      for (const AccessRecord& r : records) appendAccessLine(r, *names, workerId, lines);
      Napi::Object out = Napi::Object::New(env);
      out.Set("lines", Napi::String::New(env, lines));
      out.Set("count", static_cast<double>(records.size()));
      out.Set("dropped", static_cast<double>(lost));
      callIfAlive(env, callback, out);
    });
    tsfn.Release();
  });
  return env.Undefined();
}

Napi::Value NativeWorker::close(const Napi::CallbackInfo& info) {
  if (loop_) {
    napi_remove_env_cleanup_hook(env_, &NativeWorker::onEnvCleanup, this);
    loop_.reset();
  }
  return info.Env().Undefined();
}

}  // namespace splicegate
