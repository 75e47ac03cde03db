#!/usr/bin/env python3
"""Writes the archive-ending seeds of the `archive` fuzz target to
fuzz/corpus/archive/end-*.

A small docker-save archive (one image, one layer) and an OCI archive of
the same image, each where the stream may end (the end-of-archive marker,
one zero block, none, no padding after the last data) and cut short, plain,
gzip and zstd. Deterministic. Run: python3 fuzz/scripts/archive_end_corpus.py
"""
import gzip, hashlib, io, json, os, subprocess, tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "archive")
os.makedirs(OUT, exist_ok=True)


def tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in files:
            t = tarfile.TarInfo(name)
            t.size, t.mode, t.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(t, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write(name, data):
    assert len(data) < 64 * 1024, (name, len(data))
    with open(os.path.join(OUT, "end-" + name), "wb") as f:
        f.write(data)


layer = tar([("etc/hostname", b"seed\n")])
config = json.dumps({
    "architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(layer)]},
}, separators=(",", ":")).encode()
manifest = json.dumps([{
    "Config": sha(config) + ".json", "RepoTags": ["seed:1"], "Layers": [sha(layer) + "/layer.tar"],
}]).encode()
docker = tar([(sha(layer) + "/layer.tar", layer), (sha(config) + ".json", config),
              ("manifest.json", manifest)])

oci_manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + sha(layer), "size": len(layer)}],
}).encode()
index = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": "sha256:" + sha(oci_manifest), "size": len(oci_manifest),
                   "annotations": {"org.opencontainers.image.ref.name": "seed:1"}}],
}).encode()
oci = tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
           ("blobs/sha256/" + sha(layer), layer), ("blobs/sha256/" + sha(config), config),
           ("blobs/sha256/" + sha(oci_manifest), oci_manifest), ("index.json", index)])


def zst(data):
    return subprocess.run(["zstd", "-q", "-c", "-19"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


for kind, archive in (("docker", docker), ("oci", oci)):
    body = archive.rstrip(b"\0")  # the last document, without padding or marker
    padded = body + bytes(-len(body) % 512)
    write(f"{kind}.tar", padded + bytes(1024))
    write(f"{kind}-no-marker.tar", padded)
    write(f"{kind}-one-zero-block.tar", padded + bytes(512))
    write(f"{kind}-no-padding.tar", body)
    write(f"{kind}-no-marker.tar.gz", gzip.compress(padded, compresslevel=9, mtime=0))
    write(f"{kind}-no-marker.tar.zst", zst(padded))
    write(f"{kind}-cut-data.tar", body[:-1])
    last = tarfile.open(fileobj=io.BytesIO(archive)).getmembers()[-1].offset
    write(f"{kind}-cut-header.tar", archive[:last + 100])

print("wrote the end-* seeds to", os.path.normpath(OUT))
