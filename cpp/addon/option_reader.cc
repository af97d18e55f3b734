#include "option_reader.h"

#include <cmath>
#include <string>

namespace splicegate {

namespace {

bool fail(Napi::Env env, const std::string& what) {
  Napi::TypeError::New(env, what).ThrowAsJavaScriptException();
  return false;
}

// Optional unsigned integer option within [min, max]; absent keeps the default.
template <typename T>
bool readUint(const Napi::Object& obj, const char* key, T& out, double min, double max) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) return true;
  if (!v.IsNumber()) return fail(obj.Env(), std::string("option ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < min || d > max) {
    return fail(obj.Env(), std::string("option ") + key + " out of range");
  }
  out = static_cast<T>(d);
  return true;
}

}  // namespace

bool readCoreOptions(const Napi::Object& o, CoreOptions& out) {
  if (!readUint(o, "connectTimeoutMs", out.connectTimeoutMs, 1, 4294967295.0)) return false;
  if (!readUint(o, "idleTimeoutMs", out.idleTimeoutMs, 1, 4294967295.0)) return false;
  if (!readUint(o, "upstreamMark", out.upstreamMark, 0, 4294967295.0)) return false;
  if (!readUint(o, "cleanupIntervalMs", out.cleanupIntervalMs, 1, 4294967295.0)) return false;
  if (!readUint(o, "upstreamPortOverride", out.upstreamPortOverride, 0, 65535)) return false;
  if (!readUint(o, "maxHosts", out.maxHosts, 1, 1e9)) return false;
  if (!readUint(o, "maxConnectionsPerHost", out.maxConnectionsPerHost, 1, 9007199254740991.0)) return false;
  if (!readUint(o, "maxPendingPerHost", out.maxPendingPerHost, 1, 9007199254740991.0)) return false;
  if (!readUint(o, "maxDownstreamConnections", out.maxDownstreamConnections, 1, 1e9)) return false;
  if (!readUint(o, "preconnectPerHost", out.preconnectPerHost, 0, 1024)) return false;
  if (!readUint(o, "preconnectTtlMs", out.preconnectTtlMs, 1, 4294967295.0)) return false;
  Napi::Value ports = o.Get("preconnectPorts");
  if (!ports.IsUndefined()) {
    if (!ports.IsArray()) return fail(o.Env(), "option preconnectPorts must be an array of ports");
    Napi::Array list = ports.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value port = list.Get(i);
      if (!port.IsNumber()) return fail(o.Env(), "option preconnectPorts must hold numbers");
      const double p = port.As<Napi::Number>().DoubleValue();
      if (p < 1 || p > 65535 || p != std::floor(p)) return fail(o.Env(), "option preconnectPorts: port out of range");
      out.preconnectPorts.push_back(static_cast<uint16_t>(p));
    }
  }
  if (!readUint(o, "maxPipes", out.maxPipes, 0, 1 << 20)) return false;
  if (!readUint(o, "maxIdlePipes", out.maxIdlePipes, 0, 1 << 20)) return false;
  if (!readUint(o, "pipeSize", out.pipeSize, 0, 1 << 30)) return false;
  if (!readUint(o, "copyBufferSize", out.copyBufferSize, 1024, 1 << 24)) return false;
  if (!readUint(o, "relayBudgetBytes", out.relayBudgetBytes, 4096, 1 << 30)) return false;
  if (!readUint(o, "acceptBatch", out.acceptBatch, 1, 65536)) return false;
  Napi::Value record = o.Get("recordLatency");
  if (!record.IsUndefined()) {
    if (!record.IsBoolean()) return fail(o.Env(), "option recordLatency must be a boolean");
    out.recordLatency = record.As<Napi::Boolean>().Value();
  }
  Napi::Value mode = o.Get("relayMode");
  if (!mode.IsUndefined()) {
    const std::string m = mode.IsString() ? mode.As<Napi::String>().Utf8Value() : "";
    if (m == "auto") out.relayMode = CoreOptions::RelayMode::kAuto;
    else if (m == "splice") out.relayMode = CoreOptions::RelayMode::kSplice;
    else if (m == "copy") out.relayMode = CoreOptions::RelayMode::kCopy;
    else return fail(o.Env(), "option relayMode must be \"auto\", \"splice\" or \"copy\"");
  }
  return true;
}

bool readListenerOptions(const Napi::Object& o, ListenerOptions& out) {
  Napi::Value name = o.Get("name");
  Napi::Value host = o.Get("host");
  if (!name.IsString()) return fail(o.Env(), "listener option name must be a string");
  if (!host.IsString()) return fail(o.Env(), "listener option host must be a string");
  uint16_t port = 0;
  if (!readUint(o, "port", port, 0, 65535)) return false;
  out.name = name.As<Napi::String>().Utf8Value();
  auto addr = SocketAddress::fromIp(host.As<Napi::String>().Utf8Value(), port);
  if (!addr) return fail(o.Env(), "listener option host must be a literal IP address");
  out.address = *addr;
  Napi::Value transparent = o.Get("transparent");
  out.transparent = transparent.IsBoolean() && transparent.As<Napi::Boolean>().Value();
  return readUint(o, "backlog", out.backlog, 1, 65535);
}

}  // namespace splicegate
