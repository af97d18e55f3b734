// JS face of one listening socket owned by the process (the main thread): opened once per
// configured listener, kept open for the process's life, and handed to every worker by fd number
// (workers are threads of this process; each registers its own dup). Closed by close(), by the
// environment's cleanup hook, or when collected.
#pragma once

#include <napi.h>

#include "../core/unique_fd.h"

namespace splicegate {

class ListenSocket : public Napi::ObjectWrap<ListenSocket> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit ListenSocket(const Napi::CallbackInfo& info);
  ~ListenSocket() override;

 private:
  Napi::Value fd(const Napi::CallbackInfo& info);
  Napi::Value address(const Napi::CallbackInfo& info);
  Napi::Value close(const Napi::CallbackInfo& info);
  void release();
  static void onEnvCleanup(void* self);

  napi_env env_;
  UniqueFd fd_;
  std::string address_;
  bool hooked_ = false;
};

}  // namespace splicegate
