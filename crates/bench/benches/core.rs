//! Micro-benchmarks of the hot pure pieces: range bookkeeping and the
//! per-byte cost of hashing that every write pays.

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
    g.bench_function("sha-256 of 1 MiB", |b| {
        b.iter(|| black_box(Sha256::digest(&data)))
    });
    g.finish();
}

criterion_group!(benches, rangeset, hashing);
criterion_main!(benches);
