# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bin/qimg against qemu-img: same output byte for byte, same messages, same exit codes.

The first part unit-tests the CLI's parsing and formatting on data captured from qemu-img (it
needs no engine); the second part runs ``bin/qimg`` and ``qemu-img`` on the same images.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib
import json
import os

import pytest

from conftest import assert_same_as_qemu_img as same
from conftest import oracle_in, qimg, qimg_as, run

from qimg import cli


def engine_has(*modules):
    for name in modules:
        try:
            importlib.import_module("qimg.ops." + name)
        except ImportError:
            return False
    return True


needs_engine = pytest.mark.skipif(not engine_has("create", "info", "map"),
                                  reason="engine ops (create/info/map) not available yet")


# ---------------------------------------------------------------------------------------------
# Captured qemu-img 7.2 output

QEMU_INFO_CHAIN_JSON = """[
    {
        "backing-filename-format": "qcow2",
        "snapshots": [
            {
                "icount": 0,
                "vm-clock-nsec": 0,
                "name": "snap1",
                "date-sec": 1795836331,
                "date-nsec": 472142000,
                "vm-clock-sec": 0,
                "id": "1",
                "vm-state-size": 0
            }
        ],
        "virtual-size": 67108864,
        "filename": "top.qcow2",
        "cluster-size": 65536,
        "format": "qcow2",
        "actual-size": 1355776,
        "format-specific": {
            "type": "qcow2",
            "data": {
                "compat": "1.1",
                "compression-type": "zlib",
                "lazy-refcounts": false,
                "bitmaps": [
                    {
                        "flags": [
                            "auto"
                        ],
                        "name": "bm0",
                        "granularity": 65536
                    },
                    {
                        "flags": [
                        ],
                        "name": "bm1",
                        "granularity": 131072
                    }
                ],
                "refcount-bits": 16,
                "corrupt": false,
                "extended-l2": false
            }
        },
        "full-backing-filename": "base.qcow2",
        "backing-filename": "base.qcow2",
        "dirty-flag": false
    },
    {
        "virtual-size": 10485760,
        "filename": "r.raw",
        "format": "raw",
        "actual-size": 69632,
        "dirty-flag": false
    }
]
"""

QEMU_FORMAT_SPECIFIC_HUMAN = """Format specific information:
    compat: 1.1
    compression type: zlib
    lazy refcounts: false
    bitmaps:
        [0]:
            flags:
                [0]: auto
            name: bm0
            granularity: 65536
        [1]:
            flags:
            name: bm1
            granularity: 131072
    refcount bits: 16
    corrupt: false
    extended l2: false
"""

QEMU_MAP_JSON = """[{ "start": 0, "length": 524288, "depth": 1, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 524288, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 1572864, "length": 524288, "depth": 1, "present": false, "zero": true, "data": false},
{ "start": 2097152, "length": 1048576, "depth": 1, "present": true, "zero": true, "data": false},
{ "start": 3145728, "length": 63963136, "depth": 1, "present": false, "zero": true, "data": false}]
"""

QEMU_MAP_HUMAN = """Offset          Length          Mapped to       File
0               0x80000         0x50000         base.qcow2
0x80000         0x100000        0x50000         top.qcow2
"""

QEMU_RAW_HELP = """Supported raw options:
  size=<size>            - Virtual disk size

The protocol level may support further options.
Specify the target filename to include those options.
"""

QEMU_RAW_HELP_FILE = """Supported options:
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
"""


# ---------------------------------------------------------------------------------------------
# Unit tests: formatting and parsing

def test_json_roundtrip_keeps_qemu_key_order():
    data = json.loads(QEMU_INFO_CHAIN_JSON)
    assert cli.qemu_json(data) + "\n" == QEMU_INFO_CHAIN_JSON


def test_json_order_ignores_input_order():
    data = json.loads(QEMU_INFO_CHAIN_JSON)

    def shuffle(obj):
        if isinstance(obj, dict):
            return dict((k, shuffle(obj[k])) for k in sorted(obj, reverse=True))
        if isinstance(obj, list):
            return [shuffle(v) for v in obj]
        return obj

    assert cli.qemu_json(shuffle(data)) + "\n" == QEMU_INFO_CHAIN_JSON


