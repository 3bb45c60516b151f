//! Commit: verify, resolve conflicts, record intent, promote, record result.
//!
//! The order is what makes a crash at any point recoverable:
//! 1. every upload of the batch is checked complete and its digest
//!    verified (nothing has changed yet; failures leave all as it was);
//! 2. final paths are chosen by the conflict policy;
//! 3. `begin_commit` records `committing` + final path (the intent);
//! 4. the store promotes each staged file (rename or link);
//! 5. `finish_commit` records every file and state in one transaction.
//!
//! [`Engine::recover`] at start-up finds uploads left at step 3–4 and
//! finishes steps 4–5 for them; promotion is idempotent.
//!
//! On a store without paths (S3), promotion seals the object and names
//! nothing: no path leads to it until a record does. There, in a cluster,
//! the commit of one upload to a free path promotes first and then
//! records steps 3 and 5 as one metadata step (`commit_if_free`); a crash
//! in between leaves an open upload whose object is sealed, which a resend
//! is compared with and the next commit finds sealed.

use crate::auth::{Caller, random_hex};
use crate::hashing::{Digests, Hashers, Want};
use crate::hooks::{HookData, HookKind, Verdict};
use crate::lease::Reading;
use crate::{Engine, EngineError, Result, SessionView, UploadView, loc, now_ms};
use ferry_core::conflict::renamed;
use ferry_core::{
    ConflictPolicy, Digest, DigestAlgo, FileRecord, Millis, Session, SessionState, SpaceName,
    SpacePath, StateError, Upload, UploadState,
};
use ferry_meta::{Committed, LeaseKind, Occupant, OutboxEvent, PathTaken, SessionEnd};
use ferry_store::Promote;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;

/// One upload on its way to becoming a file.
pub(crate) struct Candidate {
    pub(crate) upload: Upload,
    pub(crate) digests: Digests,
}

enum Decision {
    /// Promote to a path; when replacing a file, its id (a file keeps
    /// its id across replacements at its path), and the path it moves
    /// from when the upload is a new version under another name
    /// (`Upload::replaces`).
    Promote(SpacePath, Promote, Option<String>, Option<SpacePath>),
    Skip(Box<FileRecord>),
}

impl Engine {
    /// Commits every open upload of a session, atomically.
    pub async fn commit_session(
        &self,
        caller: &Caller,
        session_id: &str,
        expected: HashMap<String, Digest>,
    ) -> Result<SessionView> {
        // The session and its uploads as the turn's claim read them, in
        // a cluster under the commit leases of its open uploads it took
        // (when no other node held one): the commit goes on from that
        // read, as from one under each upload's own claim.
        crate::session::may_ask_for_session(caller, session_id)?;
        if let Some(view) = self
            .commit_unclaimed(caller, session_id, &expected, None)
            .await?
        {
            return Ok(view);
        }
        let (mut guard, read) = self.session_commit_turn(session_id).await?;
        let Some(read) = read else {
            let s = self.load_session(caller, session_id).await?;
            return self
                .commit_loaded(s, expected, &[], guard.take_lease(), None, Vec::new())
                .await;
        };
        let turn = guard.take_lease();
        let slots = match self.slots_as_read(caller, &read).await {
            Ok(slots) => slots,
            Err(e) => {
                // Refused before the commit began: its leases end first.
                let leases = read.commits.into_iter().map(|(_, l)| l);
                self.release_leases(leases.chain(turn)).await;
                return Err(e);
            }
        };
        let held = read
            .commits
            .into_iter()
            .zip(slots)
            .map(|((id, lease), slot)| Held {
                id,
                lease: Some(lease),
                turn: None,
                slot,
            })
            .collect();
        self.commit_loaded(read.session, expected, &[], turn, Some(read.uploads), held)
            .await
    }

