#!/usr/bin/env python3
"""Writes the seed corpus of the `unpack` fuzz target to fuzz/corpus/unpack/.

Small layers (each < 64 KiB): well-formed ones in every compression and
hostile ones, one per class of the hostile-layer suite. Deterministic
except for the sparse seed (GNU tar). Run: python3 fuzz/scripts/unpack_corpus.py
"""
import gzip, io, os, subprocess, sys, tarfile, tempfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "unpack")
os.makedirs(OUT, exist_ok=True)
MTIME = 1_600_000_000


def info(name, typ=tarfile.REGTYPE, size=0, mode=0o644, link="", pax=None):
    t = tarfile.TarInfo(name)
    t.type, t.size, t.mode, t.mtime, t.linkname = typ, size, mode, MTIME, link
    t.uid = t.gid = 0
    t.uname = t.gname = ""
    if pax:
        t.pax_headers = pax
    return t


def tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            if isinstance(e, tuple):
                ti, data = e
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(e)
    return buf.getvalue()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def zst(data):
    return subprocess.run(["zstd", "-q", "-c", "-19"], input=data, stdout=subprocess.PIPE, check=True).stdout


def write(name, data):
    assert len(data) < 64 * 1024, (name, len(data))
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


plain = tar([
    info("etc/", tarfile.DIRTYPE, mode=0o755),
    (info("etc/hostname", pax={"SCHILY.xattr.user.k": "v", "mtime": "1600000000.5"}), b"seed\n"),
    (info("usr/bin/tool", mode=0o4755), bytes(range(256)) * 8),
    info("usr/bin/link", tarfile.SYMTYPE, link="tool"),
    info("usr/bin/hard", tarfile.LNKTYPE, link="usr/bin/tool"),
    info("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    (info("deep/" + "a" * 120 + "/file"), b"long"),
    info("tmp/", tarfile.DIRTYPE, mode=0o1777),
])
write("plain.tar", plain)
write("plain.tar.gz", gz(plain))
write("plain.tar.zst", zst(plain))

# Whiteouts and an opaque directory over content of the same layer.
write("whiteouts.tar", tar([
    (info("a/x"), b"x"),
    (info("a/sub/y"), b"y"),
    info("a/.wh..wh..opq"),
    info("a/.wh.sub"),
    info(".wh.nothing"),
    info("b/.wh..wh.plnk"),
]))

# Escapes: .. paths, absolute paths, symlinks out and writes through them.
write("dotdot.tar", tar([(info("../sentinel"), b"pwned"), (info("a/../../pwned"), b"x")]))
write("absolute.tar", tar([(info("/pwned"), b"x"), (info("//etc/../pwned"), b"x")]))
write("symlink-escape.tar", tar([
    info("up", tarfile.SYMTYPE, link=".."),
    (info("up/sentinel"), b"pwned"),
    info("root", tarfile.SYMTYPE, link="/"),
    (info("root/pwned"), b"pwned"),
    info("sdir", tarfile.SYMTYPE, link="../sentinel-dir"),
    (info("sdir/inner"), b"pwned"),
]))
write("hardlink-escape.tar", tar([
    info("h", tarfile.LNKTYPE, link="../sentinel"),
    info("l", tarfile.SYMTYPE, link="../sentinel"),
    info("h2", tarfile.LNKTYPE, link="l"),
    (info("h2"), b"pwned"),
    info("d", tarfile.LNKTYPE, link="."),
]))
write("whiteout-escape.tar", tar([
    info("../.wh.sentinel"),
    info(".wh.."),
    info(".wh..."),
    info(".wh."),
    info("x/.wh..wh..opq/y"),
]))
# A file replacing a directory and a symlink, a directory replacing a file.
write("replace.tar", tar([
    (info("d/f"), b"1"),
    (info("d"), b"now a file"),
    info("s", tarfile.SYMTYPE, link="../sentinel-dir"),
    (info("s"), b"now a file"),
    info("d", tarfile.DIRTYPE),
    (info("d/g"), b"2"),
]))
# PAX records overriding path and size; a GNU long name.
write("pax-override.tar", tar([
    (info("short", pax={"path": "../pax-escape"}), b"x"),
    (info("ok", pax={"path": "p/" + "n" * 200}), b"y"),
    (info("big", pax={"uid": str(1 << 40), "SCHILY.xattr.trusted.overlay.opaque": "y"}), b"z"),
]))
write("gnu-longname.tar", tar([(info("g/" + "l" * 150), b"gnu")], fmt=tarfile.GNU_FORMAT))
# Corrupt streams: truncated gzip, data after the end marker, bad checksum.
write("truncated.tar.gz", gz(plain)[:300])
write("trailing.tar", plain + b"\x01garbage" + bytes(503))
bad = bytearray(plain)
bad[148:156] = b"0000000\0"
write("bad-checksum.tar", bytes(bad))
# A decompression bomb: 24 MiB of zeros in one entry (limit 16 MiB).
bomb = io.BytesIO()
with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9, mtime=0) as g:
    head = info("bomb")
    head.size = 24 << 20
    g.write(head.tobuf(tarfile.USTAR_FORMAT))
    zeros = bytes(1 << 20)
    for _ in range(24):
        g.write(zeros)
    g.write(bytes(1024))
write("bomb.tar.gz", bomb.getvalue())

# Where a stream may end (issue 17): no end-of-archive marker, one zero
# block of it, none of the last entry's padding (what `umoci insert`
# writes; also compressed), and a header cut short.
small = tar([info("d/", tarfile.DIRTYPE, mode=0o755), (info("d/a"), b"hello"), (info("b"), b"x\n")],
            fmt=tarfile.USTAR_FORMAT)
body = small.rstrip(b"\0")  # the last data, without its padding or the marker
padded = body + bytes(-len(body) % 512)
write("end-no-marker.tar", padded)
write("end-one-zero-block.tar", padded + bytes(512))
write("end-no-padding.tar", body)
write("end-no-padding.tar.gz", gz(body))
write("end-no-padding.tar.zst", zst(body))
write("end-cut-header.tar", padded + small[:100])

# Sparse files from GNU tar (old GNU and PAX 1.0).
with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, "sparse")
    with open(p, "wb") as f:
        f.write(b"start")
        f.seek(1 << 20)
        f.write(b"end")
    os.utime(p, (MTIME, MTIME))
    for fmt, extra in (("gnu", []), ("pax", ["--sparse-version=1.0"])):
        out = subprocess.run(
            ["tar", "-S", f"--format={fmt}", *extra, "--owner=0", "--group=0", "--numeric-owner",
             "-cf", "-", "-C", d, "sparse"],
            stdout=subprocess.PIPE, check=True).stdout
        write(f"sparse-{fmt}.tar", out)

print("wrote", len(os.listdir(OUT)), "seeds to", os.path.normpath(OUT))
