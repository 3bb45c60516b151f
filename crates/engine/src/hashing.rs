//! Hashing bytes as they stream by.

use ferry_core::{Digest, DigestAlgo};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

/// Which digests to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub sha256: bool,
    pub sha1: bool,
    pub md5: bool,
}

impl Want {
    pub const SHA256: Want = Want {
        sha256: true,
        sha1: false,
        md5: false,
    };

    pub fn algo(algo: DigestAlgo) -> Want {
        Want {
            sha256: algo == DigestAlgo::Sha256,
            sha1: algo == DigestAlgo::Sha1,
            md5: algo == DigestAlgo::Md5,
        }
    }

    /// SHA-256 and `algos`: the whole-file digests an upload keeps.
    pub fn whole(algos: &[DigestAlgo]) -> Want {
        algos.iter().fold(Want::SHA256, |w, a| w.or(Want::algo(*a)))
    }

    /// Whether every digest `other` asks for is in `self`.
    pub fn covers(self, other: Want) -> bool {
        self.or(other) == self
    }

    pub fn or(self, other: Want) -> Want {
        Want {
            sha256: self.sha256 || other.sha256,
            sha1: self.sha1 || other.sha1,
            md5: self.md5 || other.md5,
        }
    }
}

/// Any of SHA-256, SHA-1 and MD5, fed together.
#[derive(Clone)]
pub struct Hashers {
    sha256: Option<Sha256>,
    sha1: Option<Sha1>,
    md5: Option<Md5>,
}

/// Finished digests, hex-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Option<String>,
    pub sha1: Option<String>,
    pub md5: Option<String>,
}

impl Digests {
    pub fn get(&self, algo: DigestAlgo) -> Option<&str> {
        match algo {
            DigestAlgo::Sha256 => self.sha256.as_deref(),
            DigestAlgo::Sha1 => self.sha1.as_deref(),
            DigestAlgo::Md5 => self.md5.as_deref(),
        }
    }

    /// The digests computed, as values ([`Digest`]).
    pub fn to_list(&self) -> Vec<Digest> {
        [DigestAlgo::Sha256, DigestAlgo::Sha1, DigestAlgo::Md5]
            .into_iter()
            .filter_map(|a| Digest::from_hex(a, self.get(a)?))
            .collect()
    }

    /// Digests from values; the last of an algorithm counts.
    pub fn from_list(list: &[Digest]) -> Digests {
        let of = |algo| list.iter().rfind(|d| d.algo == algo).map(Digest::hex);
        Digests {
            sha256: of(DigestAlgo::Sha256),
            sha1: of(DigestAlgo::Sha1),
            md5: of(DigestAlgo::Md5),
        }
    }

    /// Which digests these are.
    pub fn want(&self) -> Want {
        Want {
            sha256: self.sha256.is_some(),
            sha1: self.sha1.is_some(),
            md5: self.md5.is_some(),
        }
    }

    /// Compares against an expected digest; the error names both values.
    pub fn check(&self, expected: &Digest) -> crate::Result<()> {
        let actual = self.get(expected.algo).unwrap_or_default();
        if actual == expected.hex() {
            Ok(())
        } else {
            Err(crate::EngineError::DigestMismatch {
                algo: expected.algo.name(),
                expected: expected.hex(),
                actual: actual.to_owned(),
            })
        }
    }
}

impl Hashers {
    pub fn new(want: Want) -> Hashers {
        Hashers {
            sha256: want.sha256.then(Sha256::new),
            sha1: want.sha1.then(Sha1::new),
            md5: want.md5.then(Md5::new),
        }
    }

    /// Which digests this computes.
    pub fn want(&self) -> Want {
        Want {
            sha256: self.sha256.is_some(),
            sha1: self.sha1.is_some(),
            md5: self.md5.is_some(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| hex::encode(h.finalize())),
            sha1: self.sha1.map(|h| hex::encode(h.finalize())),
            md5: self.md5.map(|h| hex::encode(h.finalize())),
        }
    }
}

/// Buffers at least this large are hashed by every algorithm at once, one
/// thread each (reading back for the hash follower and commit feeds 4 MiB).
const PARALLEL_FROM: usize = 1 << 20;

