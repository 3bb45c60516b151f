//! Digest algorithms and values, independent of any hashing library.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgo {
    Sha256,
    Sha1,
    Md5,
}

impl DigestAlgo {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "sha-256",
            DigestAlgo::Sha1 => "sha-1",
            DigestAlgo::Md5 => "md5",
        }
    }

    /// The algorithm a [`name`](Self::name) names.
    pub fn from_name(name: &str) -> Option<DigestAlgo> {
        [DigestAlgo::Sha256, DigestAlgo::Sha1, DigestAlgo::Md5]
            .into_iter()
            .find(|a| a.name() == name)
    }

    pub fn output_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 32,
            DigestAlgo::Sha1 => 20,
            DigestAlgo::Md5 => 16,
        }
    }
}

/// A digest value of a known algorithm.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algo: DigestAlgo,
    pub bytes: Vec<u8>,
}

impl Digest {
    /// `None` when the length does not fit the algorithm.
    pub fn new(algo: DigestAlgo, bytes: Vec<u8>) -> Option<Digest> {
        (bytes.len() == algo.output_len()).then_some(Digest { algo, bytes })
    }

    /// Parses lowercase or uppercase hex.
    pub fn from_hex(algo: DigestAlgo, hex: &str) -> Option<Digest> {
        if hex.len() != algo.output_len() * 2 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Digest::new(algo, bytes)
    }

    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_length_check() {
        let d = Digest::from_hex(DigestAlgo::Md5, "0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(d.hex(), "0123456789abcdef0123456789abcdef");
        assert!(Digest::from_hex(DigestAlgo::Sha256, "0123").is_none());
        assert!(Digest::from_hex(DigestAlgo::Md5, "zz23456789abcdef0123456789abcdef").is_none());
    }
}
