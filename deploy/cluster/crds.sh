#!/usr/bin/env bash
# Extracts the CRDs of crds.versions from their Go module zips (once; cached under
# $KB_CACHE_DIR/tools/crds-<hash of crds.versions>/) and prints that folder.
# Usage: crds.sh
KB_SERVICE=crds
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"

HERE="$KB_REPO_ROOT/deploy/cluster"
VERSIONS="$HERE/crds.versions"
DIR="$KB_CACHE_DIR/tools/crds-$(sha256sum "$VERSIONS" | cut -c1-12)"

extract() {
  command -v go >/dev/null || die "go not found (the Go module proxy serves the CRDs)"
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  local module version path zip
  while read -r module version path; do
    [[ -z "$module" || "$module" == \#* ]] && continue
    zip="$(go mod download -json "$module@$version" |
      python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Zip") or sys.exit(d.get("Error")))')"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$zip" "$module@$version/$path" >"$DIR.tmp/$(basename "$path")" || die "$path is not in $module@$version"
  done <"$VERSIONS"
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
  log "CRDs in $DIR"
}

[[ -d "$DIR" ]] || extract
echo "$DIR"
