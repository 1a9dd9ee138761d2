# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU `--object secret,...` objects and the registry that holds their data.

The object text uses QEMU's keyval syntax (qom-type implied by the first bare word, `,,` is a
literal comma in values, the last of a repeated key wins) or a JSON object. Messages follow
QEMU 7.2 (qom/object_interfaces.c, util/keyval.c, crypto/secret*.c). The secret's bytes never
appear in a message, a repr or a log: only ids do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import re

from ..errors import InvalidArgument, QimgError

# the qom-types `qemu-img --object help` lists; only `secret` is implemented here
OBJECT_TYPES = (
    "authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper", "secret",
    "secret_keyring", "thread-context", "throttle-group", "tls-cipher-suites", "tls-creds-anon",
    "tls-creds-psk", "tls-creds-x509",
)
SECRET_PROPERTIES = ("data", "file", "format", "iv", "keyid")
SECRET_HELP = ["secret options:", "  data=<string>", "  file=<string>", "  format=<QCryptoSecretFormat>",
               "  iv=<string>", "  keyid=<string>"]
_ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."
_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")
_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n")


class SecretError(QimgError):
    """A secret object could not be parsed, loaded or found."""


class ObjectSpec(object):
    """A parsed --object: kind (the qom-type, or "help"), id, and its other properties (strings).

    Unpacks as (kind, id, props). repr shows only the kind, the id and the property names.
    """

    __slots__ = ("kind", "id", "props", "help")

    def __init__(self, kind, obj_id, props, want_help=False):
        self.kind = kind
        self.id = obj_id
        self.props = props
        self.help = want_help

    def __iter__(self):
        return iter((self.kind, self.id, self.props))

    def help_lines(self):
        """What qemu-img prints for `--object help` / `--object secret,help`."""
        if self.kind == "secret":
            return list(SECRET_HELP)
        return ["List of user creatable objects:"] + ["  " + name for name in OBJECT_TYPES]

    def __repr__(self):
        return "ObjectSpec(kind=%r, id=%r, props=%r)" % (self.kind, self.id, sorted(self.props))


def _keyval_parse(text):
    """QEMU's keyval_parse with implied key qom-type: (dict, help_requested). Dotted keys give
    nested dicts (only to reproduce QEMU's complaints about them)."""
    result = {}
    want_help = False
    pos = 0
    n = len(text)
    first = True
    while pos < n or first:
        if pos >= n:
            break
        seg_end = pos
        while seg_end < n and text[seg_end] not in "=,":
            seg_end += 1
        length = seg_end - pos
        if length and (seg_end >= n or text[seg_end] != "="):
            word = text[pos:seg_end]
            if word in ("help", "?"):
                want_help = True
                pos = seg_end + 1 if seg_end < n else seg_end
                first = False
                continue
            if first:
                # the implied key takes the bare word verbatim (no ',,' unescaping)
                result["qom-type"] = word
                pos = seg_end + 1 if seg_end < n else seg_end
                first = False
                continue
        first = False
        key = text[pos:seg_end]
        frags = key.split(".")
        for i, frag in enumerate(frags):
            ok = _KEY_RE.match(frag)
            if not frag or not ok or ok.end() != len(frag) or (i == 0 and frag[0].isdigit()):
                if not (i and frag.isdigit()):
                    raise SecretError("Invalid parameter '%s'" % key)
            if len(frag) >= 128:
                raise SecretError("Parameter%s '%s' is too long" % (" fragment" if len(frags) > 1 else "", frag))
        if seg_end >= n or text[seg_end] != "=":
            raise SecretError("Expected '=' after parameter '%s'" % key)
        pos = seg_end + 1
        val = []
        while pos < n:
            c = text[pos]
            if c == ",":
                pos += 1
                if pos >= n or text[pos] != ",":
                    break
            val.append(text[pos])
            pos += 1
        cur = result
        for i, frag in enumerate(frags[:-1]):
            old = cur.get(frag)
            if old is not None and not isinstance(old, dict):
                raise SecretError("Parameters '%s.*' used inconsistently" % ".".join(frags[:i + 1]))
            cur = cur.setdefault(frag, {})
        leaf = frags[-1]
        if isinstance(cur.get(leaf), dict):
            raise SecretError("Parameters '%s.*' used inconsistently" % key)
        cur[leaf] = "".join(val)
    return result, want_help


