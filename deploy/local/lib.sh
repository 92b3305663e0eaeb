# Shared helpers for the local service scripts (sourced, never run).
# Layout:
#   $KB_CACHE_DIR/<service>-<version>/   downloaded artifacts (jars), kept between runs and clones
#   $KB_LOCAL_DIR/<service>/{data,logs}  per-checkout state; <service>.pid beside them
set -euo pipefail

KB_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KB_CACHE_DIR="${KB_CACHE_DIR:-$HOME/.cache/kb-platform}"
KB_LOCAL_DIR="${KB_LOCAL_DIR:-$KB_REPO_ROOT/.kb-local}"
export KB_REPO_ROOT KB_CACHE_DIR KB_LOCAL_DIR

log() { printf '[%s] %s\n' "${KB_SERVICE:-local}" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# True while the process exists and is not a zombie (an exited child nobody has reaped yet).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo X)"
  [[ "$state" != Z && "$state" != X ]]
}

service_dir() { echo "$KB_LOCAL_DIR/$1"; }
pid_file() { echo "$KB_LOCAL_DIR/$1/$1.pid"; }

# Prints the pid of a running service (from its pid file), or nothing.
running_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && alive "$pid"; then echo "$pid"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Fails with a message naming the log when something else already listens on the port.
require_free_port() {
  local port="$1" logfile="$2"
  if port_in_use "$port"; then
    die "port $port on 127.0.0.1 is already in use by another process (not started by kb-platform); free it or set the port variable. Log: $logfile"
  fi
}

# For a service whose script defines is_ready (an HTTP probe):
# already_up <service> <url>: true, after saying so, when it runs and answers (nothing to start);
# http_service_status <service> <url>: its status line; returns 3 when it is stopped.
already_up() {
  local pid
  pid="$(running_pid "$1")"
  if [[ -n "$pid" ]] && is_ready; then
    log "already running (pid $pid): $2"
    return 0
  fi
  return 1
}

http_service_status() {
  local pid
  pid="$(running_pid "$1")"
  if [[ -n "$pid" ]] && is_ready; then
    echo "$1: running (pid $pid) on $2"
  else
    echo "$1: stopped"
    return 3
  fi
}

# wait_until <seconds> <pid> <logfile> <command...>: polls the command until it succeeds;
# fails early if the process dies, naming the log and showing its tail.
wait_until() {
  local timeout="$1" pid="$2" logfile="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! alive "$pid"; then
      log "process $pid exited during start-up; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      die "${KB_SERVICE:-service} crashed on start; full log: $logfile"
    fi
    sleep 1
  done
  tail -n 30 "$logfile" >&2 || true
  die "${KB_SERVICE:-service} not ready after ${timeout}s; log: $logfile"
}

# stop_service_pid <service> <seconds>: TERM, wait, then KILL the whole process group.
stop_service_pid() {
  local name="$1" grace="${2:-30}" pid
  pid="$(running_pid "$name")"
  if [[ -z "$pid" ]]; then
    rm -f "$(pid_file "$name")"
    log "not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 1; done
  if alive "$pid"; then
    log "still alive after ${grace}s, sending KILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$name")"
  log "stopped (pid $pid)"
}

# start_detached <service> <logfile> <command...>: runs the command in its own session
# (so `down` can kill the whole group) and records its pid.
start_detached() {
  local name="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$logfile")"
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$(pid_file "$name")"
}

# link_model_store <home>: <home>/models links to the shared model store ($BENTOML_HOME or
# ~/bentoml). The store is made first: BentoML's own mkdir fails on a link to a folder that is
# not there yet (a fresh machine whose store nothing has written to).
link_model_store() {
  local home="$1" store="${BENTOML_HOME:-$HOME/bentoml}/models"
  mkdir -p "$home" "$store"
  [[ -L "$home/models" || -e "$home/models" ]] || ln -s "$store" "$home/models"
}

# start_bento <service> <logfile> <service.py:Class> <port> [VAR=value ...]: `bentoml serve` of
# the checkout's service, detached (start_detached), with the variables set, in a BENTOML_HOME of
# the service's own (BentoML wipes its metrics folder on start) that shares the model store.
start_bento() {
  local name="$1" logfile="$2" target="$3" port="$4"
  shift 4
  local home
  home="$(service_dir "$name")/bentoml"
  link_model_store "$home"
  (cd "$KB_REPO_ROOT" && start_detached "$name" "$logfile" env "$@" BENTOML_HOME="$home" \
    BENTOML_DO_NOT_TRACK=true "${VENV:-$KB_REPO_ROOT/.venv}/bin/bentoml" serve "$target" \
    --host 127.0.0.1 --port "$port")
}

# java_major <java>: the Java feature version (17, 21, ...), 0 if it cannot be read.
java_major() {
  local major
  major="$("$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')"
  echo "${major:-0}"
}

# java_bin <what needs it>: the java to run ($KB_JAVA, $JAVA_HOME or PATH), Java 17 or newer.
java_bin() {
  local java="${KB_JAVA:-${JAVA_HOME:+$JAVA_HOME/bin/}java}" major
  command -v "$java" >/dev/null || die "java not found (set KB_JAVA or JAVA_HOME; $1 needs Java 17+)"
  major="$(java_major "$java")"
  ((major >= 17)) || die "$java is Java $major; $1 needs Java 17+ (set KB_JAVA or JAVA_HOME)"
  echo "$java"
}

# Resolves Maven artifacts (and their runtime dependencies) into a folder with the
# machine's Maven, using the given pom. Skips the work when the folder was filled from this
# same pom (its checksum is kept in .complete), so editing the pom re-fetches.
maven_fetch() {
  local pom="$1" dest="$2" sum
  sum="$(sha256sum "$pom" | cut -d' ' -f1)"
  if [[ -f "$dest/.complete" && "$(cat "$dest/.complete")" == "$sum" ]]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found; install Maven (apt-get install maven)"
  rm -rf "$dest"
  mkdir -p "$dest"
  log "resolving $(basename "$(dirname "$pom")") artifacts from Maven Central into $dest"
  local mvn_log="$dest.maven.log"
  if ! mvn -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$dest" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2
    die "Maven could not resolve the artifacts of $pom; full log: $mvn_log"
  fi
  echo "$sum" >"$dest/.complete"
}
