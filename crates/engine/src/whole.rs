//! A small one-request upload recorded in one metadata step
//! ([`Engine::whole_at_once`]).

use crate::auth::Caller;
use crate::commit::{Candidate, Claims, commit_checks, committed, recorded};
use crate::hashing::{Hashers, Want};
use crate::hooks::{HookData, HookKind};
use crate::session::{BORN_TURN_MAX, NewSession, refusal};
use crate::write::{PartChecks, WholeUpload};
use crate::{Engine, EngineError, Result, now_ms};
use bytes::Bytes;
use ferry_core::SessionState;
use ferry_store::{ByteStream, Promote};
use futures::StreamExt;
use futures::stream::Fuse;

impl Engine {
    /// [`Engine::upload_whole`] of a small file in one metadata step,
    /// where it can be: in a cluster, on a store that keeps a small file
    /// sent whole as its final object, with no blocking or progress hook
    /// to ask. The body is gathered and checked, stored as the new
    /// upload's object, and then the session, the upload and the file are
    /// recorded together, committed
    /// ([`ferry_meta::MetaStore::create_committed`]), where the usual way
    /// takes one step to create and another to commit. Nobody knew the
    /// session before that step, so nothing is leased.
    ///
    /// Whatever the usual way would answer otherwise goes the usual way,
    /// with the body as it came (`Err(body)`): a body that fails or is not
    /// the length it announced, a digest that differs, a path that is not
    /// free (the session's conflict policy decides), a database that does
    /// not record this way. The object stored by then is deleted first;
    /// one a crash leaves, which no record names, goes with the orphan
    /// sweep.
    pub(crate) async fn whole_at_once(
        &self,
        caller: &Caller,
        new: &NewSession,
        body: ByteStream,
        checks: &PartChecks,
    ) -> Result<std::result::Result<WholeUpload, ByteStream>> {
        let store = &self.inner.store;
        let caps = store.capabilities();
        let max = store.small_size().min(BORN_TURN_MAX);
        let size = match new.uploads.as_slice() {
            // (A new version of a file moves it: the usual way.)
            [u] if u.replaces.is_none() => u.size.filter(|n| *n > 0 && *n <= max),
            _ => None,
        };
        let quiet = [
            HookKind::PreCreate,
            HookKind::PostReceive,
            HookKind::PreFinish,
        ]
        .into_iter()
        .all(|k| !self.wants_hook(k));
        let applies = self.in_cluster() && !caps.paths && caps.whole_is_final && quiet;
        let Some(size) = size.filter(|_| applies) else {
            return Ok(Err(body));
        };
        let p = crate::admin::principal(caller)?;
        let user = self
            .user(&p.user)
            .await?
            .ok_or_else(|| EngineError::Unauthenticated("the user no longer exists".into()))?;
        let (mut session, mut uploads) = self.prepare_session(caller, &user, new.clone()).await?;
        let (Some(mut upload), true) = (uploads.pop(), uploads.is_empty()) else {
            return Err(EngineError::invalid(
                "invalid_request",
                "a one-request upload is one file",
            ));
        };

        // The body: exactly `size` bytes, then its end.
        let flight = self.inner.activity.writing();
        let mut body = body.fuse();
        let (mut got, mut count, mut failed) = (Vec::new(), 0u64, None);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    count += c.len() as u64;
                    got.push(c);
                    if count > size {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(flight);
        if failed.is_some() || count != size {
            return Ok(Err(replay(got, failed, body)));
        }
        let (mut expected, want) = commit_checks(&upload, None);
        expected.extend(checks.expected.iter().cloned());
        let want = expected
            .iter()
            .fold(want.or(checks.want), |w, d| w.or(Want::algo(d.algo)));
        let mut hashers = Hashers::new(want);
        for c in &got {
            hashers.update(c);
        }
        let digests = hashers.finish();
        let late = match checks.late.as_ref().map(|late| late()) {
            None => Vec::new(),
            Some(Ok(late)) => late,
            Some(Err(_)) => return Ok(Err(replay(got, None, body))),
        };
        if expected
            .iter()
            .chain(&late)
            .any(|d| digests.check(d).is_err())
        {
            return Ok(Err(replay(got, None, body)));
        }
        // The file keeps the digests its upload keeps, as the usual way's
        // (the others were for the checks above).
        let keep = Want::whole(&upload.whole_digests);
        let digests = crate::hashing::Digests {
            sha1: digests.sha1.filter(|_| keep.sha1),
            md5: digests.md5.filter(|_| keep.md5),
            ..digests
        };

        // Its object, which no record names until the step below (which
        // must land well within the time the orphan sweep leaves such an
        // object): deleted however this ends, unless the step may have
        // recorded it.
        let id = upload.id.clone();
        let stored_at = std::time::Instant::now();
        let mut unnamed = Unnamed {
            store: store.clone(),
            upload: Some(id.clone()),
        };
        store.create_staged_whole(std::slice::from_ref(&id)).await?;
        let whole = futures::stream::iter(got.clone().into_iter().map(Ok)).boxed();
        match store.write_whole(&id, size, whole).await {
            Ok(n) if n == size => {}
            Ok(n) => {
                return Err(EngineError::Store(ferry_store::StoreError::Incomplete(
                    format!("{n} of {size} bytes of {id} stored"),
                )));
            }
            Err(e) => return Err(e.error.into()),
        }
        let path = upload.path.clone();
        let mut claims = Claims::new(self, &session.space);
        {
            let _ns = self.inner.namespace.lock().await;
            if self.pending_occupant(&session.space, &path).is_some() {
                drop(_ns);
                unnamed.discard().await;
                return Ok(Err(replay(got, None, body)));
            }
            claims.claim(&path);
        }
        let object = store
            .promote(&id, size, &session.space, &path, Promote::NoReplace)
            .await?;
        let events = self.hook_events(
            HookKind::PostCreate,
            [(id.as_str(), HookData::upload(&session, &upload))],
        );
        let c = Candidate {
            upload: upload.clone(),
            digests,
        };
        let done = committed(&session, &c, path, None, object, now_ms());
        let events = [
            events,
            self.finish_events(&session, std::slice::from_ref(&done)),
        ]
        .concat();
        session.state = SessionState::Committed;
        upload = recorded(upload, &done);
        let within = self.limits_of(&user);
        let limit = self.unnamed_limit();
        let meta = &self.inner.meta;
        let step = meta
            .create_committed(&session, &upload, &done, within, &events, stored_at + limit)
            .await;
        // An error may come after the step landed: the object stays (the
        // sweep removes it if no record names it).
        if step.is_err() {
            unnamed.upload = None;
        }
        match step? {
            Some(Ok(())) => unnamed.upload = None,
            Some(Err(refused)) => {
                unnamed.discard().await;
                return Err(refusal(refused, &user, within));
            }
            None => {
                drop(claims);
                unnamed.discard().await;
                return Ok(Err(replay(got, None, body)));
            }
        }
        drop(claims);
        if !events.is_empty() {
            self.hooks_written();
        }
        metrics::counter!("ferry_sessions_created_total").increment(1);
        metrics::counter!("ferry_files_committed_total").increment(1);
        self.inner.activity.received(size);
        metrics::counter!("ferry_bytes_received_total").increment(size);
        self.inner.activity.committed(1);
        Ok(Ok(WholeUpload {
            file: done.file,
            upload,
            expires_at: session.expires_at,
        }))
    }
}

/// The object of a one-request upload that no record names yet: deleted
/// before an answer that refuses it ([`Unnamed::discard`]), or when this
/// is dropped still holding it (an error, the request gone), in the
/// background.
struct Unnamed {
    store: std::sync::Arc<dyn ferry_store::Store>,
    upload: Option<String>,
}

impl Unnamed {
    async fn discard(mut self) {
        if let Some(id) = self.upload.take() {
            discard(&*self.store, &id).await;
        }
    }
}

async fn discard(store: &dyn ferry_store::Store, id: &str) {
    if let Err(e) = store.discard_staged(id).await {
        tracing::warn!(upload = %id, error = %e, "cannot delete the object of a one-request upload not recorded; the orphan sweep will");
    }
}

impl Drop for Unnamed {
    fn drop(&mut self) {
        let Some(id) = self.upload.take() else {
            return;
        };
        let store = self.store.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // (the orphan sweep will)
        };
        rt.spawn(async move { discard(&*store, &id).await });
    }
}

/// A body again as it came: the chunks already read, the error that
/// stopped it (if one did), then the rest.
fn replay(got: Vec<Bytes>, failed: Option<std::io::Error>, rest: Fuse<ByteStream>) -> ByteStream {
    let read = got.into_iter().map(Ok).chain(failed.map(Err));
    futures::stream::iter(read).chain(rest).boxed()
}
