#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   - qemu-img (Debian package qemu-utils), the test oracle, when missing and we are root;
#   - strace, which the crash-safety tests use to kill an operation before a chosen write;
#   - btrfs-progs, xfsprogs (and lsattr): loop-mounted btrfs/XFS for the nocow and
#     extent_size_hint tests;
#   - a virtualenv in .venv/ with the tools from tests/requirements-dev.txt;
#   - a pip bootstrap stand-in for ansible-test (scripts/get_pip_standin.py).
# A stamp file makes a second run fast: the venv is only rebuilt when the
# requirements file changes or the venv is gone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PYTHON="${PYTHON:-python3}"
venv="$root/.venv"
req="$root/tests/requirements-dev.txt"
stamp="$venv/.setup-stamp"

log() { printf '==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------
apt_updated=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        log "WARNING: not root: cannot install $*; install it by hand" >&2
        return 0
    fi
    if [ "$apt_updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v qemu-img >/dev/null 2>&1; then
    log "qemu-img is missing: installing qemu-utils"
    apt_install qemu-utils
fi

# strace kills in-place operations before their K-th write (the crash-safety tests)
if ! command -v strace >/dev/null 2>&1; then
    log "strace is missing: installing strace"
    apt_install strace
fi

# mkfs.btrfs / mkfs.xfs make the loop-mounted file systems of the nocow and extent-size-hint tests
PATH="$PATH:/usr/sbin:/sbin"
if ! command -v mkfs.btrfs >/dev/null 2>&1; then
    log "mkfs.btrfs is missing: installing btrfs-progs"
    apt_install btrfs-progs
fi
if ! command -v mkfs.xfs >/dev/null 2>&1; then
    log "mkfs.xfs is missing: installing xfsprogs"
    apt_install xfsprogs
fi
if ! command -v lsattr >/dev/null 2>&1; then
    log "lsattr is missing: installing e2fsprogs"
    apt_install e2fsprogs
fi

if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    log "python venv support is missing: installing python3-venv"
    apt_install python3-venv
fi

# --- virtualenv ------------------------------------------------------------
want="$(cat "$req")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv up to date ($venv)"
else
    if [ ! -x "$venv/bin/python" ]; then
        log "creating venv in $venv"
        "$PYTHON" -m venv "$venv"
    fi
    log "installing tools into the venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    printf '%s' "$want" > "$stamp"
fi

# --- ansible-test pip bootstrap stand-in -----------------------------------
# ansible-test downloads get-pip.py from a host this machine cannot reach, even
# with --local; it looks in its cache first. Put our stand-in there under the
# name this ansible-test version asks for.
"$venv/bin/python" "$root/scripts/install_get_pip_standin.py"

log "setup done"
