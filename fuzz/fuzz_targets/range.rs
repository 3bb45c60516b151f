#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    if let Ok(s) = std::str::from_utf8(&data[8..])
        && let ferry_http::RangeRequest::Partial(r) = ferry_http::parse_range(Some(s), size)
    {
        assert!(r.start < r.end && r.end <= size);
    }
});
