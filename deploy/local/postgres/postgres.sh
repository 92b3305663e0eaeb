#!/usr/bin/env bash
# Local PostgreSQL (Debian's server binaries) for the production-mode Dagster storage.
# Usage: postgres.sh {install|up|down|status}
KB_SERVICE=postgres
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PG_PORT="${KB_PG_PORT:-5433}"
PG_USER="${KB_PG_USER:-dagster}"
PG_DB="${KB_PG_DB:-dagster}"
PG_PASSWORD="${KB_PG_PASSWORD:-dagster}"
# PostgreSQL refuses to run as root: the server runs as this OS account.
PG_OS_USER="${KB_PG_OS_USER:-postgres}"
DIR="$(service_dir postgres)"
LOG="$DIR/logs/postgres.log"
mkdir -p "$DIR/logs"

# The server (running as $PG_OS_USER) must reach its data folder. A checkout under a folder only
# root may enter (e.g. /root) cannot hold it: the data then lives in a folder of that account,
# one per checkout, named in the log.
if [[ "$(id -u)" != 0 ]] || runuser -u "$PG_OS_USER" -- test -x "$DIR" 2>/dev/null; then
  SERVER_DIR="$DIR"
else
  SERVER_DIR="${KB_PG_SERVER_DIR:-/var/lib/postgresql/kb-platform-$(echo -n "$DIR" | sha256sum | cut -c1-12)}"
fi
DATA="$SERVER_DIR/data"

pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" ]] || die "PostgreSQL server not installed; run deploy/local/setup.sh (apt-get install postgresql)"
  echo "$d"
}

as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

cmd_install() {
  local bin
  bin="$(pg_bindir)"
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initialising cluster in $DATA"
    mkdir -p "$DATA"
    [[ "$(id -u)" == 0 ]] && chown -R "$PG_OS_USER" "$SERVER_DIR"
    local pwfile
    pwfile="$(mktemp)"
    echo "$PG_PASSWORD" >"$pwfile"
    chmod 644 "$pwfile"
    as_pg "$bin/initdb" -D "$DATA" -U "$PG_USER" --pwfile="$pwfile" -A scram-sha-256 >>"$LOG" 2>&1 ||
      die "initdb failed; log: $LOG"
    rm -f "$pwfile"
  fi
  [[ "$(id -u)" == 0 ]] && chown -R "$PG_OS_USER" "$SERVER_DIR"
  return 0
}

is_ready() { "$(pg_bindir)/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; }

cmd_up() {
  cmd_install
  local bin pid start=$SECONDS
  bin="$(pg_bindir)"
  pid="$(running_pid postgres)"
  if [[ -n "$pid" ]] && is_ready; then
    log "already running (pid $pid) on 127.0.0.1:$PG_PORT"
    return 0
  fi
  require_free_port "$PG_PORT" "$LOG"
  # The unix socket lives in our directory, not /var/run (which may not exist or be writable).
  local server=("$bin/postgres" -D "$DATA" -c listen_addresses=127.0.0.1 -c port="$PG_PORT"
    -c unix_socket_directories="$SERVER_DIR")
  if [[ "$(id -u)" == 0 ]]; then server=(runuser -u "$PG_OS_USER" -- "${server[@]}"); fi
  start_detached postgres "$LOG" "${server[@]}"
  wait_until 60 "$(cat "$(pid_file postgres)")" "$LOG" is_ready
  if ! PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$PG_PORT in $((SECONDS - start))s"
}

cmd_down() { stop_service_pid postgres 30; }

cmd_status() {
  local pid
  pid="$(running_pid postgres)"
  if [[ -n "$pid" ]] && is_ready; then
    echo "postgres: running (pid $pid) on 127.0.0.1:$PG_PORT"
  else
    echo "postgres: stopped"
    return 3
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
