//! In-memory state of uploads being worked on.

use crate::auth::Caller;
use crate::hashing::{Cursor, Hashers, Want};
use crate::{Engine, EngineError, Result};
use ferry_core::{ByteRange, Millis, Session, SessionState, StateError, Upload, UploadState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Live slots by upload id, with an index by session so that a session's
/// state change touches only its own slots.
#[derive(Default)]
pub(crate) struct LiveMap {
    slots: HashMap<String, Arc<Slot>>,
    by_session: HashMap<String, HashSet<String>>,
}

impl LiveMap {
    fn insert(&mut self, session: &str, upload: &str, slot: Arc<Slot>) -> Arc<Slot> {
        self.by_session
            .entry(session.to_owned())
            .or_default()
            .insert(upload.to_owned());
        self.slots.entry(upload.to_owned()).or_insert(slot).clone()
    }

    fn remove(&mut self, session: &str, upload: &str) {
        self.slots.remove(upload);
        if let Some(set) = self.by_session.get_mut(session) {
            set.remove(upload);
            if set.is_empty() {
                self.by_session.remove(session);
            }
        }
    }
}

pub(crate) struct Slot {
    pub state: tokio::sync::Mutex<Live>,
    /// Held by the hash follower while it runs; commit takes it before
    /// reading the cursor, so it waits for the follower instead of
    /// re-reading the same bytes. Lock order: `hashing`, then `state`.
    pub hashing: tokio::sync::Mutex<()>,
    /// Woken whenever a write leaves `inflight`, for [`Engine::take_over`].
    pub settled: tokio::sync::Notify,
}

/// A write streaming now.
pub(crate) struct Inflight {
    pub id: u64,
    pub range: ByteRange,
    /// Cancelled when a newer request takes the upload over: the write
    /// stops reading its body and keeps what it made durable.
    pub stop: tokio_util::sync::CancellationToken,
}

pub(crate) struct Live {
    pub session: Session,
    pub upload: Upload,
    /// Writes streaming now.
    pub inflight: Vec<Inflight>,
    pub next_write: u64,
    /// SHA-256 of the in-order prefix; `None` once bytes arrived that make
    /// it unusable (a rewrite inside the hashed prefix).
    pub cursor: Option<Cursor>,
    /// Bumped whenever `cursor` is replaced or dropped, so a write that
    /// started hashing at an old cursor cannot install a stale result.
    pub cursor_gen: u64,
    /// A commit is verifying this upload: new writes wait their turn.
    pub committing: bool,
    /// While the follower hashes `cursor.offset..follow_end` from storage.
    pub follow_end: Option<u64>,
    /// [`Engine::put_upload`] gave this upload to a request for its body:
    /// it is never handed to another one, even before its first byte.
    pub taken: bool,
    /// The upload is known to no other request: a one-request upload made
    /// on this node ([`crate::NewSession::whole_in_request`]), whose ids
    /// nobody has until it answers. No other node writes or commits it;
    /// its session's turn is this node's from its creation.
    pub private: bool,
    /// In a cluster, what the write that completed the upload left to the
    /// commit that follows it ([`Left`]).
    pub left: Option<Left>,
    /// The slot was made with the upload, on this node
    /// ([`Engine::seed_slots`]), not read from the metadata.
    pub made_here: bool,
}

/// What a write that completed an upload committed on its last byte
/// leaves, in a cluster, to the commit that follows it: its range, which
/// the commit's intent records (one metadata step fewer), and an append's
/// lease, which the commit goes on holding as its own (no lease, no read).
/// A commit that fails before it takes them records the range, then ends
/// the lease.
pub(crate) struct Left {
    pub range: ByteRange,
    pub lease: Option<crate::lease::Lease>,
}

impl Live {
    /// Refuses writes unless the session and upload are open and unexpired.
    pub fn check_writable(&self, now: Millis) -> Result<()> {
        self.session
            .state
            .check_writable()
            .map_err(EngineError::Gone)?;
        if self.session.is_expired_at(now) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        self.upload
            .state
            .check_writable()
            .map_err(EngineError::Gone)?;
        if self.committing {
            return Err(EngineError::Conflict(
                "the upload is being committed; no more bytes are accepted".into(),
            ));
        }
        Ok(())
    }

    pub fn drop_cursor(&mut self) {
        self.cursor = None;
        self.cursor_gen += 1;
    }
}

/// A slot for an upload; `hash_in_order`: whether the bytes streaming
/// through this node may be hashed as they come (not in a cluster, where
/// other nodes write too).
fn new_slot(session: Session, upload: Upload, hash_in_order: bool) -> Slot {
    let fresh = upload.received.is_empty() && !upload.direct;
    let cursor = (fresh && hash_in_order).then(|| Cursor {
        offset: 0,
        hasher: Hashers::new(Want::whole(&upload.whole_digests)),
    });
    Slot {
        state: tokio::sync::Mutex::new(Live {
            session,
            upload,
            inflight: Vec::new(),
            next_write: 0,
            cursor,
            cursor_gen: 0,
            committing: false,
            follow_end: None,
            taken: false,
            private: false,
            made_here: false,
            left: None,
        }),
        hashing: tokio::sync::Mutex::new(()),
        settled: tokio::sync::Notify::new(),
    }
}

impl Slot {
    /// Locks the upload with no write in flight: earlier writes are told
    /// to stop, and each keeps the bytes it made durable. This is the lock
    /// hand-over of tus and the IETF draft: a client that lost its network
    /// mid-request comes back and is answered at once, instead of waiting
    /// for the dead request to time out.
    pub async fn take_over(&self) -> tokio::sync::MutexGuard<'_, Live> {
        loop {
            let live = self.state.lock().await;
            if live.inflight.is_empty() {
                return live;
            }
            for w in &live.inflight {
                w.stop.cancel();
            }
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            drop(live);
            settled.await;
        }
    }

    /// Locks the upload once no stopped write is still in flight: a write
    /// whose request went away (or was taken over) is settling, and a new
    /// request waits for that instead of being refused as overlapping it.
    pub async fn lock_settled(&self) -> tokio::sync::MutexGuard<'_, Live> {
        loop {
            let live = self.state.lock().await;
            if !live.inflight.iter().any(|w| w.stop.is_cancelled()) {
                return live;
            }
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            drop(live);
            settled.await;
        }
    }

    /// Removes a finished write from `inflight` and wakes whoever waits
    /// to take the upload over (they get the lock once bookkeeping is done).
    pub fn finished(&self, live: &mut Live, write: u64) {
        live.inflight.retain(|w| w.id != write);
        self.settled.notify_waiters();
    }
}

