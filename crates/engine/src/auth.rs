//! Who is calling: API tokens, signed upload URLs, and access rules.
//!
//! Tokens look like `fy_<id>_<secret>`. Only SHA-256 of the whole token is
//! stored; the id finds the record, and the hash is compared in constant
//! time. A token of another shape (an operator's `FERRY_ADMIN_TOKEN`) gets
//! an id derived from its hash, so it works the same way.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub admin: bool,
}

/// What a request is allowed to act as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    User(Principal),
    /// A signed URL: data writes and status reads of this one upload.
    Upload(String),
    /// A signed session token (a folder streamed over a WebSocket): adds
    /// uploads to this one session, writes, reads, commits and aborts its
    /// uploads, and looks up files in its space (`Engine::session_file`).
    Session(String),
}

impl Caller {
    /// Which uploads of `upload_id`'s id this caller may act on, by
    /// whose they are (`None`: not this one): the one rule both
    /// `authorize` (after a read) and a claim made before the read
    /// (`Engine::claim_unread`) follow.
    pub(crate) fn upload_scope(&self, upload_id: &str) -> Option<ferry_meta::ClaimBy> {
        use ferry_meta::ClaimBy;
        match self {
            Caller::User(p) if p.admin => Some(ClaimBy::Anyone),
            Caller::User(p) => Some(ClaimBy::Owner(p.user.clone())),
            Caller::Session(s) => Some(ClaimBy::Session(s.clone())),
            Caller::Upload(id) => (id == upload_id).then_some(ClaimBy::Anyone),
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh token and the id under which it is stored.
pub fn new_token() -> (String, String) {
    let id = random_hex(8);
    let token = format!("fy_{id}_{}", random_hex(32));
    (id, token)
}

/// The record id of a token.
pub fn token_id(token: &str) -> String {
    if let Some(rest) = token.strip_prefix("fy_")
        && let Some((id, secret)) = rest.split_once('_')
        && id.len() == 16
        && !secret.is_empty()
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return id.to_owned();
    }
    format!("x{}", &hex::encode(token_hash(token))[..15])
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Signs and checks per-upload URLs and session tokens with a server-held
/// key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    /// The MAC of `data` for one `purpose`: the purpose is part of what is
    /// signed, so a signature made for one use is worthless for another.
    fn mac(&self, purpose: &str, data: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"ferry-");
        mac.update(purpose.as_bytes());
        mac.update(b"-v1:");
        mac.update(data.as_bytes());
        mac
    }

    /// The `sig` value for an upload.
    pub fn sign(&self, upload: &str) -> String {
        self.sign_for("upload", upload)
    }

    pub fn verify(&self, upload: &str, sig: &str) -> bool {
        self.verify_for("upload", upload, sig)
    }

    /// The signature of a session token.
    pub fn sign_session(&self, session: &str) -> String {
        self.sign_for("session", session)
    }

    pub fn verify_session(&self, session: &str, sig: &str) -> bool {
        self.verify_for("session", session, sig)
    }

    /// Hex HMAC-SHA256 of `data` for `purpose` (a short word without `-`).
    pub fn sign_for(&self, purpose: &str, data: &str) -> String {
        hex::encode(self.mac(purpose, data).finalize().into_bytes())
    }

    /// Checks `sig` in constant time. Only the lowercase hex that
    /// `sign_for` issues is accepted: a signature has one spelling, so a
    /// URL with its case changed names no session.
    pub fn verify_for(&self, purpose: &str, data: &str, sig: &str) -> bool {
        if sig.bytes().any(|b| b.is_ascii_uppercase()) {
            return false;
        }
        match hex::decode(sig) {
            Ok(raw) => self.mac(purpose, data).verify_slice(&raw).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids() {
        let (id, tok) = new_token();
        assert_eq!(token_id(&tok), id);
        assert!(tok.len() > 64);
        let other = token_id("my-operator-secret");
        assert_eq!(other.len(), 16);
        assert_eq!(other, token_id("my-operator-secret"));
        assert_ne!(other, token_id("my-operator-secreT"));
    }

    #[test]
    fn signatures_bind_the_upload() {
        let s = Signer::new(b"k".to_vec());
        let sig = s.sign("u1");
        assert!(s.verify("u1", &sig));
        assert!(!s.verify("u2", &sig));
        let mut bad = sig.clone();
        bad.replace_range(0..1, if &sig[..1] == "0" { "1" } else { "0" });
        assert!(!s.verify("u1", &bad));
        assert!(!s.verify("u1", "zz"));
        assert!(!Signer::new(b"other".to_vec()).verify("u1", &sig));
    }

    #[test]
    fn a_signature_in_uppercase_hex_is_not_the_issued_signature() {
        let s = Signer::new(b"k".to_vec());
        // Hex is case-insensitive; the URL the server issued is not.
        let sig = (0..)
            .map(|i| (format!("u{i}"), s.sign(&format!("u{i}"))))
            .find(|(_, sig)| sig.ends_with(|c: char| c.is_ascii_alphabetic()))
            .unwrap();
        let (upload, sig) = sig;
        assert!(s.verify(&upload, &sig));
        assert!(!s.verify(&upload, &sig.to_ascii_uppercase()));
        let mut one = sig.clone();
        let last = one.pop().unwrap();
        one.push(last.to_ascii_uppercase());
        assert!(!s.verify(&upload, &one));
    }

    #[test]
    fn session_signatures_are_not_upload_signatures() {
        let s = Signer::new(b"k".to_vec());
        let sig = s.sign_session("s1");
        assert!(s.verify_session("s1", &sig));
        assert!(!s.verify_session("s2", &sig));
        assert!(!s.verify("s1", &sig));
        assert!(!s.verify_session("u1", &s.sign("u1")));
    }

    #[test]
    fn signatures_bind_their_purpose() {
        let s = Signer::new(b"k".to_vec());
        let sig = s.sign_for("policy", "u1");
        assert!(s.verify_for("policy", "u1", &sig));
        assert!(!s.verify("u1", &sig), "a policy signature is no upload URL");
        assert!(!s.verify_for("policy", "u1", &s.sign("u1")));
        assert!(!s.verify_for("policy", "u2", &sig));
    }
}

/// Fuzzing campaign (issue 11, G): signed-URL tokens and bearer tokens
/// never panic, and a signature is good for exactly what it signed.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_signature_text_is_checked_without_panicking(data in any::<String>(), sig in prop_oneof![any::<String>(), "[0-9a-f]{0,80}"]) {
            let s = Signer::new(b"key".to_vec());
            prop_assert!(!s.verify(&data, &sig) || sig == s.sign(&data));
            let _ = s.verify_session(&data, &sig);
            let _ = token_id(&sig);
        }

        #[test]
        fn a_signature_verifies_only_its_own_data_and_purpose(data in any::<String>(), other in any::<String>(), flip in 0usize..64) {
            let s = Signer::new(b"key".to_vec());
            let sig = s.sign(&data);
            prop_assert!(s.verify(&data, &sig));
            prop_assert!(!s.verify_session(&data, &sig), "purposes differ");
            if other != data {
                prop_assert!(!s.verify(&other, &sig));
            }
            let mut bad: Vec<char> = sig.chars().collect();
            let i = flip % bad.len();
            bad[i] = if bad[i] == '0' { '1' } else { '0' };
            let bad: String = bad.into_iter().collect();
            prop_assert!(!s.verify(&data, &bad));
        }
    }
}
