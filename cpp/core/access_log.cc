#include "access_log.h"

#include <arpa/inet.h>

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <llhttp.h>

namespace splicegate {

const char* destinationSourceName(DestinationSource source) {
  switch (source) {
#define SPLICEGATE_DST_NAME(Name, name) \
  case DestinationSource::k##Name:      \
    return #name;
    SPLICEGATE_DESTINATION_SOURCES(SPLICEGATE_DST_NAME)
#undef SPLICEGATE_DST_NAME
  }
  return "none";
}

const char* refusalName(Refusal refusal) {
  switch (refusal) {
#define SPLICEGATE_REFUSAL_NAME(Name, name) \
  case Refusal::k##Name:                    \
    return #name;
    SPLICEGATE_REFUSALS(SPLICEGATE_REFUSAL_NAME)
#undef SPLICEGATE_REFUSAL_NAME
  }
  return "none";
}

const char* closeReasonName(CloseReason reason) {
  switch (reason) {
#define SPLICEGATE_CLOSE_NAME(Name, name) \
  case CloseReason::k##Name:              \
    return #name;
    SPLICEGATE_CLOSE_REASONS(SPLICEGATE_CLOSE_NAME)
#undef SPLICEGATE_CLOSE_NAME
  }
  return "unknown";
}

void PackedAddress::set(const SocketAddress& address) {
  *this = PackedAddress{};
  if (address.copyIpTo(ip) == 0) return;
  family = static_cast<uint8_t>(address.family());
  port = address.port();
}

SocketAddress PackedAddress::get() const {
  if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, ip, 4);
    sin.sin_port = htons(port);
    return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  }
  if (family == AF_INET6) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    std::memcpy(&sin6.sin6_addr, ip, 16);
    sin6.sin6_port = htons(port);
    return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
  }
  return SocketAddress();
}

void AccessRecord::setError(const char* reason) {
  const size_t n = ::strnlen(reason, kErrorCapacity - 1);
  std::memcpy(error, reason, n);
  error[n] = '\0';
}

void AccessRecord::setListener(const std::string& name) {
  const size_t n = name.size() < kNameCapacity - 1 ? name.size() : kNameCapacity - 1;
  std::memcpy(listener, name.data(), n);
  listener[n] = '\0';
}

AccessSampler::AccessSampler(double sample, uint64_t seed) {
  enabled_ = sample > 0;
  all_ = sample >= 1;
  threshold_ = sample >= 1 ? UINT32_MAX : static_cast<uint32_t>(sample * 4294967296.0);
  state_ = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
}

AccessLogNames::AccessLogNames(const std::vector<PolicyRules>& policies) {
  rules_.reserve(policies.size());
  for (const PolicyRules& p : policies) {
    std::vector<std::string> names;
    names.reserve(p.rules.size());
    for (const PolicyRule& r : p.rules) names.push_back(r.name);
    rules_.push_back(std::move(names));
  }
}

const std::string& AccessLogNames::ruleName(uint32_t policy, const PolicyDecision& decision) const {
  return decisionName(decision, policy < rules_.size() ? &rules_[policy] : nullptr);
}

namespace {

void appendJsonString(std::string& out, const char* s, size_t n) {
  out += '"';
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

// Numbers are written with to_chars: snprintf's format parsing was most of a line's cost.
void appendUint(std::string& out, uint64_t v) {
  char text[24];
  const auto r = std::to_chars(text, text + sizeof text, v);
  out.append(text, r.ptr);
}

void appendPadded(std::string& out, unsigned v, int width) {
  char text[12];
  const auto r = std::to_chars(text, text + sizeof text, v);
  for (int pad = width - static_cast<int>(r.ptr - text); pad > 0; --pad) out += '0';
  out.append(text, r.ptr);
}

void appendAddress(std::string& out, const PackedAddress& a) {
  if (!a.known()) {
    out += "null";
    return;
  }
  out += '"';
  if (a.family == AF_INET) {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) out += '.';
      appendUint(out, a.ip[i]);
    }
    out += ':';
  } else {
    char ip[INET6_ADDRSTRLEN];
    ::inet_ntop(AF_INET6, a.ip, ip, sizeof ip);
    out += '[';
    out += ip;
    out += "]:";
  }
  appendUint(out, a.port);
  out += '"';
}

