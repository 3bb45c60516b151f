//! The upload-session engine: every rule of PRODUCT.md's "engine's
//! promises", independent of wire format and of storage backend.
//!
//! Dialects call one method per request (`create_session`, `write`,
//! `commit_upload`, …) and render the result. The engine owns:
//!
//! - **Live state per upload** ([`live`]): a cached copy of the upload and
//!   its session, the writes in flight, and the running SHA-256 of the
//!   in-order prefix. A per-upload async mutex serializes *bookkeeping*
//!   (which ranges are in flight, recording what became durable); the
//!   bytes themselves stream to storage outside the lock, so disjoint parts
//!   of one upload are written in parallel. Overlapping writes in flight
//!   are refused with `Conflict`. The slot is the unit a cross-node lease
//!   would protect later: acquiring it on another node means loading the
//!   upload fresh from metadata, which is all a slot holds.
//! - **Durability order**: data is written at its offset and synced by the
//!   store, then the range is recorded in metadata, then the caller hears
//!   success.
//! - **Commit** ([`commit`]): verify, resolve conflicts, record the intent,
//!   promote the bytes, record the result; start-up [`Engine::recover`]
//!   rolls an interrupted commit forward.

mod activity;
mod admin;
pub mod auth;
mod commit;
mod concat;
mod direct;
mod error;
mod files;
pub mod hashing;
mod hooks;
mod lease;
mod live;
mod objects;
mod session;
mod whole;
mod write;

use ferry_core::{FileRecord, Limits, Millis, Session, Upload};
use ferry_meta::MetaStore;
use ferry_store::{FileLoc, Store};
use std::collections::HashMap;
use std::sync::Arc;

pub use activity::Sample;
pub use admin::{Me, NewUser, UserView};
pub use auth::{Caller, Principal};
pub use commit::RecoveryReport;
pub use direct::{PRESIGN_TTL, PresignedPart};
pub use error::{EngineError, Result};
pub use files::FileRead;
pub use hashing::{Digests, Want};
pub use hooks::{HookData, HookKind, HookSink, Verdict, backoff};
pub use session::{NewSession, NewUpload, Precondition};
pub use write::{PartChecks, WholeUpload, WriteAt, WriteResult};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// An upload with the file its commit produced, if any.
#[derive(Clone, Debug)]
pub struct UploadView {
    pub upload: Upload,
    pub file: Option<FileRecord>,
}

/// A session with its uploads.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub session: Session,
    pub uploads: Vec<UploadView>,
}

/// Token id → (hash of the token, its principal), and the revocation epoch.
type TokenCache = (HashMap<String, (Vec<u8>, Principal)>, u64);

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn Store>,
    limits: Limits,
    signer: auth::Signer,
    live: std::sync::Mutex<live::LiveMap>,
    /// Striped per-session locks: a session's commit, abort and expiry
    /// exclude each other; different sessions proceed in parallel.
    session_locks: Vec<tokio::sync::Mutex<()>>,
    /// Held while final paths are chosen: choosing reads metadata and the
    /// paths other commits have claimed but not yet recorded (`pending`).
    namespace: tokio::sync::Mutex<()>,
    pending: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Verified tokens by id: (hash of the token, who it is). Saves two
    /// metadata reads per request. Revocation removes the entry and bumps
    /// the epoch, so a lookup that raced with it does not re-insert it.
    tokens: std::sync::Mutex<TokenCache>,
    /// Found users and spaces, cached; emptied when limits or members
    /// change (here, or on another node: [`ferry_meta::Change::Accounts`]).
    users: std::sync::Mutex<HashMap<String, ferry_core::User>>,
    spaces: std::sync::Mutex<HashMap<ferry_core::SpaceName, ferry_meta::SpaceRecord>>,
    /// Other nodes serve the same uploads ([`Engine::join_cluster`]).
    cluster: std::sync::atomic::AtomicBool,
    /// The leases of writes in flight here, by token: what stops each
    /// when another node asks for it ([`lease`]).
    leased: std::sync::Mutex<HashMap<String, tokio_util::sync::CancellationToken>>,
    /// Turns of sessions this node made holding them, by session id,
    /// until their first turn here ([`Engine::session_turn`]).
    born_turns: std::sync::Mutex<HashMap<String, lease::Lease>>,
    /// Where hook events go, if anywhere ([`Engine::set_hooks`]).
    hooks: hooks::HookState,
    /// This node's live figures ([`Engine::activity`]).
    activity: activity::Activity,
}

