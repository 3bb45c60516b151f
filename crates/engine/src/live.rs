//! In-memory state of uploads being worked on.

use crate::auth::Caller;
use crate::hashing::{Cursor, Hashers, Want};
use crate::{Engine, EngineError, Result};
use ferry_core::{ByteRange, Millis, Session, SessionState, StateError, Upload, UploadState};
use std::sync::Arc;

pub(crate) struct Slot {
    pub state: tokio::sync::Mutex<Live>,
    /// Held by the hash follower while it runs; commit takes it before
    /// reading the cursor, so it waits for the follower instead of
    /// re-reading the same bytes. Lock order: `hashing`, then `state`.
    pub hashing: tokio::sync::Mutex<()>,
}

pub(crate) struct Live {
    pub session: Session,
    pub upload: Upload,
    /// Writes streaming now, by write number.
    pub inflight: Vec<(u64, ByteRange)>,
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

impl Engine {
    /// The live slot of an upload, loading it if needed, after checking
    /// that `caller` may touch it (others get `NotFound`, never `Forbidden`,
    /// so ids of other users' uploads leak nothing).
    pub(crate) async fn slot(&self, caller: &Caller, upload_id: &str) -> Result<Arc<Slot>> {
        let not_found = || EngineError::NotFound(format!("no upload {upload_id:?}"));
        let cached = self.inner.live.lock().unwrap().get(upload_id).cloned();
        let slot = match cached {
            Some(s) => s,
            None => {
                let upload = self
                    .inner
                    .meta
                    .get_upload(upload_id)
                    .await?
                    .ok_or_else(not_found)?;
                let session = self
                    .inner
                    .meta
                    .get_session(&upload.session_id)
                    .await?
                    .ok_or_else(not_found)?;
                let cursor = upload.received.is_empty().then(|| Cursor {
                    offset: 0,
                    hasher: Hashers::new(Want::SHA256),
                });
                let cacheable =
                    session.state == SessionState::Open && upload.state == UploadState::Open;
                let slot = Arc::new(Slot {
                    state: tokio::sync::Mutex::new(Live {
                        session,
                        upload,
                        inflight: Vec::new(),
                        next_write: 0,
                        cursor,
                        cursor_gen: 0,
                        committing: false,
                        follow_end: None,
                    }),
                    hashing: tokio::sync::Mutex::new(()),
                });
                if !cacheable {
                    return self.authorize(caller, upload_id, slot).await;
                }
                self.inner
                    .live
                    .lock()
                    .unwrap()
                    .entry(upload_id.to_owned())
                    .or_insert(slot)
                    .clone()
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
        let allowed = {
            let live = slot.state.lock().await;
            match caller {
                Caller::User(p) => p.admin || live.session.owner == p.user,
                Caller::Upload(id) => id == upload_id,
            }
        };
        if !allowed {
            return Err(not_found());
        }
        Ok(slot)
    }

    /// Updates every live slot of a session after its state changed, and
    /// forgets slots that can no longer take bytes.
    pub(crate) async fn refresh_session(
        &self,
        session: &Session,
        uploads: &[(String, UploadState)],
    ) {
        let slots: Vec<(String, Arc<Slot>)> = self
            .inner
            .live
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut gone = Vec::new();
        for (id, slot) in slots {
            let mut live = slot.state.lock().await;
            if live.session.id != session.id {
                continue;
            }
            live.session = session.clone();
            if let Some((_, st)) = uploads.iter().find(|(u, _)| *u == id) {
                live.upload.state = *st;
            }
            if session.state != SessionState::Open || live.upload.state != UploadState::Open {
                gone.push(id);
            }
        }
        let mut map = self.inner.live.lock().unwrap();
        for id in gone {
            map.remove(&id);
        }
    }
}
