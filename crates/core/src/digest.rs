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

/// Digests as metadata keeps them in one text field: `name:hex` each
/// ([`DigestAlgo::name`]), separated by spaces; `None` for none.
pub fn join_tagged(digests: &[Digest]) -> Option<String> {
    (!digests.is_empty()).then(|| {
        digests
            .iter()
            .map(|d| format!("{}:{}", d.algo.name(), d.hex()))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// The digests [`join_tagged`] wrote; `None` when one does not parse.
pub fn split_tagged(text: &str) -> Option<Vec<Digest>> {
    text.split_whitespace()
        .map(|t| {
            let (name, hex) = t.split_once(':')?;
            Digest::from_hex(DigestAlgo::from_name(name)?, hex)
        })
        .collect()
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
    fn tagged_digests_round_trip_and_refuse_what_does_not_parse() {
        let ds = vec![
            Digest::new(DigestAlgo::Sha256, vec![7; 32]).unwrap(),
            Digest::new(DigestAlgo::Md5, vec![1; 16]).unwrap(),
        ];
        let text = join_tagged(&ds).unwrap();
        assert_eq!(
            text,
            format!("sha-256:{} md5:{}", "07".repeat(32), "01".repeat(16))
        );
        assert_eq!(split_tagged(&text), Some(ds));
        assert_eq!(join_tagged(&[]), None);
        assert_eq!(split_tagged(""), Some(Vec::new()));
        for bad in [
            "sha-256",
            "sha-3:00",
            "md5:0102",
            "md5:zz010101010101010101010101010101",
        ] {
            assert_eq!(split_tagged(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_round_trip_and_length_check() {
        let d = Digest::from_hex(DigestAlgo::Md5, "0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(d.hex(), "0123456789abcdef0123456789abcdef");
        assert!(Digest::from_hex(DigestAlgo::Sha256, "0123").is_none());
        assert!(Digest::from_hex(DigestAlgo::Md5, "zz23456789abcdef0123456789abcdef").is_none());
    }
}
