#!/usr/bin/env bash
# Set up and run the tests: system tools a few tests need (chromium renders the HTML report and runs the browser
# demo, openssh runs the SSH-profiling test against a loopback sshd), a virtualenv with the project and a CPU build
# of torch, the linter, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v ssh >/dev/null || [ ! -x /usr/sbin/sshd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        chromium openssh-server openssh-client >/dev/null
fi
# Client tests (tests/test_clients.py): transformers.js, onnxruntime-web and playwright-core from npm (pinned by
# examples/web/package-lock.json; --ignore-scripts: onnxruntime-node's install script fetches GPU binaries from
# outside the registry, its CPU binaries ship in the package), and fastembed in a virtualenv of its own
# (.venv-clients: it pins huggingface_hub<2, which would downgrade the project's huggingface_hub 2.x; it also adds
# pillow, loguru, mmh3, py_rust_stemmers). Without npm (Node 20) the JavaScript client tests are skipped.
if command -v npm >/dev/null; then
    (cd examples/web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
python3 -m venv .venv-clients && .venv-clients/bin/pip install -q -r tests/clients/requirements.txt
python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check edgedistill tests benchmarks scripts  # imports, bugbear, simplify, pyupgrade (pyproject.toml)
.venv/bin/python -m pytest "$@"