    /// A session's commit in one metadata step, in a cluster, when this
    /// node knows all it needs: the session's one upload, in the slot its
    /// write left, holds a small file stored whole whose digests it
    /// sealed. No claim: the result's step checks that the records still
    /// say what the slot says and that no lease is held on the upload or
    /// the session's turn (`commit_if_free_unclaimed`). `None` when this
    /// does not apply, or the records differ, or the path is taken:
    /// nothing changed, and the commit claims as usual (which says why).
    ///
    /// With `write`, the write that claimed nothing and is storing the
    /// upload's whole file (its range still reserved in the slot) is
    /// recorded in that same step: the slot is judged as that write's
    /// record would leave it, and the records as the upload was made.
    /// The session's local lock is then waited for only until that write
    /// is stopped (a request that holds it may be waiting for the write
    /// to settle), and a commit that
    /// failed is an error (its step may have recorded it) rather than
    /// `None`.
    pub(crate) async fn commit_unclaimed(
        &self,
        caller: &Caller,
        session_id: &str,
        expected: &HashMap<String, Digest>,
        write: Option<Unrecorded>,
    ) -> Result<Option<SessionView>> {
        let caps = self.inner.store.capabilities();
        if !self.in_cluster()
            || caps.paths
            || !caps.whole_is_final
            || self.wants_hook(HookKind::PreFinish)
        {
            return Ok(None);
        }
        let lock = self.session_lock(session_id);
        let _local = match &write {
            None => lock.lock().await,
            // A request that holds the lock and waits for that write has
            // stopped it first (`Slot::take_over`; `lock_settled` waits
            // only for stopped writes): the write then gives way.
            Some(w) => tokio::select! {
                local = lock.lock() => local,
                () = w.stop.cancelled() => return Ok(None),
            },
        };
        if self
            .inner
            .born_turns
            .lock()
            .unwrap()
            .contains_key(session_id)
        {
            return Ok(None); // its turn is this node's: the usual way uses it
        }
        let Ok([(id, slot)]) = <[_; 1]>::try_from(self.session_slots_by_id(session_id)) else {
            return Ok(None);
        };
        if write.as_ref().is_some_and(|w| w.upload != id) {
            return Ok(None);
        }
        let own = write.as_ref().map(|w| w.write);
        let with_write = write.is_some();
        let (session, upload) = {
            let live = slot.state.lock().await;
            let mut u = live.upload.clone();
            if let Some(w) = &write {
                w.record_in(&mut u);
            }
            let (checks, want) = commit_checks(&u, expected.get(&id));
            let sealed = Digests::from_list(&u.sealed);
            let ready = live.session.state == SessionState::Open
                && !live.session.open_ended
                && !live.session.is_expired_at(now_ms())
                && u.state == UploadState::Open
                && u.is_complete()
                && !u.direct
                && u.replaces.is_none()
                // (A write stopped by a newer request gives way to it.)
                && live
                    .inflight
                    .iter()
                    .all(|w| Some(w.id) == own && !w.stop.is_cancelled())
                && live.left.is_none()
                && !live.committing
                && !live.private
                && sealed.want().covers(want);
            // A digest the client expects that the sealed ones do not
            // match is answered from the records, not from this slot.
            let agrees = checks.iter().all(|d| sealed.check(d).is_ok());
            if !ready || !agrees || expected.keys().any(|k| *k != id) {
                return Ok(None);
            }
            (live.session.clone(), u)
        };
        crate::session::may_see_session(caller, &session)?;
        let gate = ferry_meta::CommitGate {
            turn: crate::lease::session_key(session_id),
            session_id: session.id.clone(),
            upload_id: upload.id.clone(),
            whole: true,
            sealed: upload.sealed.clone(),
            object: upload.object.clone(),
            metadata: upload.metadata.clone(),
            content_type: upload.content_type.clone(),
            dialect_state: upload.dialect_state.clone(),
            expires_at: session.expires_at,
            with_write,
        };
        let held = vec![Held {
            id: upload.id.clone(),
            lease: None,
            turn: None,
            slot,
        }];
        let ids = [upload.id.clone()];
        // Nothing changed when it did not commit, however it ended: the
        // usual way answers.
        let done = self
            .commit_locked(
                CommitOf::session(&session, &ids, expected, &[]),
                InHand {
                    held,
                    turn: None,
                    gate: Some(gate),
                    write,
                },
            )
            .await;
        // (With a write, an error may have come after the step recorded
        // it: the caller is told.)
        let done = match done {
            Ok(done) => done,
            Err(e) if with_write => return Err(e),
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "a commit from this node's slot goes the usual way");
                return Ok(None);
            }
        };
        let [d] = done.as_slice() else {
            return Ok(None);
        };
        Ok(Some(SessionView {
            uploads: vec![UploadView {
                file: Some(d.file.clone()),
                upload: recorded(upload, d),
            }],
            session: Session {
                state: SessionState::Committed,
                ..session
            },
        }))
    }

    /// The slots of the uploads whose commit leases `read` holds, brought
    /// up to it, in the order of its leases; the caller must see the
    /// session.
    async fn slots_as_read(
        &self,
        caller: &Caller,
        read: &crate::lease::CommitRead,
    ) -> Result<Vec<std::sync::Arc<crate::live::Slot>>> {
        crate::session::may_see_session(caller, &read.session)?;
        let mut slots = Vec::with_capacity(read.commits.len());
        for (id, _) in &read.commits {
            let u = read.uploads.iter().find(|u| u.id == *id).ok_or_else(|| {
                EngineError::Conflict(format!("upload {id:?} changed while it was read"))
            })?;
            let read = Some((u.clone(), read.session.clone()));
            let caller = Caller::Upload(id.clone());
            slots.push(self.slot_as_read(&caller, id, read).await?);
        }
        Ok(slots)
    }

    /// [`Engine::commit_session`] of a session already loaded, under its
    /// lock; the open uploads `drop` are aborted in the transaction that
    /// records the commit's intent (they could not become files). `turn`,
    /// the lease of the session's turn, is ended by the commit's result
    /// (or when this ends without one); `uploads`, the session's as read
    /// with it under the turn, if they were; `held`, those of them whose
    /// commit leases were taken before that read.
    pub(crate) async fn commit_loaded(
        &self,
        s: Session,
        expected: HashMap<String, Digest>,
        drop: &[String],
        mut turn: Option<crate::lease::Lease>,
        uploads: Option<Vec<Upload>>,
        mut held: Vec<Held>,
    ) -> Result<SessionView> {
        let done = self
            .commit_loaded_holding(s, expected, drop, &mut turn, uploads, &mut held)
            .await;
        // A commit refused before it began ends the leases it was given
        // (all at once) before it answers: a write sent next is not
        // refused by them.
        let leases = held
            .into_iter()
            .flat_map(|h| h.lease.into_iter().chain(h.turn));
        self.release_leases(leases.chain(turn)).await;
        done
    }

    /// [`Engine::commit_loaded`]; the commit takes `held` when it begins.
    async fn commit_loaded_holding(
        &self,
        s: Session,
        expected: HashMap<String, Digest>,
        drop: &[String],
        turn: &mut Option<crate::lease::Lease>,
        uploads: Option<Vec<Upload>>,
        held: &mut Vec<Held>,
    ) -> Result<SessionView> {
        // Uploads read with the session, if it is open as read (an
        // interrupted commit's resumption reads them again).
        let read = uploads.filter(|_| s.state == SessionState::Open);
        let s = if s.state == SessionState::Committing {
            self.resume_interrupted(&s).await?
        } else {
            s
        };
        if s.state == SessionState::Open && s.is_expired_at(now_ms()) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        if s.state == SessionState::Committed {
            return self.view(s).await; // idempotent
        }
        if s.state != SessionState::Open {
            return Err(EngineError::Gone(s.state.check_writable().unwrap_err()));
        }
        let mut uploads = match read {
            Some(uploads) => uploads,
            None => self.inner.meta.session_uploads(&s.id).await?,
        };
        if uploads.iter().any(|u| u.state == UploadState::Committing) {
            let s = self.resume_interrupted(&s).await?;
            if s.state != SessionState::Open {
                return self.view(s).await;
            }
            uploads = self.inner.meta.session_uploads(&s.id).await?;
        }
        let ids: Vec<String> = uploads
            .iter()
            .filter(|u| u.state == UploadState::Open && !drop.contains(&u.id))
            .map(|u| u.id.clone())
            .collect();
        for key in expected.keys() {
            if !ids.contains(key) {
                return Err(EngineError::invalid(
                    "invalid_body",
                    format!("{key:?} is not an open upload of this session"),
                ));
            }
        }
        let (held, turn) = (std::mem::take(held), turn.take());
        let done = self
            .commit_locked(
                CommitOf::session(&s, &ids, &expected, drop),
                InHand {
                    held,
                    turn,
                    ..InHand::default()
                },
            )
            .await?;
        // Answer from what the commit just recorded, without reading back.
        let mut views = Vec::with_capacity(uploads.len());
        for mut upload in uploads {
            if drop.contains(&upload.id) {
                upload.state = UploadState::Aborted;
            }
            let file = match done.iter().find(|d| d.upload_id == upload.id) {
                Some(d) => {
                    upload = recorded(upload, d);
                    Some(d.file.clone())
                }
                None => self.file_of(&s, &upload).await?,
            };
            views.push(UploadView { upload, file });
        }
        Ok(SessionView {
            session: Session {
                state: SessionState::Committed,
                ..s
            },
            uploads: views,
        })
    }

    /// Commits some uploads of one session together: one metadata
    /// transaction and shared directory syncs for the batch, as a dialect
    /// gathers files that finished (a folder streamed over a WebSocket).
    /// Uploads already committed are left as they are; if one of the
    /// others cannot be committed, none of them is. Returns how many this
    /// call committed.
    pub async fn commit_uploads(
        &self,
        caller: &Caller,
        session_id: &str,
        ids: &[String],
    ) -> Result<usize> {
        let _guard = self.session_turn(session_id).await?;
        let s = self.load_session(caller, session_id).await?;
        let s = self.fresh_session(&s.id).await?;
        if s.state != SessionState::Open {
            return Err(EngineError::Gone(s.state.check_writable().unwrap_err()));
        }
        let mut open = Vec::with_capacity(ids.len());
        for id in ids {
            let upload = self
                .inner
                .meta
                .get_upload(id)
                .await?
                .filter(|u| u.session_id == s.id)
                .ok_or_else(|| {
                    EngineError::NotFound(format!("no upload {id:?} in this session"))
                })?;
            match upload.state {
                UploadState::Open => open.push(id.clone()),
                UploadState::Committed | UploadState::Skipped => {}
                UploadState::Aborted => return Err(EngineError::Gone(StateError::Aborted)),
                // Left by a commit that failed half-way (we hold the lock):
                // finish it now, no restart needed.
                UploadState::Committing => {
                    self.resume_interrupted(&s).await?;
                    let again = self.inner.meta.get_upload(id).await?;
                    if again.is_some_and(|u| u.state == UploadState::Open) {
                        open.push(id.clone());
                    }
                }
            }
        }
        if !open.is_empty() {
            self.commit_locked(
                CommitOf::uploads(&s, &open, &HashMap::new()),
                InHand::default(),
            )
            .await?;
        }
        Ok(open.len())
    }

    /// Commits one upload (idempotent: a committed upload answers as is).
    pub async fn commit_upload(
        &self,
        caller: &Caller,
        upload_id: &str,
        expected: Option<Digest>,
    ) -> Result<UploadView> {
        // A signed upload URL may commit its own upload (Graph's uploadUrl
        // is the client's only credential); `slot` checks whose it is.
        let slot = self.slot(caller, upload_id).await?;
        self.commit_one(&slot, upload_id, expected).await
    }

    /// Commits one upload whose caller is already authorized (also the
    /// auto-commit path of a write, which may come through a signed URL).
    pub(crate) async fn commit_one(
        &self,
        slot: &std::sync::Arc<crate::live::Slot>,
        upload_id: &str,
        expected: Option<Digest>,
    ) -> Result<UploadView> {
        let session_id = slot.state.lock().await.session.id.clone();
        let mut guard = self.session_turn(&session_id).await?;
        // The upload and its session as recorded, read once under the turn
        // — in a cluster once its commit lease is held too, so that the
        // commit works from this read (`Held`). A private upload needs
        // neither: no other node writes it, and this node's slot is the
        // truth; nor does one whose completing append left its lease to
        // this commit (`Left`): no other node wrote it since it was read
        // under that lease. The result ends the turn's lease with the
        // commit's.
        let held_already = {
            let live = slot.state.lock().await;
            live.private || live.left.as_ref().is_some_and(|l| l.lease.is_some())
        };
        let (upload, s, mut held) = if self.in_cluster() {
            let (lease, slot) = if held_already {
                (None, slot.clone())
            } else {
                let leased = self
                    .lease_upload(
                        upload_id,
                        (0, u64::MAX),
                        LeaseKind::Commit,
                        None,
                        Reading::Whole,
                    )
                    .await?;
                let caller = Caller::Upload(upload_id.to_owned());
                let slot = self.slot_as_read(&caller, upload_id, leased.read).await?;
                (leased.lease, slot)
            };
            let (upload, s) = {
                let live = slot.state.lock().await;
                (live.upload.clone(), live.session.clone())
            };
            let held = Held {
                id: upload_id.to_owned(),
                lease,
                turn: guard.take_lease(),
                slot,
            };
            (upload, s, vec![held])
        } else {
            let (upload, s) = self
                .inner
                .meta
                .upload_and_session(upload_id)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("no upload {upload_id:?}")))?;
            (upload, s, Vec::new())
        };
        let s = unexpired(s)?;
        match upload.state {
            UploadState::Open => {
                if s.state != SessionState::Open {
                    return Err(EngineError::Gone(s.state.check_writable().unwrap_err()));
                }
                let expected: HashMap<_, _> = expected
                    .into_iter()
                    .map(|d| (upload_id.to_owned(), d))
                    .collect();
                let done = self
                    .commit_locked(
                        CommitOf::uploads(&s, &[upload_id.to_owned()], &expected),
                        InHand {
                            held,
                            ..InHand::default()
                        },
                    )
                    .await?;
                // What the commit recorded is the answer: no need to read
                // it back.
                if let [d] = done.as_slice() {
                    return Ok(UploadView {
                        upload: recorded(upload, d),
                        file: Some(d.file.clone()),
                    });
                }
            }
            UploadState::Committed | UploadState::Skipped => {}
            UploadState::Aborted => return Err(EngineError::Gone(StateError::Aborted)),
            // Left by a commit that failed half-way (a full metadata disk,
            // a failed promotion): we hold the session's lock, so no commit
            // is running; finish it now, with no restart.
            UploadState::Committing => {
                // Its lease ends first: the commit below claims afresh.
                if let Some(h) = held.pop() {
                    guard.put_back(h.turn);
                    if let Some(lease) = h.lease {
                        lease.release().await;
                    }
                }
                let s = self.resume_interrupted(&s).await?;
                let u = self.inner.meta.get_upload(upload_id).await?;
                if u.is_some_and(|u| u.state == UploadState::Open) {
                    if s.state != SessionState::Open {
                        return Err(EngineError::Gone(s.state.check_writable().unwrap_err()));
                    }
                    let expected: HashMap<_, _> = expected
                        .into_iter()
                        .map(|d| (upload_id.to_owned(), d))
                        .collect();
                    self.commit_locked(
                        CommitOf::uploads(&s, &[upload_id.to_owned()], &expected),
                        InHand::default(),
                    )
                    .await?;
                }
            }
        }
        let upload = self
            .inner
            .meta
            .get_upload(upload_id)
            .await?
            .expect("exists");
        let file = self.file_of(&s, &upload).await?;
        Ok(UploadView { upload, file })
    }

    /// The pre-finish hook refused `upload`: the upload is aborted and
    /// its session fails with the hook's message, and its bytes go.
    /// Returns the error for the client.
    async fn refused_at_finish(
        &self,
        session: &Session,
        upload: &Upload,
        status: u16,
        message: String,
    ) -> EngineError {
        let reason = format!("refused by the pre-finish hook: {message}");
        if let Err(e) = self.inner.meta.fail_upload(&upload.id, &reason).await {
            return e.into();
        }
        if let Err(e) = self.discard_bytes(upload).await {
            tracing::warn!(upload = %upload.id, error = %e, "cannot discard a refused upload's bytes");
        }
        if let Ok(s) = self.fresh_session(&session.id).await {
            let aborted = [(upload.id.clone(), UploadState::Aborted)];
            self.refresh_session(&s, &aborted).await;
        }
        EngineError::Rejected { status, message }
    }

    pub(crate) async fn fresh_session(&self, id: &str) -> Result<Session> {
        let s = self
            .inner
            .meta
            .get_session(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no session {id:?}")))?;
        unexpired(s)
    }

    /// Steps 1–5 for the uploads `of` names, under the commit lock.
    async fn commit_locked(&self, of: CommitOf<'_>, hand: InHand) -> Result<Vec<Committed>> {
        let InHand {
            held,
            turn,
            gate,
            write,
        } = hand;
        // The guard unfreezes the uploads however this ends (an error, or
        // this future dropped because the client went away).
        let mut frozen = Frozen {
            slots: Vec::new(),
            intent_recorded: Vec::new(),
            leases: turn.into_iter().collect(),
            space_hold: None,
            left: Vec::new(),
            gate,
            write,
            meta: self.inner.meta.clone(),
        };
        let done = self.commit_frozen(&mut frozen, of, held).await;
        if done.is_err() {
            // Before the leases end: what the writes left is recorded.
            frozen.record_left().await;
            // They end, all at once, before the answer: a write or a
            // commit sent next is not refused by them.
            self.release_leases(std::mem::take(&mut frozen.leases))
                .await;
        }
        // A commit that claimed nothing and did not commit unfreezes its
        // upload now, not later: the usual way's commit follows at once.
        if frozen.gate.is_some() && !matches!(&done, Ok(d) if !d.is_empty()) {
            frozen.thaw_now().await;
        }
        done
    }

    /// [`Engine::commit_locked`]'s steps, `frozen` its guard.
    async fn commit_frozen(
        &self,
        frozen: &mut Frozen,
        of: CommitOf<'_>,
        mut held: Vec<Held>,
    ) -> Result<Vec<Committed>> {
        let CommitOf {
            session,
            ids,
            expected,
            whole_session,
            drop,
        } = of;
        // The leases given are the commit's from here on (its result, or
        // its failure, ends them).
        for h in &mut held {
            frozen.leases.extend(h.lease.take());
            frozen.leases.extend(h.turn.take());
        }
        // 1. Freeze each upload and verify it.
        let mut candidates = Vec::new();
        for id in ids {
            // In a cluster, no other node writes to it from here on (what
            // they wrote before is recorded, and read by `slot`).
            let slot = match held.iter().position(|h| h.id == *id) {
                Some(i) => held.swap_remove(i).slot,
                None => {
                    let leased = self
                        .lease_upload(id, (0, u64::MAX), LeaseKind::Commit, None, Reading::Whole)
                        .await?;
                    frozen.leases.extend(leased.lease);
                    self.slot_as_read(&Caller::Upload(id.clone()), id, leased.read)
                        .await?
                }
            };
            // The write recorded with the result is this commit's own: it
            // is not waited for (it waits for this, stopped or not), and
            // the upload, never written directly, is judged as its record
            // leaves it.
            let own = frozen.write.as_ref().filter(|w| w.upload == *id);
            if own.is_none() {
                self.learn_direct_parts(&slot, true).await?;
            }
            let (upload, cursor) = {
                let _follower_done = slot.hashing.lock().await;
                let mut live = match own {
                    Some(_) => slot.state.lock().await,
                    None => slot.lock_settled().await,
                };
                let mut upload = live.upload.clone();
                if let Some(w) = own {
                    w.record_in(&mut upload);
                }
                let others = live
                    .inflight
                    .iter()
                    .find(|w| Some(w.id) != own.map(|o| o.write));
                if let Some(w) = others {
                    return Err(EngineError::Conflict(format!(
                        "{}: bytes {} are still being written",
                        upload.path, w.range
                    )));
                }
                if !upload.is_complete() {
                    return Err(EngineError::Incomplete {
                        missing: upload.missing(),
                    });
                }
                live.committing = true;
                if let Some(left) = live.left.take() {
                    frozen.left.push((live.upload.id.clone(), left.range));
                    frozen.leases.extend(left.lease);
                }
                let cursor = live.cursor.clone();
                // In a cluster the in-order hash serves this commit only:
                // once its leases end, other nodes may write again.
                if self.in_cluster() && !live.private {
                    live.drop_cursor();
                }
                (upload, cursor)
            };
            frozen.slots.push(slot);
            let (checks, want) = commit_checks(&upload, expected.get(id));
            let digests = match self.whole_digests(&upload, cursor, want).await {
                // The store lost the upload's bytes (an S3 multipart upload
                // aborted behind Ferry's back): it fails, with its session.
                // (A commit that claimed nothing leaves that to the usual
                // way, which holds the upload's lease.)
                Err(EngineError::Store(ferry_store::StoreError::NotFound(_)))
                    if frozen.gate.is_some() =>
                {
                    return Ok(Vec::new());
                }
                Err(EngineError::Store(ferry_store::StoreError::NotFound(what))) => {
                    return Err(self.staged_bytes_lost(&upload.id, &what).await);
                }
                other => other?,
            };
            for d in &checks {
                digests.check(d)?;
            }
            candidates.push(Candidate { upload, digests });
        }
        // The bytes are complete and checked: the pre-finish hook may still
        // refuse a file, which fails the session and discards its bytes.
        for c in &candidates {
            let mut data = HookData::upload(session, &c.upload);
            data.sha256 = c.digests.sha256.clone();
            if let Verdict::Reject { status, message } =
                self.ask_hook(HookKind::PreFinish, &data).await?
            {
                return Err(self
                    .refused_at_finish(session, &c.upload, status, message)
                    .await);
            }
        }

        // 2. Choose final paths, and claim them until they are recorded
        // (the guard releases the claims however this ends).
        let mut claims = Claims::new(self, &session.space);
        let mut decisions = Vec::new();
        // One upload heading for a free path, in a cluster: no turn of the
        // space. On a store without paths, its object is sealed and the
        // path, the intent and the result are one metadata step
        // (`commit_if_free`); elsewhere the path and the intent are
        // (`claim_if_free`).
        let single =
            self.in_cluster() && drop.is_empty() && candidates.len() == 1 && frozen.left.len() <= 1;
        let at_once = single && !self.inner.store.capabilities().paths;
        if frozen.gate.is_some() && !at_once {
            return Ok(Vec::new());
        }
        if at_once
            && let Some(result) = self
                .commit_if_free(session, whole_session, &candidates, frozen, &mut claims)
                .await?
        {
            return Ok(self.committed_now(session, frozen, result, drop).await);
        }
        if frozen.gate.is_some() {
            return Ok(Vec::new()); // the usual way, which claims
        }
        let claimed = match candidates.as_slice() {
            [c] if single && !at_once => {
                let received = frozen.left.first().map(|(_, r)| *r);
                self.claim_if_free(session, whole_session, &c.upload, received, &mut claims)
                    .await?
            }
            _ => None,
        };
        if let Some(d) = claimed {
            decisions.push(d);
            frozen.intent_recorded = ids.to_vec();
            frozen.left.clear();
        } else {
            // What the writes left to an intent is recorded first.
            for (id, range) in &frozen.left {
                self.inner.meta.record_write(id, *range, None, &[]).await?;
            }
            frozen.left.clear();
            // In a cluster, other nodes choose paths in this space too: the
            // space is theirs to wait for from the choice until the record.
            // The turn lasts until the intent is recorded: from then on,
            // other nodes see the chosen paths as taken
            // (`committing_around`).
            if self.in_cluster() {
                let what = ferry_meta::namespace_turn(&session.space);
                frozen.space_hold = Some(self.inner.meta.turn(&what).await?);
            }
            let _ns = self.inner.namespace.lock().await;
            for c in &candidates {
                let d = self.decide(session, &c.upload).await?;
                if let Decision::Promote(p, _, _, moved_from) = &d {
                    claims.claim(p);
                    // The old path stays claimed until its bytes are gone.
                    if let Some(old) = moved_from {
                        claims.claim(old);
                    }
                }
                decisions.push(d);
            }
        }
        let result = self
            .promote_and_record(session, frozen, candidates, decisions, whole_session, drop)
            .await?;
        std::mem::drop(claims);
        Ok(self.committed_now(session, frozen, result, drop).await)
    }

    /// What follows a commit's recorded result: the dropped uploads'
    /// bytes discarded, the slots and the session's cache brought up to
    /// date.
    async fn committed_now(
        &self,
        session: &Session,
        frozen: &mut Frozen,
        (done, ended): (Vec<Committed>, Option<SessionState>),
        drop: &[String],
    ) -> Vec<Committed> {
        let mut states: Vec<(String, UploadState)> = done
            .iter()
            .map(|d| (d.upload_id.clone(), d.state))
            .collect();
        for id in drop {
            states.push((id.clone(), UploadState::Aborted));
            if let Err(e) = self.inner.store.discard_staged(id).await {
                // Start-up recovery removes what no open upload owns.
                tracing::warn!(upload = %id, error = %e, "cannot discard an aborted upload's bytes");
            }
        }
        for (slot, d) in std::mem::take(&mut frozen.slots).iter().zip(&done) {
            let mut live = slot.state.lock().await;
            if let Some(w) = frozen.write.as_ref().filter(|w| w.upload == d.upload_id) {
                w.record_in(&mut live.upload);
            }
            live.upload.state = d.state;
            live.upload.final_path = Some(d.final_path.clone());
            live.upload.file_id = Some(d.file.id.clone());
            live.committing = false;
        }
        // The session ended (or not) in the same transaction as the files.
        let s = Session {
            state: ended.unwrap_or(session.state),
            ..session.clone()
        };
        self.refresh_session(&s, &states).await;
        done
    }

    /// For one upload heading for its path on a store without paths, in a
    /// cluster: its object is sealed (`promote`, which names nothing:
    /// until a record does, the object is no file), then the path checked
    /// and the intent and result recorded in one metadata step
    /// ([`ferry_meta::MetaStore::commit_if_free`]), which also ends the
    /// commit's leases. `None` when the path is taken (here or on another
    /// node) or the upload changed: nothing is recorded, the object stays
    /// sealed (a resend is compared with it, the next promotion finds it
    /// done), and the caller takes the space's turn and decides under the
    /// session's policy.
    async fn commit_if_free(
        &self,
        session: &Session,
        whole_session: bool,
        candidates: &[Candidate],
        frozen: &mut Frozen,
        claims: &mut Claims<'_>,
    ) -> Result<Option<(Vec<Committed>, Option<SessionState>)>> {
        let [c] = candidates else {
            return Ok(None);
        };
        let (space, path) = (&session.space, &c.upload.path);
        if c.upload.replaces.is_some() {
            return Ok(None);
        }
        // The file record is the candidate's: it must be what the gate
        // checks.
        if let Some(g) = &frozen.gate {
            let u = &c.upload;
            if (&u.sealed, &u.metadata, &u.content_type, &u.dialect_state)
                != (&g.sealed, &g.metadata, &g.content_type, &g.dialect_state)
            {
                return Ok(None);
            }
        }
        {
            let _ns = self.inner.namespace.lock().await;
            if self.pending_occupant(space, path).is_some() {
                return Ok(None);
            }
            claims.claim(path);
        }
        let size = c.upload.length.known().unwrap_or(0);
        let object = self
            .inner
            .store
            .promote(
                c.upload.staged_name(),
                size,
                space,
                path,
                Promote::NoReplace,
            )
            .await?;
        let done = committed(session, c, path.clone(), None, object, now_ms());
        let end = if whole_session {
            SessionEnd::To(&session.id, SessionState::Committed)
        } else {
            SessionEnd::IfSettled(&session.id)
        };
        let events = self.finish_events(session, std::slice::from_ref(&done));
        let tokens: Vec<String> = frozen.leases.iter().map(|l| l.token().to_owned()).collect();
        let meta = &self.inner.meta;
        let ended = match &frozen.gate {
            Some(gate) => {
                meta.commit_if_free_unclaimed(gate, end, &done, &events)
                    .await?
            }
            None => meta.commit_if_free(end, &done, &events, &tokens).await?,
        };
        let Some(ended) = ended else {
            claims.unclaim(path);
            return Ok(None);
        };
        // The range its write left is the file's now.
        frozen.left.clear();
        self.recorded(frozen, &events, 1);
        Ok(Some((vec![done], ended)))
    }

    /// What a commit in progress has claimed at or around `path`: on this
    /// node, or in a cluster on any node (its intent recorded).
    async fn claimed_anywhere(
        &self,
        space: &SpaceName,
        path: &SpacePath,
    ) -> Result<Option<Occupant>> {
        if let Some(o) = self.pending_occupant(space, path) {
            return Ok(Some(o));
        }
        if !self.in_cluster() {
            return Ok(None);
        }
        Ok(self.inner.meta.committing_around(space, path).await?)
    }

    /// What a commit in progress on this node has claimed at or around `path`.
    pub(crate) fn pending_occupant(&self, space: &SpaceName, path: &SpacePath) -> Option<Occupant> {
        let space = space.to_string();
        let pending = self.inner.pending.lock().unwrap();
        if pending.contains(&(space.clone(), path.to_string())) {
            return Some(Occupant::Folder);
        }
        for a in path.ancestors() {
            if pending.contains(&(space.clone(), a.to_owned())) {
                return Some(Occupant::FileAncestor(SpacePath::parse(a).expect("valid")));
            }
        }
        let lo = (space.clone(), format!("{path}/"));
        let hi = (space, format!("{path}0"));
        pending.range(lo..hi).next().map(|_| Occupant::Folder)
    }

    /// For a commit of one upload in a cluster (with `whole_session`, of
    /// its whole session): its path, when it is free, is claimed with the
    /// intent in one metadata step
    /// ([`ferry_meta::MetaStore::begin_commit_if_free`]), which checks it
    /// under the space's turn: a promotion with nothing to replace.
    /// `received` is what the upload's last write left to the intent.
    /// `None` when the path is taken (here or on another node) or the
    /// upload changed: nothing is recorded, and the caller takes the
    /// space's turn and decides under the session's policy.
    async fn claim_if_free(
        &self,
        session: &Session,
        whole_session: bool,
        upload: &Upload,
        received: Option<ferry_core::ByteRange>,
        claims: &mut Claims<'_>,
    ) -> Result<Option<Decision>> {
        let (space, path) = (&session.space, &upload.path);
        if upload.replaces.is_some() {
            return Ok(None);
        }
        {
            let _ns = self.inner.namespace.lock().await;
            if self.pending_occupant(space, path).is_some()
                || self.inner.store.file_exists(space, path).await?
            {
                return Ok(None);
            }
            claims.claim(path);
        }
        let meta = &self.inner.meta;
        if meta
            .begin_commit_if_free(
                whole_session.then_some(session.id.as_str()),
                &upload.id,
                space,
                path,
                received,
            )
            .await?
        {
            return Ok(Some(Decision::Promote(
                path.clone(),
                Promote::NoReplace,
                None,
                None,
            )));
        }
        claims.unclaim(path);
        Ok(None)
    }

    /// Steps 3–5: record the intent, promote, record the result.
    async fn promote_and_record(
        &self,
        session: &Session,
        frozen: &mut Frozen,
        candidates: Vec<Candidate>,
        decisions: Vec<Decision>,
        whole_session: bool,
        drop: &[String],
    ) -> Result<(Vec<Committed>, Option<SessionState>)> {
        // 3. Record the intent.
        let plan: Vec<(String, SpacePath)> = candidates
            .iter()
            .zip(&decisions)
            .filter_map(|(c, d)| match d {
                Decision::Promote(p, ..) => Some((c.upload.id.clone(), p.clone())),
                Decision::Skip(_) => None,
            })
            .collect();
        let meta = &self.inner.meta;
        // (Recorded already when the path was claimed with it.)
        // Under the space's turn, in the turn's own step
        // (`begin_commit_ending`): the turn ends with the intent recorded.
        if frozen.intent_recorded.is_empty() {
            let whole = whole_session.then_some(session.id.as_str());
            match frozen.space_hold.take() {
                Some(turn) => meta.begin_commit_ending(turn, whole, &plan, drop).await?,
                None => meta.begin_commit(whole, &plan, drop).await?,
            }
            frozen.intent_recorded = plan.iter().map(|(id, _)| id.clone()).collect();
        }
        frozen.space_hold = None;

        // 4. Promote, many at a time: directory fsyncs are shared between
        // concurrent promotions, so a 10,000-file session costs a few
        // hundred fsyncs rather than 10,000. Results keep the upload order.
        let now = now_ms();
        let store = &self.inner.store;
        let moved: Vec<SpacePath> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Promote(_, _, _, moved_from) => moved_from.clone(),
                Decision::Skip(_) => None,
            })
            .collect();
        // Paths where a file is replaced (its record was found there).
        let replaced: Vec<SpacePath> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Promote(path, Promote::Replace, ..) => Some(path.clone()),
                _ => None,
            })
            .collect();
        let done: Vec<Committed> = futures::stream::iter(candidates.into_iter().zip(decisions))
            .map(|(c, d)| async move {
                Ok::<_, EngineError>(match d {
                    Decision::Promote(path, mode, keep_id, _) => {
                        let size = c.upload.length.known().unwrap_or(0);
                        let object = store
                            .promote(c.upload.staged_name(), size, &session.space, &path, mode)
                            .await?;
                        committed(session, &c, path, keep_id, object, now)
                    }
                    Decision::Skip(existing) => {
                        self.discard_bytes(&c.upload).await?;
                        Committed {
                            upload_id: c.upload.id,
                            state: UploadState::Skipped,
                            final_path: existing.path.clone(),
                            file: *existing,
                        }
                    }
                })
            })
            .buffered(64)
            .try_collect()
            .await?;

        // On a store without paths, the objects of the files replaced or
        // moved here leave the namespace with the next transaction: their
        // bytes are retired after it. (The paths are claimed: no other
        // commit changes these records meanwhile.)
        let mut retired = Vec::new();
        if !store.capabilities().paths {
            for path in replaced.iter().chain(&moved) {
                if let Some(old) = meta.get_file(&session.space, path).await?
                    && old.object.is_some()
                {
                    retired.push(old);
                }
            }
        }

        // 5. Record the result with the session's end, in one transaction:
        // a whole session ends committed; otherwise it ends when nothing in
        // it is left open (an open-ended session stays open).
        let end = if whole_session {
            SessionEnd::To(&session.id, SessionState::Committed)
        } else {
            SessionEnd::IfSettled(&session.id)
        };
        // A file moved to a new path keeps its id, so recording it removes
        // its record at the old path in the same transaction; the
        // post-finish events are written with it.
        let events = self.finish_events(session, &done);
        // The leases end with the result, in its step.
        let tokens: Vec<String> = frozen.leases.iter().map(|l| l.token().to_owned()).collect();
        let ended = meta
            .finish_commit_releasing(end, &done, &events, &tokens)
            .await?;
        self.recorded(frozen, &events, done.len());
        if store.capabilities().paths {
            for old in moved {
                self.remove_moved(&session.space, &old).await;
            }
        }
        for old in retired {
            self.retire(&old).await;
        }
        Ok((done, ended))
    }

    /// The post-finish events of `done`, written with the result.
    pub(crate) fn finish_events(&self, session: &Session, done: &[Committed]) -> Vec<OutboxEvent> {
        self.hook_events(
            HookKind::PostFinish,
            done.iter().map(|d| {
                let data = HookData {
                    session_id: Some(session.id.clone()),
                    upload_id: Some(d.upload_id.clone()),
                    space: Some(d.file.space.to_string()),
                    path: Some(d.final_path.to_string()),
                    size: Some(d.file.size),
                    offset: Some(d.file.size),
                    sha256: Some(d.file.sha256.clone()),
                    user: Some(session.owner.clone()),
                    dialect: Some(session.dialect.clone()),
                    metadata: d.file.metadata.clone(),
                };
                (d.upload_id.as_str(), data)
            }),
        )
    }

    /// Once a commit's result is recorded: its leases ended with it, its
    /// events on their way, its files counted.
    fn recorded(&self, frozen: &mut Frozen, events: &[OutboxEvent], files: usize) {
        for lease in frozen.leases.drain(..) {
            lease.ended();
        }
        if !events.is_empty() {
            self.hooks_written();
        }
        metrics::counter!("ferry_files_committed_total").increment(files as u64);
        self.inner.activity.committed(files as u64);
    }

    /// Retires the object of a file no record names any more: a failure
    /// leaves an object the orphan sweep removes, logged.
    pub(crate) async fn retire(&self, old: &FileRecord) {
        if let Err(e) = self.inner.store.retire_file(loc(old)).await {
            tracing::error!(space = %old.space, path = %old.path, error = %e, "cannot retire a replaced file's object");
        }
    }

    /// Removes the bytes a moved file left at its old path (its record is
    /// gone already): a failure leaves bytes nobody lists, logged.
    async fn remove_moved(&self, space: &SpaceName, old: &SpacePath) {
        let at = ferry_store::FileLoc::at_path(space, old);
        match self.inner.store.delete_file(at).await {
            Ok(()) | Err(ferry_store::StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(%space, path = %old, error = %e, "cannot remove the old path of a moved file")
            }
        }
    }

    /// The file an upload is a new version of, if it is still in the
    /// session's space at another path than the upload's: it moves.
    async fn moved_file(&self, session: &Session, upload: &Upload) -> Result<Option<FileRecord>> {
        let Some(id) = &upload.replaces else {
            return Ok(None);
        };
        Ok(self
            .inner
            .meta
            .get_file_by_id(id)
            .await?
            .filter(|f| f.space == session.space && f.path != upload.path))
    }

    /// Where an upload goes under the session's policy.
    async fn decide(&self, session: &Session, upload: &Upload) -> Result<Decision> {
        let path = &upload.path;
        if let Some(f) = self.moved_file(session, upload).await? {
            if self
                .claimed_anywhere(&session.space, &f.path)
                .await?
                .is_some()
            {
                return Err(EngineError::Conflict(format!(
                    "another commit to {}/{} is in progress; retry in a moment",
                    session.space, f.path
                )));
            }
            return Ok(match self.decide_at(session, path).await? {
                Decision::Promote(p, mode, _, _) => {
                    Decision::Promote(p, mode, Some(f.id), Some(f.path))
                }
                skip => skip,
            });
        }
        self.decide_at(session, path).await
    }

    /// Where an upload for `path` goes under the session's policy.
    async fn decide_at(&self, session: &Session, path: &SpacePath) -> Result<Decision> {
        let taken = self.taken(&session.space, path).await?;
        if matches!(taken, PathTaken::Committing(_)) && session.conflict == ConflictPolicy::Replace
        {
            return Err(EngineError::Conflict(format!(
                "another commit to {}/{path} is in progress; retry in a moment",
                session.space
            )));
        }
        let occupant = match taken {
            PathTaken::Committing(o) | PathTaken::Occupied(o) => Some(o),
            PathTaken::Free => None,
        };
        let exists = || EngineError::AlreadyExists {
            path: format!("{}/{}", session.space, path),
        };
        Ok(match (occupant, session.conflict) {
            (None, _) => Decision::Promote(path.clone(), Promote::NoReplace, None, None),
            (Some(Occupant::FileAncestor(a)), _) => {
                return Err(EngineError::AlreadyExists {
                    path: format!("{}/{} (a file where a folder is needed)", session.space, a),
                });
            }
            (Some(_), ConflictPolicy::Fail) => return Err(exists()),
            (Some(Occupant::File(f)), ConflictPolicy::Replace) => {
                Decision::Promote(path.clone(), Promote::Replace, Some(f.id), None)
            }
            (Some(Occupant::File(f)), ConflictPolicy::Skip) => Decision::Skip(f),
            (Some(_), ConflictPolicy::Rename | ConflictPolicy::MergeRename) => {
                for n in 1..=10_000 {
                    // `None`: no suffixed name fits the path limit.
                    let Some(candidate) = renamed(path, n) else {
                        break;
                    };
                    if self.taken(&session.space, &candidate).await? == PathTaken::Free {
                        return Ok(Decision::Promote(candidate, Promote::NoReplace, None, None));
                    }
                }
                return Err(exists());
            }
            (Some(_), _) => return Err(exists()),
        })
    }

    /// Whether anything is at `path` (a file, a folder, or a path another
    /// commit has claimed); the caller holds the namespace lock.
    pub(crate) async fn occupied(&self, space: &SpaceName, path: &SpacePath) -> Result<bool> {
        Ok(self.taken(space, path).await? != PathTaken::Free)
    }

    /// What is at `path`: a commit in progress heading there or around it
    /// (this node's; in a cluster, any node's), else what occupies it —
    /// metadata first, then the disk (a file some other program put there
    /// counts as taken too). In a cluster, one metadata read.
    async fn taken(&self, space: &SpaceName, path: &SpacePath) -> Result<PathTaken> {
        if let Some(o) = self.pending_occupant(space, path) {
            return Ok(PathTaken::Committing(o));
        }
        let meta = &self.inner.meta;
        let taken = if self.in_cluster() {
            meta.path_taken(space, path).await?
        } else {
            match meta.occupant(space, path).await? {
                Some(o) => PathTaken::Occupied(o),
                None => PathTaken::Free,
            }
        };
        if taken == PathTaken::Free && self.inner.store.file_exists(space, path).await? {
            return Ok(PathTaken::Occupied(Occupant::Folder));
        }
        Ok(taken)
    }

    /// Whole-file digests: from the in-order cursor when it computes those
    /// wanted, or those recorded with the file's final object
    /// (`Upload::sealed`), else by reading the staged bytes (only the part
    /// past the cursor, when the cursor can be extended).
    async fn whole_digests(
        &self,
        upload: &Upload,
        cursor: Option<crate::hashing::Cursor>,
        want: Want,
    ) -> Result<Digests> {
        let size = upload.length.known().unwrap_or(0);
        let (start, mut hasher) = match cursor {
            Some(c) if c.hasher.want().covers(want) => (c.offset, c.hasher),
            _ => (0, Hashers::new(want)),
        };
        // A store that reads only sealed bytes seals first: the object is
        // read back, if at all, before any record names it (and one that
        // is gone is found missing here, whatever digests were kept).
        if !self.inner.store.capabilities().read_staged {
            self.inner.store.seal(upload.staged_name(), size).await?;
        }
        if start < size {
            let sealed = Digests::from_list(&upload.sealed);
            if !upload.direct && sealed.want().covers(want) {
                return Ok(sealed);
            }
            metrics::counter!("ferry_commit_rehash_bytes_total").increment(size - start);
            hasher = hasher
                .scan(
                    self.inner.store.as_ref(),
                    upload.staged_name(),
                    start,
                    size - start,
                )
                .await?;
        }
        Ok(hasher.finish())
    }

    /// Finishes what a commit of `session` left half-way (an error after
    /// its intent was recorded: a full metadata disk, a failed promotion):
    /// the same roll-forward as start-up recovery, run under the session's
    /// lock, so a retried commit succeeds once the cause is gone, with no
    /// restart. Returns the session as it now is.
    async fn resume_interrupted(&self, session: &Session) -> Result<Session> {
        let meta = &self.inner.meta;
        let mut states = Vec::new();
        for up in meta.session_uploads(&session.id).await? {
            if up.state == UploadState::Committing {
                let state = match self.roll_forward(&up.id).await? {
                    Rolled::Reopened => UploadState::Open,
                    _ => UploadState::Committed,
                };
                states.push((up.id, state));
            }
        }
        let mut s = self.fresh_session(&session.id).await?;
        if s.state == SessionState::Committing {
            let ups = meta.session_uploads(&s.id).await?;
            let state = if ups.iter().any(|u| u.state == UploadState::Open) {
                SessionState::Open
            } else {
                SessionState::Committed
            };
            meta.abort_uploads(&[], SessionEnd::To(&s.id, state))
                .await?;
            s.state = state;
        }
        self.refresh_session(&s, &states).await;
        Ok(s)
    }

    /// Repairs every intermediate state a crash can leave, then cleans
    /// staged bytes that no open upload owns. Run once at start-up, before
    /// serving. Stored data never stops it: what cannot be repaired is
    /// marked failed (its session says why), logged and counted in
    /// `ferry_recovery_failed_total`; everything else goes on.
    ///
    /// The intermediate states, and what becomes of them:
    /// 1. an upload `committing` (intent recorded; its bytes promoted or
    ///    not) → rolled forward to `committed`, or `open` again when its
    ///    staged bytes cannot be promoted, or failed when its bytes are
    ///    gone from both places or its record does not read;
    /// 2. a session `committing` (a whole-session commit's intent) →
    ///    `committed`, or `open` if one of its uploads was reopened;
    /// 3. a session `open` whose uploads have all finished or been aborted
    ///    (it is not open-ended) → `committed` or `aborted`
    ///    ([`SessionState::settled`]);
    /// 4. an upload `open` in a session that has ended → `aborted`;
    /// 5. an upload `open` whose staged file is missing → failed;
    /// 6. a staged file no open or committing upload owns → removed (of
    ///    a committed upload, what the store keeps besides its file's
    ///    bytes: [`ferry_store::Store::discard_staged_of_file`]).
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let meta = &self.inner.meta;
        let store = &self.inner.store;
        let mut report = RecoveryReport::default();
        // A statement of a process killed a moment ago may still be
        // running in a shared database: it ends first.
        if !meta.fence_dead().await? {
            tracing::warn!(
                "a process that died still has statements running in the database; recovering all the same"
            );
        }
        // 1.
        for id in meta.upload_ids(UploadState::Committing).await? {
            match self.roll_forward(&id).await {
                Ok(Rolled::Forward) => report.rolled_forward += 1,
                Ok(Rolled::Reopened) => report.reopened += 1,
                Ok(Rolled::Untouched) => {}
                Err(e) => self.fail_recovery(&id, &e, &mut report).await,
            }
        }
        // 2.
        for sid in meta.session_ids(SessionState::Committing).await? {
            let repaired = async {
                let ups = meta.session_uploads(&sid).await?;
                let state = if ups.iter().any(|u| u.state == UploadState::Open) {
                    SessionState::Open
                } else {
                    SessionState::Committed
                };
                meta.abort_uploads(&[], SessionEnd::To(&sid, state)).await?;
                Ok::<_, EngineError>(())
            }
            .await;
            match repaired {
                Ok(()) => report.sessions_repaired += 1,
                Err(e) => recovery_failed("session", &sid, &e, &mut report),
            }
        }
        // 3.
        for sid in meta.session_ids(SessionState::Open).await? {
            match meta.abort_uploads(&[], SessionEnd::IfSettled(&sid)).await {
                Ok(Some(_)) => report.sessions_repaired += 1,
                Ok(None) => {}
                Err(e) => recovery_failed("session", &sid, &e.into(), &mut report),
            }
        }
        // 4. and 5.
        let staged: std::collections::HashSet<String> =
            store.list_staged().await?.into_iter().collect();
        for id in meta.upload_ids(UploadState::Open).await? {
            let checked = async {
                let up = meta
                    .get_upload(&id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(format!("no upload {id:?}")))?;
                let session = meta
                    .get_session(&up.session_id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(format!("no session of {id:?}")))?;
                if session.state.is_final() {
                    meta.abort_uploads(std::slice::from_ref(&id), SessionEnd::Keep)
                        .await?;
                    report.uploads_aborted += 1;
                } else if !staged.contains(&id)
                    // A small upload keeps nothing in the store until its
                    // bytes come, and no listing names it.
                    && !self.is_small(&up)
                    // Not listed as staged, yet there: an upload sealed for
                    // its commit's read-back before the crash (S3).
                    && !store.staged_exists(up.staged_name()).await?
                {
                    return Err(EngineError::Store(ferry_store::StoreError::NotFound(
                        format!("staged upload {id}"),
                    )));
                }
                Ok::<_, EngineError>(())
            }
            .await;
            if let Err(e) = checked {
                self.fail_recovery(&id, &e, &mut report).await;
            }
        }
        // 6.
        for id in staged {
            let state = match meta.get_upload(&id).await {
                Ok(u) => u.map(|u| u.state),
                // A record that does not read keeps its bytes for an operator.
                Err(_) => Some(UploadState::Open),
            };
            // (Where the store names a file's bytes by its upload, they
            // are the file's: only what outlived them goes.)
            let discarded = match state {
                Some(UploadState::Open | UploadState::Committing) => continue,
                Some(UploadState::Committed) => store.discard_staged_of_file(&id).await,
                _ => store.discard_staged(&id).await,
            };
            match discarded {
                Ok(()) => report.orphans_removed += 1,
                Err(e) => recovery_failed("staged file", &id, &e.into(), &mut report),
            }
        }
        Ok(report)
    }

    /// Marks an upload that recovery could not repair failed, with a
    /// reason its session shows (no paths or OS errors: those are logged).
    async fn fail_recovery(&self, upload_id: &str, e: &EngineError, report: &mut RecoveryReport) {
        recovery_failed("upload", upload_id, e, report);
        let reason = match e {
            EngineError::Store(ferry_store::StoreError::NotFound(_)) => {
                "start-up recovery found the upload's bytes missing"
            }
            EngineError::Store(_) | EngineError::InsufficientStorage(_) => {
                "start-up recovery could not read or move the upload's bytes"
            }
            EngineError::Meta(_) | EngineError::NotFound(_) => {
                "start-up recovery could not read the upload's record"
            }
            _ => "start-up recovery could not finish the upload",
        };
        if let Err(e) = self.inner.meta.fail_upload(upload_id, reason).await {
            tracing::error!(upload = %upload_id, error = %e, "cannot mark the upload failed");
        }
    }

    /// Finishes one interrupted commit (an upload left `committing`):
    /// promotes its staged bytes if that had not happened, then records the
    /// file. Promotion is idempotent, so this is safe at any point after
    /// the intent was recorded; the caller holds the session's lock or runs
    /// before serving.
    async fn roll_forward(&self, upload_id: &str) -> Result<Rolled> {
        let meta = &self.inner.meta;
        let store = &self.inner.store;
        let up = meta
            .get_upload(upload_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no upload {upload_id:?}")))?;
        if up.state != UploadState::Committing {
            return Ok(Rolled::Untouched);
        }
        let session = meta
            .get_session(&up.session_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no session of {upload_id:?}")))?;
        let Some(path) = up.final_path.clone() else {
            meta.set_upload_state(&up.id, UploadState::Open).await?;
            return Ok(Rolled::Reopened);
        };
        let mode = if session.conflict == ConflictPolicy::Replace {
            Promote::Replace
        } else {
            Promote::NoReplace
        };
        // (A small upload's pieces are staged too, though no listing of
        // staged uploads names them: its seal makes them the object.)
        let staged = self.is_small(&up) || store.staged_exists(up.staged_name()).await?;
        let (digests, object) = if staged {
            let d = self
                .whole_digests(&up, None, Want::whole(&up.whole_digests))
                .await?;
            let size = up.length.known().unwrap_or(0);
            match store
                .promote(up.staged_name(), size, &session.space, &path, mode)
                .await
            {
                Ok(object) => (d, object),
                Err(e) => {
                    tracing::error!(upload = %up.id, error = %e, "cannot finish an interrupted commit; reopening the upload");
                    meta.set_upload_state(&up.id, UploadState::Open).await?;
                    return Ok(Rolled::Reopened);
                }
            }
        } else {
            // Promoted before the crash (a store with paths: a store of
            // objects keeps a sealed object staged until it is recorded):
            // hash the file where it landed.
            let size = up.length.known().unwrap_or(0);
            let mut h = Hashers::new(Want::whole(&up.whole_digests));
            let at = ferry_store::FileLoc::at_path(&session.space, &path);
            let mut s = store.read_file(at, 0, size).await?;
            while let Some(chunk) = s
                .try_next()
                .await
                .map_err(|e| EngineError::Store(ferry_store::StoreError::Body(e)))?
            {
                h.update(&chunk);
            }
            (h.finish(), None)
        };
        // A replaced file keeps its id: its record is still the old one;
        // so does a file moved here (a new version under a new name).
        let moved = self.moved_file(&session, &up).await?;
        let replaced = meta.get_file(&session.space, &path).await?;
        let id = match (&moved, &replaced) {
            (Some(f), _) => f.id.clone(),
            (None, Some(old)) if mode == Promote::Replace => old.id.clone(),
            _ => random_hex(16),
        };
        let done = Committed {
            file: FileRecord {
                id,
                space: session.space.clone(),
                path: path.clone(),
                size: up.length.known().unwrap_or(0),
                sha256: digests
                    .sha256
                    .expect("whole-file SHA-256 is always computed"),
                sha1: digests.sha1,
                md5: digests.md5,
                content_type: up.content_type.clone(),
                owner: session.owner.clone(),
                created_at: now_ms(),
                metadata: up.metadata.clone(),
                dialect_state: up.dialect_state.clone(),
                expires_at: session.files_expire.then_some(session.expires_at),
                object,
            },
            upload_id: up.id.clone(),
            state: UploadState::Committed,
            final_path: path,
        };
        // The session ends with its last upload, in the same transaction
        // (a whole-session commit's session is `committing`: left to step 2).
        let new_object = done.file.object.clone();
        meta.finish_commit(SessionEnd::IfSettled(&session.id), &[done])
            .await?;
        if store.capabilities().paths {
            if let Some(f) = moved {
                self.remove_moved(&session.space, &f.path).await;
            }
        } else {
            for old in [moved, replaced].into_iter().flatten() {
                if old.object.is_some() && old.object != new_object {
                    self.retire(&old).await;
                }
            }
        }
        Ok(Rolled::Forward)
    }
}

/// Final paths a commit has claimed (so that concurrent commits choose
/// around them) until its result is recorded; released on drop, so an
/// error or a dropped commit future never leaves a claim behind.
pub(crate) struct Claims<'a> {
    engine: &'a Engine,
    space: String,
    paths: Vec<String>,
}

