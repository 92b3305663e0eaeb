#!/usr/bin/env bash
# The RAG service (bentos/rag: /search and /ask over the chunk index) for the demo and local use.
# Usage: rag.sh {install|up|down|status}
# `install` puts the answer model into the BentoML model store (its GGUF parts joined, once) and makes a
# local API key (.kb-local/rag/api-key, its hash in keys.json); callers send it as a Bearer token.
KB_SERVICE=rag
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT="${KB_RAG_PORT:-3030}"
DIR="$(service_dir rag)"
LOG="$DIR/logs/rag.log"
KEY_FILE="$DIR/api-key"
KEYS_FILE="$DIR/keys.json"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"

# Ready = models loaded and warmed with a real inference, the read alias answered a query.
is_ready() { curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null; }

ensure_key() {
  mkdir -p "$DIR/logs"
  if [[ ! -s "$KEY_FILE" || ! -s "$KEYS_FILE" ]]; then
    (umask 077 && "$VENV/bin/python" - "$KEY_FILE" "$KEYS_FILE" <<'PY'
import json, sys
from kb_platform.serving.auth import hash_key, new_key
key = new_key()
open(sys.argv[1], "w").write(key + "\n")
json.dump([{"sha256": hash_key(key), "name": "local"}], open(sys.argv[2], "w"))
PY
    )
    log "made a local API key in $KEY_FILE"
  fi
}

cmd_install() {
  [[ -x "$VENV/bin/bentoml" ]] || die "$VENV/bin/bentoml not found; run deploy/local/setup.sh first"
  ensure_key
  "$VENV/bin/python" -m kb_platform.models.answerers >>"$LOG" 2>&1 ||
    die "could not put the answer model into the model store; log: $LOG"
}

cmd_up() {
  local start=$SECONDS
  already_up rag "http://127.0.0.1:$PORT" && return 0
  cmd_install
  require_free_port "$PORT" "$LOG"
  start_bento rag "$LOG" bentos/rag/service.py:RagService "$PORT" \
    KB_SERVING_API_KEYS_FILE="$KEYS_FILE"
  wait_until 300 "$(cat "$(pid_file rag)")" "$LOG" is_ready
  log "RAG service ready in $((SECONDS - start))s: http://127.0.0.1:$PORT (API key: $KEY_FILE)"
}

cmd_down() { stop_service_pid rag 30; }

cmd_status() { http_service_status rag "http://127.0.0.1:$PORT"; }

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
