//! Files POSTed one by one into an open-ended session, S3-style (deepset's
//! presigned POST form): each name is an upload of the session, a name sent
//! again replaces what was sent before it (the last body wins, as an S3
//! PUT), metadata may arrive before or after the bytes it belongs to, and
//! closing commits whatever is complete.

use crate::auth::Caller;
use crate::{Engine, EngineError, NewUpload, Result, SessionView, now_ms};
use ferry_core::{Length, SessionState, SpacePath, StateError, Upload, UploadState};
use std::collections::HashMap;

impl Engine {
    /// The session's upload at `new.path`, ready for a body from offset 0:
    /// added when the session has none there; reused when it is open and
    /// has received no bytes (it was made by [`Engine::set_upload_metadata`]);
    /// replaced when it has bytes — the old one is aborted and the new one
    /// keeps its metadata. `Conflict` while bytes are still streaming into
    /// the old one.
    pub async fn put_upload(
        &self,
        caller: &Caller,
        session_id: &str,
        new: NewUpload,
    ) -> Result<Upload> {
        let path = parse_path(&new.path)?;
        let existing = self.open_upload_at(caller, session_id, &path).await?;
        let Some(old) = existing else {
            return Ok(self
                .add_uploads(caller, session_id, vec![new])
                .await?
                .remove(0));
        };
        if old.received.is_empty() && old.length == Length::Deferred {
            let slot = self.slot(caller, &old.id).await?;
            if slot.state.lock().await.inflight.is_empty() {
                return Ok(old);
            }
        }
        self.retire(caller, &old).await?;
        let new = NewUpload {
            metadata: new.metadata.or(old.metadata),
            ..new
        };
        Ok(self
            .add_uploads(caller, session_id, vec![new])
            .await?
            .remove(0))
    }

    /// Sets the metadata of the session's upload at `path`; when there is
    /// none yet, adds one of deferred length that takes its bytes later
    /// ([`Engine::put_upload`] finds it).
    pub async fn set_upload_metadata(
        &self,
        caller: &Caller,
        session_id: &str,
        path: &str,
        metadata: String,
    ) -> Result<Upload> {
        let sp = parse_path(path)?;
        let _guard = self.session_lock(session_id).lock().await;
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        if s.is_expired_at(now_ms()) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        let Some(mut up) = self.inner.meta.upload_at(&s.id, &sp).await? else {
            drop(_guard);
            let new = NewUpload {
                path: path.to_owned(),
                metadata: Some(metadata),
                ..Default::default()
            };
            return Ok(self
                .add_uploads(caller, session_id, vec![new])
                .await?
                .remove(0));
        };
        up.state.check_writable().map_err(EngineError::Gone)?;
        self.inner
            .meta
            .set_upload_metadata(&up.id, Some(&metadata))
            .await?;
        // The live copy is what a commit records.
        let slot = self.slot(caller, &up.id).await?;
        slot.state.lock().await.upload.metadata = Some(metadata.clone());
        up.metadata = Some(metadata);
        Ok(up)
    }

    /// Closes an open-ended session: the uploads that are complete are
    /// committed together, atomically, with the session's conflict policy;
    /// open uploads that are not (a body that broke off, metadata whose
    /// file never came) are aborted first, since they could not become
    /// files. Closing happens once: a session that is no longer open is
    /// `Gone`. `Conflict` while bytes are still streaming into the session.
    pub async fn close_session(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let _guard = self.session_lock(session_id).lock().await;
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        if s.is_expired_at(now_ms()) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        let uploads = self.inner.meta.session_uploads(&s.id).await?;
        let mut changed = Vec::new();
        for up in uploads.iter().filter(|u| u.state == UploadState::Open) {
            let slot = self.slot(caller, &up.id).await?;
            let live = slot.state.lock().await;
            if !live.inflight.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "{}: bytes are still being written; close the session once every file is sent",
                    up.path
                )));
            }
            if !live.upload.is_complete() {
                changed.push((up.id.clone(), UploadState::Aborted));
            }
        }
        for (id, _) in &changed {
            self.inner
                .meta
                .set_upload_state(id, UploadState::Aborted)
                .await?;
            self.inner.store.discard_staged(id).await?;
        }
        let open = uploads
            .iter()
            .filter(|u| u.state == UploadState::Open)
            .count();
        if open == changed.len() {
            // Nothing to commit: the session is closed with no files.
            self.inner
                .meta
                .set_session_state(&s.id, SessionState::Committed, None)
                .await?;
            let s = ferry_core::Session {
                state: SessionState::Committed,
                ..s
            };
            self.refresh_session(&s, &changed).await;
            return self.view(s).await;
        }
        self.refresh_session(&s, &changed).await;
        self.commit_loaded(s, HashMap::new()).await
    }

    /// The session's upload at `path` that is not aborted, if the caller
    /// may see the session.
    async fn open_upload_at(
        &self,
        caller: &Caller,
        session_id: &str,
        path: &SpacePath,
    ) -> Result<Option<Upload>> {
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        Ok(self.inner.meta.upload_at(&s.id, path).await?)
    }

    /// Aborts an open upload that a newer one replaces; the session stays
    /// open (unlike [`Engine::abort_upload`], which ends a session left
    /// with nothing open).
    async fn retire(&self, caller: &Caller, old: &Upload) -> Result<()> {
        let slot = self.slot(caller, &old.id).await?;
        let _guard = self.session_lock(&old.session_id).lock().await;
        let session = {
            let live = slot.state.lock().await;
            if !live.inflight.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "{} is being written by another request",
                    old.path
                )));
            }
            live.upload
                .state
                .check_writable()
                .map_err(EngineError::Gone)?;
            live.session.clone()
        };
        self.inner
            .meta
            .set_upload_state(&old.id, UploadState::Aborted)
            .await?;
        self.inner.store.discard_staged(&old.id).await?;
        self.refresh_session(&session, &[(old.id.clone(), UploadState::Aborted)])
            .await;
        Ok(())
    }

    /// The folder path new files go into, chosen by `policy` under the
    /// namespace lock as a commit chooses file paths: `Fail` refuses an
    /// occupied path, `Rename` picks the first free `name (n)`, the other
    /// policies take the path as is.
    pub async fn choose_folder(
        &self,
        caller: &Caller,
        space: &str,
        path: &str,
        policy: ferry_core::ConflictPolicy,
    ) -> Result<String> {
        use ferry_core::ConflictPolicy as P;
        let p = crate::admin::principal(caller)?;
        let space = ferry_core::SpaceName::parse(space)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        self.require_write(p, &space).await?;
        if path.is_empty() {
            return Ok(String::new()); // the space's root always exists
        }
        let base = ferry_core::SpacePath::parse(path)
            .map_err(|e| EngineError::invalid("invalid_path", format!("{path:?}: {e}")))?;
        let _ns = self.inner.namespace.lock().await;
        match policy {
            P::Fail | P::Rename if self.occupied(&space, &base).await? => {}
            _ => return Ok(base.to_string()),
        }
        if policy == P::Rename {
            for n in 1..=10_000 {
                // `None`: no suffixed name fits the path limit.
                let Some(candidate) = ferry_core::conflict::renamed(&base, n) else {
                    break;
                };
                if !self.occupied(&space, &candidate).await? {
                    return Ok(candidate.to_string());
                }
            }
        }
        Err(EngineError::AlreadyExists {
            path: format!("{space}/{base}"),
        })
    }
}

fn parse_path(path: &str) -> Result<SpacePath> {
    SpacePath::parse(path)
        .map_err(|e| EngineError::invalid("invalid_path", format!("{path:?}: {e}")))
}
