// Readiness travels worker -> master -> systemd: the first worker whose writer
// reaches the database writes a byte to a pipe the master made before forking,
// and only the master talks to systemd, so the unit can use NotifyAccess=main.
#pragma once

namespace ipayout::readiness {

void init();        // master, before forking workers
void report();      // worker: the database answered (idempotent, async-safe write)
bool poll_ready();  // master: true once any worker has reported

}  // namespace ipayout::readiness