def parse_object(text):
    """Parse one --object argument into an ObjectSpec (raises SecretError with qemu's message).

    Only syntax and property names are checked here; load_secret() reads the data.
    """
    text = str(text)
    want_help = False
    if text.startswith("{"):
        try:
            opts = json.loads(text)
        except ValueError:
            raise SecretError("JSON parse error, %s" % "invalid JSON object")
        if not isinstance(opts, dict):
            raise SecretError("JSON parse error, %s" % "expected an object")
    else:
        opts, want_help = _keyval_parse(text)
    kind = opts.get("qom-type")
    if kind is None:
        if want_help:
            return ObjectSpec("help", None, {}, True)
        raise SecretError("Parameter 'qom-type' is missing")
    if not isinstance(kind, str):
        raise SecretError("Invalid parameter type for 'qom-type', expected: string")
    if kind not in OBJECT_TYPES:
        if kind in ("iothread", "memory-backend-file", "memory-backend-ram", "rng-random"):
            raise SecretError("invalid object type: %s" % kind)
        raise SecretError("Parameter 'qom-type' does not accept value '%s'" % kind)
    if want_help:
        return ObjectSpec(kind, None, {}, True)
    if kind != "secret":
        raise SecretError("Object type '%s' is not supported by qimg (only 'secret' is)" % kind)
    obj_id = opts.get("id")
    if obj_id is None:
        raise SecretError("Parameter 'id' is missing")
    props = {}
    for key, value in opts.items():
        if key in ("qom-type", "id"):
            continue
        if key == "loaded":
            raise SecretError("Property 'secret.loaded' is not writable")
        if key not in SECRET_PROPERTIES:
            raise SecretError("Parameter '%s' is unexpected" % key)
        if isinstance(value, dict):
            raise SecretError("Parameters '%s.*' are unexpected" % key)
        if not isinstance(value, str):
            raise SecretError("Invalid parameter type for '%s', expected: string" % key)
        props[key] = value
    if isinstance(obj_id, dict):
        raise SecretError("Parameters 'id.*' are unexpected")
    fmt = props.get("format", "raw")
    if fmt not in ("raw", "base64"):
        raise SecretError("Parameter 'format' does not accept value '%s'" % fmt)
    if not isinstance(obj_id, str) or not _ID_RE.match(obj_id):
        raise SecretError("Parameter 'id' expects an identifier", hint=[_ID_HINT])
    return ObjectSpec(kind, obj_id, props)


def _b64decode(data):
    """qbase64_decode: the character check, then glib's lenient decoder (bytes in, bytes out)."""
    if b"\0" in data:
        raise SecretError("Base64 data contains embedded NUL characters")
    if any(c not in _B64_CHARS for c in bytearray(data)):
        raise SecretError("Base64 data contains invalid characters")
    body = data.replace(b"\n", b"")
    core = body.rstrip(b"=")
    if b"=" in core:
        # glib stops at padding; what follows is ignored
        core = core.split(b"=", 1)[0]
    usable = len(core) - len(core) % 4
    rest = len(core) % 4
    try:
        out = binascii.a2b_base64(core[:usable]) if usable else b""
        if rest >= 2:
            out += binascii.a2b_base64(core[usable:] + b"=" * (4 - rest))
    except binascii.Error:
        raise SecretError("Base64 data contains invalid characters")
    return out


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise SecretError("Unable to read %s: Error reading file \u201c%s\u201d: Is a directory" % (path, path))
    except (IOError, OSError) as e:
        raise SecretError("Unable to read %s: Failed to open file \u201c%s\u201d: %s" % (path, path, e.strerror))