impl Engine {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        store: Arc<dyn Store>,
        limits: Limits,
        signing_key: Vec<u8>,
    ) -> Engine {
        let changes = meta.changes();
        let engine = Engine {
            inner: Arc::new(Inner {
                meta,
                store,
                limits,
                signer: auth::Signer::new(signing_key),
                live: Default::default(),
                session_locks: (0..256).map(|_| Default::default()).collect(),
                namespace: Default::default(),
                pending: Default::default(),
                tokens: Default::default(),
                users: Default::default(),
                spaces: Default::default(),
                cluster: Default::default(),
                leased: Default::default(),
                born_turns: Default::default(),
                hooks: Default::default(),
                activity: Default::default(),
            }),
        };
        if let Some(changes) = changes {
            tokio::spawn(forget_changes(Arc::downgrade(&engine.inner), changes));
        }
        engine
    }

    /// The lock stripe of a session.
    pub(crate) fn session_lock(&self, session_id: &str) -> &tokio::sync::Mutex<()> {
        let h = session_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.inner.session_locks[h % self.inner.session_locks.len()]
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The `sig` query value of an upload's signed URL.
    pub fn sign_upload(&self, upload: &str) -> String {
        self.inner.signer.sign(upload)
    }

    /// Checks a signed URL; the caller it grants.
    pub fn verify_upload_sig(&self, upload: &str, sig: &str) -> Result<Caller> {
        if self.inner.signer.verify(upload, sig) {
            Ok(Caller::Upload(upload.to_owned()))
        } else {
            Err(EngineError::Unauthenticated(
                "the upload URL's signature is not valid".into(),
            ))
        }
    }

    /// The signature of a session token (`Caller::Session`).
    pub fn sign_session(&self, session: &str) -> String {
        self.inner.signer.sign_session(session)
    }

    /// Checks a session token's signature; the caller it grants.
    pub fn verify_session_sig(&self, session: &str, sig: &str) -> Result<Caller> {
        if self.inner.signer.verify_session(session, sig) {
            Ok(Caller::Session(session.to_owned()))
        } else {
            Err(EngineError::Unauthenticated(
                "the session token's signature is not valid".into(),
            ))
        }
    }

    /// A signature over `data` with the server's key, for a dialect's own
    /// signed documents (deepset's POST policy). `purpose` separates uses:
    /// a signature made for one purpose never verifies for another.
    pub fn sign(&self, purpose: &str, data: &str) -> String {
        self.inner.signer.sign_for(purpose, data)
    }

    /// Checks a signature made by [`Engine::sign`] (constant time).
    pub fn verify_signed(&self, purpose: &str, data: &str, sig: &str) -> bool {
        self.inner.signer.verify_for(purpose, data, sig)
    }

    /// Tells the engine that other nodes serve the same uploads (shared
    /// metadata and shared storage): it then keeps no upload state across
    /// requests that another node could change.
    pub fn join_cluster(&self) {
        self.inner
            .cluster
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn in_cluster(&self) -> bool {
        self.inner
            .cluster
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether other processes sharing the metadata are at work though
    /// none holds `node` ([`MetaStore::others_at_work`]).
    pub async fn others_at_work(&self) -> Result<bool> {
        Ok(self.inner.meta.others_at_work().await?)
    }

    /// Makes this node the only one doing `what` among the nodes sharing
    /// the metadata, while the hold lives ([`MetaStore::try_exclusive`]).
    pub async fn try_exclusive(&self, what: &str) -> Result<Option<ferry_meta::Exclusive>> {
        Ok(self.inner.meta.try_exclusive(what).await?)
    }

    /// Holds `what` shared with other nodes ([`MetaStore::shared`]).
    pub async fn hold_shared(&self, what: &str) -> Result<ferry_meta::Exclusive> {
        Ok(self.inner.meta.shared(what).await?)
    }

    /// Whether other nodes serve the same uploads.
    pub fn is_in_cluster(&self) -> bool {
        self.in_cluster()
    }

    /// Whether metadata and storage answer.
    pub async fn ready(&self) -> Result<()> {
        self.inner.meta.ping().await?;
        self.inner.store.ready().await?;
        Ok(())
    }
}

/// Makes the caches forget what other processes sharing the metadata
/// change (a token revoked on another node stops working here as soon as
/// its announcement arrives), until the engine is dropped.
async fn forget_changes(
    inner: std::sync::Weak<Inner>,
    mut changes: tokio::sync::broadcast::Receiver<ferry_meta::Change>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            Err(RecvError::Lagged(_)) => ferry_meta::Change::Unknown,
            Err(RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        use ferry_meta::Change;
        if let Change::ReleaseAsked(_) | Change::Released(_) | Change::LeasesLost = change {
            lease::heard(&inner, &change);
            continue;
        }
        let mut tokens = inner.tokens.lock().unwrap();
        tokens.1 += 1;
        match change {
            Change::TokenRevoked(id) => {
                tokens.0.remove(&id);
            }
            Change::Accounts => {
                inner.users.lock().unwrap().clear();
                inner.spaces.lock().unwrap().clear();
            }
            _ => {
                tokens.0.clear();
                inner.users.lock().unwrap().clear();
                inner.spaces.lock().unwrap().clear();
            }
        }
    }
}

/// Where a file's bytes are in the store, from its record.
pub(crate) fn loc(f: &FileRecord) -> FileLoc<'_> {
    FileLoc {
        space: &f.space,
        path: &f.path,
        object: f.object.as_deref(),
    }
}
