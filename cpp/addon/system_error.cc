#include "system_error.h"

#include <cstring>

namespace splicegate {

Napi::Error makeSystemError(Napi::Env env, const SysError& err) {
  const std::string code = errnoName(err.err);
  std::string message = std::string(err.syscall);
  if (!err.context.empty()) message += " " + err.context;
  message += " failed: " + code + " (" + std::strerror(err.err) + ")";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err.err));  // negative, as Node reports it
  error.Set("syscall", Napi::String::New(env, err.syscall));
  if (!err.context.empty()) error.Set("context", Napi::String::New(env, err.context));
  return error;
}

}  // namespace splicegate
