#include "listen_socket.h"

#include "../core/listener.h"
#include "../core/udp_relay.h"
#include "option_reader.h"
#include "system_error.h"

namespace splicegate {

Napi::Function ListenSocket::define(Napi::Env env) {
  return DefineClass(env, "ListenSocket",
                     {
                         InstanceAccessor<&ListenSocket::fd>("fd"),
                         InstanceAccessor<&ListenSocket::address>("address"),
                         InstanceMethod<&ListenSocket::close>("close"),
                     });
}

ListenSocket::ListenSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ListenSocket>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "ListenSocket(options): options must be an object").ThrowAsJavaScriptException();
    return;
  }
  ListenerOptions options;
  if (!readListenerOptions(info[0].As<Napi::Object>(), options)) return;  // a TypeError is pending
  SocketAddress bound;
  SysError err;
  // ListenSocket(options, fd): take over a socket passed by the service manager instead of binding.
  if (info.Length() >= 2 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber() || info[1].As<Napi::Number>().DoubleValue() != static_cast<double>(info[1].As<Napi::Number>().Int32Value()) ||
        info[1].As<Napi::Number>().Int32Value() < 0) {
      Napi::TypeError::New(env, "ListenSocket(options, fd): fd must be a non-negative integer").ThrowAsJavaScriptException();
      return;
    }
    if (options.udp) {
      Napi::TypeError::New(env, "ListenSocket(options, fd): a UDP listener cannot take over a passed socket").ThrowAsJavaScriptException();
      return;
    }
    fd_ = adoptListenSocket(info[1].As<Napi::Number>().Int32Value(), options, &bound, err);
  } else {
    fd_ = options.udp ? openUdpListenSocket(options, &bound, err) : openListenSocket(options, &bound, err);
  }
  if (!fd_) {
    makeSystemError(env, err).ThrowAsJavaScriptException();
    return;
  }
  address_ = bound.toString();
  napi_add_env_cleanup_hook(env_, &ListenSocket::onEnvCleanup, this);
  hooked_ = true;
}

ListenSocket::~ListenSocket() { release(); }

void ListenSocket::release() {
  if (hooked_) napi_remove_env_cleanup_hook(env_, &ListenSocket::onEnvCleanup, this);
  hooked_ = false;
  fd_.reset();
}

void ListenSocket::onEnvCleanup(void* self) {
  auto* socket = static_cast<ListenSocket*>(self);
  socket->hooked_ = false;  // the hook is being run: nothing to remove
  socket->fd_.reset();
}

Napi::Value ListenSocket::fd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), fd_.get());  // -1 once closed
}

Napi::Value ListenSocket::address(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), address_); }

Napi::Value ListenSocket::close(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

}  // namespace splicegate
