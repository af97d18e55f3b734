// The value of the routing header (listeners[].http.header_name, Envoy's
// x-envoy-original-dst-host): "IP:PORT" or "[IPv6]:PORT", IP literals only. Anything else (a host
// name, no port, port 0, a zone id, surrounding text) is invalid: the caller counts it
// (original_dst_host_invalid) and ignores the header, as Envoy does.
#pragma once

#include <cstddef>
#include <optional>

#include "socket_address.h"

namespace splicegate::http {

std::optional<SocketAddress> parseHostPort(const char* data, size_t length);

}  // namespace splicegate::http
