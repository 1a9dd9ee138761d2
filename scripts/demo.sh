#!/usr/bin/env bash
# Run the demo playbook (demo/demo.yml) against localhost, using this checkout
# as the qimg.disk collection. Run `make setup` (scripts/setup.sh) first.
# Extra arguments go to ansible-playbook (e.g. -v, --check, --diff).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"

# ANSIBLE_HOME inside the checkout (ignored by git), so nothing from ~/.ansible
# shadows this checkout; the collection is a symlink to the checkout.
export ANSIBLE_HOME="$root/.ansible"
ANSIBLE_COLLECTIONS_PATH="$(scripts/link-collection.sh)"
export ANSIBLE_COLLECTIONS_PATH

exec "$venv/bin/ansible-playbook" -i demo/inventory.yml demo/demo.yml "$@"