impl<'a> Claims<'a> {
    /// No path claimed yet in `space`.
    pub(crate) fn new(engine: &'a Engine, space: &SpaceName) -> Claims<'a> {
        Claims {
            engine,
            space: space.to_string(),
            paths: Vec::new(),
        }
    }

    pub(crate) fn claim(&mut self, path: &SpacePath) {
        let key = (self.space.clone(), path.to_string());
        self.engine.inner.pending.lock().unwrap().insert(key);
        self.paths.push(path.to_string());
    }

    fn unclaim(&mut self, path: &SpacePath) {
        let key = (self.space.clone(), path.to_string());
        self.engine.inner.pending.lock().unwrap().remove(&key);
        self.paths.retain(|p| p != path.as_str());
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        let mut pending = self.engine.inner.pending.lock().unwrap();
        for p in self.paths.drain(..) {
            pending.remove(&(self.space.clone(), p));
        }
    }
}

/// Which uploads of a session a commit takes ([`Engine::commit_locked`]).
#[derive(Clone, Copy)]
struct CommitOf<'a> {
    session: &'a Session,
    ids: &'a [String],
    /// The digests the client expects, by upload.
    expected: &'a HashMap<String, Digest>,
    /// The session's commit: its result ends the session.
    whole_session: bool,
    /// Open uploads of the session the commit aborts.
    drop: &'a [String],
}

