#!/usr/bin/env bash
# Fetches (once) eksctl's ClusterConfig JSON schema from the eksctl Go module zip on the Go module
# proxy (no eksctl binary, no AWS access) and prints its path:
#   $KB_CACHE_DIR/tools/eksctl-schema-<version>/schema.json
# Beside it, from the same zip, the eksctl sources the tests read for what the schema leaves
# open: types.go (the Kubernetes versions and regions eksctl knows) and instance_types.go (which
# instance types eksctl treats as NVIDIA GPU types: it picks the accelerated AMI from them).
# Usage: schema.sh
set -euo pipefail
KB_SERVICE=eksctl-schema
# shellcheck source-path=SCRIPTDIR source=../../local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../local/lib.sh"

MODULE=github.com/weaveworks/eksctl
VERSION=v0.215.0 # the eksctl release cluster.yaml is written for
DIR="$KB_CACHE_DIR/tools/eksctl-schema-$VERSION"
FILES=(
  pkg/apis/eksctl.io/v1alpha5/assets/schema.json
  pkg/apis/eksctl.io/v1alpha5/types.go
  pkg/utils/instance/instance_types.go
)

extract() {
  command -v go >/dev/null || die "go not found (the Go module proxy serves eksctl's schema)"
  local zip tmp path
  zip="$(go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Zip") or sys.exit(d.get("Error")))')" ||
    die "go mod download $MODULE@$VERSION failed"
  mkdir -p "$(dirname "$DIR")"
  tmp="$(mktemp -d "$DIR.tmp.XXXXXX")"
  chmod 755 "$tmp"
  for path in "${FILES[@]}"; do
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$zip" "$MODULE@$VERSION/$path" >"$tmp/$(basename "$path")" || {
      rm -rf "$tmp"
      die "$path is not in $zip"
    }
  done
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/schema.json" || {
    rm -rf "$tmp"
    die "schema.json of $MODULE@$VERSION is not JSON"
  }
  # another run may have finished first: keep its folder
  if [[ -f "$DIR/schema.json" ]]; then
    rm -rf "$tmp"
  else
    rm -rf "$DIR" && mv "$tmp" "$DIR"
    log "eksctl $VERSION schema in $DIR"
  fi
}

[[ -f "$DIR/schema.json" && -f "$DIR/types.go" && -f "$DIR/instance_types.go" ]] || extract
echo "$DIR/schema.json"
