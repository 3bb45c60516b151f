#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(cr) = ferry_http::parse_content_range(s)
    {
        assert!(cr.range.start < cr.range.end);
        if let Some(t) = cr.total {
            assert!(cr.range.end <= t);
        }
    }
});