impl Engine {
    /// Stops any write in flight on the upload (keeping its durable bytes)
    /// and answers the upload's true status with its session: the offset
    /// retrieval of tus and the IETF draft.
    pub async fn take_over(
        &self,
        caller: &Caller,
        upload_id: &str,
    ) -> Result<(crate::UploadView, Session)> {
        let slot = self.slot(caller, upload_id).await?;
        // The lease below marks the upload claimed: no write of it claims
        // nothing any more.
        slot.take_over().await.made_here = false;
        // And on other nodes: a write there stops and records what it made
        // durable before this answers.
        let lease = self
            .lease(upload_id, 0, u64::MAX, ferry_meta::LeaseKind::Append)
            .await;
        match lease {
            Ok(Some(lease)) => lease.release().await,
            Ok(None) => {}
            // Being committed: the status says so.
            Err(EngineError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.upload_and_session(caller, upload_id).await
    }

    /// The live slot of an upload, loading it if needed, after checking
    /// that `caller` may touch it (others get `NotFound`, never `Forbidden`,
    /// so ids of other users' uploads leak nothing).
    pub(crate) async fn slot(&self, caller: &Caller, upload_id: &str) -> Result<Arc<Slot>> {
        self.slot_as_read(caller, upload_id, None).await
    }

    /// [`Engine::slot`], brought up to `read` (the upload and its session
    /// as the claim of a lease over all the upload's bytes read them once
    /// granted: no write records a range of the upload while that lease
    /// is held, so the read, though taken before the slot's lock, holds
    /// every range written; parts sent straight to the store are learnt
    /// apart, `learn_direct_parts`) rather than to the metadata read again.
    pub(crate) async fn slot_as_read(
        &self,
        caller: &Caller,
        upload_id: &str,
        read: Option<(Upload, Session)>,
    ) -> Result<Arc<Slot>> {
        self.slot_as_read_since(caller, upload_id, read, None).await
    }

    /// [`Engine::slot_as_read`] for a read under a lease over some of the
    /// upload's bytes, whose claim was sent when the slot held `since`:
    /// other writes of this node may have changed the slot meanwhile
    /// (recorded or forgotten bytes), and then the read, older than the
    /// slot, is not applied: the metadata is read again, under the slot's
    /// lock.
    pub(crate) async fn slot_as_read_since(
        &self,
        caller: &Caller,
        upload_id: &str,
        read: Option<(Upload, Session)>,
        since: Option<Upload>,
    ) -> Result<Arc<Slot>> {
        let not_found = || EngineError::NotFound(format!("no upload {upload_id:?}"));
        let cached = self.cached_slot(upload_id);
        // In a cluster, other nodes write to the same uploads: the slot is
        // brought up to the metadata at every use (acknowledged ranges and
        // parts are recorded before they are acknowledged, so the metadata
        // holds all of them), keeping only what this node has in flight. No
        // in-order hash is kept: bytes written elsewhere may have replaced
        // some it covered; the commit reads the object back instead.
        let cluster = self.in_cluster();
        if let Some(slot) = &cached
            && !cluster
        {
            return self.authorize(caller, upload_id, slot.clone()).await;
        }
        // The upload and its session as recorded, and whether a slot of
        // them stays cached (both open). A read given when the slot has
        // changed `since` its claim is older than the slot: the metadata
        // is read again, under the slot's lock.
        let read = async |now: Option<&Upload>| {
            let changed = since.is_some() && now.is_some() && since.as_ref() != now;
            let (upload, session) = match read.filter(|_| !changed) {
                Some(read) => read,
                None => self
                    .inner
                    .meta
                    .upload_and_session(upload_id)
                    .await?
                    .ok_or_else(not_found)?,
            };
            let cacheable =
                session.state == SessionState::Open && upload.state == UploadState::Open;
            Ok::<_, EngineError>((upload, session, cacheable))
        };
        let slot = match cached {
            Some(slot) => {
                let (cacheable, session_id) = {
                    // Read under the slot's lock (or, given, under a lease
                    // of every byte): a write here records its
                    // range under it too, so the read sees every range this
                    // node recorded, and the slot never goes back to an
                    // older state (a write that completed the upload would
                    // find it incomplete and not commit).
                    let mut live = slot.state.lock().await;
                    // This node holds the upload until the commit that
                    // follows its completing write (`Left`): the slot is
                    // the truth, and its last range is not recorded yet.
                    if live.left.is_some() {
                        drop(live);
                        return self.authorize(caller, upload_id, slot).await;
                    }
                    let (upload, session, cacheable) = read(Some(&live.upload)).await?;
                    let session_id = session.id.clone();
                    live.upload = upload;
                    live.session = session;
                    live.drop_cursor();
                    (cacheable, session_id)
                };
                if !cacheable {
                    self.inner
                        .live
                        .lock()
                        .unwrap()
                        .remove(&session_id, upload_id);
                }
                slot
            }
            None => {
                let (upload, session, cacheable) = read(None).await?;
                let session_id = session.id.clone();
                let slot = Arc::new(new_slot(session, upload, !cluster));
                if !cacheable {
                    return self.authorize(caller, upload_id, slot).await;
                }
                self.inner
                    .live
                    .lock()
                    .unwrap()
                    .insert(&session_id, upload_id, slot)
            }
        };
        self.authorize(caller, upload_id, slot).await
    }

    async fn authorize(
        &self,
        caller: &Caller,
        upload_id: &str,
        slot: Arc<Slot>,
    ) -> Result<Arc<Slot>> {
        let not_found = || EngineError::NotFound(format!("no upload {upload_id:?}"));
        let allowed = match caller.upload_scope(upload_id) {
            Some(scope) => {
                let live = slot.state.lock().await;
                scope.admits(&live.session.owner, &live.session.id)
            }
            None => false,
        };
        if !allowed {
            return Err(not_found());
        }
        Ok(slot)
    }

    /// The slot this node keeps for an upload, if any, as it is.
    pub(crate) fn cached_slot(&self, upload_id: &str) -> Option<Arc<Slot>> {
        self.inner
            .live
            .lock()
            .unwrap()
            .slots
            .get(upload_id)
            .cloned()
    }

    /// For a write that reads the upload afresh once its lease is granted
    /// (an append in a cluster): the cached slot when there is one,
    /// authorized (whose an upload is never changes) but not brought up to
    /// date, which would read the metadata twice; else [`Engine::slot`].
    pub(crate) async fn slot_before_lease(
        &self,
        caller: &Caller,
        upload_id: &str,
    ) -> Result<Arc<Slot>> {
        match self.cached_slot(upload_id) {
            Some(slot) => self.authorize(caller, upload_id, slot).await,
            None => self.slot(caller, upload_id).await,
        }
    }

    /// Caches fresh slots for a new session's uploads, so that their first
    /// writes need no metadata read; the cached slots, in order. `private`:
    /// uploads no other request writes ([`Live::private`]), whose bytes
    /// are hashed as they come even in a cluster (their commit reads
    /// nothing back).
    pub(crate) fn seed_slots(
        &self,
        session: &Session,
        uploads: &[Upload],
        private: bool,
    ) -> Vec<Arc<Slot>> {
        let mut map = self.inner.live.lock().unwrap();
        let hash_in_order = private || !self.in_cluster();
        uploads
            .iter()
            .map(|up| {
                let mut slot = new_slot(session.clone(), up.clone(), hash_in_order);
                let live = slot.state.get_mut();
                live.private = private;
                live.made_here = true;
                map.insert(&session.id, &up.id, Arc::new(slot))
            })
            .collect()
    }

    /// The live slots of a session's uploads, by upload id.
    pub(crate) fn session_slots_by_id(&self, session_id: &str) -> Vec<(String, Arc<Slot>)> {
        let map = self.inner.live.lock().unwrap();
        map.by_session
            .get(session_id)
            .into_iter()
            .flatten()
            .filter_map(|id| map.slots.get(id).map(|s| (id.clone(), s.clone())))
            .collect()
    }

    pub(crate) fn session_slots(&self, session_id: &str) -> Vec<Arc<Slot>> {
        self.session_slots_by_id(session_id)
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    /// Updates every live slot of a session after its state changed, and
    /// forgets slots that can no longer take bytes.
    pub(crate) async fn refresh_session(
        &self,
        session: &Session,
        uploads: &[(String, UploadState)],
    ) {
        let slots = self.session_slots_by_id(&session.id);
        let changed: HashMap<&str, UploadState> =
            uploads.iter().map(|(u, st)| (u.as_str(), *st)).collect();
        let mut gone = Vec::new();
        for (id, slot) in slots {
            let mut live = slot.state.lock().await;
            live.session = session.clone();
            if let Some(st) = changed.get(id.as_str()) {
                live.upload.state = *st;
            }
            if session.state != SessionState::Open || live.upload.state != UploadState::Open {
                gone.push(id);
            }
        }
        let mut map = self.inner.live.lock().unwrap();
        for id in gone {
            map.remove(&session.id, &id);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Caller, Engine, NewSession, NewUpload, PartChecks, Principal, WriteAt};
    use bytes::Bytes;
    use ferry_core::{ByteRange, Limits};
    use futures::StreamExt;
    use std::sync::Arc;

    /// A part's claim reads the upload under a lease of the part's bytes
    /// only: a read taken before another write of this node changed the
    /// slot is older than the slot, and is not applied (the metadata is
    /// read again); a read taken when the slot was as it is, is.
    #[tokio::test]
    async fn a_claims_read_older_than_the_slot_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(ferry_meta::Sqlite::open(dir.path().join("ferry.db")).unwrap());
        let store = Arc::new(ferry_store::LocalStore::open(dir.path()).unwrap());
        let engine = Engine::new(meta.clone(), store, Limits::default(), vec![1; 32]);
        engine.bootstrap(Some("t")).await.unwrap();
        engine.join_cluster();
        let admin = Caller::User(Principal {
            user: "admin".into(),
            admin: true,
        });
        let new = NewSession {
            uploads: vec![NewUpload {
                path: "p.bin".into(),
                size: Some(20),
                ..Default::default()
            }],
            dialect: "test".into(),
            ..Default::default()
        };
        let view = engine.create_session(&admin, new).await.unwrap();
        let id = view.uploads[0].upload.id.clone();
        let part = |n: u32, a: u64, b: u64| {
            let at = WriteAt::PartAt {
                number: n,
                range: ByteRange::new(a, b).unwrap(),
            };
            let body = futures::stream::iter([Ok(Bytes::from(vec![n as u8; (b - a) as usize]))]);
            (at, body.boxed())
        };
        let (at, body) = part(1, 0, 10);
        let checks = PartChecks::default;
        engine.write(&admin, &id, at, body, checks()).await.unwrap();
        let slot = engine.cached_slot(&id).expect("the slot is kept");
        let holds = || async { slot.state.lock().await.upload.clone() };
        let (old, since) = (meta_read(&*meta, &id).await, holds().await);
        let (at, body) = part(2, 10, 20);
        engine.write(&admin, &id, at, body, checks()).await.unwrap();

        // Older than the slot: read again, both parts kept.
        engine
            .slot_as_read_since(&admin, &id, Some(old.clone()), Some(since))
            .await
            .unwrap();
        let now = holds().await;
        assert!(
            now.received.covers(&ByteRange::new(0, 20).unwrap()),
            "{now:?}"
        );
        assert_eq!(now.parts.keys().copied().collect::<Vec<_>>(), [1, 2]);
        // Taken when the slot was as it is: applied as read.
        engine
            .slot_as_read_since(&admin, &id, Some(old), Some(now))
            .await
            .unwrap();
        assert_eq!(holds().await.parts.keys().copied().collect::<Vec<_>>(), [1]);
    }

    async fn meta_read(
        meta: &dyn ferry_meta::MetaStore,
        id: &str,
    ) -> (ferry_core::Upload, ferry_core::Session) {
        meta.upload_and_session(id).await.unwrap().unwrap()
    }
}
