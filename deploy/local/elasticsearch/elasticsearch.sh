#!/usr/bin/env bash
# Local single-node Elasticsearch 8 (HTTP on 127.0.0.1, no security) from Maven Central jars.
#
#   elasticsearch.sh install   resolve the jars and assemble ES_HOME in $KB_CACHE_DIR/elasticsearch-<version>/
#   elasticsearch.sh up        install if needed, start detached, wait until the cluster is yellow
#   elasticsearch.sh down      stop the node (whole process group)
#   elasticsearch.sh status    running/stopped; exit 0 when running, 3 when not
#
# ES_HOME ($KB_CACHE_DIR/elasticsearch-<version>/, shared by checkouts):
#   jars/                    what Maven resolved from pom.xml (kept as downloaded)
#   lib/                     the server and its libraries (run on the module path, as in the distribution)
#   modules/transport-netty4 HTTP + transport layer: its jar, Netty, and the module's own plugin descriptor
#   modules/kb-rest-root     GET / and HEAD / (launcher/RootEndpointPlugin.java; rest-root is not on Maven Central)
#   plugins/                 empty (the node expects it)
#   launcher/                kbplatform.elasticsearch.LocalNode (launcher/LocalNode.java), which builds and
#                            starts org.elasticsearch.node.Node in-process
# Per checkout ($KB_LOCAL_DIR/elasticsearch/): config/ (elasticsearch.yml, jvm.options, log4j2.properties,
#   copied from config/ beside this script on every start), data/, logs/elasticsearch.log, tmp/.
#
# Not installed, because Maven Central does not carry them for 8.x: x-pack (security, ML, ...) and the
# analysis-common, mapper-extras, reindex, lang-painless, aggregations, data-streams, ingest-* ...
# modules. So: no language analyzers (english, ...) nor filters such as asciifolding/synonym, no
# _reindex/_update_by_query/_delete_by_query, no painless scripts, no data streams, no ingest processors.
# In the server core, and so here: text/keyword/dense_vector (int8_hnsw ...), BM25, knn search,
# _bulk, index templates, aliases, the standard/simple/whitespace/stop/keyword analyzers, most aggregations.
#
# Environment: KB_ES_PORT (9200), KB_ES_TRANSPORT_PORT (9300), KB_ES_HEAP (heap size such as 1g or
#   512m, or the JVM flags "-Xms512m -Xmx1g"; default 1g from config/jvm.options),
#   KB_ES_START_TIMEOUT (120), KB_ES_DATA_DIR, KB_ES_LOG_DIR, KB_ES_SNAPSHOT_DIR (path.repo: where fs
#   snapshot repositories may live; default snapshots/ beside data/), KB_JAVA (java binary, 17+),
#   plus lib.sh's KB_CACHE_DIR and KB_LOCAL_DIR.
set -euo pipefail

KB_SERVICE=elasticsearch
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

HERE="$KB_REPO_ROOT/deploy/local/elasticsearch"
POM="$HERE/pom.xml"
ES_VERSION="$(sed -n 's:.*<elasticsearch.version>\(.*\)</elasticsearch.version>.*:\1:p' "$POM")"
[[ -n "$ES_VERSION" ]] || die "no <elasticsearch.version> in $POM"

HOST=127.0.0.1
PORT="${KB_ES_PORT:-9200}"
TRANSPORT_PORT="${KB_ES_TRANSPORT_PORT:-9300}"
HEAP="${KB_ES_HEAP:-}"
START_TIMEOUT="${KB_ES_START_TIMEOUT:-120}"
URL="http://$HOST:$PORT"

