#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker + controller) from Maven Central jars.
#
#   kafka.sh install   resolve the jars into $KB_CACHE_DIR/kafka-<version>/ (cached)
#   kafka.sh up        install if needed, format storage on first start, start, wait until ready
#   kafka.sh down      stop the broker (whole process group)
#   kafka.sh status    running/stopped; exit 0 when running, 3 when not
#
# Environment: KB_KAFKA_PORT (9092), KB_KAFKA_CONTROLLER_PORT (9093),
#   KB_KAFKA_HEAP ("-Xms256m -Xmx512m"), KB_KAFKA_PARTITIONS (3), KB_KAFKA_START_TIMEOUT (90),
#   KB_KAFKA_DATA_DIR, KB_KAFKA_LOG_DIR, KB_KAFKA_JMX_PORT (9404, the JMX exporter's /metrics;
#   empty for none), KB_JAVA (java binary, 17+), plus lib.sh's
#   KB_CACHE_DIR and KB_LOCAL_DIR.
set -euo pipefail

KB_SERVICE=kafka
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

HERE="$KB_REPO_ROOT/deploy/local/kafka"
POM="$HERE/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
[[ -n "$KAFKA_VERSION" ]] || die "no <kafka.version> in $POM"

HOST=127.0.0.1
PORT="${KB_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KB_KAFKA_CONTROLLER_PORT:-9093}"
HEAP="${KB_KAFKA_HEAP:--Xms256m -Xmx512m}"
PARTITIONS="${KB_KAFKA_PARTITIONS:-3}"
START_TIMEOUT="${KB_KAFKA_START_TIMEOUT:-90}"
# The Prometheus JMX exporter agent's /metrics (deploy/prometheus scrapes it); empty: no agent.
JMX_PORT="${KB_KAFKA_JMX_PORT-9404}"
JMX_POM="$HERE/jmx/pom.xml"
JMX_VERSION="$(sed -n 's:.*<jmx.exporter.version>\(.*\)</jmx.exporter.version>.*:\1:p' "$JMX_POM")"
JMX_DIR="$KB_CACHE_DIR/jmx-exporter-$JMX_VERSION"

LIB_DIR="$KB_CACHE_DIR/kafka-$KAFKA_VERSION"
STATE_DIR="$(service_dir kafka)"
DATA_DIR="${KB_KAFKA_DATA_DIR:-$STATE_DIR/data}"
LOG_DIR="${KB_KAFKA_LOG_DIR:-$STATE_DIR/logs}"
LOG_FILE="$LOG_DIR/kafka.log"
CONF="$STATE_DIR/server.properties"
LOG4J_CONF="$STATE_DIR/log4j2.properties"
# How this checkout's broker shows up in `pgrep -f` (the main class followed by its config).
PROC_PATTERN="kafka[.]Kafka $CONF"
stray_pids() { pgrep -f -- "$PROC_PATTERN" | tr '\n' ' ' || true; }

