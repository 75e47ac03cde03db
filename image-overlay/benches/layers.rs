//! Layer throughput in-process, tracked over time: packing a generated tree
//! (uncompressed, gzip, zstd), unpacking its gzip and zstd layers into a
//! fresh directory, and the compressor and decoder alone over 32 MiB.
//! Throughput is in uncompressed bytes (the tar for pack and unpack).
//! The tree and the unpack targets live under `$TMPDIR`. Each unpack target
//! is deleted between iterations, which on a slow disk, or on an ext4
//! without a journal (see docs/ARCHITECTURE.md, Decisions), makes the next
//! iteration pay: `TMPDIR=/dev/shm cargo bench` measures the unpacker alone.
//! `bench/overlay/unpack.sh` compares the same paths against umoci, GNU tar,
//! pigz and zstd in one run.
#![allow(missing_docs)]

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use image_core::Compression;
use image_overlay::compress::{decoder, Encoder};
use image_overlay::{pack_dir, unpack, Encoding, PackOptions, UnpackOptions};

/// Small files in the tree, spread over `DIRS` directories.
const FILES: usize = 3000;
const DIRS: usize = 60;
/// The one large file of the tree.
const LARGE: usize = 16 << 20;
/// Input of the compressor and decoder benches.
const STREAM: usize = 32 << 20;
/// The write size the packer hands its compressor (its `BufWriter`).
const CHUNK: usize = 256 << 10;

/// splitmix64: deterministic content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` incompressible bytes.
    fn random(&mut self, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        while out.len() < end {
            let word = self.next().to_le_bytes();
            out.extend_from_slice(&word[..(end - out.len()).min(8)]);
        }
    }

    /// `len` bytes of word salad (compresses about 3:1).
    fn text(&mut self, out: &mut Vec<u8>, len: usize) {
        const WORDS: [&str; 16] = [
            "layer", "digest", "blob", "manifest", "config", "sha256", "whiteout", "overlay",
            "tar", "gzip", "zstd", "index", "rootfs", "diff_id", "chain", "snapshot",
        ];
        let end = out.len() + len;
        while out.len() < end {
            let r = self.next();
            out.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
            out.push(if r & 0x3f0 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(end);
    }

    /// `len` bytes alternating 64 KiB of text and 64 KiB of random bytes.
    fn mixed(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut compressible = true;
        while out.len() < len {
            let n = (len - out.len()).min(64 << 10);
            if compressible {
                self.text(&mut out, n);
            } else {
                self.random(&mut out, n);
            }
            compressible = !compressible;
        }
        out
    }
}

/// Writes the tree under `root`: `FILES` small files (two in three text,
/// sizes skewed small, up to 16 KiB) in two levels of directories, and one
/// `LARGE` file of mixed content.
fn build_tree(root: &Path) {
    let mut rng = Rng(0x6c61_7965_7273);
    for i in 0..FILES {
        let d = i % DIRS;
        let dir = root.join(format!("d{:02}/s{}", d / 6, d % 6));
        std::fs::create_dir_all(&dir).expect("create tree dir");
        let len = match rng.below(8) {
            0..=4 => rng.below(2048),
            5 | 6 => 2048 + rng.below(6144),
            _ => 8192 + rng.below(8192),
        };
        let mut content = Vec::with_capacity(len);
        if rng.below(3) == 0 {
            rng.random(&mut content, len);
        } else {
            rng.text(&mut content, len);
        }
        std::fs::write(dir.join(format!("f{i:05}")), content).expect("write tree file");
    }
    std::fs::write(root.join("large.bin"), rng.mixed(LARGE)).expect("write large file");
}

fn pack_options(compression: Compression) -> PackOptions {
    // Fixed mtimes: every pack of the tree gives the same bytes.
    PackOptions::new(compression).with_source_date_epoch(0)
}

/// Few samples, flat sampling: each iteration moves tens of MiB.
fn short<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn threads_label(compression: Compression, threads: u32) -> String {
    format!("{} threads={threads}", compression.as_str())
}

fn layers(c: &mut Criterion) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("tree");
    build_tree(&tree);
    let cores = Encoding::default().threads;

    // One pack of each compression up front: the tar size for the
    // throughput, and the layers the unpack benches read.
    let tar = pack_dir(&tree, io::sink(), &pack_options(Compression::None)).expect("pack");
    let packed: Vec<(Compression, Vec<u8>)> = [Compression::Gzip, Compression::Zstd]
        .into_iter()
        .map(|compression| {
            let mut layer = Vec::new();
            let r = pack_dir(&tree, &mut layer, &pack_options(compression)).expect("pack");
            assert_eq!(r.diff_id, tar.diff_id, "same tar whatever the compression");
            (compression, layer)
        })
        .collect();
    eprintln!(
        "tree: {} entries, tar {} bytes; gzip {} bytes, zstd {} bytes; {cores} threads",
        tar.entries,
        tar.uncompressed_size,
        packed[0].1.len(),
        packed[1].1.len(),
    );

    let mut g = c.benchmark_group(format!("pack-{FILES}files+16MiB"));
    short(&mut g);
    g.throughput(Throughput::Bytes(tar.uncompressed_size));
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = pack_options(compression);
        let label = match compression {
            Compression::None => "uncompressed".to_owned(),
            _ => threads_label(compression, opts.encoding.threads),
        };
        g.bench_function(label, |b| {
            b.iter(|| pack_dir(&tree, io::sink(), &opts).expect("pack"))
        });
    }
    g.finish();

    let targets = tempfile::tempdir_in(scratch.path()).expect("tempdir");
    let opts = UnpackOptions::default();
    let mut g = c.benchmark_group(format!("unpack-{FILES}files+16MiB"));
    short(&mut g);
    g.throughput(Throughput::Bytes(tar.uncompressed_size));
    for (compression, layer) in &packed {
        g.bench_function(compression.as_str(), |b| {
            b.iter_batched(
                || tempfile::tempdir_in(targets.path()).expect("target dir"),
                |target| {
                    unpack(&layer[..], target.path(), &opts).expect("unpack");
                    // Returned, so the tree is removed after the clock stops.
                    target
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    drop(targets);

    let data = Rng(0x636f_6d70).mixed(STREAM);
    let mut g = c.benchmark_group("compress-32MiB");
    short(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let encodings = [
        Encoding {
            threads: 0,
            ..Encoding::new(Compression::Gzip)
        },
        Encoding::new(Compression::Gzip),
        Encoding::new(Compression::Zstd),
    ];
    for enc in encodings {
        g.bench_function(threads_label(enc.compression, enc.threads), |b| {
            b.iter(|| {
                let mut w = Encoder::new(io::sink(), enc).expect("encoder");
                for chunk in data.chunks(CHUNK) {
                    w.write_all(chunk).expect("sink");
                }
                w.finish().expect("sink")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decompress-32MiB");
    short(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for compression in [Compression::Gzip, Compression::Zstd] {
        let mut w = Encoder::new(Vec::new(), Encoding::new(compression)).expect("encoder");
        w.write_all(&data).expect("vec");
        let compressed = w.finish().expect("vec");
        g.bench_function(compression.as_str(), |b| {
            b.iter(|| {
                let mut r = decoder(compression, &compressed[..]).expect("decoder");
                let n = io::copy(&mut r, &mut io::sink()).expect("decodes");
                assert_eq!(n, data.len() as u64);
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
