#!/usr/bin/env bash
# Builds (once) and prints the paths of the cluster tools the chart's tests use, all from the Go
# module proxy (no registry of binaries or schemas is reachable from CI), cached under
# $KB_CACHE_DIR/tools/<name>-<version>/ (tools.versions names each tool's version: changing one
# line rebuilds that tool only). Static (CGO_ENABLED=0), -trimpath builds:
#   helm, kubeconform      go install <module>@<version>
#   k8s-schemas            the Kubernetes OpenAPI documents as kubeconform JSON schemas
#   etcd                   deploy/cluster/etcd (a main calling etcdmain.Main), go build
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                          from one unpacked k8s.io/kubernetes tree, built one after the other so
#                          they share the Go build cache
#   kwok                   go install, plus the stage files of its module (kwok --config)
#   actionlint             go install (the GitHub Actions workflows' linter)
# A cold `install` (empty Go module and build caches, 2 cores) took 9.5 min: kubeconform 17 s,
# etcd 25 s, kwok 71 s, kube-apiserver 229 s, kube-controller-manager 83 s, kube-scheduler 9 s,
# kubectl 23 s, helm 115 s (in that order: later tools reuse what earlier ones compiled);
# actionlint 4 s after them (75 s alone with empty caches, mostly module downloads).
# Usage: tools.sh {install|path <name>}
#   install      builds whatever tools.versions names that the cache lacks
#   path NAME    the binary, or the folder of k8s-schemas / kwok-stages; built if absent
KB_SERVICE=cluster-tools
# shellcheck source-path=SCRIPTDIR source=../local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

HERE="$KB_REPO_ROOT/deploy/cluster"
TOOLS_DIR="$KB_CACHE_DIR/tools"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"
KUBE_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_TOOLS="helm, kubeconform, k8s-schemas, etcd, ${KUBE_TOOLS[*]}, kwok, kwok-stages, actionlint"

field() { # field <name> <column>: the module (2) or version (3) of a tool in tools.versions
  awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$HERE/tools.versions"
}

tool_dir() { echo "$TOOLS_DIR/$1-$(field "$1" 3)"; }

require_tool() { # require_tool <name>: fails unless tools.versions names its module and version
  [[ -n "$(field "$1" 2)" && -n "$(field "$1" 3)" ]] || die "$1 is not in $HERE/tools.versions"
}

go_binary() {
  command -v go >/dev/null || die "go not found (the Go toolchain builds the cluster tools)"
  command -v go
}

# Builds are serialised between concurrent tools.sh runs (two test sessions asking for a path):
# a builder checks its cache, takes the lock, then checks again before building.
LOCKED=0
take_lock() {
  ((LOCKED)) && return 0
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.build.lock"
  if ! flock -n 9; then
    log "another tools.sh is building; waiting for it"
    flock 9
  fi
  LOCKED=1
}

