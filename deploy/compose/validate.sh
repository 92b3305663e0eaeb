#!/usr/bin/env bash
# Loads a compose file as `docker compose config` does (compose-spec's loader: schema,
# interpolation, merging, consistency), with a small Go program over compose-go
# (deploy/compose/validate/, built once from the Go module proxy and cached; there is no Docker
# engine or compose plugin on CI machines here).
# Usage: validate.sh [-env-file FILE] [COMPOSE_FILE]   (default: deploy/compose/docker-compose.yml)
KB_SERVICE=compose
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

SRC="$KB_REPO_ROOT/deploy/compose/validate"
BIN="$KB_CACHE_DIR/tools/compose-config-$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)/compose-config"

if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || die "go not found (it builds the compose validator)"
  log "building the compose validator (compose-go, cached in $(dirname "$BIN"))"
  mkdir -p "$(dirname "$BIN")"
  (cd "$SRC" && CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" . >&2) && mv "$BIN.tmp" "$BIN"
fi
args=("$@")
[[ ${#args[@]} -gt 0 && "${args[-1]}" != -* && "${args[-1]}" == *.y*ml ]] || args+=("$KB_REPO_ROOT/deploy/compose/docker-compose.yml")
exec "$BIN" "${args[@]}"
