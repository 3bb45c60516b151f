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

impl ferry_store::Sink for Hashers {
    fn feed(&mut self, data: &[u8]) {
        self.update(data);
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
