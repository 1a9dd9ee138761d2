# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Version and help texts; COMMAND_SYNTAX lists one syntax line per command (new commands append)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


__version__ = "0.1.0"


COMMAND_SYNTAX = [
    "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename",
    "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] "
    "[-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap",
    "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] "
    "[-U] filename",
    "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] "
    "filename1 filename2",
    "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] "
    "[-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
    "[-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] "
    "filename [filename2 [...]] output_filename",
    "create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
    "info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
    "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] "
    "[-U] filename",
    "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] "
    "[-l snapshot_param] filename]",
    "snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename",
    "resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] "
    "filename [+ | -]size",
    "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
    "-b backing_file [-F backing_fmt] filename",
    "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] "
    "filename",
    "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output",
    "checksum [--object objectdef] [--image-opts] [-f fmt] [-U] [-p] [-a algorithm] filename",
]


def version_text(prog):
    return ("%s version %s (qimg.disk, pure-Python qemu-img 7.2 compatible)\n"
            "Copyright (c) qimg.disk contributors\n" % (prog, __version__))


def help_text(prog):
    return version_text(prog) + (
        "usage: %(prog)s [standard options] command [command options]\n"
        "Disk image utility (pure Python, qemu-img compatible)\n"
        "\n"
        "    '-h', '--help'       display this help and exit\n"
        "    '-V', '--version'    output version information and exit\n"
        "\n"
        "Command syntax:\n"
        "%(syntax)s"
        "\n"
        "Command parameters:\n"
        "  'filename' is a disk image filename\n"
        "  'fmt' is the disk image format (raw or qcow2). It is guessed automatically in most cases\n"
        "  'size' is the disk image size in bytes. Optional suffixes\n"
        "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
        "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
        "    supported. 'b' is ignored.\n"
        "  'options' is a comma separated list of format specific options in a\n"
        "    name=value format. Use -o help for an overview of the options supported by\n"
        "    the used format\n"
        "  '-u' allows unsafe backing chains. For image creation, allow creating without\n"
        "       attempting to open the backing file.\n"
        "  '-h' with or without a command shows this help\n"
        "  '-q' use Quiet mode - do not print any output (except errors)\n"
        "  '--output' takes the format in which the output must be done (human or json)\n"
        "  'output_filename' is the destination disk image filename\n"
        "  'output_fmt' is the destination format\n"
        "  'snapshot_param' is param used for internal snapshot, format\n"
        "    is 'snapshot.id=[ID],snapshot.name=[NAME]', or\n"
        "    '[ID_OR_NAME]'\n"
        "  'cache' is the cache mode used to write the output disk image, the valid\n"
        "    options are: 'none', 'writeback' (default, except for convert), 'writethrough',\n"
        "    'directsync' and 'unsafe' (default for convert)\n"
        "  'src_cache' is the cache mode used to read input disk images, the valid\n"
        "    options are the same as for the 'cache' option\n"
        "    (none/directsync: O_DIRECT; writethrough/directsync: every write durable (O_DSYNC);\n"
        "    writeback: synced before the command returns; unsafe: never synced)\n"
        "  '-c' indicates that target image must be compressed (qcow format only)\n"
        "  '-p' show progress of command (only certain commands)\n"
        "  '-S' indicates the consecutive number of bytes (defaults to 4k) that must\n"
        "       contain only zeros for qemu-img to create a sparse image during\n"
        "       conversion. If the number of bytes is 0, the source will not be scanned for\n"
        "       unallocated or zero sectors, and the destination image will always be\n"
        "       fully allocated\n"
        "  '-n' skips the target volume creation (useful if the volume is created\n"
        "       prior to running qemu-img)\n"
        "\n"
        "Parameters to check subcommand:\n"
        "  '-r' tries to repair any inconsistencies that are found during the check.\n"
        "       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
        "       kinds of errors, with a higher risk of choosing the wrong fix or\n"
        "       hiding corruption that has already occurred.\n"
        "\n"
        "Parameters to convert subcommand:\n"
        "  '--progress=json' (qimg extension) prints one JSON object per line on stdout while\n"
        "       converting: {\"done\": bytes, \"total\": bytes, \"elapsed\": seconds}, the last\n"
        "       one with done == total; '--progress=human' is '-p'\n"
        "  '--salvage' continues past read and block status errors of the sources: a\n"
        "       warning for each unreadable sector, which is written as zeros\n"
        "  '-C' (copy offloading), '-m', '-W' and '-r' are accepted and validated\n"
        "       like qemu-img's; they have no effect\n"
        "  '--bitmaps' copies all top-level persistent bitmaps to destination\n"
        "  '--skip-broken-bitmaps' skips (with a warning) the bitmaps --bitmaps cannot copy\n"
        "\n"
        "Parameters to bitmap subcommand:\n"
        "  'bitmap' is the name of the bitmap to manipulate, through one or more\n"
        "       actions from '--add', '--remove', '--clear', '--enable', '--disable',\n"
        "       or '--merge source'\n"
        "  '-g granularity' sets the granularity for '--add' actions\n"
        "  '-b source' and '-F src_fmt' tell '--merge' actions to find the source\n"
        "       bitmaps from an alternative file\n"
        "\n"
        "Parameters to dd subcommand:\n"
        "  'bs=BYTES' read and write up to BYTES bytes at a time (default: 512)\n"
        "  'count=N' copy only N input blocks\n"
        "  'if=FILE' read from FILE\n"
        "  'of=FILE' write to FILE\n"
        "  'skip=N' skip N bs-sized blocks at the start of input\n"
        "\n"
        "Parameters to checksum subcommand (qimg extension):\n"
        "  '-a' the hash algorithm (default sha256; any of Python's hashlib): the digest is blksum's\n"
        "       block hash of the guest-visible content, the same for every format and chain\n"
        "\n"
        "Parameters to compare subcommand:\n"
        "  '-f' first image format\n"
        "  '-F' second image format\n"
        "  '-s' run in Strict mode - fail on different image size or sector allocation\n"
        "\n"
        "Supported formats: qcow2 raw\n"
    ) % {"prog": prog, "syntax": "".join("  %s\n" % s for s in COMMAND_SYNTAX)}
