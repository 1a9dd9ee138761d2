#!/usr/bin/env bash
# Make this checkout visible to Ansible as the collection qimg.disk:
# creates $ANSIBLE_HOME/collections/ansible_collections/qimg/disk -> checkout
# (ANSIBLE_HOME defaults to .ansible/ in the checkout, ignored by git) and
# prints the directory to use as ANSIBLE_COLLECTIONS_PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
collections="${ANSIBLE_HOME:-$root/.ansible}/collections"
mkdir -p "$collections/ansible_collections/qimg"
ln -sfn "$root" "$collections/ansible_collections/qimg/disk"
printf '%s\n' "$collections"
