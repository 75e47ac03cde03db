//! Hashing throughput of the digest paths every blob goes through.
//! `bench/hash.sh` compares the same against `openssl dgst` in one run.
#![allow(missing_docs)]

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image_core::{Algorithm, Digest, DigestWriter, VerifyingReader};

fn digests(c: &mut Criterion) {
    let data: Vec<u8> = (0..(16u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expected = Digest::sha256(&data);
    let mut g = c.benchmark_group("digest-16MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256 of_bytes", |b| b.iter(|| Digest::sha256(&data)));
    g.bench_function("sha512 of_bytes", |b| {
        b.iter(|| Digest::of_bytes(Algorithm::Sha512, &data))
    });
    g.bench_function("sha256 of_reader", |b| {
        b.iter(|| Digest::of_reader(Algorithm::Sha256, &data[..]).map(|(d, _)| d))
    });
    g.bench_function("sha256 DigestWriter 1MiB writes", |b| {
        b.iter(|| {
            let mut w = DigestWriter::new(std::io::sink(), Algorithm::Sha256);
            for chunk in data.chunks(1 << 20) {
                w.write_all(chunk).expect("sink");
            }
            w.finish().1
        })
    });
    g.bench_function("sha256 VerifyingReader", |b| {
        b.iter(|| {
            let mut r = VerifyingReader::new(&data[..], expected.clone(), Some(data.len() as u64));
            std::io::copy(&mut r, &mut std::io::sink()).expect("verifies")
        })
    });
    g.finish();
}

criterion_group!(benches, digests);
criterion_main!(benches);