# go_build_env <command...>: runs a go command for a static, path-independent build.
go_build_env() { CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" "$@" >&2; }

# built_in <name> <seconds at start>: logs how long the tool took.
built_in() { log "built $1 $(field "$1" 3) in $((SECONDS - $2))s"; }

# Go module's source folder (in the module cache, read-only) for <module>@<version>.
module_dir() {
  "$(go_binary)" mod download -json "$1@$2" |
    "$VENV/bin/python" -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'
}

build_go_tool() { # build_go_tool <name> [<extra step>]: go install <module>@<version> into the tool's folder
  local name="$1" extra="${2:-}" dir module version start
  dir="$(tool_dir "$name")"
  [[ -x "$dir/bin/$name" ]] && return 0
  take_lock
  [[ -x "$dir/bin/$name" ]] && return 0
  require_tool "$name"
  module="$(field "$name" 2)"
  version="$(field "$name" 3)"
  start=$SECONDS
  log "building $name $version from the Go module proxy (cached in $dir)"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/bin"
  GOBIN="$dir.tmp/bin" go_build_env "$(go_binary)" install -ldflags="-s -w" "$module@$version"
  [[ -z "$extra" ]] || "$extra" "$module" "$version" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  built_in "$name" "$start"
}

build_schemas() {
  local dir version zip start=$SECONDS
  dir="$(tool_dir k8s-schemas)"
  [[ -f "$dir/deployment-apps-v1.json" ]] && return 0
  take_lock
  [[ -f "$dir/deployment-apps-v1.json" ]] && return 0
  version="$(field k8s-schemas 3)"
  log "converting the Kubernetes $version OpenAPI documents to JSON schemas (cached in $dir)"
  zip="$("$(go_binary)" mod download -json "k8s.io/kubernetes@$version" |
    "$VENV/bin/python" -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Zip") or sys.exit(d.get("Error")))')"
  rm -rf "$dir.tmp"
  "$VENV/bin/python" "$HERE/k8s_schemas.py" "$zip" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  built_in k8s-schemas "$start"
}

# etcd: deploy/cluster/etcd is a main module calling etcdmain.Main. It is copied into the cache
# folder (src/), made to require the etcd server version of tools.versions, tidied (go.sum is
# made there, never committed) and built. Its folder also records the checksum of the source it
# was built from, so an edited main.go or go.mod rebuilds it too.
etcd_source_sum() { cat "$HERE/etcd/main.go" "$HERE/etcd/go.mod" | sha256sum | cut -d' ' -f1; }

etcd_built() {
  local dir="$1"
  [[ -x "$dir/bin/etcd" && "$(cat "$dir/source.sha256" 2>/dev/null)" == "$(etcd_source_sum)" ]]
}

build_etcd() {
  local dir module version start go
  dir="$(tool_dir etcd)"
  etcd_built "$dir" && return 0
  take_lock
  etcd_built "$dir" && return 0
  require_tool etcd
  module="$(field etcd 2)"
  version="$(field etcd 3)"
  go="$(go_binary)"
  start=$SECONDS
  log "building etcd $version ($module, main in $HERE/etcd; cached in $dir)"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/src" "$dir.tmp/bin"
  cp "$HERE/etcd/main.go" "$HERE/etcd/go.mod" "$dir.tmp/src/"
  "$go" -C "$dir.tmp/src" mod edit -require="$module@$version"
  go_build_env "$go" -C "$dir.tmp/src" mod tidy
  go_build_env "$go" -C "$dir.tmp/src" build -ldflags="-s -w" -o "$dir.tmp/bin/etcd" .
  etcd_source_sum >"$dir.tmp/source.sha256"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  built_in etcd "$start"
}

# Kubernetes binaries. The k8s.io/kubernetes module zip lacks staging/ (its own modules), which
# its go.mod replaces k8s.io/* with: the replaces are rewritten to the published k8s.io/<name>
# modules of the same release (v1.X.Y -> v0.X.Y), the two sample modules that are not published
# are dropped, and the stray vendor/ and go.work are deleted. Every binary of one version is
# built in the same unpacked tree, one after the other (one Go build cache, one module graph);
# the tree is deleted afterwards (the module cache keeps its source).
unpack_kubernetes() { # unpack_kubernetes <version> <folder>
  local version="$1" src="$2" staging_version dir
  staging_version="v0.${version#v1.}"
  log "unpacking k8s.io/kubernetes@$version into $src (staging modules -> $staging_version)"
  dir="$(module_dir k8s.io/kubernetes "$version")"
  rm -rf "$src"
  mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  rm -rf "$src/vendor" "$src/go.work" "$src/go.work.sum"
  sed -E -i \
    -e '/^[[:space:]]*k8s\.io\/sample-(cli-plugin|controller)[[:space:]]/d' \
    -e "s#^([[:space:]]*)(k8s\.io/[^ ]+) => \./staging/src/k8s\.io/[^ ]+[[:space:]]*\$#\1\2 => \2 $staging_version#" \
    "$src/go.mod"
  if grep -q '\./staging' "$src/go.mod"; then
    grep -n '\./staging' "$src/go.mod" >&2
    die "k8s.io/kubernetes@$version: go.mod still replaces modules with ./staging (lines above)"
  fi
}

build_kube_tool() { # build_kube_tool <name> <unpacked tree>
  local name="$1" src="$2" dir module version minor package start ldflags pkg
  dir="$(tool_dir "$name")"
  module="$(field "$name" 2)"
  version="$(field "$name" 3)"
  package="./${module#k8s.io/kubernetes/}"
  minor="${version#v1.}"
  minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  start=$SECONDS
  log "building $name $version (go build $package in $src; cached in $dir)"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/bin"
  go_build_env "$(go_binary)" -C "$src" build -mod=mod -ldflags="$ldflags" -o "$dir.tmp/bin/$name" "$package"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  built_in "$name" "$start"
}

build_kube_tools() { # build_kube_tools <name>...: those the cache lacks
  local name version src missing=()
  for name in "$@"; do [[ -x "$(tool_dir "$name")/bin/$name" ]] || missing+=("$name"); done
  ((${#missing[@]})) || return 0
  take_lock
  missing=()
  for name in "$@"; do
    require_tool "$name"
    [[ "$(field "$name" 2)" == k8s.io/kubernetes/* ]] || die "$name: module must be k8s.io/kubernetes/<package>"
    [[ -x "$(tool_dir "$name")/bin/$name" ]] || missing+=("$name")
  done
  ((${#missing[@]})) || return 0
  for version in $(for name in "${missing[@]}"; do field "$name" 3; done | sort -u); do
    src="$TOOLS_DIR/kubernetes-src-$version.tmp"
    unpack_kubernetes "$version" "$src"
    for name in "${missing[@]}"; do
      [[ "$(field "$name" 3)" == "$version" ]] && build_kube_tool "$name" "$src"
    done
    rm -rf "$src"
  done
}

# kwok finds no stages of its own ("no stages found"): its module's kustomize/stage/ Stage files
# (not their testdata or kustomizations) are copied to <kwok folder>/stages/<kind>/<flavour>/,
# to be given to it with --config (the "fast" set: node/fast, node/heartbeat-with-lease, pod/fast).
kwok_stages() { # kwok_stages <module> <version> <tool folder>
  local dir
  dir="$(module_dir "${1%/cmd/*}" "$2")"
  [[ -d "$dir/kustomize/stage" ]] || die "$1@$2 has no kustomize/stage folder"
  mkdir -p "$3/stages"
  (cd "$dir/kustomize/stage" && find . -name '*.yaml' ! -path '*/testdata/*' ! -name kustomization.yaml \
    -exec cp --parents {} "$3/stages/" \;)
  chmod -R u+w "$3/stages"
  [[ -f "$3/stages/node/fast/node-initialize.yaml" ]] || die "$1@$2: no node/fast/node-initialize.yaml stage"
}

cmd_install() {
  local start=$SECONDS
  build_go_tool kubeconform
  build_schemas
  build_etcd
  build_go_tool kwok kwok_stages
  build_kube_tools "${KUBE_TOOLS[@]}"
  build_go_tool helm
  build_go_tool actionlint
  log "all tools in $TOOLS_DIR ($((SECONDS - start))s)"
}

cmd_path() {
  case "$1" in
  helm | kubeconform | actionlint)
    build_go_tool "$1"
    echo "$(tool_dir "$1")/bin/$1"
    ;;
  k8s-schemas)
    build_schemas
    tool_dir k8s-schemas
    ;;
  etcd)
    build_etcd
    echo "$(tool_dir etcd)/bin/etcd"
    ;;
  kube-apiserver | kube-controller-manager | kube-scheduler | kubectl)
    build_kube_tools "$1"
    echo "$(tool_dir "$1")/bin/$1"
    ;;
  kwok)
    build_go_tool kwok kwok_stages
    echo "$(tool_dir kwok)/bin/kwok"
    ;;
  kwok-stages)
    build_go_tool kwok kwok_stages
    echo "$(tool_dir kwok)/stages"
    ;;
  *) die "unknown tool: $1 ($ALL_TOOLS)" ;;
  esac
}

case "${1:-}" in
install) cmd_install ;;
path) cmd_path "${2:?tool name}" ;;
*) die "usage: tools.sh {install|path <name>}" ;;
esac
