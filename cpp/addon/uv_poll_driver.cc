#include "uv_poll_driver.h"

namespace splicegate {

void UvPollDriver::start() {
  if (poll_) return;
  poll_ = new uv_poll_t;
  poll_->data = this;
  uv_poll_init(loop_, poll_, core_->pollFd());
  uv_poll_start(poll_, UV_READABLE, &UvPollDriver::onReadable);
}

void UvPollDriver::onReadable(uv_poll_t* handle, int status, int) {
  if (status < 0) return;
  static_cast<UvPollDriver*>(handle->data)->core_->runOnce(0);
}

void UvPollDriver::stop() {
  if (poll_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (core_) {
    core_->stopAccepting();
    core_->closeAllConnections(CloseReason::kDrained);
  }
}

}  // namespace splicegate