impl<'a> CommitOf<'a> {
    /// The session's commit of `ids`, aborting `drop`.
    fn session(
        session: &'a Session,
        ids: &'a [String],
        expected: &'a HashMap<String, Digest>,
        drop: &'a [String],
    ) -> Self {
        CommitOf {
            session,
            ids,
            expected,
            whole_session: true,
            drop,
        }
    }

    /// A commit of some uploads (`ids`), the session left open.
    fn uploads(
        session: &'a Session,
        ids: &'a [String],
        expected: &'a HashMap<String, Digest>,
    ) -> Self {
        CommitOf {
            session,
            ids,
            expected,
            whole_session: false,
            drop: &[],
        }
    }
}

/// What a commit already holds as it begins ([`Engine::commit_locked`]):
/// slots and leases of its uploads, the session's turn, and for a commit
/// that claimed nothing, what its result's step checks instead.
#[derive(Default)]
struct InHand {
    held: Vec<Held>,
    turn: Option<crate::lease::Lease>,
    gate: Option<ferry_meta::CommitGate>,
    /// With `gate`: the write its result records.
    write: Option<Unrecorded>,
}

/// A write that claimed nothing and stored its upload's whole file,
/// recorded by the result of a commit that claimed nothing
/// ([`Engine::commit_unclaimed`]) instead of a step of its own.
#[derive(Clone, Debug)]
pub(crate) struct Unrecorded {
    pub upload: String,
    /// Its entry among the slot's writes in flight, kept until the
    /// commit ends.
    pub write: u64,
    pub range: ferry_core::ByteRange,
    /// The whole file's digests.
    pub sealed: Vec<Digest>,
    /// The object it stored the file under ([`Upload::object`]).
    pub object: String,
    /// Its entry's: cancelled when a newer request takes the upload over.
    pub stop: tokio_util::sync::CancellationToken,
}

