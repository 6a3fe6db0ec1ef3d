# Installation layout and the Debian package (CPack, DEB generator).
#
#   cmake -S . -B build && cmake --build build -j2 && (cd build && cpack -G DEB)
#   -> build/ipayout-webhook_<version>_<arch>.deb
#
# The binaries install themselves: install(TARGETS ... DESTINATION bin) next to
# their add_executable in handler/ (ipayout-webhookd) and cli/ (ipayout-events,
# so it is packaged exactly when that target exists); with CPack's prefix /usr
# they land in /usr/bin. Everything else is installed here, to the absolute
# paths a Debian system expects; a plain `cmake --install` writes those same
# absolute paths, so it is meant for packaging only.

include_guard(GLOBAL)

set(IPAYOUT_PKG_DOCDIR /usr/share/doc/ipayout-webhook)

# systemd units. /lib/systemd/system is where Debian 12 packages ship them
# (the same directory as /usr/lib/systemd/system on a merged-/usr system).
install(FILES
    ${PROJECT_SOURCE_DIR}/systemd/ipayout-webhookd.service
    ${PROJECT_SOURCE_DIR}/systemd/ipayout-webhookd.socket
  DESTINATION /lib/systemd/system
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/ipayout-webhook.sysusers
  DESTINATION /usr/lib/sysusers.d RENAME ipayout-webhook.conf
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/ipayout-webhook.tmpfiles
  DESTINATION /usr/lib/tmpfiles.d RENAME ipayout-webhook.conf
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# ipayout-events' daily retention job, with the CLI it runs. Installed, not
# enabled: it needs a database role and its env/pgpass files first (see the unit).
if(TARGET ipayout-events AND EXISTS ${PROJECT_SOURCE_DIR}/systemd/ipayout-events-purge.service)
  install(FILES
      ${PROJECT_SOURCE_DIR}/systemd/ipayout-events-purge.service
      ${PROJECT_SOURCE_DIR}/systemd/ipayout-events-purge.timer
    DESTINATION /lib/systemd/system
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()

# The configuration holds the database conninfo: 0640 here, group
# ipayout-webhook set by postinst (the group does not exist at build time).
install(FILES ${PROJECT_SOURCE_DIR}/systemd/ipayout-webhookd.conf.example
  DESTINATION /etc/ipayout-webhook RENAME ipayout-webhookd.conf
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)

# nginx: the snippets where the README's include lines expect them; the full
# site is an example to copy and edit, so it goes to the documentation.
install(FILES
    ${PROJECT_SOURCE_DIR}/nginx/ipayout-webhook.conf
    ${PROJECT_SOURCE_DIR}/nginx/ipayout-operator.conf
  DESTINATION /etc/nginx/snippets
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PROJECT_SOURCE_DIR}/nginx/example-site.conf
  DESTINATION ${IPAYOUT_PKG_DOCDIR}/examples RENAME nginx-site.conf
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# The migrations, for reading and for DBAs who apply them by hand; the binary
# embeds the same files (`ipayout-webhookd migrate` is the supported way).
file(GLOB IPAYOUT_PKG_SQL CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/sql/*.sql)
install(FILES ${IPAYOUT_PKG_SQL} DESTINATION /usr/share/ipayout-webhook/sql
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# Monitoring (docs/monitoring.md), everything under monitoring/: Prometheus
# alerting rules with their promtool tests, the postgres_exporter query file
# for consumers' lag, a Grafana dashboard.
file(GLOB_RECURSE IPAYOUT_PKG_MONITORING CONFIGURE_DEPENDS RELATIVE ${PROJECT_SOURCE_DIR}/monitoring
     ${PROJECT_SOURCE_DIR}/monitoring/*)
foreach(f IN LISTS IPAYOUT_PKG_MONITORING)
  get_filename_component(dir ${f} DIRECTORY)
  install(FILES ${PROJECT_SOURCE_DIR}/monitoring/${f}
    DESTINATION /usr/share/ipayout-webhook/monitoring/${dir}
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endforeach()

# The README links into docs/: ship both (and RELIABILITY.md), so the links
# work in /usr/share/doc/ipayout-webhook as they do in the repository.
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/RELIABILITY.md
  DESTINATION ${IPAYOUT_PKG_DOCDIR} PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${IPAYOUT_PKG_DOCDIR}/docs
  FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# ---------------------------------------------------------------- CPack

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ipayout-webhook)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "ipayout-webhook")
set(CPACK_PACKAGE_CONTACT "ipayout-webhook maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "i-payout webhook receiver (FastCGI worker pool for nginx, PostgreSQL storage)")
set(CPACK_PACKAGE_DESCRIPTION
    "Verifies i-payout webhook signatures, stores every event in PostgreSQL before\n\
answering, de-duplicates repeated deliveries and notifies merchant systems with\n\
LISTEN/NOTIFY. Ships the worker pool (ipayout-webhookd), systemd units, sysusers\n\
and tmpfiles entries, nginx snippets and the SQL migrations.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo binaries would be several times larger

# ipayout-webhook_<version>_<arch>.deb (no Debian revision: none is set).
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
# Library dependencies from the binaries themselves (libpqxx-6.4, libfcgi0ldbl,
# libspdlog1.10, libfmt9, libsimdjson14, libssl3, libsystemd0, libpq5, libc6,
# libstdc++6, ...), with the versions the build was linked against.
find_program(IPAYOUT_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(IPAYOUT_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  message(STATUS "dpkg-shlibdeps not found (package dpkg-dev): .deb dependencies listed by hand")
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libpqxx-6.4, libpq5, libfcgi0ldbl, libspdlog1.10, libfmt9, libsimdjson14, libssl3, libsystemd0")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nginx")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql (>= 15), pgbouncer")

# conffiles and maintainer scripts (postinst: user, /run directory, socket
# unit; prerm/postrm: stop and clean up). STRICT_PERMISSION: 0755 scripts,
# 0644 conffiles, whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/postinst
    ${PROJECT_SOURCE_DIR}/packaging/prerm
    ${PROJECT_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# Only what an install needs; build trees and VCS files never reach the package.
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/\\\\.run/")

include(CPack)
