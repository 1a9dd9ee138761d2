# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CLI's own exceptions: what main() turns into qemu-img's messages and exit codes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class UsageError(Exception):
    """qemu-img's error_exit(): message, then the "Try ... --help" line, exit 1."""


class CommandError(Exception):
    """A plain error_report() followed by exit code ``code``; lines are printed one by one."""

    def __init__(self, lines, code=1, hint=None):
        if isinstance(lines, str):
            lines = [lines]
        super(CommandError, self).__init__(lines[0])
        self.lines = lines
        self.code = code
        self.hint = list(hint or [])  # qemu's error_printf() text: no prefix, printed verbatim


class HelpRequested(Exception):
    """-h/--help anywhere: print the help text and exit 0."""
