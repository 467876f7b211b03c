#!/usr/bin/env bash
# Install sami-gateway into the current Python environment.
#   bash scripts/install.sh          the service (and a C compiler if there is none)
#   bash scripts/install.sh --test   the service, test tools, and the system packages the
#                                    tests use (golang-go for the Go client, ffmpeg to cross-check codecs,
#                                    chromium for browser tests, redis-server for scale-out)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# A C compiler builds the native attention kernel on first use (without one, `fast`
# precision falls back to PyTorch's attention); the tests also use Go and ffmpeg.
PACKAGES=()
command -v cc >/dev/null || PACKAGES+=(gcc libc6-dev)
if [[ "${1:-}" == "--test" ]]; then
    command -v go >/dev/null || PACKAGES+=(golang-go)
    command -v ffmpeg >/dev/null || PACKAGES+=(ffmpeg)
    command -v chromedriver >/dev/null || PACKAGES+=(chromium chromium-driver)  # /docs in a headless browser
    command -v redis-server >/dev/null || PACKAGES+=(redis-server)  # the scale-out tests' queue and state
fi
if (( ${#PACKAGES[@]} )); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

# Every package at the version in constraints.txt, the versions CI passed with (refresh them with
# `bash scripts/lock.sh`). torch first, pinned: every later requirement admits 2.13.0, so pip keeps
# this build instead of pulling the newest release with its CUDA packages.
PIP=("$PYTHON" -m pip install -q -c constraints.txt)
"${PIP[@]}" "torch==2.13.0"
# The Python SDK (its own distribution, httpx only): `sami-gateway jobs` is built on it.
"${PIP[@]}" -e ./sdk/python
if [[ "${1:-}" == "--test" ]]; then
    "${PIP[@]}" -e ".[test,docs]"
    # The families' reference (msst): without its dependencies, which would replace torch.
    "${PIP[@]}" --no-deps -r requirements-reference.txt
else
    "${PIP[@]}" -e .
fi
