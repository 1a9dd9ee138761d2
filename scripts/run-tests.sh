#!/usr/bin/env bash
# Run every test stage, keep going after a failure, then print a summary:
#   pytest, ansible-test sanity, ansible-test units, ansible-test integration, ansible-lint,
#   molecule (every scenario under extensions/molecule), docs (antsibull-docs lint of
#   docs/docsite and of the plugins' and roles' documentation).
# The last line is "N passed, N failed" (N = test stages); the exit code is
# non-zero when any stage failed. Run `make setup` (scripts/setup.sh) first.
#
# Usage: scripts/run-tests.sh [stage...]   (default: all stages)
#   stages: pytest sanity units integration lint molecule docs
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 2
venv="$root/.venv"
py="$venv/bin/python"
pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

export PATH="$venv/bin:$PATH"
export ANSIBLE_HOME="$root/.ansible"
export PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0

stage_pytest() {
    local rc=0
    # two workers (pytest-xdist): the machines have two cores and half the suite waits on qemu-img
    "$py" -m pytest tests/pytest -q -n 2 || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: counted as a failure"
    fi
    return "$rc"
}

stage_sanity() {
    scripts/ansible-test.sh sanity --local --python "$pyver"
}

stage_units() {
    if [ -z "$(find tests/unit -name 'test_*.py' 2>/dev/null | head -n 1)" ]; then
        echo "no unit tests (tests/unit/**/test_*.py): counted as a failure"
        return 1
    fi
    scripts/ansible-test.sh units --local --python "$pyver" --requirements
}

stage_integration() {
    scripts/ansible-test.sh integration --local --python "$pyver"
}

stage_lint() {
    # offline (see .ansible-lint): ansible-lint does not install this
    # collection itself, so make the checkout visible as qimg.disk.
    local collections
    collections="$(scripts/link-collection.sh)" || return 1
    ANSIBLE_COLLECTIONS_PATH="$collections" ansible-lint
}

stage_molecule() {
    # `molecule test --all`: every scenario under extensions/molecule (default driver, localhost).
    # molecule builds the collection from this checkout and installs it into
    # $ANSIBLE_HOME/collections, so it gets an ANSIBLE_HOME of its own inside the checkout
    # (.ansible/ is ignored by git), apart from the symlink that lint and the demo use.
    # VIRTUAL_ENV is unset so that nothing is cached inside the (shared) venv.
    (
        unset VIRTUAL_ENV
        export ANSIBLE_HOME="$root/.ansible/molecule"
        molecule test --all
    )
}

stage_docs() {
    # docs/docsite (extra-docs.yml, links.yml, rst/) and the plugins' and roles' documentation,
    # as the Ansible docsite builds them
    antsibull-docs lint-collection-docs --plugin-docs .
}

all_stages=(pytest sanity units integration lint molecule docs)
if [ "$#" -gt 0 ]; then
    stages=("$@")
else
    stages=("${all_stages[@]}")
fi

passed=0
failed=0
results=()
for stage in "${stages[@]}"; do
    if ! declare -F "stage_$stage" >/dev/null; then
        echo "run-tests.sh: unknown stage '$stage' (known: ${all_stages[*]})" >&2
        exit 2
    fi
    printf '\n===== %s =====\n' "$stage"
    start=$SECONDS
    if "stage_$stage"; then
        passed=$((passed + 1))
        results+=("PASS  $stage ($((SECONDS - start)) s)")
    else
        failed=$((failed + 1))
        results+=("FAIL  $stage ($((SECONDS - start)) s)")
    fi
done

printf '\n===== summary =====\n'
printf '%s\n' "${results[@]}"
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
