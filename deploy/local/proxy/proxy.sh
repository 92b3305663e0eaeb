#!/usr/bin/env bash
# HAProxy (Debian: apt-get install -y haproxy) in front of RAG service instances, checking each
# one's /readyz; its stats socket drains and re-enables them for a rolling restart.
# Usage: proxy.sh {up|down|status|show|state <server> <ready|drain|maint>|roll}
#   KB_PROXY_PORT     where clients connect (default 3040)
#   KB_PROXY_SERVERS  "name=host:port ..." (default "rag1=127.0.0.1:$KB_RAG_PORT", one instance)
#   KB_PROXY_ROLL     for `roll`: "name=KB_LOCAL_DIR:port ..." of the rag.sh instances, in order
# The config is deploy/local/proxy/haproxy.cfg.tmpl rendered by kb_platform/serving/haproxy.py;
# `roll` runs kb_platform/serving/rolling_restart.py (docs/zero-downtime.md).
KB_SERVICE=proxy
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT="${KB_PROXY_PORT:-3040}"
SERVERS="${KB_PROXY_SERVERS:-rag1=127.0.0.1:${KB_RAG_PORT:-3030}}"
DIR="$(service_dir proxy)"
LOG="$DIR/logs/haproxy.log"
CONFIG="$DIR/haproxy.cfg"
SOCKET="$DIR/haproxy.sock"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"

is_ready() { port_in_use "$PORT" && [[ -S "$SOCKET" ]]; }

haproxy_py() { (cd "$KB_REPO_ROOT" && "$VENV/bin/python" -m kb_platform.serving.haproxy "$@"); }

cmd_up() {
  already_up proxy "http://127.0.0.1:$PORT" && return 0
  command -v haproxy >/dev/null || die "haproxy not found; install it: apt-get install -y haproxy"
  mkdir -p "$DIR/logs"
  # shellcheck disable=SC2086 # one word per server
  haproxy_py render --port "$PORT" --stats-socket "$SOCKET" --pidfile "$DIR/haproxy.pid" \
    $SERVERS >"$CONFIG" || die "could not render $CONFIG"
  haproxy -c -q -f "$CONFIG" || die "haproxy rejects $CONFIG"
  require_free_port "$PORT" "$LOG"
  start_detached proxy "$LOG" haproxy -db -f "$CONFIG"
  wait_until 15 "$(cat "$(pid_file proxy)")" "$LOG" is_ready
  log "HAProxy on http://127.0.0.1:$PORT in front of: $SERVERS (stats socket $SOCKET)"
}

cmd_down() { stop_service_pid proxy 10; }

cmd_status() { http_service_status proxy "http://127.0.0.1:$PORT"; }

cmd_roll() {
  [[ -n "${KB_PROXY_ROLL:-}" ]] || die "set KB_PROXY_ROLL=\"rag1=<KB_LOCAL_DIR>:<port> ...\""
  # shellcheck disable=SC2086 # one word per instance
  (cd "$KB_REPO_ROOT" && "$VENV/bin/python" -m kb_platform.serving.rolling_restart \
    --proxy-dir "$DIR" $KB_PROXY_ROLL)
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  show) haproxy_py show --stats-socket "$SOCKET" ;;
  state) haproxy_py state --stats-socket "$SOCKET" "${2:?server}" "${3:?ready, drain or maint}" ;;
  roll) cmd_roll ;;
  *) die "usage: $0 {up|down|status|show|state <server> <ready|drain|maint>|roll}" ;;
esac
