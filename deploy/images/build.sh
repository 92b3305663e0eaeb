#!/usr/bin/env bash
# Builds kb-platform's images with podman on this machine, from a Debian base made offline by
# debootstrap (no container registry is reachable here). Cached: the base's root filesystem
# tarball under $KB_CACHE_DIR/images/, uv's wheel cache through a build cache mount.
# Usage: build.sh base | build <target> [tag] | size <target> [tag] | run <target> [tag] -- CMD...
#   base            makes (once) and imports localhost/kb-debian:<suite>
#   build TARGET    podman build --target TARGET -t localhost/kb-TARGET:TAG (TAG: 0.1.0)
#   size TARGET     the image's size in bytes
#   run TARGET      runs a command in the image (no network, read-only root, user 10001)
KB_SERVICE=images
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

SUITE=bookworm
BASE="localhost/kb-debian:$SUITE"
CACHE="$KB_CACHE_DIR/images"
CONF="$KB_REPO_ROOT/deploy/images/containers.conf"
UV_CACHE="${UV_CACHE_DIR:-$HOME/.cache/uv}"  # the machine's wheels, reused by the builds
# the machine's CA bundle for the build steps' downloads (it may trust a TLS-inspecting proxy)
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
DEPENDENCIES="localhost/kb-build-cache:dependencies"
MIN_FREE_GB=25
export CONTAINERS_CONF="$CONF"  # runc (cgroup v1 here), ulimits a container can take
# images and build layers under the cache, so a CI machine that keeps ~/.cache rebuilds only
# the layers whose inputs changed
STORAGE="$KB_CACHE_DIR/containers"
export CONTAINERS_STORAGE_CONF="$STORAGE/storage.conf"
if [[ ! -f "$CONTAINERS_STORAGE_CONF" ]]; then
  mkdir -p "$STORAGE"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' \
    "$STORAGE" "$STORAGE" >"$CONTAINERS_STORAGE_CONF"
fi

need() { command -v "$1" >/dev/null || die "$1 not found (deploy/local/setup.sh installs it)"; }

cmd_base() {
  need podman
  podman image exists "$BASE" && return 0
  local tarball="$CACHE/debian-$SUITE-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    need debootstrap
    local root="$CACHE/debian-$SUITE.tmp"
    rm -rf "$root" && mkdir -p "$root"
    log "debootstrap --variant=minbase $SUITE (once; cached in $tarball)"
    debootstrap --variant=minbase "$SUITE" "$root" http://deb.debian.org/debian >&2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  podman import --quiet "$tarball" "$BASE" >/dev/null
  log "imported $BASE"
}

podman_build() { # podman_build <target> <image>
  podman build --quiet --network=host --build-arg "BASE_IMAGE=$BASE" --target "$1" \
    --volume "$UV_CACHE:/root/.cache/uv" --volume "$CA_BUNDLE:/run/kb-build-ca.crt:ro" \
    --build-arg CA_BUNDLE=/run/kb-build-ca.crt \
    -f "$KB_REPO_ROOT/deploy/images/Dockerfile" -t "$2" "$KB_REPO_ROOT" >&2
}

cmd_build() {
  local target="${1:?target}" tag="${2:-0.1.0}" start=$SECONDS free
  cmd_base
  free="$(df --output=avail -BG "$STORAGE" | tail -1 | tr -dc 0-9)"
  ((free >= MIN_FREE_GB)) ||
    die "$free GB free under $STORAGE: a cold build needs about $MIN_FREE_GB GB (the ~9 GB dependencies layer every image shares, and as much again while it is committed)"
  log "building localhost/kb-$target:$tag"
  mkdir -p "$UV_CACHE"
  # the dependencies stage keeps a tag, so pruning leaves it as the next build's cache
  podman_build dependencies "$DEPENDENCIES"
  podman_build "$target" "localhost/kb-$target:$tag"
  podman image prune --force >/dev/null # earlier builds' layers that nothing names any more
  log "built localhost/kb-$target:$tag in $((SECONDS - start))s, $(cmd_size "$target" "$tag") bytes"
}

cmd_size() { podman image inspect --format '{{.Size}}' "localhost/kb-${1:?target}:${2:-0.1.0}"; }

cmd_run() {
  local target="${1:?target}" tag="${2:-0.1.0}"
  shift 2
  [[ "${1:-}" == "--" ]] && shift
  podman run --rm --network=none --read-only --tmpfs /tmp --user 10001:10001 \
    "localhost/kb-$target:$tag" "$@"
}

case "${1:-}" in
base) cmd_base ;;
build) cmd_build "${@:2}" ;;
size) cmd_size "${@:2}" ;;
run) cmd_run "${@:2}" ;;
*) die "usage: build.sh base | build <target> [tag] | size <target> [tag] | run <target> [tag] -- CMD..." ;;
esac
