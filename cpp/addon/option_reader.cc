#include "option_reader.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

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

// Typed array of exactly the expected element type, or an error naming the option.
template <typename ArrayT>
bool readTypedArray(const Napi::Object& obj, const char* key, napi_typedarray_type type, ArrayT& out) {
  Napi::Value v = obj.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    return fail(obj.Env(), std::string("policy option ") + key + " has the wrong type");
  }
  out = v.As<ArrayT>();
  return true;
}

// One policy in the compact form of src/config/policy-native.ts (decodePolicyWords, policy_rules.h).
bool readPolicy(const Napi::Value& value, PolicyRules& out) {
  Napi::Env env = value.Env();
  if (!value.IsObject()) return fail(env, "option policies must hold objects");
  const Napi::Object o = value.As<Napi::Object>();
  Napi::Value def = o.Get("defaultAction");
  const std::string d = def.IsString() ? def.As<Napi::String>().Utf8Value() : "";
  if (d != "allow" && d != "deny") return fail(env, "policy option defaultAction must be \"allow\" or \"deny\"");
  out.defaultAllow = d == "allow";
  Napi::Value special = o.Get("denySpecial");
  if (!special.IsBoolean()) return fail(env, "policy option denySpecial must be a boolean");
  out.denySpecial = special.As<Napi::Boolean>().Value();
  Napi::Value names = o.Get("ruleNames");
  if (!names.IsArray()) return fail(env, "policy option ruleNames must be an array of strings");
  Napi::Uint8Array actions;
  Napi::Uint32Array cidrs;
  Napi::Uint32Array ports;
  if (!readTypedArray(o, "ruleActions", napi_uint8_array, actions)) return false;
  if (!readTypedArray(o, "cidrs", napi_uint32_array, cidrs)) return false;
  if (!readTypedArray(o, "ports", napi_uint32_array, ports)) return false;
  const Napi::Array nameList = names.As<Napi::Array>();
  std::vector<std::string> nameValues;
  for (uint32_t i = 0; i < nameList.Length(); ++i) {
    Napi::Value name = nameList.Get(i);
    if (!name.IsString()) return fail(env, "policy option ruleNames must hold strings");
    nameValues.push_back(name.As<Napi::String>().Utf8Value());
  }
  if (actions.ElementLength() != nameValues.size()) return fail(env, "policy option ruleActions must have one entry per rule");
  const std::string error = decodePolicyWords(nameValues, actions.Data(), cidrs.Data(), cidrs.ElementLength(), ports.Data(),
                                              ports.ElementLength(), out);
  if (!error.empty()) return fail(env, "policy option " + error);
  return true;
}

// listeners[].proxy_protocol as NativeProxyProtocolOptions (src/native/binding.ts); absent = off.
bool readProxyProtocol(const Napi::Value& value, ProxyProtocolOptions& out) {
  if (value.IsUndefined()) return true;
  Napi::Env env = value.Env();
  if (!value.IsObject()) return fail(env, "listener option proxyProtocol must be an object");
  const Napi::Object o = value.As<Napi::Object>();
  Napi::Value sources = o.Get("trustedSources");
  if (!sources.IsArray()) return fail(env, "proxyProtocol option trustedSources must be an array of CIDR strings");
  const Napi::Array list = sources.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value item = list.Get(i);
    if (!item.IsString()) return fail(env, "proxyProtocol option trustedSources must hold strings");
    const std::optional<IpCidr> cidr = parseCidr(item.As<Napi::String>().Utf8Value());
    if (!cidr) return fail(env, "proxyProtocol option trustedSources holds an invalid CIDR");
    out.trustedSources.push_back(*cidr);
  }
  Napi::Value required = o.Get("required");
  if (!required.IsBoolean()) return fail(env, "proxyProtocol option required must be a boolean");
  out.required = required.As<Napi::Boolean>().Value();
  if (!readUint(o, "timeoutMs", out.timeoutMs, 1, 4294967295.0)) return false;
  out.enabled = true;
  return true;
}