impl Unrecorded {
    /// `upload` as this write's record leaves it.
    fn record_in(&self, upload: &mut Upload) {
        upload.received.insert(self.range);
        upload.sealed = self.sealed.clone();
        upload.object = Some(self.object.clone());
    }
}

/// An upload whose commit lease a caller of `commit_locked` took before
/// it read the upload (`slot`, read under the lease): the commit goes on
/// from there instead of claiming and reading again.
pub(crate) struct Held {
    id: String,
    lease: Option<crate::lease::Lease>,
    /// The session's turn (its lease), ended by the commit's result.
    turn: Option<crate::lease::Lease>,
    slot: std::sync::Arc<crate::live::Slot>,
}

/// Uploads a commit has frozen (`committing`: no new writes) while it
/// verifies and promotes them; unfrozen on drop unless the commit took
/// them (an error, or a dropped commit future, leaves none frozen).
/// Once the intent is recorded they stay `committing` (as metadata says)
/// until the next commit of the session finishes them.
struct Frozen {
    slots: Vec<std::sync::Arc<crate::live::Slot>>,
    /// The uploads whose intent (`committing`) is recorded.
    intent_recorded: Vec<String>,
    /// In a cluster: the uploads' commit leases (other nodes' writes are
    /// refused until these go), and the session's turn when the caller
    /// gave it: the result's step ends them.
    leases: Vec<crate::lease::Lease>,
    /// In a cluster: the space's namespace turn, from choosing final paths
    /// until their intent is recorded.
    space_hold: Option<ferry_meta::Exclusive>,
    /// The ranges the uploads' completing writes left to the intent
    /// (`Left`), until it records them: a commit that ends before records
    /// them, then ends its leases.
    left: Vec<(String, ferry_core::ByteRange)>,
    /// A commit that claimed nothing ([`Engine::commit_unclaimed`]): what
    /// it worked from, which its one metadata step checks; it takes no
    /// other way.
    gate: Option<ferry_meta::CommitGate>,
    /// With `gate`: the write its result records.
    write: Option<Unrecorded>,
    meta: std::sync::Arc<dyn ferry_meta::MetaStore>,
}