ES_HOME="$KB_CACHE_DIR/elasticsearch-$ES_VERSION"
JARS_DIR="$ES_HOME/jars"
STATE_DIR="$(service_dir elasticsearch)"
CONF_DIR="$STATE_DIR/config"
DATA_DIR="${KB_ES_DATA_DIR:-$STATE_DIR/data}"
LOG_DIR="${KB_ES_LOG_DIR:-$STATE_DIR/logs}"
SNAPSHOT_DIR="${KB_ES_SNAPSHOT_DIR:-$STATE_DIR/snapshots}"
LOG_FILE="$LOG_DIR/elasticsearch.log"
TMP_DIR="$STATE_DIR/tmp"
MAIN_CLASS=kbplatform.elasticsearch.LocalNode
# How this checkout's node shows up in `pgrep -f` (its config dir right before the main class).
PROC_PATTERN="-Des[.]path[.]conf=$CONF_DIR kbplatform[.]elasticsearch[.]LocalNode"
stray_pids() { pgrep -f -- "$PROC_PATTERN" | tr '\n' ' ' || true; }

# jdk_tool <java> <javac|jar> args...: the JDK tool beside that java, or the same tool run from the
# JDK module inside the runtime (Debian's openjdk-17-jre-headless ships jdk.compiler and
# jdk.jartool without the javac/jar commands).
jdk_tool() {
  local java="$1" tool="$2" bin module
  shift 2
  bin="$(dirname "$(readlink -f "$(command -v "$java")")")/$tool"
  if [[ -x "$bin" ]]; then
    "$bin" "$@"
    return
  fi
  case "$tool" in
    javac) module=jdk.compiler/com.sun.tools.javac.Main ;;
    jar) module=jdk.jartool/sun.tools.jar.Main ;;
    *) die "unknown JDK tool $tool" ;;
  esac
  "$java" --list-modules 2>/dev/null | grep -q "^${module%%/*}@" ||
    die "$java has no $tool (module ${module%%/*}); install a JDK (apt-get install openjdk-17-jdk-headless) or set KB_JAVA"
  "$java" -m "$module" "$@"
}

