#![no_main]
use ferry_core::{SpaceName, SpacePath};
use libfuzzer_sys::fuzz_target;

// Path and name normalization: what parses is within the limits and
// parses again to itself.
fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = SpacePath::parse(s) {
        let n = p.as_str();
        assert!(n.len() <= ferry_core::path::MAX_PATH_BYTES, "{n:?}");
        assert!(
            n.split('/').all(|seg| !seg.is_empty()
                && seg.len() <= ferry_core::path::MAX_NAME_BYTES
                && seg != "."
                && seg != ".."),
            "{n:?}"
        );
        assert_eq!(SpacePath::parse(n).as_ref(), Ok(&p));
    }
    if let Ok(name) = SpaceName::parse(s) {
        assert_eq!(SpaceName::parse(name.as_str()).as_ref(), Ok(&name));
    }
});