def test_json_strings_escaped_like_qemu():
    assert cli.qemu_json({"filename": 'a"b\\c\n\x01\u00e9\U0001f600'}) == (
        '{\n    "filename": "a\\"b\\\\c\\n\\u0001\\u00E9\\uD83D\\uDE00"\n}')
    assert cli.qemu_json([]) == "[\n]"
    assert cli.qemu_json({}) == "{\n}"


def test_tdb_hash_bucket_order():
    keys = ["dirty-flag", "filename", "format", "virtual-size", "actual-size", "cluster-size"]
    assert cli.qdict_order(keys) == ["virtual-size", "filename", "cluster-size", "format",
                                     "actual-size", "dirty-flag"]


def test_human_info_layout():
    info = json.loads(QEMU_INFO_CHAIN_JSON)
    text = cli.format_info(info, "human")
    date = cli.time.strftime("%Y-%m-%d %H:%M:%S", cli.time.localtime(1795836331))
    head = ("image: top.qcow2\n"
            "file format: qcow2\n"
            "virtual size: 64 MiB (67108864 bytes)\n"
            "disk size: 1.29 MiB\n"
            "cluster_size: 65536\n"
            "backing file: base.qcow2\n"
            "backing file format: qcow2\n"
            "Snapshot list:\n"
            "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
            "1         snap1                 0 B %s 00:00:00.000          0\n" % date)
    tail = ("\n"
            "image: r.raw\n"
            "file format: raw\n"
            "virtual size: 10 MiB (10485760 bytes)\n"
            "disk size: 68 KiB\n")
    assert text == head + QEMU_FORMAT_SPECIFIC_HUMAN + tail


def test_human_info_backing_paths():
    base = {"filename": "t", "format": "qcow2", "virtual-size": 0, "actual-size": 0,
            "backing-filename": "b"}
    assert "backing file: b (cannot determine actual path)\n" in cli.format_info_human(base)
    base["full-backing-filename"] = "/x/b"
    assert "backing file: b (actual path: /x/b)\n" in cli.format_info_human(base)
    base["dirty-flag"] = True
    assert "cleanly shut down: no\n" in cli.format_info_human(base)
    del base["actual-size"]
    assert "disk size: unavailable\n" in cli.format_info_human(base)


def test_map_formats():
    entries = [json.loads(line.strip("[],\n")) for line in QEMU_MAP_JSON.splitlines()]
    assert cli.format_map(entries, "json") == (QEMU_MAP_JSON, None)
    for e in entries:
        e["filename"] = "top.qcow2" if e["depth"] == 0 else "base.qcow2"
    assert cli.format_map(entries, "human") == (QEMU_MAP_HUMAN, None)


def test_map_empty_and_compressed():
    assert cli.format_map([], "json", 100) == (
        '[{ "start": 100, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n', None)
    text, err = cli.format_map([{"start": 0, "length": 512, "depth": 0, "present": True, "zero": False,
                                 "data": True, "filename": "c"}], "human")
    assert text == cli.MAP_HEADER
    assert err == "File contains external, encrypted or compressed clusters."


def test_option_help_layout():
    raw = [("size", "size", "Virtual disk size")]
    assert cli.format_option_help("raw", raw, None) == QEMU_RAW_HELP
    assert cli.format_option_help("raw", raw, "x.raw") == QEMU_RAW_HELP_FILE


def test_formatting_line():
    pairs = [("cluster_size", 65536), ("extended_l2", "off"), ("size", 1048576), ("backing_file", "a,b")]
    assert cli.format_formatting_line("x", "qcow2", pairs, {"backing_file": "str"}) == (
        "Formatting 'x', fmt=qcow2 cluster_size=65536 extended_l2=off size=1048576 backing_file=a,,b\n")


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("1000", 1000), ("100b", 100), ("100B", 100), ("1k", 1024), ("1K", 1024),
    ("1m", 1 << 20), ("1.5M", 1572864), ("1.k", 1024), ("0x100", 256), (" 12", 12), ("+5", 5),
    ("1e", 1 << 60), ("7E", 7 << 60), ("0.5k", 512), ("1.0009765625k", 1025),
])
def test_strtosz_valid(text, value):
    assert cli.strtosz(text)[0] == value


