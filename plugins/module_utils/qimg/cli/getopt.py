# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GNU getopt_long, as qemu-img uses it (permutation, grouped short options, abbreviations,
':' mode, '--'), including which argv element it blames in its error messages."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import UsageError


class GetoptError(Exception):
    def __init__(self, kind, arg):
        super(GetoptError, self).__init__(arg)
        self.kind = kind        # "missing" or "unrecognized"
        self.arg = arg


class Getopt:
    """Iterate ``(opt, optarg)`` over argv like glibc's getopt_long (opterr off, ':' mode).

    ``shortopts`` is a getopt string without the leading ':' ('+' first means stop at the
    first non-option). ``longopts`` maps a long name to ``(takes_arg, key)``. After the loop
    ``self.argv[self.optind:]`` are the operands (argv is permuted like glibc does).
    """

    def __init__(self, argv, shortopts, longopts=None):
        self.argv = list(argv)
        self.require_order = shortopts.startswith("+")
        self.shortopts = shortopts.lstrip("+:")
        self.longopts = longopts or {}
        self.optind = 1
        self.nextchar = ""
        self.first_nonopt = self.last_nonopt = 1

    @staticmethod
    def _nonoption(arg):
        return not arg.startswith("-") or arg == "-"

    def _exchange(self):
        a, b, c = self.first_nonopt, self.last_nonopt, self.optind
        self.argv[a:c] = self.argv[b:c] + self.argv[a:b]
        self.first_nonopt += c - b
        self.last_nonopt = c

    def _blame(self):
        return self.argv[self.optind - 1]

    def __iter__(self):
        while True:
            item = self._next()
            if item is None:
                return
            yield item

    def _next(self):
        argv, argc = self.argv, len(self.argv)
        if not self.nextchar:
            self.last_nonopt = min(self.last_nonopt, self.optind)
            self.first_nonopt = min(self.first_nonopt, self.optind)
            if not self.require_order:
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.last_nonopt != self.optind:
                    self.first_nonopt = self.optind
                while self.optind < argc and self._nonoption(argv[self.optind]):
                    self.optind += 1
                self.last_nonopt = self.optind
            if self.optind != argc and argv[self.optind] == "--":
                self.optind += 1
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.first_nonopt == self.last_nonopt:
                    self.first_nonopt = self.optind
                self.last_nonopt = argc
                self.optind = argc
            if self.optind == argc:
                if self.first_nonopt != self.last_nonopt:
                    self.optind = self.first_nonopt
                return None
            if self._nonoption(argv[self.optind]):
                return None     # only reached with require_order
            arg = argv[self.optind]
            if arg.startswith("--"):
                return self._long(arg[2:])
            self.nextchar = arg[1:]
        return self._short()

    def _long(self, body):
        name, eq, value = body.partition("=")
        self.optind += 1
        self.nextchar = ""
        if name in self.longopts:
            match = name
        else:
            cands = [k for k in self.longopts if k.startswith(name)]
            # glibc accepts an abbreviation shared by entries that are all the same option.
            if not cands or len(set(self.longopts[k] for k in cands)) != 1:
                raise GetoptError("unrecognized", self._blame())
            match = cands[0]
        takes_arg, key = self.longopts[match]
        if eq:
            if not takes_arg:
                raise GetoptError("unrecognized", self._blame())
            return key, value
        if takes_arg:
            if self.optind >= len(self.argv):
                raise GetoptError("missing", self._blame())
            self.optind += 1
            return key, self.argv[self.optind - 1]
        return key, None

    def _short(self):
        c, self.nextchar = self.nextchar[0], self.nextchar[1:]
        pos = self.shortopts.find(c)
        if not self.nextchar:
            self.optind += 1
        if pos < 0 or c in ":;":
            raise GetoptError("unrecognized", self._blame())
        if self.shortopts[pos + 1:pos + 2] != ":":
            return c, None
        if self.nextchar:
            value, self.nextchar = self.nextchar, ""
            self.optind += 1
            return c, value
        if self.optind >= len(self.argv):
            raise GetoptError("missing", self._blame())
        self.optind += 1
        return c, self.argv[self.optind - 1]


class LetterGetopt(Getopt):
    """Getopt that remembers the short option letter it looked at last (for glibc's own messages)."""

    letter = ""

    def _short(self):
        self.letter = self.nextchar[:1]
        return Getopt._short(self)


def getopt(argv, shortopts, longopts):
    """Run the getopt loop; return (list of (opt, arg), operands). Raises UsageError."""
    parser = Getopt(argv, shortopts, longopts)
    try:
        opts = list(parser)
    except GetoptError as err:
        if err.kind == "missing":
            raise UsageError("missing argument for option '%s'" % err.arg)
        raise UsageError("unrecognized option '%s'" % err.arg)
    return opts, parser.argv[parser.optind:]


def iter_getopt(argv, shortopts, longopts):
    """(opt, arg) pairs in argv order; a getopt error is raised when the loop reaches it, as in qemu."""
    parser = Getopt(argv, shortopts, longopts)
    items = iter(parser)
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except GetoptError as err:
            if err.kind == "missing":
                raise UsageError("missing argument for option '%s'" % err.arg)
            raise UsageError("unrecognized option '%s'" % err.arg)
        yield item
    yield None, parser.argv[parser.optind:]
