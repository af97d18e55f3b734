// Module entry: one Addon instance per environment (each piscina worker thread loads the module
// on its own), so nothing here is per-process static.
#include <napi.h>
#include <sys/resource.h>

#include "../core/host_cache.h"
#include "../core/listener.h"
#include "../core/orphan_registry.h"
#include "../core/policy_set.h"
#include "../core/stats.h"
#include "listen_socket.h"
#include "native_worker.h"
#include "option_reader.h"
#include "system_error.h"

namespace splicegate {

class SplicegateAddon : public Napi::Addon<SplicegateAddon> {
 public:
  SplicegateAddon(Napi::Env env, Napi::Object exports) {
    Napi::Array names = Napi::Array::New(env, Stats::size());
    for (size_t i = 0; i < Stats::size(); ++i) names[i] = Napi::String::New(env, kStatNames[i]);
    Napi::Array listenerNames = Napi::Array::New(env, ListenerStats::size());
    for (size_t i = 0; i < ListenerStats::size(); ++i) listenerNames[i] = Napi::String::New(env, kListenerStatNames[i]);
    Napi::Array hostNames = Napi::Array::New(env, static_cast<size_t>(HostStat::kCount));
    for (size_t i = 0; i < static_cast<size_t>(HostStat::kCount); ++i) hostNames[i] = Napi::String::New(env, kHostStatNames[i]);
    DefineAddon(exports, {
                             InstanceMethod<&SplicegateAddon::raiseFdLimit>("raiseFdLimit"),
                             InstanceMethod<&SplicegateAddon::policyCounterNames>("policyCounterNames"),
                             InstanceMethod<&SplicegateAddon::inspectSocket>("inspectSocket"),
                             InstanceMethod<&SplicegateAddon::orphans>("orphans"),
                             InstanceMethod<&SplicegateAddon::endOrphans>("endOrphans"),
                             InstanceMethod<&SplicegateAddon::orphanAccessLog>("orphanAccessLog"),
                             InstanceValue("NativeWorker", NativeWorker::define(env)),
                             InstanceValue("ListenSocket", ListenSocket::define(env)),
                             InstanceValue("statNames", names),
                             InstanceValue("hostStatNames", hostNames),
                             InstanceValue("listenerStatNames", listenerNames),
                         });
  }

 private:
  // The process's orphaned worker loops (cpp/core/orphan_registry.h), for the main thread:
  // { count, adopted, values } where values follow statNames (counters since adoption, gauges now).
  Napi::Value orphans(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const OrphanRegistry& registry = OrphanRegistry::process();
    Napi::Float64Array values = Napi::Float64Array::New(env, Stats::size());
    registry.readStats(values.Data());
    Napi::Object out = Napi::Object::New(env);
    out.Set("count", Napi::Number::New(env, static_cast<double>(registry.count())));
    out.Set("adopted", Napi::Number::New(env, static_cast<double>(registry.adoptedTotal())));
    out.Set("values", values);
    return out;
  }

  // Every orphan closes what it still relays (with resets) and ends: the process's drain at
  // drain_timeout. Returns at once; orphans().count reaches 0 once they are joined.
  Napi::Value endOrphans(const Napi::CallbackInfo& info) {
    OrphanRegistry::process().endAll();
    return info.Env().Undefined();
  }

  // The access-log records orphans made since the last call, as JSON lines formatted here (the
  // main thread): { lines, count }. Cheap when there are none.
  Napi::Value orphanAccessLog(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string lines;
    const size_t count = OrphanRegistry::process().takeAccessLines(lines);
    Napi::Object out = Napi::Object::New(env);
    out.Set("lines", Napi::String::New(env, lines));
    out.Set("count", Napi::Number::New(env, static_cast<double>(count)));
    return out;
  }

  // The names of the policy counters that NativeWorker.stats() appends after statNames, for these
  // policies (the same array as the workers' `policies` option). Called once by the control layer.
  Napi::Value policyCounterNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<PolicyRules> policies;
    if (info.Length() < 1 || !readPolicies(info[0], policies)) {
      if (!env.IsExceptionPending()) Napi::TypeError::New(env, "policyCounterNames(policies): policies must be an array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const std::vector<std::string> names = PolicySet::counterNames(policies);
    Napi::Array out = Napi::Array::New(env, names.size());
    for (size_t i = 0; i < names.size(); ++i) out[i] = Napi::String::New(env, names[i]);
    return out;
  }

  // What an inherited fd is, for matching sockets passed by systemd to listeners:
  // { type, family, listening, address } or a thrown system error (EBADF, ENOTSOCK).
  Napi::Value inspectSocket(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 0) {
      Napi::TypeError::New(env, "inspectSocket(fd): fd must be a non-negative integer").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    SocketInfo socket;
    if (SysError err = splicegate::inspectSocket(info[0].As<Napi::Number>().Int32Value(), socket)) {
      makeSystemError(env, err).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const char* type = socket.type == SOCK_STREAM ? "stream" : socket.type == SOCK_DGRAM ? "dgram" : socket.type == SOCK_SEQPACKET ? "seqpacket" : "other";
    const char* family = socket.family == AF_INET ? "ipv4" : socket.family == AF_INET6 ? "ipv6" : socket.family == AF_UNIX ? "unix" : "other";
    Napi::Object out = Napi::Object::New(env);
    out.Set("type", Napi::String::New(env, type));
    out.Set("family", Napi::String::New(env, family));
    out.Set("listening", Napi::Boolean::New(env, socket.listening));
    out.Set("address", Napi::String::New(env, socket.family == AF_INET || socket.family == AF_INET6 ? socket.local.toString() : ""));
    return out;
  }

  // Raises RLIMIT_NOFILE's soft limit to the hard limit (we cannot raise the hard one) and reports
  // both, so the control layer can size pipe pools against the real fd budget.
  Napi::Value raiseFdLimit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) < 0) {
      makeSystemError(env, SysError::fromErrno("getrlimit")).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (lim.rlim_cur < lim.rlim_max) {
      lim.rlim_cur = lim.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &lim) < 0) {
        makeSystemError(env, SysError::fromErrno("setrlimit")).ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("soft", Napi::Number::New(env, static_cast<double>(lim.rlim_cur)));
    out.Set("hard", Napi::Number::New(env, static_cast<double>(lim.rlim_max)));
    return out;
  }
};

}  // namespace splicegate

using splicegate::SplicegateAddon;
NODE_API_ADDON(SplicegateAddon)