// listeners[].http as NativeHttpListenerOptions (src/native/binding.ts); absent = mode original_dst.
bool readHttp(const Napi::Value& value, HttpListenerOptions& out) {
  if (value.IsUndefined()) return true;
  Napi::Env env = value.Env();
  if (!value.IsObject()) return fail(env, "listener option http must be an object");
  const Napi::Object o = value.As<Napi::Object>();
  Napi::Value header = o.Get("headerName");
  if (!header.IsString()) return fail(env, "http option headerName must be a string");
  out.headerName = header.As<Napi::String>().Utf8Value();
  if (out.headerName.empty() || out.headerName.size() > 256) return fail(env, "http option headerName must be 1 to 256 characters");
  for (char& c : out.headerName) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  Napi::Value sources = o.Get("trustedSources");
  if (!sources.IsArray()) return fail(env, "http option trustedSources must be an array of CIDR strings");
  const Napi::Array list = sources.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value item = list.Get(i);
    if (!item.IsString()) return fail(env, "http option trustedSources must hold strings");
    const std::optional<IpCidr> cidr = parseCidr(item.As<Napi::String>().Utf8Value());
    if (!cidr) return fail(env, "http option trustedSources holds an invalid CIDR");
    out.trustedSources.push_back(*cidr);
  }
  Napi::Value strip = o.Get("stripHeader");
  if (!strip.IsBoolean()) return fail(env, "http option stripHeader must be a boolean");
  out.stripHeader = strip.As<Napi::Boolean>().Value();
  Napi::Value connect = o.Get("connect");
  if (!connect.IsBoolean()) return fail(env, "http option connect must be a boolean");
  out.connect = connect.As<Napi::Boolean>().Value();
  if (!readUint(o, "requestHeadTimeoutMs", out.requestHeadTimeoutMs, 1, 4294967295.0)) return false;
  // The parser keeps offsets in 32 bits; far beyond any sane head anyway.
  if (!readUint(o, "maxRequestHeadBytes", out.maxRequestHeadBytes, 256, 16 * 1024 * 1024)) return false;
  out.enabled = true;
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
  if (!readUint(o, "sendProxyProtocol", out.sendProxyProtocol, 0, 2)) return false;
  Napi::Value originalSource = o.Get("originalSource");
  if (!originalSource.IsUndefined()) {
    if (!originalSource.IsBoolean()) return fail(o.Env(), "option originalSource must be a boolean");
    out.originalSource = originalSource.As<Napi::Boolean>().Value();
  }
  if (!readUint(o, "httpPoolMaxIdlePerHost", out.httpPoolMaxIdlePerHost, 0, 1 << 20)) return false;
  if (!readUint(o, "httpPoolIdleTimeoutMs", out.httpPoolIdleTimeoutMs, 1, 4294967295.0)) return false;
  if (!readUint(o, "httpPoolMaxIdle", out.httpPoolMaxIdle, 0, 1 << 20)) return false;
  if (!readUint(o, "udpSessionTimeoutMs", out.udpSessionTimeoutMs, 1, 4294967295.0)) return false;
  if (!readUint(o, "udpMaxSessions", out.udpMaxSessions, 1, 1 << 20)) return false;
  Napi::Value sample = o.Get("accessLogSample");
  if (!sample.IsUndefined()) {
    const double v = sample.IsNumber() ? sample.As<Napi::Number>().DoubleValue() : -1;
    if (!(v >= 0 && v <= 1)) return fail(o.Env(), "option accessLogSample must be a number from 0 to 1");
    out.accessLogSample = v;
  }
  if (!readUint(o, "accessLogCapacity", out.accessLogCapacity, 1, 1 << 20)) return false;
  Napi::Value policies = o.Get("policies");
  if (!policies.IsUndefined() && !readPolicies(policies, out.policies)) return false;
  return true;
}

bool readPolicies(const Napi::Value& value, std::vector<PolicyRules>& out) {
  if (!value.IsArray()) return fail(value.Env(), "option policies must be an array");
  Napi::Array list = value.As<Napi::Array>();
  out.resize(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    if (!readPolicy(list.Get(i), out[i])) return false;
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
  Napi::Value protocol = o.Get("protocol");
  if (!protocol.IsUndefined()) {
    const std::string p = protocol.IsString() ? protocol.As<Napi::String>().Utf8Value() : "";
    if (p != "tcp" && p != "udp") return fail(o.Env(), "listener option protocol must be \"tcp\" or \"udp\"");
    out.udp = p == "udp";
    if (out.udp && !out.transparent) return fail(o.Env(), "listener option protocol \"udp\" needs transparent: true");
  }
  // Range-checked against CoreOptions::policies by the worker, which holds both.
  if (!readUint(o, "policy", out.policy, 0, 65535)) return false;
  if (!readProxyProtocol(o.Get("proxyProtocol"), out.proxyProtocol)) return false;
  if (!readHttp(o.Get("http"), out.http)) return false;
  return readUint(o, "backlog", out.backlog, 1, 65535);
}

}  // namespace splicegate
