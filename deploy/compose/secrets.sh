#!/usr/bin/env bash
# Makes the compose stack's secrets once (never committed: .gitignore'd): .env with the
# PostgreSQL password and the encoder token (variables the compose file interpolates), and
# secrets/ with the files the services mount: the encoder token, an API key of the RAG service
# and its SHA-256 entry, and placeholders for Alertmanager's PagerDuty and Slack receivers.
# Usage: bash deploy/compose/secrets.sh   (a second run keeps what exists)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
umask 077
mkdir -p secrets
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

if [[ ! -s .env ]]; then
  printf 'KB_PG_PASSWORD=%s\nKB_ENCODER_TOKEN=%s\n' "$(token)" "$(token)" >.env
fi
# shellcheck disable=SC1091
source .env
[[ -s secrets/encoder-token ]] || printf '%s\n' "$KB_ENCODER_TOKEN" >secrets/encoder-token
if [[ ! -s secrets/rag-api-key ]]; then
  key="kb_$(token)"
  printf '%s\n' "$key" >secrets/rag-api-key
  python3 -c 'import hashlib, json, sys; json.dump([{"sha256": hashlib.sha256(sys.argv[1].encode()).hexdigest(), "name": "compose"}], sys.stdout)' \
    "$key" >secrets/rag-keys.json
fi
[[ -s secrets/pagerduty-routing-key ]] || echo "replace-with-a-pagerduty-routing-key" >secrets/pagerduty-routing-key
[[ -s secrets/slack-webhook-url ]] || echo "https://hooks.slack.com/services/replace/with/yours" >secrets/slack-webhook-url
echo "secrets in $(pwd)/.env and $(pwd)/secrets/ (RAG API key: secrets/rag-api-key)"
