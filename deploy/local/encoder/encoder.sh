#!/usr/bin/env bash
# The warm encoder service (bentos/encoder: MiniLM text embeddings) for ingestion runs.
# Usage: encoder.sh {install|up|down|status}
# Runs use it when KB_ENCODER_URL and KB_ENCODER_TOKEN are set where Dagster runs, e.g.
#   export KB_ENCODER_URL=http://127.0.0.1:3020 KB_ENCODER_TOKEN="$(cat .kb-local/encoder/token)"
KB_SERVICE=encoder
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT="${KB_ENCODER_PORT:-3020}"
DIR="$(service_dir encoder)"
LOG="$DIR/logs/encoder.log"
TOKEN_FILE="${KB_ENCODER_TOKEN_FILE:-$DIR/token}"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"

# Ready = the model is loaded and has run a real inference (/readyz answers 503 until then).
is_ready() { curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null; }

# The internal token the service and its callers share: made once, readable by its owner only.
ensure_token() {
  mkdir -p "$DIR/logs"
  if [[ ! -s "$TOKEN_FILE" ]]; then
    (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$TOKEN_FILE")
    log "made the internal token in $TOKEN_FILE"
  fi
}

cmd_up() {
  local start=$SECONDS
  [[ -x "$VENV/bin/bentoml" ]] || die "$VENV/bin/bentoml not found; run deploy/local/setup.sh first"
  ensure_token
  already_up encoder "http://127.0.0.1:$PORT" && return 0
  require_free_port "$PORT" "$LOG"
  start_bento encoder "$LOG" bentos/encoder/service.py:EncoderService "$PORT" \
    KB_ENCODER_TOKEN_FILE="$TOKEN_FILE"
  wait_until 300 "$(cat "$(pid_file encoder)")" "$LOG" is_ready
  log "encoder service ready in $((SECONDS - start))s: http://127.0.0.1:$PORT (token: $TOKEN_FILE)"
}

cmd_down() { stop_service_pid encoder 30; }

cmd_status() { http_service_status encoder "http://127.0.0.1:$PORT"; }

case "${1:-}" in
  install) ensure_token ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
