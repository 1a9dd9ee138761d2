# Stand-in for ansible-test's pip bootstrap script (get-pip.py).
#
# ansible-test downloads get-pip.py from a host that this machine cannot reach,
# even with --local, unless it finds the script in its cache
# (~/.ansible/test/cache/get_pip_<version>.py). scripts/install_get_pip_standin.py
# copies this file there. ansible-test runs it as
#     python get_pip_X_Y.py pip==X.Y --disable-pip-version-check --no-setuptools --no-wheel
# inside a fresh virtual environment. We bootstrap pip with ensurepip in a
# subprocess (an in-process ensurepip hides /etc/pip.conf, which may carry the
# CA settings needed to reach the package index), then install the requested
# pip version with that pip.
"""Bootstrap pip like get-pip.py does, without downloading get-pip.py."""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    """Install pip (and any other requested packages) into sys.executable's environment."""
    ignored = {'--no-setuptools', '--no-wheel'}
    packages = [arg for arg in argv if not arg.startswith('-')]
    options = [arg for arg in argv if arg.startswith('-') and arg not in ignored]

    subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade'], check=True, stdout=subprocess.DEVNULL)

    if packages:
        subprocess.run([sys.executable, '-m', 'pip', 'install'] + options + packages, check=True)

    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