def _decrypt_with_keyid(store, props, data, own_id=None):
    """A secret encrypted with another secret (keyid): AES-256-CBC, base64 IV, PKCS#7-ish padding."""
    if props["keyid"] == own_id:
        # QEMU has registered the object (still without data) when it looks the key up
        raise SecretError("Secret with id '%s' has no data" % own_id)
    key = store.lookup(props["keyid"])
    if len(key) != 32:
        raise SecretError("Key should be 32 bytes in length")
    if "iv" not in props:
        raise SecretError("IV is required to decrypt secret")
    iv = _b64decode(props["iv"].encode("utf-8"))
    if len(iv) != 16:
        raise SecretError("IV should be 16 bytes in length not %d" % len(iv))
    if props.get("format", "raw") == "base64":
        data = _b64decode(data)
    from .backend import require
    cr = require()
    if not data or len(data) % 16:
        raise SecretError("Incorrect number of padding bytes (%d) found on decrypted data" % (0,))
    dec = cr.Cipher(cr.algorithms.AES(key), cr.modes.CBC(iv)).decryptor()
    plain = dec.update(data) + dec.finalize()
    pad = bytearray(plain)[-1]
    if pad > 16 or pad > len(plain):
        raise SecretError("Incorrect number of padding bytes (%d) found on decrypted data" % pad)
    return plain[:len(plain) - pad]


def load_secret(spec, store=None):
    """The bytes of a parsed secret object (reading its file, decoding base64, decrypting with keyid)."""
    props = spec.props
    if "file" in props:
        if "data" in props:
            raise SecretError("'file' and 'data' are mutually exclusive")
        data = _read_file(props["file"])
    elif "data" in props:
        data = props["data"].encode("utf-8", "surrogateescape")
    else:
        raise SecretError("Either 'file' or 'data' must be provided")
    if "keyid" in props:
        return _decrypt_with_keyid(store if store is not None else SecretStore(), props, data, spec.id)
    if props.get("format", "raw") == "base64":
        return _b64decode(data)
    return data


class SecretStore(object):
    """Secret id -> bytes, as QEMU's object root holds them. Never prints the bytes."""

    def __init__(self):
        self._data = {}

    def add(self, secret_id, data):
        """Register a secret given directly (bytes, or str taken as UTF-8)."""
        if secret_id in self._data:
            raise SecretError("attempt to add duplicate property '%s' to object (type 'container')" % secret_id)
        if not isinstance(data, (bytes, bytearray)):
            data = str(data).encode("utf-8")
        self._data[secret_id] = bytes(data)

    def add_object(self, text):
        """Parse and load one --object text; returns the ObjectSpec (kind "help" objects load nothing)."""
        spec = text if isinstance(text, ObjectSpec) else parse_object(text)
        if spec.help:
            return spec
        self.add(spec.id, load_secret(spec, self))
        return spec

    def lookup(self, secret_id):
        """The secret's bytes; qemu's message when there is none."""
        try:
            return self._data[secret_id]
        except (KeyError, TypeError):
            raise SecretError("No secret with id '%s'" % (secret_id,))

    def lookup_utf8(self, secret_id):
        """The secret as text (LUKS and AES passphrases); invalid UTF-8 is refused as qemu does."""
        data = self.lookup(secret_id)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError("Data from secret %s is not valid UTF-8" % secret_id)

    def lookup_passphrase(self, secret_id):
        """The passphrase bytes as QEMU uses them (up to the first NUL, as a C string), validated as UTF-8."""
        self.lookup_utf8(secret_id)
        data = self._data[secret_id]
        return data.split(b"\0", 1)[0]

    def __contains__(self, secret_id):
        return secret_id in self._data

    def __len__(self):
        return len(self._data)

    def ids(self):
        return sorted(self._data)

    def __repr__(self):
        return "SecretStore(ids=%r)" % (self.ids(),)

    __str__ = __repr__


def store_from_objects(texts):
    """A SecretStore built from several --object texts (in order, so keyid can name an earlier one)."""
    store = SecretStore()
    for text in texts or ():
        store.add_object(text)
    return store


def require_key_secret(secret_id, prefix=""):
    """qemu's message when an encrypted image is opened without a key-secret option."""
    if not secret_id:
        raise InvalidArgument("Parameter '%skey-secret' is required for cipher" % prefix)
    return secret_id
