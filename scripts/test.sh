#!/usr/bin/env bash
# Set up and run the tests: system tools a few tests need (chromium renders the HTML report, openssh runs the
# SSH-profiling test against a loopback sshd), a virtualenv with the project and a CPU build of torch, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v ssh >/dev/null || [ ! -x /usr/sbin/sshd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        chromium openssh-server openssh-client >/dev/null
fi
python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest "$@"
