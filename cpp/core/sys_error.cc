#include "sys_error.h"

#include <cstring>

namespace splicegate {

std::string errnoName(int err) {
  const char* name = ::strerrorname_np(err);
  return name ? std::string(name) : "E" + std::to_string(err);
}

}  // namespace splicegate