impl Hashers {
    /// [`update`](Self::update), with each algorithm on its own thread when
    /// there are several and the buffer is large: the follower's read-back
    /// then takes as long as the slowest hash, not the sum of them.
    pub fn update_parallel(&mut self, data: &[u8]) {
        let many = [
            self.sha256.is_some(),
            self.sha1.is_some(),
            self.md5.is_some(),
        ]
        .iter()
        .filter(|on| **on)
        .count()
            > 1;
        if !many || data.len() < PARALLEL_FROM {
            return self.update(data);
        }
        std::thread::scope(|s| {
            if let Some(h) = &mut self.sha1 {
                s.spawn(move || h.update(data));
            }
            if let Some(h) = &mut self.md5 {
                s.spawn(move || h.update(data));
            }
            if let Some(h) = &mut self.sha256 {
                h.update(data);
            }
        });
    }
}

impl ferry_store::Sink for Hashers {
    fn feed(&mut self, data: &[u8]) {
        self.update_parallel(data);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl Hashers {
    /// Hashes `len` staged bytes of `upload` from `offset` into `self`, on
    /// the store's side (no copy, off the async workers).
    pub async fn scan(
        self,
        store: &dyn ferry_store::Store,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<Hashers, ferry_store::StoreError> {
        let sink = store
            .scan_staged(upload, offset, len, Box::new(self))
            .await?;
        Ok(*sink
            .into_any()
            .downcast::<Hashers>()
            .expect("the store returns the sink it was given"))
    }
}

/// The running SHA-256 of an upload's first `offset` bytes, kept while
/// bytes arrive in order so that commit needs no second read.
#[derive(Clone)]
pub struct Cursor {
    pub offset: u64,
    pub hasher: Hashers,
}

/// The digests one write computes: the part's own (those asked for), and
/// the whole file's in-order SHA-256 when the write continues the cursor.
pub(crate) struct WriteHashes {
    pub part: Hashers,
    pub cursor: Option<Hashers>,
}

impl WriteHashes {
    fn update(&mut self, data: &[u8]) {
        self.part.update(data);
        if let Some(c) = &mut self.cursor {
            c.update(data);
        }
    }

    fn active(&self) -> bool {
        self.cursor.is_some()
            || self.part.sha256.is_some()
            || self.part.sha1.is_some()
            || self.part.md5.is_some()
    }

    /// Splits off the SHA-1 and MD5 hashers, when SHA-256 is also wanted,
    /// so that each half can run on its own thread.
    fn split(&mut self) -> Option<WriteHashes> {
        let others = |h: &mut Hashers| Hashers {
            sha256: None,
            sha1: h.sha1.take(),
            md5: h.md5.take(),
        };
        let sha256 =
            self.part.sha256.is_some() || self.cursor.as_ref().is_some_and(|c| c.sha256.is_some());
        let rest = WriteHashes {
            part: others(&mut self.part),
            cursor: self.cursor.as_mut().map(others),
        };
        let busy = |h: &Hashers| h.sha1.is_some() || h.md5.is_some();
        if sha256 && (busy(&rest.part) || rest.cursor.as_ref().is_some_and(busy)) {
            Some(rest)
        } else {
            self.merge(rest);
            None
        }
    }

    /// Takes back the hashers `split` took.
    fn merge(&mut self, rest: WriteHashes) {
        let join = |h: &mut Hashers, r: Hashers| {
            h.sha1 = h.sha1.take().or(r.sha1);
            h.md5 = h.md5.take().or(r.md5);
        };
        join(&mut self.part, rest.part);
        if let (Some(c), Some(r)) = (&mut self.cursor, rest.cursor) {
            join(c, r);
        }
    }
}

/// Writes at least this long hash on their own thread.
const THREAD_MIN: u64 = 1 << 20;

/// Chunks queued for the hashing thread (backpressure beyond that). A
/// chunk is at most one connection read buffer (64 or 512 KiB), so a write
/// holds at most 4 MiB here.
const QUEUE: usize = 8;

/// Batches hashed on blocking threads at a time, across all writes (see
/// the store's `WRITE_JOBS`): a burst of writes cannot grow the blocking
/// pool past what control requests need.
static HASH_JOBS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Feeds a write's chunks to its hashers: inline for small writes, on a
/// blocking thread for large ones, so that hashing (SHA-256 runs at about
/// 1.2 GiB/s per core, the costliest step of the data path) overlaps
/// receiving the next bytes instead of following it.
/// With SHA-256 and other digests both wanted, the others get a second
/// thread: the write then waits for the slower hash, not the sum.
#[derive(Clone)]
pub(crate) enum Feeder {
    Inline(std::sync::Arc<std::sync::Mutex<WriteHashes>>),
    Thread(Vec<tokio::sync::mpsc::Sender<bytes::Bytes>>),
}

/// Collects the hashers once every chunk has been fed.
pub(crate) enum Finisher {
    Inline(std::sync::Arc<std::sync::Mutex<WriteHashes>>),
    Thread(Vec<tokio::task::JoinHandle<WriteHashes>>),
}

pub(crate) fn tap(mut hashes: WriteHashes, len: u64) -> (Feeder, Finisher) {
    if len < THREAD_MIN || !hashes.active() {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(hashes));
        return (Feeder::Inline(shared.clone()), Finisher::Inline(shared));
    }
    let rest = hashes.split();
    let (mut senders, mut threads) = (Vec::new(), Vec::new());
    for lane in std::iter::once(hashes).chain(rest) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(QUEUE);
        senders.push(tx);
        // Each batch of queued chunks is hashed on a blocking thread that
        // goes back to the pool when the queue is empty: a write waiting
        // for a slow client's bytes holds no thread.
        threads.push(tokio::spawn(async move {
            let mut lane = lane;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let permit = HASH_JOBS.acquire().await.expect("never closed");
                lane = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    for chunk in &batch {
                        lane.update(chunk);
                    }
                    lane
                })
                .await
                .expect("the hashing thread does not panic");
            }
            lane
        }));
    }
    (Feeder::Thread(senders), Finisher::Thread(threads))
}

