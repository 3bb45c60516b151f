//! Micro-benchmarks of the hot pure pieces: range bookkeeping, the
//! per-byte cost of hashing that every write pays (sha2 next to
//! aws-lc-rs, the assembly OpenSSL also has, as the baseline), and the
//! headers parsed on every request.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_core::{ByteRange, RangeSet};
use sha2::{Digest, Sha256};
use std::hint::black_box;

fn rangeset(c: &mut Criterion) {
    c.bench_function("rangeset: 10,000 parts inserted out of order", |b| {
        b.iter(|| {
            let mut s = RangeSet::new();
            for i in (0..10_000u64)
                .rev()
                .step_by(2)
                .chain((0..10_000u64).step_by(2))
            {
                s.insert(ByteRange::new(i * 100, i * 100 + 100).unwrap());
            }
            black_box(s.missing(1_000_000))
        })
    });
}

fn hashing(c: &mut Criterion) {
    let data = vec![7u8; 1 << 20];
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha-256 of 1 MiB (sha2)", |b| {
        b.iter(|| black_box(Sha256::digest(&data)))
    });
    g.bench_function("sha-256 of 1 MiB (aws-lc-rs)", |b| {
        b.iter(|| black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data)))
    });
    g.bench_function("sha-1 of 1 MiB (sha1)", |b| {
        b.iter(|| black_box(sha1::Sha1::digest(&data)))
    });
    g.bench_function("md5 of 1 MiB (md-5)", |b| {
        b.iter(|| black_box(md5::Md5::digest(&data)))
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    g.bench_function("Content-Range", |b| {
        b.iter(|| {
            black_box(ferry_http::headers::parse_content_range(black_box(
                "bytes 1073741824-1090519039/5368709120",
            )))
        })
    });
    g.bench_function("Content-Digest sha-256", |b| {
        b.iter(|| {
            black_box(ferry_http::headers::parse_content_digest(black_box(
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            )))
        })
    });
    g.bench_function("Range of a download", |b| {
        b.iter(|| {
            black_box(ferry_http::headers::parse_range(
                black_box(Some("bytes=1048576-2097151")),
                5 << 30,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, rangeset, hashing, headers);
criterion_main!(benches);
