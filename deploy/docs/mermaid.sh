#!/usr/bin/env bash
# The Mermaid parser that checks the diagrams of the docs, from the npm registry.
#
#   mermaid.sh install        npm ci of package.json/package-lock.json (here) into
#                             $KB_CACHE_DIR/mermaid/<key>/, key = sha256 of those two files
#                             (a new pin installs beside the old one; cached otherwise)
#   mermaid.sh dir            print that folder (exit 1 when it is not installed)
#   mermaid.sh check [FILE..] parse every ```mermaid block of the Markdown files (default:
#                             README.md and docs/**/*.md); one JSON line per block; exit 1 if any
#                             block does not parse
#
# Needs Node.js >= 20 and npm (mermaid 12 needs Node 22, so the pin stays on 11.x).
# deploy/local/setup.sh calls `install`; kb_platform_tests/docs/test_mermaid.py runs `check`.
set -euo pipefail

KB_SERVICE=mermaid
# shellcheck source-path=SCRIPTDIR source=../local/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../local" && pwd)/lib.sh"

HERE="$KB_REPO_ROOT/deploy/docs"

cache_dir() {
  local key
  key="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)"
  echo "$KB_CACHE_DIR/mermaid/$key"
}

cmd_install() {
  local dest tmp
  dest="$(cache_dir)"
  if [[ -f "$dest/.complete" ]]; then return 0; fi
  command -v node >/dev/null || die "node not found: install Node.js >= 20 with npm"
  command -v npm >/dev/null || die "npm not found: install npm"
  mkdir -p "$(dirname "$dest")"
  tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$tmp/"
  log "installing mermaid and jsdom (deploy/docs/package-lock.json) into $dest"
  if ! (cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >"$tmp/npm.log" 2>&1); then
    tail -n 30 "$tmp/npm.log" >&2
    rm -rf "$tmp"
    die "npm ci failed"
  fi
  date -u +%FT%TZ >"$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
}

cmd_dir() {
  local dest
  dest="$(cache_dir)"
  [[ -f "$dest/.complete" ]] || die "mermaid is not installed: bash deploy/docs/mermaid.sh install"
  echo "$dest"
}

cmd_check() {
  local dest files=()
  dest="$(cmd_dir)"
  if (($# == 0)); then
    files=("$KB_REPO_ROOT/README.md")
    while IFS= read -r -d '' f; do files+=("$f"); done \
      < <(find "$KB_REPO_ROOT/docs" -name '*.md' -print0 | sort -z)
  else
    files=("$@")
  fi
  KB_MERMAID_DIR="$dest" node "$HERE/mermaid-check.mjs" "${files[@]}"
}

case "${1:-}" in
  install) cmd_install ;;
  dir) cmd_dir ;;
  check)
    shift
    cmd_check "$@"
    ;;
  *) die "usage: $0 install|dir|check [FILE...]" ;;
esac
