//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 11, G): each
//! runs a dialect's wire parsers on arbitrary bytes and checks what they
//! promise. Not an API: hidden from the docs; nothing else calls it.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

fn one_header(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static(name),
        HeaderValue::from_bytes(value).ok()?,
    );
    Some(h)
}

/// tus: `Upload-Metadata`, `Upload-Checksum`, `Upload-Concat`,
/// `Upload-Offset` (the same bytes as each).
pub fn tus_headers(data: &[u8]) {
    if let Some(h) = one_header("upload-offset", data)
        && let Ok(Some(n)) = crate::tus::int_header(&h, "upload-offset")
    {
        let text = std::str::from_utf8(data).expect("a parsed offset is text");
        assert_eq!(text.trim().parse::<u64>().ok(), Some(n));
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(meta) = crate::tus::meta::parse_upload_metadata(s) {
        assert!(
            meta.keys()
                .all(|k| !k.is_empty() && !k.contains([' ', ',']))
        );
    }
    if let Ok(d) = crate::tus::v1::parse_checksum(s) {
        assert_eq!(d.bytes.len(), d.algo.output_len());
    }
    if let Ok(crate::tus::meta::Concat::Final(urls)) = crate::tus::v1::parse_concat(Some(s)) {
        assert_eq!(s.strip_prefix("final;").map(str::trim), Some(urls.as_str()));
    }
}

/// Box's `Digest: sha=<base64>` and Veeva's `Content-MD5` (hex or base64).
pub fn digests(data: &[u8]) {
    if let Some(h) = one_header("digest", data)
        && let Ok(d) = crate::boxapi::sha1_digest(&h, "digest")
    {
        assert_eq!(d.bytes.len(), 20);
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = crate::veeva::parse_md5(s)
    {
        assert_eq!(d.bytes.len(), 16);
    }
}

/// UCloud's folder-WebSocket frames: every message parsed holds only
/// bytes of the frame.
pub fn ucloud_frame(data: &[u8]) {
    if let Ok(msgs) = crate::ucloud::wire::parse(Bytes::copy_from_slice(data)) {
        for m in msgs {
            if let crate::ucloud::wire::Incoming::Chunk(_, b) = m {
                assert!(b.len() < data.len());
            }
        }
    }
}

/// The dialects' JSON request bodies, as their handlers deserialize them.
pub fn json_bodies(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::graph::CreateBody>(data);
    let _ = serde_json::from_slice::<crate::ucloud::CreateBody>(data);
    let _ = serde_json::from_slice::<crate::boxapi::CommitBody>(data);
    use crate::native::model as n;
    let _ = serde_json::from_slice::<n::CreateSessionBody>(data);
    let _ = serde_json::from_slice::<n::CommitSessionBody>(data);
    let _ = serde_json::from_slice::<n::NewUserBody>(data);
    let _ = serde_json::from_slice::<n::NewSpaceBody>(data);
    if let Ok(v) = crate::boxapi::json_body(&Bytes::copy_from_slice(data)) {
        let _ = crate::boxapi::file_size(&v);
    }
}

/// Tokens and cursors: Veeva's opaque page cursor, and a signature check
/// on arbitrary claims and signatures (only the signer's own verifies).
pub fn tokens(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::veeva::cursor_after(s);
    match crate::ucloud::parse_token(s) {
        Ok(crate::ucloud::Claim::File { upload, sig }) => {
            assert_eq!(s.trim(), format!("u{upload}.{sig}"));
        }
        Ok(crate::ucloud::Claim::Folder {
            session,
            folder_hex,
            folder,
            sig,
        }) => {
            assert_eq!(s.trim(), format!("s{session}.{folder_hex}.{sig}"));
            assert_eq!(hex::encode(folder), folder_hex.to_ascii_lowercase());
        }
        Err(_) => {}
    }
    let signer = ferry_engine::auth::Signer::new(b"fuzz-key".to_vec());
    let (claim, sig) = s.rsplit_once('.').unwrap_or((s, ""));
    if signer.verify_for("upload", claim, sig) {
        assert_eq!(sig, signer.sign_for("upload", claim));
    }
    assert!(signer.verify_for("upload", claim, &signer.sign_for("upload", claim)));
    assert!(!signer.verify_for("session", claim, &signer.sign_for("upload", claim)));
}

/// deepset's POST form, as its handler reads it: the fields up to the
/// `file` part (within their limits), then the file's bytes.
pub fn deepset_form(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, "b");
    futures::executor::block_on(async {
        if let Ok((fields, mut file)) = crate::deepset::read_fields(&mut form).await {
            use crate::deepset::{MAX_FIELD, MAX_FIELDS};
            assert!(fields.len() <= MAX_FIELDS);
            assert!(fields.values().all(|v| v.len() <= MAX_FIELD));
            let name = file.name().map(str::to_ascii_lowercase);
            assert_eq!(name.as_deref(), Some("file"));
            while let Ok(Some(_)) = file.chunk().await {}
        }
    });
}
