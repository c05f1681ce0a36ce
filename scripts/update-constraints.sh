#!/usr/bin/env bash
# Rewrite constraints.txt: every package, at the version a fresh install of geocluster_dagster
# with its test extras resolves today. The README's commands, scripts/test.sh (so CI) and the
# Dockerfile install with `-c constraints.txt`, so they all get the versions the tests passed with;
# run this, then the tests (scripts/test.sh), and commit both when they pass.
#
#   scripts/update-constraints.sh            # needs python3 -m venv and PyPI
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q ".[test]"
{
    echo "# The versions the tests passed with: every package a fresh install of geocluster_dagster"
    echo "# with its test extras resolves ($("$work/venv/bin/python" --version), $(uname -sm))."
    echo "# Installs use it with -c; to move to newer versions: scripts/update-constraints.sh"
    "$work/venv/bin/pip" freeze --exclude geocluster_dagster --exclude pip --exclude setuptools
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -cv '^#' constraints.txt) packages"
