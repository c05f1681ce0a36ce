#!/usr/bin/env bash
# README, quick start, command 2: set up a fresh Debian-like machine for the tests and run them.
#
#   scripts/test.sh                     # everything, as CI (.ci/run) runs it
#   scripts/test.sh tests/test_aoi.py -q   # extra arguments go to pytest
#
# As root it installs the Debian packages the tests use that are missing (the servers they start
# on loopback, gdalinfo, chromium; it says which, upgrades none, and leaves the machine's own
# nginx and PostgreSQL services as they were); then, as any user, it creates .venv, installs the package with its test
# extras, runs the checks of "Contributing" (lint, format, strict types) and the tests. Needs the
# real data in ../shared (the shared/ folder beside this checkout). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
# postgresql-15 + postgresql-15-postgis-3: pgstac's database and the Dagster instance on PostgreSQL;
# nginx-light: the byte-range file server; gdal-bin: the tests read class maps back with
# gdalinfo, as GDAL (and QGIS) see them; chromium: they open the HTML report in a real browser;
# python3-venv: the .venv below (Debian's python3 comes without it); python3-qgis: QGIS 3.22,
# whose renderer the tests see the class and change maps drawn by (through Debian's python3). npm (with nodejs) installs
# Azurite, Microsoft's Azure Storage emulator, below; a machine that has npm keeps its own.
PACKAGES=(python3 python3-venv postgresql-15 postgresql-15-postgis-3 nginx-light gdal-bin chromium python3-qgis)
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)

if [ ! -d ../shared/data ]; then
    echo "scripts/test.sh: the real test data is missing: expected $(cd .. && pwd)/shared/data (the shared/ folder beside this checkout); scripts/fetch-test-data.py downloads it" >&2
    exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
    # The machine's own nginx and PostgreSQL are left as they are: the tests start their own
    # instances on free ports. Only a service the installation below starts is stopped again.
    running_before=()
    for service_name in nginx postgresql; do
        service "$service_name" status >/dev/null 2>&1 && running_before+=("$service_name")
    done
    echo "scripts/test.sh: as root: installing the Debian packages that are missing of ${PACKAGES[*]} (installed ones are not upgraded)" >&2
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends --no-upgrade "${PACKAGES[@]}" >/dev/null
    for service_name in nginx postgresql; do
        if [[ " ${running_before[*]-} " != *" $service_name "* ]] && service "$service_name" status >/dev/null 2>&1; then
            service "$service_name" stop >/dev/null 2>&1 || true
            echo "scripts/test.sh: stopped $service_name, which its installation started (it was not running before)" >&2
        fi
    done
else
    missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    echo "scripts/test.sh: not root (uid $(id -u)): not installing the Debian packages ${PACKAGES[*]}." >&2
    echo "  The tests that mount tmpfs file systems (full and read-only disks) will be reported as skipped: 'needs the right to mount file systems'." >&2
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "  Missing here: ${missing[*]}. Tests that start PostgreSQL 15 + PostGIS or nginx, or run gdalinfo or chromium, will be reported as skipped ('needs ...: run scripts/test.sh as root')." >&2
    fi
    echo "  Run scripts/test.sh as root for the whole suite." >&2
fi

# An existing .venv is reused (recreating it over another interpreter would break it).
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
# The versions the tests passed with (constraints.txt; scripts/update-constraints.sh moves them).
pip install -q -c constraints.txt -e ".[test]"
# Azurite, the Azure Blob Storage server the az:// tests start on loopback (tests/servers/azurite.py),
# into .venv/node_modules.
if command -v npm >/dev/null 2>&1; then
    npm install --prefix .venv --no-audit --no-fund --silent azurite@3
else
    echo "scripts/test.sh: npm is missing: the Azure Blob Storage tests will be reported as skipped ('needs Azurite')." >&2
fi

# The real scenes the tests read: every file of tests/test_data.json, whole (names what is
# missing or different, and where its dataset comes from).
python scripts/verify-test-data.py ../shared/data

# One command per line: under `set -e` a failure inside an && list would not stop the script.
ruff check .
ruff format --check .
mypy
# -m "" lifts the fast-set filter of pyproject.toml: every test, servers and slow ones too
# (a -m of the caller comes later and wins).
python -m pytest -m "" "$@"
