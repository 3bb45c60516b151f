#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ferry_http::parse_content_digest(s);
        for algo in [
            ferry_core::DigestAlgo::Sha256,
            ferry_core::DigestAlgo::Sha1,
            ferry_core::DigestAlgo::Md5,
        ] {
            if let Ok(d) = ferry_http::decode_digest(algo, s, "Content-MD5") {
                assert_eq!(d.bytes.len(), algo.output_len());
            }
        }
    }
});
