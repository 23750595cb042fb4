#!/usr/bin/env bash
# Set up everything fleet-attest needs on a Debian machine, then run one job.
#
#   scripts/bootstrap.sh demo    the demo: a verifier and a fleet of simulated swtpm devices
#   scripts/bootstrap.sh test    lint, then the whole test suite
#   scripts/bootstrap.sh lint    ruff format --check, ruff check, mypy --strict
#   scripts/bootstrap.sh setup   set up only
#
# Idempotent: system packages are installed only when missing (apt-get as root, sudo
# otherwise), the virtual environment lives in .venv/ and is refreshed only when
# pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

system_packages() {
    local pkgs=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc python3-dev python3-venv postgresql systemd prometheus)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing system packages: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
    local py=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv with $($py --version)"
        "$py" -m venv .venv
    fi
    local stamp=.venv/.fleet-attest-installed
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing fleet-attest and its dependencies into .venv (tpm2-pytss builds from source)"
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e ".[dev]"
        echo "$want" >"$stamp"
    fi
}

lint() {
    .venv/bin/ruff format --check .
    .venv/bin/ruff check .
    .venv/bin/mypy
}

run_tests() {
    set +e
    .venv/bin/python -m pytest "$@"
    local rc=$?
    set -e
    if [ $rc -eq 5 ]; then
        log "pytest collected no tests: that is a failure"
        return 1
    fi
    return $rc
}

job=${1:-setup}
shift || true
system_packages
python_env
case "$job" in
    setup) log "ready: $ROOT/.venv" ;;
    demo) exec .venv/bin/attest-sim demo "$@" ;;
    lint) lint ;;
    test) lint && run_tests "$@" ;;
    *) log "unknown job '$job' (demo, test, lint, setup)"; exit 2 ;;
esac
