//! Blob ingest and read-back throughput in-process, tracked over time:
//! 64 MiB from memory into an `OciDir` (hash, write, fsync, rename) and
//! into a `MemoryStore`, with and without an expected digest, into a fresh
//! store and again into a store that already holds the blob (the whole
//! stream is still read, hashed and, for `OciDir`, written and fsynced
//! before the commit finds the blob and drops the copy); and the blob read
//! back through the verifying reader. `bench/store/load.sh` compares ingest
//! and archive loading against `cp` + `sync` + `openssl dgst` and skopeo.
#![allow(missing_docs)]

use std::io;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use image_core::Digest;
use image_store::{Ingester, MemoryStore, OciDir, Provider};

const SIZE: usize = 64 << 20;

/// 64 KiB of word salad, then 64 KiB of splitmix64 output, and so on
/// (content does not change what ingest does; this keeps it realistic).
fn mixed(len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "layer", "digest", "blob", "manifest", "config", "sha256", "index", "rootfs",
    ];
    let mut state = 0x696e_6765_7374_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(len + 16);
    let mut compressible = true;
    while out.len() < len {
        let end = (out.len() + (64 << 10)).min(len);
        while out.len() < end {
            let r = next();
            if compressible {
                out.extend_from_slice(WORDS[(r & 7) as usize].as_bytes());
                out.push(b' ');
            } else {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        out.truncate(end);
        compressible = !compressible;
    }
    out
}

/// Few samples, flat sampling: each iteration moves 64 MiB (and fsyncs).
fn short<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
}

fn ingest_from<S: Ingester>(store: &S, data: &[u8], expected: Option<&Digest>) -> Digest {
    let mut reader = data;
    store
        .ingest_reader(&mut reader, Some(data.len() as u64), expected)
        .expect("ingest")
}

fn read_back<S: Provider>(store: &S, digest: &Digest) -> u64 {
    let mut r = store.reader(digest).expect("blob present");
    io::copy(&mut r, &mut io::sink()).expect("verified read")
}

fn ingest(c: &mut Criterion) {
    let data = mixed(SIZE);
    let digest = Digest::sha256(&data);
    let scratch = tempfile::tempdir().expect("tempdir");
    let present = OciDir::open_or_create(scratch.path().join("present")).expect("store");
    assert_eq!(ingest_from(&present, &data, None), digest);
    let present_mem = MemoryStore::new();
    assert_eq!(ingest_from(&present_mem, &data, None), digest);

    let mut g = c.benchmark_group("ingest-64MiB");
    short(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (label, expected) in [("no digest", None), ("expected digest", Some(&digest))] {
        g.bench_function(format!("OciDir fresh store, {label}"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir_in(scratch.path()).expect("tempdir");
                    let store = OciDir::open_or_create(dir.path()).expect("store");
                    (dir, store)
                },
                |(dir, store)| {
                    ingest_from(&store, &data, expected);
                    // Returned, so the store is removed after the clock stops.
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(
            format!("OciDir re-ingest of a present blob, {label}"),
            |b| b.iter(|| ingest_from(&present, &data, expected)),
        );
        g.bench_function(format!("MemoryStore fresh store, {label}"), |b| {
            b.iter_batched(
                MemoryStore::new,
                |store| {
                    ingest_from(&store, &data, expected);
                    store
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(
            format!("MemoryStore re-ingest of a present blob, {label}"),
            |b| b.iter(|| ingest_from(&present_mem, &data, expected)),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("read-64MiB");
    short(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("OciDir verified reader (page cache)", |b| {
        b.iter(|| read_back(&present, &digest))
    });
    g.bench_function("MemoryStore verified reader", |b| {
        b.iter(|| read_back(&present_mem, &digest))
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
