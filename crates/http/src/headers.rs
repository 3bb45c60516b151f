//! Parsers for the headers every dialect shares. Each returns a message
//! that names the header and what was wrong with it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_core::{ByteRange, Digest, DigestAlgo};

/// `Content-Range: bytes a-b/total` or `bytes a-b/*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub range: ByteRange,
    pub total: Option<u64>,
}

pub fn parse_content_range(v: &str) -> Result<ContentRange, String> {
    let bad =
        || format!("Content-Range {v:?} is not of the form 'bytes first-last/total' (or '/*')");
    let rest = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, total) = rest.split_once('/').ok_or_else(bad)?;
    let (a, b) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    let range = ByteRange::inclusive(first, last)
        .ok_or_else(|| format!("Content-Range {v:?}: the last byte comes before the first"))?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad())?),
    };
    if let Some(t) = total
        && range.end > t
    {
        return Err(format!(
            "Content-Range {v:?} reaches past its own total of {t} bytes"
        ));
    }
    Ok(ContentRange { range, total })
}

/// `Content-Digest: sha-256=:<base64>:` (RFC 9530). Algorithms other than
/// sha-256 and sha-1… are ignored unless none is understood.
pub fn parse_content_digest(v: &str) -> Result<Vec<Digest>, String> {
    let mut out = Vec::new();
    for item in v.split(',') {
        let Some((algo, value)) = item.trim().split_once('=') else {
            return Err(format!(
                "Content-Digest {v:?} is not a list of algorithm=:base64:"
            ));
        };
        let algo = match algo.trim().to_ascii_lowercase().as_str() {
            "sha-256" => DigestAlgo::Sha256,
            "sha-1" | "sha" => DigestAlgo::Sha1,
            "md5" => DigestAlgo::Md5,
            _ => continue,
        };
        let b64 = value
            .trim()
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .ok_or_else(|| format!("Content-Digest value {value:?} must be wrapped in colons"))?;
        out.push(decode_digest(algo, b64, "Content-Digest")?);
    }
    if out.is_empty() {
        return Err(format!(
            "Content-Digest {v:?} names no supported algorithm (sha-256, sha-1, md5)"
        ));
    }
    Ok(out)
}

/// A base64 digest value of `algo`, as in `Content-MD5` or `digest: sha=`.
pub fn decode_digest(algo: DigestAlgo, b64: &str, header: &str) -> Result<Digest, String> {
    let raw = B64
        .decode(b64.trim())
        .map_err(|_| format!("{header}: {b64:?} is not valid base64"))?;
    Digest::new(algo, raw).ok_or_else(|| {
        format!(
            "{header}: a {} digest is {} bytes; got a different length",
            algo.name(),
            algo.output_len()
        )
    })
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A download `Range: bytes=…` request, resolved against the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Parses a single-range `Range` header (multi-range requests are served
/// whole, which RFC 9110 allows).
pub fn parse_range(v: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = v.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last b bytes.
        match b.parse::<u64>() {
            Ok(0) | Err(_) => return RangeRequest::Unsatisfiable,
            Ok(n) => ByteRange::new(size.saturating_sub(n), size),
        }
    } else {
        let Ok(first) = a.parse::<u64>() else {
            return RangeRequest::Full;
        };
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(l) => l.min(size.saturating_sub(1)),
                Err(_) => return RangeRequest::Full,
            }
        };
        if first >= size {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange::inclusive(first, last)
    };
    range.map_or(RangeRequest::Unsatisfiable, RangeRequest::Partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> ByteRange {
        ByteRange::new(a, b).unwrap()
    }

    #[test]
    fn content_range_table() {
        let ok = |s: &str| parse_content_range(s).unwrap();
        assert_eq!(
            ok("bytes 0-9/100"),
            ContentRange {
                range: r(0, 10),
                total: Some(100)
            }
        );
        assert_eq!(
            ok("bytes 10-19/*"),
            ContentRange {
                range: r(10, 20),
                total: None
            }
        );
        for bad in [
            "bytes 9-0/100",
            "bytes 0-100/100",
            "0-9/100",
            "bytes a-b/1",
            "bytes 0-9",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_digest_table() {
        let d =
            parse_content_digest("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:").unwrap();
        assert_eq!(
            d[0].hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(parse_content_digest("sha-512=:AAAA:").is_err());
        assert!(parse_content_digest("sha-256=AAAA").is_err());
        assert!(
            parse_content_digest("sha-256=:AAAA:").is_err(),
            "wrong length"
        );
    }

    #[test]
    fn range_table() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            RangeRequest::Partial(r(2, 5))
        );
        assert_eq!(
            parse_range(Some("bytes=7-"), 10),
            RangeRequest::Partial(r(7, 10))
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeRequest::Partial(r(7, 10))
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            RangeRequest::Partial(r(5, 10))
        );
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
    }
}