impl Feeder {
    pub async fn feed(&self, chunk: &bytes::Bytes) {
        match self {
            Feeder::Inline(h) => h.lock().unwrap().update(chunk),
            // A chunk is a reference-counted view: queuing it copies nothing.
            Feeder::Thread(lanes) => {
                for tx in lanes {
                    let _ = tx.send(chunk.clone()).await;
                }
            }
        }
    }
}

impl Finisher {
    /// Waits until every fed chunk is hashed; every `Feeder` must be gone.
    pub async fn finish(self) -> WriteHashes {
        match self {
            Finisher::Inline(h) => std::sync::Arc::try_unwrap(h)
                .ok()
                .expect("every feeder is gone")
                .into_inner()
                .unwrap(),
            Finisher::Thread(lanes) => {
                let mut all: Option<WriteHashes> = None;
                for done in lanes {
                    let lane = done.await.expect("the hashing thread does not panic");
                    match &mut all {
                        None => all = Some(lane),
                        Some(first) => first.merge(lane),
                    }
                }
                all.expect("at least one lane")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Hashers, Want};

    #[test]
    fn parallel_update_gives_the_same_digests_as_the_sequential_one() {
        let all = Want {
            sha256: true,
            sha1: true,
            md5: true,
        };
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 + i / 13) as u8).collect();
        let (mut a, mut b) = (Hashers::new(all), Hashers::new(all));
        a.update(&data);
        a.update(b"tail");
        b.update_parallel(&data);
        b.update_parallel(b"tail");
        assert_eq!(a.finish(), b.finish());
    }
}

#[cfg(test)]
mod lanes {
    use super::{Hashers, Want, WriteHashes, tap};

    #[tokio::test]
    async fn a_write_hashed_on_two_threads_gives_every_digest() {
        let all = Want {
            sha256: true,
            sha1: true,
            md5: false,
        };
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
        let mut want = Hashers::new(all);
        want.update(&data);
        let want = want.finish();
        let (feeder, finisher) = tap(
            WriteHashes {
                part: Hashers::new(Want::algo(ferry_core::DigestAlgo::Sha1)),
                cursor: Some(Hashers::new(all)),
            },
            data.len() as u64,
        );
        for chunk in data.chunks(300_000) {
            feeder.feed(&bytes::Bytes::copy_from_slice(chunk)).await;
        }
        drop(feeder);
        let got = finisher.finish().await;
        assert_eq!(got.cursor.unwrap().finish(), want);
        let part = got.part.finish();
        assert_eq!((part.sha1, part.sha256), (want.sha1.clone(), None));
    }
}
