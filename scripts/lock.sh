#!/usr/bin/env bash
# Refresh constraints.txt: the exact versions of every package the service, its tests and its
# benchmarks install. scripts/install.sh, .ci/run and the Dockerfile install within it, so a
# fresh machine gets what CI passed with; an upgrade is this command and a reviewed diff.
#   bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(mktemp -d)
trap 'rm -rf "$VENV"' EXIT

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The same order as scripts/install.sh: torch first, then everything else resolved freshly.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q ./sdk/python ".[test,bench,docs]"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-reference.txt  # as scripts/install.sh --test
{
    echo "# Exact versions of the service, test, benchmark and docs environment (pip constraints), which"
    echo "# scripts/install.sh and the Dockerfile install. Refresh: bash scripts/lock.sh (the newest versions"
    echo "# pyproject.toml admits, on Python 3.11), then run the tests: an upgrade is a reviewed change."
    # torch's local label (+cpu) names the build, not the release: the CPU wheel and others match 2.13.0.
    "$VENV/bin/python" -m pip freeze --all --exclude sami-gateway --exclude sami-gateway-client --exclude pip \
        --exclude setuptools --exclude wheel | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
