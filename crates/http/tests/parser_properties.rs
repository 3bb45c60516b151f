//! Fuzzing campaign (issue 11, G), proptest edition: the shared header
//! parsers never panic on any input, and what they accept is in bounds.

use ferry_core::DigestAlgo;
use ferry_http::{
    RangeRequest, b64, decode_digest, parse_content_digest, parse_content_range, parse_range,
};
use proptest::prelude::*;

/// Text that looks like a header some of the time: digits, separators and
/// keywords mixed with arbitrary characters.
fn headerish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ a-z0-9=:/*,\\-+]{0,40}",
        "(bytes )?[0-9 ]{0,22}-[0-9 ]{0,22}/([0-9]{0,22}|\\*)",
        "(bytes=)?[0-9]{0,21}-[0-9]{0,21}(,[0-9]{0,5}-[0-9]{0,5})?",
        "((sha-256|sha-1|md5|sha|x)=:[A-Za-z0-9+/=]{0,48}:,? ?){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn content_range_never_panics_and_stays_within_its_total(v in headerish()) {
        if let Ok(cr) = parse_content_range(&v) {
            prop_assert!(cr.range.start < cr.range.end, "non-empty: {cr:?}");
            if let Some(t) = cr.total {
                prop_assert!(cr.range.end <= t, "{v:?} -> {cr:?}");
            }
        }
    }

    #[test]
    fn content_range_round_trips(first in 0u64..u64::MAX / 2, len in 1u64..1 << 40, extra in 0u64..1 << 20, star in any::<bool>()) {
        let last = first + len - 1;
        let total = last + 1 + extra;
        let v = if star { format!("bytes {first}-{last}/*") } else { format!("bytes {first}-{last}/{total}") };
        let cr = parse_content_range(&v).unwrap();
        prop_assert_eq!((cr.range.start, cr.range.last()), (first, last));
        prop_assert_eq!(cr.total, (!star).then_some(total));
    }

    #[test]
    fn a_parsed_range_lies_within_the_file(v in headerish(), size in prop_oneof![Just(0u64), 0u64..10_000, any::<u64>()]) {
        match parse_range(Some(&v), size) {
            RangeRequest::Partial(r) => {
                prop_assert!(r.start < r.end, "{v:?} on {size} -> {r:?}");
                prop_assert!(r.end <= size, "{v:?} on {size} -> {r:?}");
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn content_digest_never_panics(v in headerish()) {
        if let Ok(ds) = parse_content_digest(&v) {
            prop_assert!(!ds.is_empty());
        }
    }

    #[test]
    fn content_digest_round_trips_sha256(raw in proptest::collection::vec(any::<u8>(), 32)) {
        let ds = parse_content_digest(&format!("sha-256=:{}:", b64(&raw))).unwrap();
        prop_assert_eq!(ds.len(), 1);
        let want = ferry_core::Digest::new(DigestAlgo::Sha256, raw).unwrap();
        prop_assert_eq!(&ds[0], &want);
    }

    /// `Content-MD5`, Box's `digest: sha=` and tus's checksum values all
    /// go through `decode_digest`.
    #[test]
    fn digest_values_never_panic_and_have_the_algorithms_length(v in headerish()) {
        for algo in [DigestAlgo::Sha256, DigestAlgo::Sha1, DigestAlgo::Md5] {
            if let Ok(d) = decode_digest(algo, &v, "Content-MD5") {
                prop_assert_eq!(d.algo, algo);
                prop_assert_eq!(d.bytes.len(), algo.output_len());
            }
        }
    }
}
