# Copy scripts/get_pip_standin.py into ansible-test's cache under every name
# the installed ansible-test may ask for (get_pip_<major>_<minor>.py).
# Run with the Python of the virtualenv that holds ansible-test.
"""Install the get-pip.py stand-in into ansible-test's cache."""

from __future__ import annotations

import os
import re
import shutil
import sys

import ansible_test


def pip_versions() -> set[str]:
    """Return the pip versions that this ansible-test bootstraps with."""
    source = os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')

    with open(source, encoding='utf-8') as handle:
        text = handle.read()

    return set(re.findall(r"""\bpip\s*=\s*['"]([0-9][0-9.]*)['"]""", text))


def main() -> int:
    """Copy the stand-in into place."""
    here = os.path.dirname(os.path.abspath(__file__))
    standin = os.path.join(here, 'get_pip_standin.py')
    cache = os.path.expanduser('~/.ansible/test/cache')
    versions = pip_versions()

    if not versions:
        print('install_get_pip_standin: cannot find the pip version ansible-test wants', file=sys.stderr)
        return 1

    os.makedirs(cache, exist_ok=True)

    for version in sorted(versions):
        target = os.path.join(cache, 'get_pip_%s.py' % version.replace('.', '_'))
        shutil.copyfile(standin, target)
        print('==> pip bootstrap stand-in: %s' % target)

    return 0


if __name__ == '__main__':
    sys.exit(main())