// Microseconds as milliseconds with three decimals ("12.345"), or null.
void appendMs(std::string& out, uint64_t us) {
  if (us == AccessRecord::kNone) {
    out += "null";
    return;
  }
  appendUint(out, us / 1000);
  out += '.';
  appendPadded(out, static_cast<unsigned>(us % 1000), 3);
}

// ISO 8601 UTC with milliseconds, as JavaScript's Date.toISOString() writes it.
void appendIsoTime(std::string& out, uint64_t ms) {
  const time_t seconds = static_cast<time_t>(ms / 1000);
  tm t{};
  ::gmtime_r(&seconds, &t);
  out += '"';
  appendPadded(out, static_cast<unsigned>(t.tm_year + 1900), 4);
  out += '-';
  appendPadded(out, static_cast<unsigned>(t.tm_mon + 1), 2);
  out += '-';
  appendPadded(out, static_cast<unsigned>(t.tm_mday), 2);
  out += 'T';
  appendPadded(out, static_cast<unsigned>(t.tm_hour), 2);
  out += ':';
  appendPadded(out, static_cast<unsigned>(t.tm_min), 2);
  out += ':';
  appendPadded(out, static_cast<unsigned>(t.tm_sec), 2);
  out += '.';
  appendPadded(out, static_cast<unsigned>(ms % 1000), 3);
  out += "Z\"";
}

}  // namespace

void appendAccessLine(const AccessRecord& r, const AccessLogNames& names, uint32_t worker, std::string& out) {
  out += "{\"time\":";
  appendIsoTime(out, r.wallTimeMs);
  out += r.kind == AccessRecord::Kind::kRequest ? ",\"type\":\"request\",\"listener\":" : ",\"type\":\"connection\",\"listener\":";
  appendJsonString(out, r.listener, ::strnlen(r.listener, AccessRecord::kNameCapacity));
  out += ",\"client\":";
  appendAddress(out, r.client);
  out += ",\"destination\":";
  appendAddress(out, r.destination);
  out += ",\"destination_source\":";
  if (r.source == DestinationSource::kNone) {
    out += "null";
  } else {
    out += '"';
    out += destinationSourceName(r.source);
    out += '"';
  }
  out += ",\"policy\":";
  if (r.policy == AccessRecord::Policy::kNone) {
    out += "null,\"rule\":null";
  } else {
    out += r.policy == AccessRecord::Policy::kAllow ? "\"allow\",\"rule\":" : "\"deny\",\"rule\":";
    const std::string& rule = names.ruleName(r.policyIndex, r.decision);
    appendJsonString(out, rule.data(), rule.size());
  }
  out += ",\"bytes_sent\":";
  appendUint(out, r.bytesSent);
  out += ",\"bytes_received\":";
  appendUint(out, r.bytesReceived);
  out += ",\"connect_ms\":";
  appendMs(out, r.connectUs);
  out += ",\"ttfb_ms\":";
  appendMs(out, r.ttfbUs);
  out += ",\"duration_ms\":";
  appendMs(out, r.durationUs);
  out += ",\"close_reason\":\"";
  out += closeReasonName(r.reason);
  out += "\",\"refusal\":";
  if (r.refusal == Refusal::kNone) {
    out += "null";
  } else {
    out += '"';
    out += refusalName(r.refusal);
    out += '"';
  }
  out += ",\"worker\":";
  appendUint(out, worker);
  if (r.kind == AccessRecord::Kind::kRequest) {
    out += ",\"method\":";
    if (r.method == AccessRecord::kNoMethod) {
      out += "null";
    } else {
      const char* method = llhttp_method_name(static_cast<llhttp_method_t>(r.method));
      appendJsonString(out, method, std::strlen(method));
    }
    out += ",\"status\":";
    if (r.status == 0) out += "null";
    else appendUint(out, r.status);
    out += ",\"error\":";
    const size_t errorLength = ::strnlen(r.error, AccessRecord::kErrorCapacity);
    if (errorLength == 0) out += "null";
    else appendJsonString(out, r.error, errorLength);
  }
  out += "}\n";
}

}  // namespace splicegate
