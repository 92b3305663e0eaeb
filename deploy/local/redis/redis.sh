#!/usr/bin/env bash
# Local Redis (Debian's redis-server) holding the RAG service's rate-limit buckets, shared by its
# replicas. Loopback only, a password of its own (made once, readable by its owner only), no
# persistence: a bucket is a few seconds of state, lost harmlessly with a restart.
# Usage: redis.sh {install|up|down|status}
# The service uses it when these are set where it runs:
#   KB_SERVING_RATE_LIMIT_REDIS_URL=redis://127.0.0.1:6390/0
#   KB_SERVING_RATE_LIMIT_REDIS_PASSWORD_FILE=.kb-local/redis/password
KB_SERVICE=redis
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT="${KB_REDIS_PORT:-6390}"
DIR="$(service_dir redis)"
DATA="$DIR/data"
LOG="$DIR/logs/redis.log"
CONF="$DIR/redis.conf"
PASSWORD_FILE="${KB_REDIS_PASSWORD_FILE:-$DIR/password}"
MAXMEMORY="${KB_REDIS_MAXMEMORY:-64mb}"

redis_bin() {
  command -v redis-server >/dev/null ||
    die "redis-server not found; run deploy/local/setup.sh (apt-get install redis-server)"
  local version
  version="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
  ((${version:-0} >= 5)) || die "redis-server ${version:-?} is too old: the rate limits need Redis 5+"
}

# The password file, and a config that only its owner can read (requirepass is in it, so the
# password never shows in the process list).
cmd_install() {
  redis_bin
  mkdir -p "$DATA" "$DIR/logs"
  if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$PASSWORD_FILE")
    log "made the password in $PASSWORD_FILE"
  fi
  (
    umask 077
    cat >"$CONF" <<CONF
bind 127.0.0.1
port $PORT
protected-mode yes
daemonize no
dir $DATA
save ""
appendonly no
maxmemory $MAXMEMORY
maxmemory-policy volatile-ttl
requirepass $(cat "$PASSWORD_FILE")
CONF
  )
}

is_ready() {
  REDISCLI_AUTH="$(cat "$PASSWORD_FILE")" redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null |
    grep -q PONG
}

cmd_up() {
  local start=$SECONDS
  cmd_install
  already_up redis "redis://127.0.0.1:$PORT" && return 0
  require_free_port "$PORT" "$LOG"
  start_detached redis "$LOG" redis-server "$CONF"
  wait_until 30 "$(cat "$(pid_file redis)")" "$LOG" is_ready
  log "Redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') ready in $((SECONDS - start))s: redis://127.0.0.1:$PORT (password: $PASSWORD_FILE)"
}

cmd_down() { stop_service_pid redis 15; }

cmd_status() { http_service_status redis "redis://127.0.0.1:$PORT"; }

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