impl Frozen {
    /// Unfreezes its uploads now, waiting for their slots (`Drop` may
    /// leave a busy one to a task).
    async fn thaw_now(&mut self) {
        for slot in std::mem::take(&mut self.slots) {
            let mut live = slot.state.lock().await;
            live.committing = false;
            if self.intent_recorded.contains(&live.upload.id) {
                live.upload.state = UploadState::Committing;
            }
        }
    }

    /// Records the ranges the writes left to an intent that was not
    /// recorded (the commit failed): the bytes stay the upload's.
    async fn record_left(&mut self) {
        // One at a time, each removed once done: if this is dropped
        // mid-way, `Drop` records the rest.
        while let Some((id, range)) = self.left.first().cloned() {
            if let Err(e) = self.meta.record_write(&id, range, None, &[]).await {
                tracing::warn!(upload = %id, error = %e, "cannot record a write's bytes; its client resends them");
            }
            self.left.remove(0);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        fn thaw(live: &mut crate::live::Live, recorded: &[String]) {
            live.committing = false;
            if recorded.contains(&live.upload.id) {
                live.upload.state = UploadState::Committing;
            }
        }
        if !self.left.is_empty() {
            // Dropped mid-commit: recorded in the background, then the
            // leases end.
            let mut rest = Frozen {
                slots: Vec::new(),
                intent_recorded: Vec::new(),
                leases: std::mem::take(&mut self.leases),
                space_hold: None,
                left: std::mem::take(&mut self.left),
                gate: None,
                write: None,
                meta: self.meta.clone(),
            };
            tokio::spawn(async move { rest.record_left().await });
        }
        let recorded = std::sync::Arc::new(std::mem::take(&mut self.intent_recorded));
        for slot in self.slots.drain(..) {
            if let Ok(mut live) = slot.state.try_lock() {
                thaw(&mut live, &recorded);
                continue;
            }
            // Busy: thaw as soon as the holder lets go.
            let recorded = recorded.clone();
            tokio::spawn(async move { thaw(&mut *slot.state.lock().await, &recorded) });
        }
    }
}

/// The record of the file `c` becomes at `path` (with `keep_id`, the id
/// of the file it replaces there), its bytes in `object`.
pub(crate) fn committed(
    session: &Session,
    c: &Candidate,
    path: SpacePath,
    keep_id: Option<String>,
    object: Option<String>,
    now: Millis,
) -> Committed {
    let up = &c.upload;
    Committed {
        file: FileRecord {
            id: keep_id.unwrap_or_else(|| random_hex(16)),
            space: session.space.clone(),
            path: path.clone(),
            size: up.length.known().unwrap_or(0),
            sha256: c
                .digests
                .sha256
                .clone()
                .expect("whole-file SHA-256 is always computed"),
            sha1: c.digests.sha1.clone(),
            md5: c.digests.md5.clone(),
            content_type: up.content_type.clone(),
            owner: session.owner.clone(),
            created_at: now,
            metadata: up.metadata.clone(),
            dialect_state: up.dialect_state.clone(),
            expires_at: session.files_expire.then_some(session.expires_at),
            object,
        },
        upload_id: up.id.clone(),
        state: UploadState::Committed,
        final_path: path,
    }
}

/// The digests a commit of `upload` checks (the one its client expects
/// now, the SHA-256 given at its creation), and what the commit must
/// have hashed for them and for the digests the upload keeps.
pub(crate) fn commit_checks(upload: &Upload, expected: Option<&Digest>) -> (Vec<Digest>, Want) {
    let mut checks: Vec<Digest> = expected.cloned().into_iter().collect();
    if let Some(hex) = &upload.expected_sha256
        && let Some(d) = Digest::from_hex(DigestAlgo::Sha256, hex)
    {
        checks.push(d);
    }
    let want = checks
        .iter()
        .fold(Want::whole(&upload.whole_digests), |w, d| {
            w.or(Want::algo(d.algo))
        });
    (checks, want)
}

/// What [`Engine::roll_forward`] did.
enum Rolled {
    Forward,
    Reopened,
    Untouched,
}

/// Logs and counts a record recovery could not repair.
fn recovery_failed(what: &str, id: &str, e: &EngineError, report: &mut RecoveryReport) {
    tracing::error!(%what, %id, error = %e, "start-up recovery cannot repair this; marking it failed and going on");
    metrics::counter!("ferry_recovery_failed_total").increment(1);
    report.failed += 1;
}

/// What [`Engine::recover`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub rolled_forward: usize,
    pub reopened: usize,
    /// Sessions moved out of an intermediate state (steps 2 and 3).
    pub sessions_repaired: usize,
    /// Open uploads of ended sessions, aborted.
    pub uploads_aborted: usize,
    /// Records recovery could not repair, marked failed.
    pub failed: usize,
    pub orphans_removed: usize,
}

/// An open session past its expiry is gone, whether or not the reaper
/// has seen it yet.
fn unexpired(s: Session) -> Result<Session> {
    if s.state == SessionState::Open && s.is_expired_at(now_ms()) {
        return Err(EngineError::Gone(StateError::Expired));
    }
    Ok(s)
}

/// `upload` as the commit `d` recorded it (`MetaStore::finish_commit`:
/// the state, the final path and the file; a done upload keeps no
/// received ranges).
pub(crate) fn recorded(mut upload: Upload, d: &Committed) -> Upload {
    upload.state = d.state;
    upload.final_path = Some(d.final_path.clone());
    upload.file_id = Some(d.file.id.clone());
    upload.received = Default::default();
    upload
}
