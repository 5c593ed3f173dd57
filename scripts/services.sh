# Sourced by scripts/test.sh: make Chromium and a PostgreSQL server available to the tests.
# Installs Debian's packages when missing (needs root and apt), starts a throwaway
# PostgreSQL cluster on a Unix socket under /tmp and exports RLHFV_TEST_POSTGRES_URL.
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} from Debian"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: ${need[*]} missing and cannot be installed here; those tests will fail" >&2
  fi
fi
# `|| true`: with no server installed, the warning above stands and the tests still run
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ]; then
  pg_dir=/tmp/rlhfv-test-pg
  pg_user=postgres
  [ "$(id -u)" = 0 ] || pg_user=$(id -un)
  run_pg() { if [ "$(id -u)" = 0 ]; then su "$pg_user" -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
  if [ ! -f "$pg_dir/PG_VERSION" ]; then
    mkdir -p "$pg_dir" && [ "$(id -u)" = 0 ] && chown "$pg_user" "$pg_dir"
    run_pg "$pg_bin/initdb -D $pg_dir -A trust -U rlhfv >/dev/null"
  fi
  if run_pg "$pg_bin/pg_ctl -D $pg_dir status >/dev/null 2>&1" ||
    run_pg "$pg_bin/pg_ctl -D $pg_dir -l $pg_dir/log -o \"-k /tmp -p 55432 -c listen_addresses=''\" -w start >/dev/null"; then
    export RLHFV_TEST_POSTGRES_URL="postgresql+psycopg://rlhfv@/postgres?host=/tmp&port=55432"
  else  # e.g. another server on port 55432: say so, and let the PostgreSQL tests report it
    echo "warning: could not start the test PostgreSQL server (see $pg_dir/log); those tests will fail" >&2
  fi
fi