# Runs a Kafka main class on the cached jars with the service's log4j config.
run_class() {
  local java
  java="$(java_bin "Kafka $KAFKA_VERSION")"
  "$java" -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$LIB_DIR/*" "$@"
}

cmd_install() {
  maven_fetch "$POM" "$LIB_DIR"
  compgen -G "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
    die "$LIB_DIR is marked complete but has no kafka_2.13-$KAFKA_VERSION.jar; delete the folder and retry"
  maven_fetch "$JMX_POM" "$JMX_DIR"
  [[ -f "$JMX_DIR/jmx_prometheus_javaagent-$JMX_VERSION.jar" ]] ||
    die "$JMX_DIR is marked complete but has no jmx_prometheus_javaagent-$JMX_VERSION.jar; delete the folder and retry"
}

write_config() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  # A static voter set (rather than --standalone's dynamic quorum) keeps the controller port an
  # ordinary setting: changing KB_KAFKA_CONTROLLER_PORT needs no reformat.
  cat >"$CONF" <<EOF
# Written by deploy/local/kafka/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR

num.partitions=$PARTITIONS
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Internal topics get 50 partitions by default; fewer make the first consumer group quick.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
share.coordinator.state.topic.num.partitions=10
group.initial.rebalance.delay.ms=0

num.network.threads=2
num.io.threads=4
EOF
  # Everything goes to stdout, which start_detached appends to $LOG_FILE.
  cat >"$LOG4J_CONF" <<'EOF'
status = warn
# Kafka logs its own shutdown; keep log4j alive until the JVM is gone.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
}

format_storage_once() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  local cluster_id
  cluster_id="$(run_class kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | tail -n 1)"
  [[ -n "$cluster_id" ]] || die "could not generate a cluster id; log: $LOG_FILE"
  log "formatting $DATA_DIR (cluster id $cluster_id)"
  run_class kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$LOG_FILE" 2>&1 ||
    die "formatting $DATA_DIR failed; log: $LOG_FILE"
}

confluent_python() {
  local py="$KB_REPO_ROOT/.venv/bin/python"
  [[ -x "$py" ]] && "$py" -c 'import confluent_kafka' 2>/dev/null && echo "$py"
}

# Ready = the broker logged "Kafka Server started" in this run (after log offset $1), its port
# accepts connections, and it answers a metadata request listing itself as a broker.
kafka_ready() {
  local offset="$1" py="$2"
  grep -q 'Kafka Server started' < <(tail -c "+$((offset + 1))" "$LOG_FILE") || return 1
  port_in_use "$PORT" || return 1
  if [[ -n "$py" ]]; then
    "$py" - "$HOST:$PORT" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=5)
sys.exit(0 if md.brokers else 1)
EOF
  else
    run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$PORT" --list
  fi
}

cmd_up() {
  local started=$SECONDS pid stray offset py java
  local -a heap
  cmd_install
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  # One `up` at a time per checkout; a concurrent one waits, then finds the broker running.
  exec 9>"$STATE_DIR/.up.lock"
  flock -w $((START_TIMEOUT + 60)) 9 || die "another '$0 up' holds $STATE_DIR/.up.lock"
  pid="$(running_pid kafka)"
  if [[ -n "$pid" ]]; then
    if port_in_use "$PORT"; then
      log "already running (pid $pid, $HOST:$PORT)"
      return 0
    fi
    log "pid $pid is starting; waiting for it (log: $LOG_FILE)"
    wait_until "$START_TIMEOUT" "$pid" "$LOG_FILE" kafka_ready 0 "$(confluent_python || true)"
    log "Kafka $KAFKA_VERSION ready on $HOST:$PORT (pid $pid)"
    return 0
  fi
  stray="$(stray_pids)"
  [[ -z "$stray" ]] || die "a Kafka of this checkout runs without a pid file (pid ${stray% }); run: $0 down"
  require_free_port "$PORT" "$LOG_FILE"
  require_free_port "$CONTROLLER_PORT" "$LOG_FILE"
  local agent=()
  if [[ -n "$JMX_PORT" ]]; then
    require_free_port "$JMX_PORT" "$LOG_FILE"
    agent=("-javaagent:$JMX_DIR/jmx_prometheus_javaagent-$JMX_VERSION.jar=$HOST:$JMX_PORT:$HERE/jmx-exporter.yml")
  fi

  java="$(java_bin "Kafka $KAFKA_VERSION")"
  if [[ "$(stat -c %s "$LOG_FILE" 2>/dev/null || echo 0)" -gt $((50 * 1024 * 1024)) ]]; then
    mv -f "$LOG_FILE" "$LOG_FILE.1"
  fi
  write_config
  format_storage_once
  printf '\n===== %s kafka.sh up: Kafka %s =====\n' "$(date '+%F %T')" "$KAFKA_VERSION" >>"$LOG_FILE"
  offset="$(stat -c %s "$LOG_FILE")"
  read -r -a heap <<<"$HEAP"
  log "starting Kafka $KAFKA_VERSION on $HOST:$PORT (controller $CONTROLLER_PORT); log: $LOG_FILE"
  start_detached kafka "$LOG_FILE" "$java" "${heap[@]}" "${agent[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J_CONF" \
    -cp "$LIB_DIR/*" kafka.Kafka "$CONF" 9>&- # the broker must not inherit the lock
  pid="$(running_pid kafka)"
  py="$(confluent_python || true)"
  wait_until "$START_TIMEOUT" "$pid" "$LOG_FILE" kafka_ready "$offset" "$py"
  log "Kafka $KAFKA_VERSION ready on $HOST:$PORT (pid $pid) in $((SECONDS - started))s"
}

cmd_down() {
  local stray deadline=$((SECONDS + 30))
  stop_service_pid kafka 30
  # A broker of this checkout whose pid file was lost (or that outlived its group): stop it too.
  stray="$(stray_pids)"
  [[ -z "$stray" ]] && return 0
  log "stopping Kafka process(es) of this checkout not in the pid file: $stray"
  # shellcheck disable=SC2086  # one pid per word
  kill -TERM $stray 2>/dev/null || true
  while [[ -n "$(stray_pids)" ]] && ((SECONDS < deadline)); do sleep 1; done
  stray="$(stray_pids)"
  if [[ -n "$stray" ]]; then
    # shellcheck disable=SC2086
    kill -KILL $stray 2>/dev/null || true
    sleep 1
    stray="$(stray_pids)"
  fi
  [[ -z "$stray" ]] || die "Kafka process(es) still running: $stray"
}

cmd_status() {
  local pid
  pid="$(running_pid kafka)"
  if [[ -n "$pid" ]] && port_in_use "$PORT"; then
    echo "kafka: running (pid $pid, $HOST:$PORT, version $KAFKA_VERSION)"
    exit 0
  elif [[ -n "$pid" ]]; then
    echo "kafka: not ready (pid $pid alive, $HOST:$PORT not answering); log: $LOG_FILE"
  elif port_in_use "$PORT"; then
    echo "kafka: stopped ($HOST:$PORT is used by another process)"
  else
    echo "kafka: stopped"
  fi
  exit 3
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
