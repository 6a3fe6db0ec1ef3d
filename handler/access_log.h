// The bookkeeping of one delivery, done after its answer has gone out to nginx
// (so neither the log queue nor the shared counters delay an answer): the one
// access log line (logfmt, no secrets, no request data but the event name) and
// the request, event, duplicate and signature-failure counters.
#pragma once

#include "request.h"

namespace ipayout {

void account(const Delivery& delivery);

}  // namespace ipayout
