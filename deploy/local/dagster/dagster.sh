#!/usr/bin/env bash
# Dagster UI and daemon (`dagster dev`) for the local code location.
# Usage: dagster.sh {up|down|status}
KB_SERVICE=dagster
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT="${KB_DAGSTER_PORT:-3000}"
DIR="$(service_dir dagster)"
LOG="$DIR/logs/dagster.log"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"
export DAGSTER_HOME="${DAGSTER_HOME:-$KB_REPO_ROOT/.dagster_home}"

is_ready() { curl -fsS "http://127.0.0.1:$PORT/server_info" >/dev/null; }

prepare_home() {
  mkdir -p "$DAGSTER_HOME" "$DIR/logs"
  # The instance config is versioned at the repo root; the instance reads it from DAGSTER_HOME.
  if [[ ! -e "$DAGSTER_HOME/dagster.yaml" ]]; then
    ln -s "$KB_REPO_ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
  fi
}

cmd_up() {
  local start=$SECONDS
  [[ -x "$VENV/bin/dagster" ]] || die "$VENV/bin/dagster not found; run deploy/local/setup.sh first"
  prepare_home
  already_up dagster "http://127.0.0.1:$PORT" && return 0
  require_free_port "$PORT" "$LOG"
  (cd "$KB_REPO_ROOT" && start_detached dagster "$LOG" "$VENV/bin/dagster" dev \
    -w "$KB_REPO_ROOT/workspace.yaml" -h 127.0.0.1 -p "$PORT")
  wait_until 180 "$(cat "$(pid_file dagster)")" "$LOG" is_ready
  log "Dagster UI ready in $((SECONDS - start))s: http://127.0.0.1:$PORT (DAGSTER_HOME=$DAGSTER_HOME)"
}

cmd_down() { stop_service_pid dagster 30; }

cmd_status() { http_service_status dagster "http://127.0.0.1:$PORT"; }

case "${1:-}" in
  install) prepare_home ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