@pytest.mark.parametrize("text", ["", "x", "1.5", "1.5b", "1e3", "1.5e3", "-5", "1k1", "1 k", "0x1.5",
                                  "99999999999999999999999x", "12Q"])
def test_strtosz_invalid(text):
    with pytest.raises(ValueError):
        cli.strtosz(text)


@pytest.mark.parametrize("text", ["16E", "99999999999999999999999"])
def test_strtosz_range(text):
    with pytest.raises(OverflowError):
        cli.strtosz(text)


def test_cvtnum_messages():
    with pytest.raises(cli.CommandError) as exc:
        cli.cvtnum("image size", "8E")
    assert exc.value.lines == ["Invalid image size specified. Must be between 0 and 9223372036854775807."]
    with pytest.raises(cli.CommandError) as exc:
        cli.cvtnum("max length", "x")
    assert exc.value.lines == [
        "Invalid max length specified. You may use k, M, G, T, P or E suffixes for",
        "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."]
    warnings = []
    assert cli.cvtnum("start offset", "0x1k", warnings.append) == 1024
    assert warnings == ["Using a multiplier suffix on hex numbers is deprecated: 0x1k"]


INFO_LONG = {"format": (True, "f"), "output": (True, "output"), "backing-chain": (False, "bc"),
             "force-share": (False, "U")}


@pytest.mark.parametrize("argv,opts,args", [
    (["info", "-U", "a"], [("U", None)], ["a"]),
    (["info", "a", "-fqcow2", "--output", "json"], [("f", "qcow2"), ("output", "json")], ["a"]),
    (["info", "--out=json", "--back", "a"], [("output", "json"), ("bc", None)], ["a"]),
    (["info", "-Uf", "raw", "--", "-a", "-U"], [("U", None), ("f", "raw")], ["-a", "-U"]),
    (["info", "x", "-", "y"], [], ["x", "-", "y"]),
])
def test_getopt(argv, opts, args):
    assert cli._getopt(argv, ":f:hU", INFO_LONG) == (opts, args)


@pytest.mark.parametrize("argv,message", [
    (["info", "-z", "a"], "unrecognized option '-z'"),
    (["info", "-Uz", "a"], "unrecognized option '-Uz'"),
    (["info", "-zU", "a"], "unrecognized option 'info'"),
    (["info", "a", "-U", "-zU"], "unrecognized option 'a'"),
    (["info", "--foo=bar"], "unrecognized option '--foo=bar'"),
    (["info", "--f", "a"], "unrecognized option '--f'"),
    (["info", "--backing-chain=1", "a"], "unrecognized option '--backing-chain=1'"),
    (["info", "a", "-f"], "missing argument for option '-f'"),
    (["info", "--output"], "missing argument for option '--output'"),
])
def test_getopt_errors(argv, message):
    with pytest.raises(cli.UsageError) as exc:
        cli._getopt(argv, ":f:hU", INFO_LONG)
    assert str(exc.value) == message


def test_option_list_helpers():
    assert cli._split_opt_list("a=b,,c,help") == ["a=b,c", "help"]
    assert not cli._valid_option_list("")
    assert not cli._valid_option_list(",a")
    assert not cli._valid_option_list("a,")
    assert cli._valid_option_list("a,,")


# ---------------------------------------------------------------------------------------------
# bin/qimg against qemu-img

