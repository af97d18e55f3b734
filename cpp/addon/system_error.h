// Turns a core SysError into a JS Error shaped like Node's own system errors (code, errno,
// syscall), so the control layer and tests switch on `code`, never on message text.
#pragma once

#include <napi.h>

#include "../core/sys_error.h"

namespace splicegate {

Napi::Error makeSystemError(Napi::Env env, const SysError& err);

}  // namespace splicegate