# What the assembled ES_HOME depends on besides the jars: a change in any of these reassembles it.
# Bump LAYOUT_VERSION when assemble_home changes what it builds.
LAYOUT_VERSION=1
layout_stamp() {
  { echo "$LAYOUT_VERSION"; cat "$POM" "$HERE"/launcher/*.java; } | sha256sum | cut -c1-16
}

# Builds ES_HOME's lib/, modules/ and launcher/ from jars/ in a scratch folder, then swaps it in.
assemble_home() {
  local java="$1" stamp="$2" work classpath
  work="$(mktemp -d "$ES_HOME/.assemble.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  mkdir -p "$work/lib" "$work/modules/transport-netty4" "$work/modules/kb-rest-root" "$work/launcher" "$work/classes"
  # Hard links: no second copy of the ~40 MB of jars.
  cp -l "$JARS_DIR"/*.jar "$work/lib/"
  # transport-netty4 and what only it depends on (see its pom) form the module; the rest is the server's.
  mv "$work/lib"/transport-netty4-*.jar "$work/lib"/netty-*.jar "$work/lib"/elasticsearch-ssl-config-*.jar \
    "$work/modules/transport-netty4/"
  # The module jar carries the descriptor the distribution puts beside it.
  (cd "$work/classes" && jdk_tool "$java" jar xf "$work/modules/transport-netty4/transport-netty4-$ES_VERSION.jar" \
    META-INF/es-plugins/transport-netty4/plugin-descriptor.properties)
  mv "$work/classes/META-INF/es-plugins/transport-netty4/plugin-descriptor.properties" "$work/modules/transport-netty4/"
  rm -rf "$work/classes/META-INF"

  # An explicit class path: javac run as a module (see jdk_tool) does not expand "lib/*".
  classpath="$(printf '%s:' "$work"/lib/*.jar)"
  jdk_tool "$java" javac -nowarn -encoding UTF-8 -d "$work/classes" -cp "${classpath%:}" "$HERE"/launcher/*.java >&2
  jdk_tool "$java" jar cf "$work/launcher/kb-es-launcher.jar" -C "$work/classes" kbplatform/elasticsearch/LocalNode.class
  jdk_tool "$java" jar cf "$work/modules/kb-rest-root/kb-rest-root.jar" -C "$work/classes" kbplatform/elasticsearch/root
  cat >"$work/modules/kb-rest-root/plugin-descriptor.properties" <<EOF
# Written by deploy/local/elasticsearch/elasticsearch.sh install.
name=kb-rest-root
description=GET / and HEAD / of the local kb-platform node (the distribution's rest-root module is not on Maven Central)
version=$ES_VERSION
classname=kbplatform.elasticsearch.root.RootEndpointPlugin
java.version=17
elasticsearch.version=$ES_VERSION
EOF
  rm -rf "$work/classes"
  echo "$stamp" >"$work/.layout"
  rm -rf "${ES_HOME:?}/lib" "$ES_HOME/modules" "$ES_HOME/launcher" "$ES_HOME/.layout"
  mv "$work/lib" "$work/modules" "$work/launcher" "$work/.layout" "$ES_HOME/"
  rmdir "$work"
  trap - EXIT
}

cmd_install() {
  local java stamp jar
  maven_fetch "$POM" "$JARS_DIR"
  for jar in "elasticsearch-$ES_VERSION.jar" "transport-netty4-$ES_VERSION.jar"; do
    [[ -f "$JARS_DIR/$jar" ]] || die "$JARS_DIR is marked complete but has no $jar; delete the folder and retry"
  done
  stamp="$(layout_stamp)"
  [[ "$(cat "$ES_HOME/.layout" 2>/dev/null)" == "$stamp" ]] && return 0
  java="$(java_bin "Elasticsearch $ES_VERSION")"
  log "assembling $ES_HOME (lib/, modules/, launcher/) with $java"
  assemble_home "$java" "$stamp"
}

write_config() {
  mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR" "$TMP_DIR"
  cp "$HERE/config/elasticsearch.yml" "$HERE/config/jvm.options" "$HERE/config/log4j2.properties" "$CONF_DIR/"
}

# JVM options: config/jvm.options without comments, the heap from KB_ES_HEAP when set, then what
# depends on this checkout and on the Java version. Prints one option a line.
jvm_options() {
  local major="$1" line
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}"
    [[ -z "$line" || "$line" == \#* ]] && continue
    if [[ -n "$HEAP" && ("$line" == -Xms* || "$line" == -Xmx*) ]]; then continue; fi
    echo "$line"
  done <"$CONF_DIR/jvm.options"
  if [[ "$HEAP" == -* ]]; then
    tr ' ' '\n' <<<"$HEAP" | sed '/^$/d'
  elif [[ -n "$HEAP" ]]; then
    printf '%s\n' "-Xms$HEAP" "-Xmx$HEAP"
  fi
  # From Java 21 on (as the distribution's launcher does): Lucene's SIMD vector code (knn) uses the
  # incubating Vector API, and Lucene and Elasticsearch call native code through the FFM API.
  if ((major >= 21)); then
    printf '%s\n' "--add-modules=jdk.incubator.vector" \
      "--enable-native-access=org.elasticsearch.nativeaccess,org.apache.lucene.core"
  fi
  printf '%s\n' "-Djava.io.tmpdir=$TMP_DIR" "-XX:HeapDumpPath=$STATE_DIR" "-XX:ErrorFile=$LOG_DIR/hs_err_pid%p.log"
}

# Ready = the cluster is at least yellow, answered by Elasticsearch itself (the header that the
# official clients check).
es_ready() {
  local headers
  headers="$(curl -fsS --max-time 5 -D - -o /dev/null "$URL/_cluster/health?wait_for_status=yellow&timeout=3s")" &&
    grep -qi '^x-elastic-product: *Elasticsearch' <<<"$headers"
}

es_version() {
  curl -fsS --max-time 5 "$URL/" | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p'
}

cmd_up() {
  local started=$SECONDS pid stray java major
  local -a opts
  command -v curl >/dev/null || die "curl not found (apt-get install curl)"
  cmd_install
  mkdir -p "$LOG_DIR"
  pid="$(running_pid elasticsearch)"
  if [[ -n "$pid" ]]; then
    if es_ready; then
      log "already running (pid $pid, $URL, version $(es_version))"
      return 0
    fi
    log "pid $pid is starting; waiting for it (log: $LOG_FILE)"
    wait_until "$START_TIMEOUT" "$pid" "$LOG_FILE" es_ready
    log "Elasticsearch $(es_version) ready on $URL (pid $pid)"
    return 0
  fi
  stray="$(stray_pids)"
  [[ -z "$stray" ]] || die "an Elasticsearch of this checkout runs without a pid file (pid ${stray% }); run: $0 down"
  require_free_port "$PORT" "$LOG_FILE"
  require_free_port "$TRANSPORT_PORT" "$LOG_FILE"

  java="$(java_bin "Elasticsearch $ES_VERSION")"
  major="$(java_major "$java")"
  write_config
  mapfile -t opts < <(jvm_options "$major")
  # Read by elasticsearch.yml (${...} substitution).
  export KB_ES_PORT="$PORT" KB_ES_TRANSPORT_PORT="$TRANSPORT_PORT" KB_ES_DATA_DIR="$DATA_DIR" KB_ES_LOG_DIR="$LOG_DIR" KB_ES_SNAPSHOT_DIR="$SNAPSHOT_DIR"
  mkdir -p "$SNAPSHOT_DIR"
  printf '\n===== %s elasticsearch.sh up: Elasticsearch %s, java %s =====\n' \
    "$(date '+%F %T')" "$ES_VERSION" "$major" >>"$LOG_FILE"
  log "starting Elasticsearch $ES_VERSION on $URL (transport $TRANSPORT_PORT); log: $LOG_FILE"
  # The server on the module path as in the distribution (its plugin loader needs the server to be
  # a named module); the launcher on the class path. es.path.conf comes right before the main class
  # (see PROC_PATTERN).
  start_detached elasticsearch "$LOG_FILE" "$java" "${opts[@]}" \
    --module-path "$ES_HOME/lib" --add-modules=ALL-MODULE-PATH \
    -cp "$ES_HOME/launcher/kb-es-launcher.jar" \
    -Des.path.home="$ES_HOME" -Des.path.conf="$CONF_DIR" "$MAIN_CLASS"
  pid="$(running_pid elasticsearch)"
  wait_until "$START_TIMEOUT" "$pid" "$LOG_FILE" es_ready
  log "Elasticsearch $(es_version) ready on $URL (pid $pid) in $((SECONDS - started))s"
}

cmd_down() {
  local stray deadline=$((SECONDS + 30))
  stop_service_pid elasticsearch 60
  # A node of this checkout whose pid file was lost (or that outlived its group): stop it too.
  stray="$(stray_pids)"
  [[ -z "$stray" ]] && return 0
  log "stopping Elasticsearch process(es) of this checkout not in the pid file: $stray"
  # shellcheck disable=SC2086  # one pid per word
  kill -TERM $stray 2>/dev/null || true
  while [[ -n "$(stray_pids)" ]] && ((SECONDS < deadline)); do sleep 1; done
  stray="$(stray_pids)"
  # shellcheck disable=SC2086
  [[ -z "$stray" ]] || kill -KILL $stray 2>/dev/null || true
  sleep 1
  stray="$(stray_pids)"
  [[ -z "$stray" ]] || die "Elasticsearch process(es) still running: $stray"
}

cmd_status() {
  local pid
  pid="$(running_pid elasticsearch)"
  if [[ -n "$pid" ]] && es_ready; then
    echo "elasticsearch: running (pid $pid, $URL, transport $TRANSPORT_PORT, version $(es_version))"
    exit 0
  elif [[ -n "$pid" ]]; then
    echo "elasticsearch: not ready (pid $pid alive, $URL not answering yellow); log: $LOG_FILE"
  elif port_in_use "$PORT"; then
    echo "elasticsearch: stopped ($HOST:$PORT is used by another process)"
  else
    echo "elasticsearch: stopped"
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