@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io):
    """A directory of images made by qemu-img/qemu-io; names relative to it."""
    d = str(tmp_path_factory.mktemp("images"))
    q, io = oracle_in(d, qemu_img, qemu_io)

    q("create", "-q", "-f", "qcow2", "plain.qcow2", "64M")
    q("create", "-q", "-f", "qcow2", "base.qcow2", "64M")
    io("qcow2", "base.qcow2", "write -P 1 0 1M", "write -z 2M 1M", "write -P 3 5M 64k")
    q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    io("qcow2", "top.qcow2", "write -P 2 512k 1M")
    q("snapshot", "-c", "snap1", "top.qcow2")
    io("qcow2", "top.qcow2", "write -P 4 8M 128k")
    q("snapshot", "-c", "snap2", "top.qcow2")
    q("bitmap", "--add", "top.qcow2", "bm0")
    q("bitmap", "--add", "-g", "128k", "top.qcow2", "bm1")
    q("bitmap", "--disable", "top.qcow2", "bm1")
    q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "10M")
    q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4k", "lazy.qcow2", "1G")
    q("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "ext.qcow2", "3G")
    io("qcow2", "ext.qcow2", "write -P 5 4k 4k")
    q("create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", "rc1.qcow2", "1M")
    q("create", "-q", "-f", "raw", "r.raw", "10M")
    io("raw", "r.raw", "write -P 1 1M 64k")
    q("create", "-q", "-f", "qcow2", "empty.qcow2", "0")
    q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "dirty.qcow2", "1M")
    proc = run([qemu_io, "-c", "write 0 64k", "-c", "abort", "dirty.qcow2"], check=False, cwd=d)
    assert proc.returncode != 0     # abort() leaves the dirty bit set
    q("convert", "-c", "-O", "qcow2", "top.qcow2", "comp.qcow2")
    q("create", "-q", "-f", "qcow2", "-b", os.path.join(d, "base.qcow2"), "-F", "qcow2", 'sp ace \u00e9"q.qcow2')
    os.mkdir(os.path.join(d, "sub"))
    q("create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "sub/child.qcow2")
    return d


INFO_IMAGES = ["plain.qcow2", "top.qcow2", "base.qcow2", "v2.qcow2", "lazy.qcow2", "ext.qcow2",
               "rc1.qcow2", "r.raw", "empty.qcow2", "sub/child.qcow2", "dirty.qcow2", "comp.qcow2",
               'sp ace \u00e9"q.qcow2']


@needs_engine
@pytest.mark.parametrize("name", INFO_IMAGES)
@pytest.mark.parametrize("extra", [["--output=json"], [], ["--output", "json", "--backing-chain"],
                                   ["--backing-chain"], ["-U", "--output=human"]])
def test_info_matches(qemu_img, as_qemu_img, images, name, extra):
    same(qemu_img, as_qemu_img, ["info"] + extra + [name], images)


@needs_engine
@pytest.mark.parametrize("extra", [["-f", "raw"], ["-f", "qcow2"]])
def test_info_forced_format(qemu_img, as_qemu_img, images, extra):
    same(qemu_img, as_qemu_img, ["info", "--output=json"] + extra + ["r.raw" if extra[1] == "raw" else "plain.qcow2"],
         images)


@needs_engine
@pytest.mark.parametrize("name", ["plain.qcow2", "top.qcow2", "base.qcow2", "r.raw", "ext.qcow2",
                                  "empty.qcow2", "sub/child.qcow2", "dirty.qcow2", "comp.qcow2",
                                  'sp ace \u00e9"q.qcow2'])
@pytest.mark.parametrize("extra", [["--output=json"], [], ["--output=human", "--start-offset=1M", "--max-length=1M"],
                                   ["--output=json", "--start-offset", "768k", "--max-length", "5M"],
                                   ["--output=json", "--start-offset=200M"]])
def test_map_matches(qemu_img, as_qemu_img, images, name, extra):
    same(qemu_img, as_qemu_img, ["map"] + extra + [name], images)


CREATE_CASES = [
    ["-f", "qcow2", "x.img", "64M"],
    ["-f", "raw", "x.img", "10M"],
    ["x.img", "1000b"],
    ["-f", "qcow2", "-o", "cluster_size=4k", "x.img", "1G"],
    ["-f", "qcow2", "-o", "compat=0.10", "x.img", "1M"],
    ["-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on", "x.img", "1.5M"],
    ["-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "x.img", "3G"],
    ["-f", "qcow2", "-o", "refcount_bits=64", "-o", "lazy_refcounts=true", "x.img", "1M"],
    ["-f", "qcow2", "-o", "size=5M", "x.img"],
    ["-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "x.img"],
    ["-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "x.img", "128M"],
    ["-f", "qcow2", "-u", "-b", "nofile", "-F", "raw", "x.img", "1M"],
    ["-q", "-f", "qcow2", "x.img", "1M"],
    ["-f", "qcow2", "--", "x.img", "1M"],
    ["-f", "qcow2", "-u", "-b", "a,b", "-F", "qcow2", "x.img", "1M"],
    ["-f", "qcow2", "-o", "backing_file=../base.qcow2,backing_fmt=qcow2,cluster_size=2M", "x.img"],
    ["-f", "raw", "-o", "preallocation=full", "x.img", "0x10k"],
    ["-f", "qcow2", "-o", "preallocation=metadata,extended_l2=on", "-b", "../base.qcow2", "-F", "qcow2", "x.img"],
]


@needs_engine
@pytest.mark.parametrize("args", CREATE_CASES)
def test_create_matches(qemu_img, as_qemu_img, images, tmp_path, args):
    """Same Formatting line, messages and code; the images sit next to base.qcow2 ("../base.qcow2")."""
    outs = []
    for tool in ("qemu", "qimg"):
        d = os.path.join(images, "create-%s-%s" % (tmp_path.name, tool))
        os.mkdir(d)
        if tool == "qemu":
            proc = run([qemu_img, "create"] + args, check=False, cwd=d)
        else:
            proc = as_qemu_img("create", *args, cwd=d)
        outs.append((proc.stdout, proc.stderr, proc.returncode))
    assert outs[1] == outs[0]
    assert outs[0][2] == 0


@needs_engine
@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "-o", "help"],
    ["-f", "raw", "-o", "help"],
    ["-o", "?"],
    ["-f", "qcow2", "-o", "help", "x.img"],
    ["-f", "raw", "-o", "cluster_size=1k,help", "x.img", "1M"],
    ["-q", "-f", "qcow2", "-o", "help"],
    ["-f", "foo", "-o", "help"],
])
def test_create_option_help(qemu_img, as_qemu_img, tmp_path, args):
    same(qemu_img, as_qemu_img, ["create"] + args, str(tmp_path))
    assert not os.path.exists(str(tmp_path / "x.img"))


# (arguments, reaches the engine)
ERROR_CASES = [
    (["info", "nofile"], True),
    (["info", "--output=json", "nofile"], True),
    (["map", "nofile"], True),
    (["info", "-f", "foo", "plain.qcow2"], True),
    (["create", "-f", "foo", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "x.img"], True),
    (["create", "-f", "qcow2", "-o", "foo=bar", "x.img", "1M"], True),
    (["create", "-f", "raw", "-o", "cluster_size=4k", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-o", "size=1M", "x.img", "2M"], True),
    (["create", "-f", "qcow2", "-o", "cluster_size=3k", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-b", "nofile", "-F", "qcow2", "-u", "x.img"], True),
    (["create", "-f", "qcow2", "-b", "plain.qcow2", "x.img"], True),
    (["create", "-f", "raw", "-b", "plain.qcow2", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-b", "x.img", "-F", "qcow2", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-b", "nofile", "-F", "qcow2", "x.img"], True),
    (["create", "-f", "qcow2", "-o", "compat=2", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "-o", "cluster_size=abc", "x.img", "1M"], True),
    (["create", "-f", "qcow2", "x.img", "12Q"], False),
    (["create", "-f", "qcow2", "x.img", "1.5"], False),
    (["create", "-f", "qcow2", "x.img", "9E"], False),
    (["create", "-f", "qcow2", "x.img", "--", "-1"], False),
    (["create", "-f", "qcow2", "-o", "", "x.img", "1M"], False),
    (["create", "-f", "qcow2", "-o", "a,", "x.img", "1M"], False),
    (["create"], False),
    (["create", "-f", "qcow2", "x.img", "1M", "2M"], False),
    (["info"], False),
    (["info", "a", "b"], False),
    (["map"], False),
    (["info", "-z", "plain.qcow2"], False),
    (["info", "-Uz", "plain.qcow2"], False),
    (["info", "--foo", "plain.qcow2"], False),
    (["info", "--backing-chain=yes", "plain.qcow2"], False),
    (["map", "--start-offset=abc", "plain.qcow2"], False),
    (["map", "--max-length=-1", "plain.qcow2"], False),
    (["map", "--max-length=8E", "plain.qcow2"], False),
    (["info", "--output=xml", "plain.qcow2"], False),
    (["map", "--output=", "plain.qcow2"], False),
    (["info", "--output"], False),
    (["create", "-f"], False),
    (["nosuchcommand"], False),
    ([], False),
    (["-z"], False),
    (["--bogus"], False),
]


@pytest.mark.parametrize("args,engine", ERROR_CASES)
def test_errors_match(qemu_img, as_qemu_img, images, tmp_path, args, engine):
    if engine and not engine_has("create", "info", "map"):
        pytest.skip("engine ops (create/info/map) not available yet")
    d = tmp_path / "w"
    d.mkdir()
    os.symlink(os.path.join(images, "plain.qcow2"), str(d / "plain.qcow2"))
    got = same(qemu_img, as_qemu_img, args, str(d))
    assert got.returncode != 0
    assert "Traceback" not in got.stderr
    assert not os.path.exists(str(d / "x.img"))


def test_program_name_from_argv0(tmp_path):
    as_qemu = qimg_as("qemu-img", tmp_path)
    proc = as_qemu("info")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "qemu-img: Expecting one image file name"
    proc = as_qemu("nosuch")
    assert proc.stderr.startswith("qemu-img: Command not found: nosuch\n")
    proc = qimg("info", check=False)
    assert proc.stderr.startswith("qimg: Expecting one image file name\n")
    assert proc.returncode == 1


def test_version_and_help():
    proc = qimg("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("qimg version ")
    assert qimg("-V").stdout == proc.stdout
    helptext = qimg("--help").stdout
    assert "usage: qimg [standard options] command [command options]" in helptext
    assert qimg("info", "-h").stdout == helptext
    assert qimg("-h").stdout == helptext


def test_internal_error_is_one_line(tmp_path, monkeypatch, capsys):
    def boom(argv, ctx):
        raise RuntimeError("bad\nthing")
    monkeypatch.setitem(cli.COMMANDS, "info", boom)
    assert cli.main(["qimg", "info", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "qimg: internal error: RuntimeError: bad thing\n"
    monkeypatch.setenv("QIMG_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["qimg", "info", "x"])


def test_keyboard_interrupt(monkeypatch, capsys):
    def stop(argv, ctx):
        raise KeyboardInterrupt()
    monkeypatch.setitem(cli.COMMANDS, "map", stop)
    assert cli.main(["qemu-img", "map", "x"]) == 130
    assert capsys.readouterr().err == "qemu-img: interrupted\n"


def test_qimg_error_one_line(monkeypatch, capsys):
    from qimg.errors import ImageCorrupt

    def corrupt(argv, ctx):
        raise ImageCorrupt("x: bad L1\ntable")
    monkeypatch.setitem(cli.COMMANDS, "info", corrupt)
    assert cli.main(["/usr/bin/qimg", "info", "x"]) == 1
    assert capsys.readouterr().err == "qimg: x: bad L1 table\n"


def test_info_start_up_imports_only_what_it_needs(tmp_path, qemu_img):
    """`info` is start-up bound: no pipeline (threading, queue), creator, importlib or other command."""
    import subprocess
    import sys
    img = str(tmp_path / "s.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "1M"])
    code = ("import sys; sys.argv = ['qimg', 'info', %r]; sys.path.insert(0, %r); import qimg.cli; "
            "rc = qimg.cli.main(sys.argv); print(' '.join(sorted(sys.modules)), file=sys.stderr); sys.exit(rc)"
            % (img, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "plugins",
                                 "module_utils")))
    proc = subprocess.run([sys.executable, "-S", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stderr.split())
    assert "qimg.cli.cmd_info" in loaded
    for name in ("threading", "queue", "importlib", "json", "re", "qimg.formats.qcow2.create",
                 "qimg.cli.cmd_convert", "qimg.cli.progress", "qimg.cli.help", "qimg.ops.create"):
        assert name not in loaded
