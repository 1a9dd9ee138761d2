#!/usr/bin/env bash
# Run ansible-test on a copy of this checkout.
#
# ansible-test only runs from inside .../ansible_collections/<namespace>/<name>/
# and resolves symlinks, so we copy the tracked and untracked-not-ignored files
# into a temporary tree (without .git), run ansible-test there with the venv's
# tools first on PATH, copy tests/output back for inspection, and clean up.
#
# Usage: scripts/ansible-test.sh sanity|units|integration [ansible-test options...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

if [ ! -x "$venv/bin/ansible-test" ]; then
    echo "ansible-test.sh: $venv/bin/ansible-test not found: run 'make setup' first" >&2
    exit 2
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/qimg-ansible-test.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

dest="$tmp/ansible_collections/qimg/disk"
mkdir -p "$dest"

cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked (still present) + untracked-not-ignored files
    git ls-files -z -co --exclude-standard \
        | while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done \
        | tar --null -T - -cf - | tar -C "$dest" -xf -
else
    tar --exclude=./.git --exclude=./.venv --exclude=./.ansible --exclude=./tests/output \
        --exclude='__pycache__' --exclude=.pytest_cache --exclude=.hypothesis \
        -cf - . | tar -C "$dest" -xf -
fi

export PATH="$venv/bin:$PATH"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

rc=0
(cd "$dest" && ansible-test "$@") || rc=$?

if [ -d "$dest/tests/output" ]; then
    rm -rf "$root/tests/output"
    mkdir -p "$root/tests"
    cp -a "$dest/tests/output" "$root/tests/output"
fi

exit "$rc"
