#!/usr/bin/env bash
# The local monitoring stack: the pipeline exporter (`kb-platform exporter`: runs, Kafka offsets
# and lag, dead letters), the standard node and Elasticsearch exporters, Alertmanager and
# Prometheus (Debian's packages, installed by setup.sh), configured from deploy/prometheus/.
# Usage: monitoring.sh {install|up|down|status}
# Ports (fixed, as deploy/prometheus/prometheus.yml scrapes them): Prometheus 9090, Alertmanager
# 9094 (not its usual 9093: the local Kafka's controller listens there), pipeline exporter 9108,
# node exporter 9100, Elasticsearch exporter 9114. Alerts are sent
# as webhooks to 127.0.0.1:$KB_ALERT_WEBHOOK_PORT (default 9095) /pagerduty and /slack.
KB_SERVICE=monitoring
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

DIR="$(service_dir monitoring)"
KB_LOCAL_DIR="$DIR" # each part's pid file in a folder of its own under it
CONFIG="$KB_REPO_ROOT/deploy/prometheus"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"
WEBHOOK_PORT="${KB_ALERT_WEBHOOK_PORT:-9095}"
ES_URL="${KB_ES_URL:-http://127.0.0.1:9200}"
# started in this order, stopped in the reverse one; each with its port and the path that
# answers once it is up
PARTS=(exporter node-exporter es-exporter alertmanager prometheus)
declare -A PORT=([exporter]=9108 [node-exporter]=9100 [es-exporter]=9114 [alertmanager]=9094 [prometheus]=9090)
declare -A READY_PATH=([exporter]=/metrics [node-exporter]=/metrics [es-exporter]=/metrics [alertmanager]=/-/ready [prometheus]=/-/ready)
ready_url() { echo "http://127.0.0.1:${PORT[$1]}${READY_PATH[$1]}"; }

binary() {
  command -v "$1" >/dev/null || die "$1 not found: run deploy/local/setup.sh (Debian package $2)"
  command -v "$1"
}

answers() { curl -fsS -o /dev/null "$1"; }

# start_part <name> <command...>: starts one part detached unless it runs and answers already.
start_part() {
  local name="$1" logfile="$DIR/logs/$1.log" pid
  shift
  pid="$(running_pid "$name")"
  if [[ -n "$pid" ]] && answers "$(ready_url "$name")"; then
    log "$name already running (pid $pid)"
    return 0
  fi
  require_free_port "${PORT[$name]}" "$logfile"
  mkdir -p "$DIR/$name"
  start_detached "$name" "$logfile" "$@"
  wait_until 60 "$(cat "$(pid_file "$name")")" "$logfile" answers "$(ready_url "$name")"
  log "$name ready: $(ready_url "$name")"
}

render_alertmanager_config() {
  sed "s/KB_ALERT_WEBHOOK_PORT/$WEBHOOK_PORT/g" "$CONFIG/alertmanager.local.yml" \
    >"$DIR/alertmanager.yml"
}

cmd_install() {
  binary prometheus prometheus >/dev/null
  binary prometheus-alertmanager prometheus-alertmanager >/dev/null
  binary prometheus-node-exporter prometheus-node-exporter >/dev/null
  binary prometheus-elasticsearch-exporter prometheus-elasticsearch-exporter >/dev/null
  mkdir -p "$DIR/logs"
  render_alertmanager_config
  # The credentials Prometheus scrapes the encoder and RAG services with (prometheus.yml)
  bash "$KB_REPO_ROOT/deploy/local/encoder/encoder.sh" install
  bash "$KB_REPO_ROOT/deploy/local/rag/rag.sh" install
}

cmd_up() {
  local start=$SECONDS
  cmd_install
  start_part exporter "$VENV/bin/kb-platform" exporter --port 9108
  start_part node-exporter "$(binary prometheus-node-exporter prometheus-node-exporter)" \
    --web.listen-address=127.0.0.1:9100
  start_part es-exporter \
    "$(binary prometheus-elasticsearch-exporter prometheus-elasticsearch-exporter)" \
    --es.uri="$ES_URL" --web.listen-address=127.0.0.1:9114
  start_part alertmanager "$(binary prometheus-alertmanager prometheus-alertmanager)" \
    --config.file="$DIR/alertmanager.yml" --storage.path="$DIR/alertmanager" \
    --web.listen-address=127.0.0.1:9094 --cluster.listen-address=
  start_part prometheus "$(binary prometheus prometheus)" \
    --config.file="$CONFIG/prometheus.yml" --storage.tsdb.path="$DIR/prometheus" \
    --web.listen-address=127.0.0.1:9090 --web.enable-lifecycle
  log "monitoring ready in $((SECONDS - start))s: Prometheus http://127.0.0.1:9090, Alertmanager http://127.0.0.1:9094"
}

cmd_down() {
  local i
  for ((i = ${#PARTS[@]} - 1; i >= 0; i--)); do
    KB_SERVICE="monitoring/${PARTS[i]}" stop_service_pid "${PARTS[i]}" 15
  done
}

cmd_status() {
  local name pid stopped=0
  for name in "${PARTS[@]}"; do
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]] && answers "$(ready_url "$name")"; then
      echo "monitoring/$name: running (pid $pid) on http://127.0.0.1:${PORT[$name]}"
    else
      echo "monitoring/$name: stopped"
      stopped=1
    fi
  done
  ((stopped == 0)) || return 3
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 {install|up|down|status}" ;;
esac
