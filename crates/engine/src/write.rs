//! The data path: one write of a part or a byte range.

use crate::auth::Caller;
use crate::hashing::{Digests, Hashers, Want, WriteHashes};
use crate::lease::Reading;
use crate::live::Live;
use crate::session::BORN_TURN_MAX;
use crate::{Engine, EngineError, Result, UploadView, now_ms};
use ferry_core::{ByteRange, Digest, FileRecord, Length, Part, SessionState, Upload, UploadState};
use ferry_meta::LeaseKind;
use ferry_store::{ByteStream, StoreError};
use futures::StreamExt;
use std::sync::{Arc, Mutex};

/// Where a write lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAt {
    /// Part `n` (1-based) of the upload's part plan.
    Part(u32),
    /// Part `number` at a range the dialect worked out, for parts whose
    /// size the client chooses (Veeva's in-order parts, S3 multipart).
    PartAt { number: u32, range: ByteRange },
    /// A byte range; `total` announces (or repeats) the upload's length.
    Range {
        range: ByteRange,
        total: Option<u64>,
    },
    /// Bytes from `offset`, which must be where the received bytes end
    /// (uploads written strictly in order: tus, the IETF draft). The body
    /// may stop anywhere: what arrived is kept. A write still streaming on
    /// the upload is stopped first, keeping its durable bytes. `len` is
    /// the body's length when the request announced it (Content-Length):
    /// a store that writes in fixed parts then knows where it ends.
    Append {
        offset: u64,
        total: Option<u64>,
        len: Option<u64>,
    },
}

/// Digests that arrive after the body (HTTP trailers), read once the body
/// has ended; the bytes must then have been hashed with every algorithm
/// the late digest might name (`PartChecks::want`).
pub type LateDigests = Arc<dyn Fn() -> Result<Vec<Digest>> + Send + Sync>;

/// A write whose range is reserved in its slot (`inflight`).
struct Streamed {
    slot: Arc<crate::live::Slot>,
    appending: bool,
    /// The body's length is known (a range, a part, an announced append).
    exact: bool,
    stop: tokio_util::sync::CancellationToken,
    range: ByteRange,
    part_no: Option<u32>,
    write_id: u64,
    epoch: u64,
    cursor: Option<Hashers>,
    resend: bool,
    /// The write is the whole file, and nothing came before it.
    whole: bool,
    /// The upload is small for the store
    /// ([`ferry_store::Store::write_small`]).
    small: bool,
    /// The name the store keeps the upload's bytes under
    /// ([`Upload::staged_name`]).
    key: String,
}

/// Digests a client sent with the bytes, checked while they stream.
#[derive(Clone, Default)]
pub struct PartChecks {
    pub expected: Vec<Digest>,
    /// Digests to compute and report even when none is expected.
    pub want: Want,
    pub late: Option<LateDigests>,
}

#[derive(Clone, Debug)]
pub struct WriteResult {
    pub upload: Upload,
    /// The part record, for part writes.
    pub part: Option<Part>,
    pub digests: Digests,
    /// Set when the write completed an auto-commit upload.
    pub file: Option<FileRecord>,
    /// The session's expiry after the write (a sliding expiry moves it).
    pub expires_at: ferry_core::Millis,
}

/// A one-request upload, committed ([`Engine::upload_whole`]).
#[derive(Clone, Debug)]
pub struct WholeUpload {
    pub file: FileRecord,
    /// The upload, committed: its id is the address a resuming dialect
    /// gives (tus `Location`).
    pub upload: Upload,
    /// Its session's expiry.
    pub expires_at: ferry_core::Millis,
}

/// How a write that claims nothing ended ([`Engine::write_unclaimed`]).
enum Unclaimed {
    Written(Box<WriteResult>),
    /// Not written: the body, as it came, for the usual way.
    Usual(ByteStream),
    /// A newer request took the upload over while the body came.
    Stopped,
}

/// What the body adapter saw, shared with the write that owns it.
struct Seen {
    count: u64,
    overflow: bool,
}

/// A write's lease ([`Engine::write_lease`]), the session's turn taken
/// with it, and what its claim read once granted: the upload and its
/// session (an append), or their states (a part or range).
type WriteLease = (
    Option<crate::lease::Lease>,
    Option<crate::lease::TurnAhead>,
    Option<(Upload, ferry_core::Session)>,
    Option<(UploadState, SessionState)>,
);

impl Engine {
    /// Writes bytes to an upload. With `CommitMode::OnLastByte`, the write
    /// that completes the upload commits it: its answer carries the file,
    /// or the commit's error (the bytes stay; the commit can be retried).
    /// A write repeated after its upload was committed answers the
    /// committed result (the resend policy, [`Engine::resent`]).
    pub async fn write(
        &self,
        caller: &Caller,
        upload_id: &str,
        at: WriteAt,
        body: ByteStream,
        checks: PartChecks,
    ) -> Result<WriteResult> {
        let append = matches!(at, WriteAt::Append { .. });
        // In a cluster, an append, and a write to an upload this node
        // keeps a slot of, read the upload once their lease is granted,
        // in its claim (below); others read it first and claim reading
        // only the states.
        let cached = self.cached_slot(upload_id).is_some();
        let read_in_claim = self.in_cluster() && (append || cached);
        // An append or a part to an upload this node keeps no slot of
        // claims first, reading the upload in its claim's statement, when
        // nobody holds its bytes (else it reads, then claims, as below).
        let mut first = match self.in_cluster() && !cached {
            true => self.claim_unread(caller, upload_id, at).await?,
            false => None,
        };
        let fresh = first.is_some();
        let mut slot = match &first {
            Some(claimed) => claimed.slot.clone(),
            None if read_in_claim => self.slot_before_lease(caller, upload_id).await?,
            None => self.slot(caller, upload_id).await?,
        };
        // `since`: what the slot holds as the claim goes out (a part's or
        // range's lease leaves other bytes to this node's other writes,
        // whose changes the claim's read may predate).
        let (read_in_claim, done, private, since) = {
            let live = slot.state.lock().await;
            // And a small upload the store keeps whole as its final
            // object reads in its claim: its write takes the object over
            // when nothing was received (a write recorded by another node
            // between the read above and the claim would else be written
            // over, or its object removed if this write's body broke).
            let read_in_claim = read_in_claim
                || (self.in_cluster() && self.seals(self.is_small(&live.upload), true));
            let since = (read_in_claim && !append).then(|| live.upload.clone());
            (
                read_in_claim,
                live.upload.state.is_done(),
                live.private,
                since,
            )
        };
        if done {
            drop(first);
            return self.resent(&slot, at, body, checks).await;
        }
        // The whole file of a small upload as its one part, before any
        // other byte: written without a claim when nothing happened
        // meanwhile, else the usual way (`Engine::write_unclaimed`).
        let body = match self
            .write_unclaimed(&slot, upload_id, at, body, &checks)
            .await
        {
            Unclaimed::Written(mut w) => {
                if w.file.is_none()
                    && let Some(view) = self.commit_if_due(&slot, upload_id).await?
                {
                    w.file = view.file;
                    w.upload = view.upload;
                }
                return Ok(*w);
            }
            Unclaimed::Usual(body) => body,
            Unclaimed::Stopped => {
                return Err(EngineError::Conflict(
                    "another request took this upload over while this one's body came; none of its bytes were kept: ask for the upload's offset"
                        .into(),
                ));
            }
        };
        // No other request writes to a private upload: no lease, and the
        // slot this node keeps is the truth.
        let (lease, _turn_ahead, read, states) = match (private, first.take()) {
            (true, _) => (None, None, None, None),
            (false, Some(claimed)) => (Some(claimed.lease), claimed.turn_ahead, None, None),
            (false, None) => {
                self.write_lease(&slot, upload_id, at, read_in_claim)
                    .await?
            }
        };
        if lease.is_some() {
            // Claimed: no write of it claims nothing any more.
            slot.state.lock().await.made_here = false;
        }
        if lease.is_some() && read_in_claim && !fresh {
            // Afresh, as the claim read it: the append may have waited
            // for another node's to settle, or the upload changed on
            // another node since it was cached here.
            slot = self
                .slot_as_read_since(caller, upload_id, read, since)
                .await?;
            if slot.state.lock().await.upload.state.is_done() {
                drop(lease);
                return self.resent(&slot, at, body, checks).await;
            }
        } else if let Some((up, session)) = states
            && (up != UploadState::Open || session != SessionState::Open)
        {
            // Changed on another node between the read above and the
            // lease (committed, aborted, failed): read again (under the
            // slot's lock, as ranges this node's other writes record are),
            // and a committed upload's write is a resend, never bytes
            // over the file; `write_bytes` refuses the others.
            slot = self.slot(caller, upload_id).await?;
            if slot.state.lock().await.upload.state.is_done() {
                drop(lease);
                return self.resent(&slot, at, body, checks).await;
            }
        }
        // However this ends (this future dropped too), what the write left
        // to a commit that did not take it is recorded.
        struct RecordLeft(Engine, Arc<crate::live::Slot>);
        impl Drop for RecordLeft {
            fn drop(&mut self) {
                if self
                    .1
                    .state
                    .try_lock()
                    .is_ok_and(|live| live.left.is_none())
                {
                    return;
                }
                let (engine, slot) = (self.0.clone(), self.1.clone());
                tokio::spawn(async move {
                    if let Err(e) = engine.record_left(&slot).await {
                        tracing::warn!(error = %e, "cannot record a write's bytes; the client resends them");
                    }
                });
            }
        }
        let _left = RecordLeft(self.clone(), slot.clone());
        let mut w = self
            .write_bytes(&slot, upload_id, at, body, checks, lease)
            .await?;
        let committed = self.commit_if_due(&slot, upload_id).await;
        let recorded = self.record_left(&slot).await;
        let committed = committed?;
        recorded?;
        if let Some(view) = committed {
            w.file = view.file;
            w.upload = view.upload;
        }
        Ok(w)
    }

    /// In a cluster, on a store that keeps a small upload's whole file as
    /// its final object, on the node that made the upload: a part that is
    /// the whole file, or an append of it from its first byte, sent before
    /// any other byte of it, claims nothing. Its body is read whole and
    /// checked, stored as an object of its own name (which no other write
    /// uses: [`object_name`]), and recorded, with that name, only if
    /// nothing holds or changed the upload meanwhile
    /// ([`ferry_meta::MetaStore::record_write_if_free`]): one metadata
    /// step instead of a claim and a record. Anything else, a body that is
    /// not exactly the part, a digest that does not match, or a step
    /// refused, goes the usual way with the body as it came (which claims,
    /// then writes, or compares with the object a record names, and
    /// answers); an append whose record another request's claim refused
    /// with nothing recorded since, or which a newer request stopped,
    /// gives way to it instead (`Stopped`).
    async fn write_unclaimed(
        &self,
        slot: &Arc<crate::live::Slot>,
        upload_id: &str,
        at: WriteAt,
        body: ByteStream,
        checks: &PartChecks,
    ) -> Unclaimed {
        // A part, or an append from the first byte (tus, the IETF draft).
        let number = match at {
            WriteAt::Part(number) => Some(number),
            WriteAt::Append { offset: 0, .. } => None,
            _ => return Unclaimed::Usual(body),
        };
        let free = |live: &Live| -> Option<(ByteRange, Want)> {
            let up = &live.upload;
            let len = up.length.known()?;
            let whole = match (number, at) {
                (Some(n), _) => up.plan().part_range(n.into(), up.length) == Some((0, len)),
                (
                    None,
                    WriteAt::Append {
                        total, len: sent, ..
                    },
                ) => total.is_none_or(|t| t == len) && sent.is_none_or(|s| s == len),
                _ => false,
            };
            let ready = self.in_cluster()
                && live.made_here
                && whole
                && self.seals(self.is_small(up), true)
                && !live.private
                && !live.committing
                && live.left.is_none()
                && live.inflight.is_empty()
                && live.check_writable(now_ms()).is_ok()
                && up.received.is_empty()
                && up.parts.is_empty()
                && up.sealed.is_empty()
                && live.session.extend_secs.is_none()
                && checks.late.is_none()
                && !self.wants_hook(crate::HookKind::PostReceive);
            ready
                .then(|| ByteRange::new(0, len))
                .flatten()
                .map(|r| (r, Want::whole(&up.whole_digests)))
        };
        // Reserved as any write's range while its body comes: a newer
        // request (a tus `HEAD`) stops it as it stops any write.
        let (range, whole_want, write_id, stop) = {
            let mut live = slot.state.lock().await;
            let Some((range, whole_want)) = free(&live) else {
                return Unclaimed::Usual(body);
            };
            let id = live.next_write;
            live.next_write += 1;
            let stop = tokio_util::sync::CancellationToken::new();
            live.inflight.push(crate::live::Inflight {
                id,
                range,
                stop: stop.clone(),
            });
            (range, whole_want, id, stop)
        };
        // The rest runs as a task of its own: a request that goes away
        // (dropping this future cancels `stop`) cannot leave its range
        // reserved.
        let abandon = stop.clone().drop_guard();
        let (engine, slot, id) = (self.clone(), slot.clone(), upload_id.to_owned());
        let checks = checks.clone();
        let task = tokio::spawn(async move {
            let _flight = engine.inner.activity.writing();
            let unreserve = || async {
                let mut live = slot.state.lock().await;
                slot.finished(&mut live, write_id);
            };
            // The body, read whole; given back as it came to the usual way.
            let mut body = body.fuse();
            let mut came: Vec<std::io::Result<bytes::Bytes>> = Vec::new();
            let mut got = 0u64;
            let mut clean = true;
            loop {
                let item = tokio::select! {
                    item = body.next() => item,
                    () = stop.cancelled() => {
                        unreserve().await;
                        return Unclaimed::Stopped;
                    }
                };
                let Some(item) = item else { break };
                let over = match &item {
                    Ok(chunk) => {
                        got += chunk.len() as u64;
                        got > range.len()
                    }
                    Err(_) => true,
                };
                clean &= item.is_ok();
                came.push(item);
                if over {
                    clean = false;
                    break;
                }
            }
            let want = checks
                .expected
                .iter()
                .fold(checks.want, |w, d| w.or(Want::algo(d.algo)));
            let (mut part_hash, mut whole_hash) = (Hashers::new(want), Hashers::new(whole_want));
            let mut data = bytes::BytesMut::with_capacity(range.len() as usize);
            for chunk in came.iter().flatten() {
                part_hash.update(chunk);
                whole_hash.update(chunk);
                data.extend_from_slice(chunk);
            }
            let digests = part_hash.finish();
            let usual = |came: Vec<_>, body| {
                Unclaimed::Usual(futures::stream::iter(came).chain(body).boxed())
            };
            let checked = checks.expected.iter().all(|d| digests.check(d).is_ok());
            if !clean || got != range.len() || !checked {
                unreserve().await;
                return usual(came, body);
            }
            let sealed = whole_hash.finish().to_list();
            let part = number.map(|number| Part {
                number,
                offset: 0,
                size: range.len(),
                sha256: digests.sha256.clone(),
                sha1: digests.sha1.clone(),
                md5: digests.md5.clone(),
            });
            let (store, meta) = (&engine.inner.store, &engine.inner.meta);
            // A name of the write's own: nothing else is ever stored
            // there, so the object needs no condition, and no write of
            // the upload's own name (a claimed one) can meet it.
            let object = object_name(&id);
            let stored_at = std::time::Instant::now();
            let stored = store
                .create_small_named(&object, data.freeze())
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(upload = %id, error = %e, "a write that claimed nothing could not store its object; written the usual way");
                    false
                });
            // An append of the whole file to a session committed on its
            // last byte: recorded with the commit, in its step, when
            // nothing else holds the session (else recorded, then
            // committed, as below).
            // `unsure`: that commit failed, perhaps after its step.
            let (committed, unsure) = match (stored, number) {
                (true, None) => {
                    let write = crate::commit::Unrecorded {
                        upload: id.clone(),
                        write: write_id,
                        range,
                        sealed: sealed.clone(),
                        object: object.clone(),
                        stop: stop.clone(),
                    };
                    match engine.commit_with_write(&slot, write).await {
                        Ok(view) => (view, false),
                        Err(e) => {
                            tracing::warn!(upload = %id, error = %e, "a write's commit failed; the write goes the usual way");
                            (None, true)
                        }
                    }
                }
                _ => (None, false),
            };
            let late = stored_at.elapsed() > engine.unnamed_limit();
            // `Err`: the record's outcome is unknown.
            let recorded = match stored {
                _ if committed.is_some() => Ok(true),
                true if unsure => Err(()),
                true if late => Ok(false),
                true => meta
                    .record_write_if_free(&id, range, part.as_ref(), &sealed, &object)
                    .await
                    .map_err(|e| {
                        tracing::debug!(upload = %id, error = %e, "a write that claimed nothing goes the usual way");
                    }),
                false => Ok(false),
            };
            let mut live = slot.state.lock().await;
            slot.finished(&mut live, write_id);
            if recorded != Ok(true) {
                // Refused: something touched the upload, and this slot
                // may not know it. Its next writes claim.
                live.made_here = false;
                drop(live);
                // What it stored and no record names goes; a record whose
                // outcome is unknown may name it: the orphan sweep, which
                // reads the records, removes it if none does.
                if stored
                    && recorded == Ok(false)
                    && let Err(e) = store.delete_object(&object).await
                {
                    tracing::warn!(upload = %id, error = %e, "cannot remove an object no write recorded; the orphan sweep will");
                }
                // An append whose upload another request claimed meanwhile
                // (a newer one of its client: a HEAD, a PATCH) gives way to
                // it, as one holding its lease would have been stopped.
                if stop.is_cancelled() {
                    return Unclaimed::Stopped;
                }
                // After a record or commit that may have landed, the
                // usual way claims and reads the upload: a recorded one
                // answers this as a resend of its write, which is compared
                // with the object the record names.
                if recorded.is_err() {
                    return usual(came, body);
                }
                // An append refused with nothing written since: a claim of
                // the upload came meanwhile (a newer request of its
                // client's, on any node), which it gives way to. One
                // written or ended elsewhere answers it the usual way (a
                // resend, or the rest of the file).
                if number.is_none() && stored {
                    let written =
                        meta.get_upload(&id).await.ok().flatten().is_some_and(|u| {
                            !u.received.is_empty() || u.state != UploadState::Open
                        });
                    if !written {
                        return Unclaimed::Stopped;
                    }
                }
                return usual(came, body);
            }
            engine.inner.activity.received(range.len());
            metrics::counter!("ferry_bytes_received_total").increment(range.len());
            let (upload, file) = match committed {
                Some(view) => (view.upload, view.file),
                None => {
                    live.upload.sealed = sealed;
                    live.upload.object = Some(object);
                    live.upload.received.insert(range);
                    if let Some(part) = &part {
                        live.upload.parts.insert(part.number, part.clone());
                    }
                    (live.upload.clone(), None)
                }
            };
            Unclaimed::Written(Box::new(WriteResult {
                upload,
                part,
                digests,
                file,
                expires_at: live.session.expires_at,
            }))
        });
        let ended = task.await;
        abandon.disarm();
        match ended {
            Ok(ended) => ended,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is stopping.
            Err(_) => Unclaimed::Stopped,
        }
    }

    /// [`Engine::commit_unclaimed`] of the session of `write`'s upload
    /// when it is committed on its last byte, recording `write` in the
    /// commit's step. `None` when it did not commit: nothing changed; an
    /// error when the commit failed (its step may have recorded it).
    async fn commit_with_write(
        &self,
        slot: &crate::live::Slot,
        write: crate::commit::Unrecorded,
    ) -> Result<Option<UploadView>> {
        let session_id = {
            let live = slot.state.lock().await;
            let auto = live.session.commit_mode().is_auto();
            match auto {
                true => live.session.id.clone(),
                false => return Ok(None),
            }
        };
        let caller = Caller::Session(session_id.clone());
        let expected = std::collections::HashMap::new();
        let view = self
            .commit_unclaimed(&caller, &session_id, &expected, Some(write))
            .await?;
        Ok(view.and_then(|v| v.uploads.into_iter().next()))
    }

    /// Records the range a write left to a commit that did not take it
    /// (one that failed before it froze the upload), then ends the lease
    /// left with it.
    async fn record_left(&self, slot: &crate::live::Slot) -> Result<()> {
        let mut live = slot.state.lock().await;
        let Some(crate::live::Left { range, lease }) = live.left.take() else {
            return Ok(());
        };
        self.keep_cursor_if_held(&mut live, false);
        let (meta, id) = (&self.inner.meta, &live.upload.id);
        match lease {
            Some(l) => {
                meta.record_write_releasing(id, range, None, &[], l.token())
                    .await?;
                l.ended();
            }
            None => meta.record_write(id, range, None, &[]).await?,
        }
        Ok(())
    }

    /// With `CommitMode::OnLastByte`: commits the upload if it holds every
    /// byte and is still open (the completing write's commit, or one that
    /// did not happen then: failed, or the server stopped in between).
    pub(crate) async fn commit_if_auto(
        &self,
        caller: &Caller,
        upload_id: &str,
    ) -> Result<Option<UploadView>> {
        let slot = self.slot(caller, upload_id).await?;
        self.commit_if_due(&slot, upload_id).await
    }

    /// [`Engine::commit_if_auto`] with the upload's slot at hand.
    async fn commit_if_due(
        &self,
        slot: &std::sync::Arc<crate::live::Slot>,
        upload_id: &str,
    ) -> Result<Option<UploadView>> {
        let due = {
            let live = slot.state.lock().await;
            (live.session.commit_mode().is_auto()
                && live.upload.state == ferry_core::UploadState::Open
                && live.upload.is_complete())
            .then(|| live.session.id.clone())
        };
        let Some(session_id) = due else {
            return Ok(None);
        };
        // The session's one upload, sealed whole on this node: committed
        // with it in one metadata step when nothing else holds it.
        let caller = Caller::Session(session_id.clone());
        let unclaimed = self
            .commit_unclaimed(&caller, &session_id, &Default::default(), None)
            .await?;
        if let Some(view) = unclaimed.and_then(|v| v.uploads.into_iter().next()) {
            return Ok(Some(view));
        }
        self.commit_one(slot, upload_id, None).await.map(Some)
    }

    /// The status of an upload for a client that resumes it (tus and
    /// draft `HEAD` after [`Engine::take_over`], Graph's `GET uploadUrl`):
    /// an `OnLastByte` upload that holds every byte but was not committed
    /// is committed now, so that it is never stranded behind "already
    /// received" answers.
    pub async fn resume(
        &self,
        caller: &Caller,
        upload_id: &str,
    ) -> Result<(UploadView, ferry_core::Session)> {
        let (view, session) = self.upload_and_session(caller, upload_id).await?;
        if session.state != SessionState::Open {
            return Ok((view, session));
        }
        match self.commit_if_auto(caller, upload_id).await? {
            Some(_) => self.upload_and_session(caller, upload_id).await,
            None => Ok((view, session)),
        }
    }

    /// The resend policy: a write to an upload already committed whose
    /// range lies within the file and whose body has that range's length
    /// (and, where it is cheap to know, the same bytes: the whole file's
    /// SHA-256, or the recorded part's) is the completing request sent
    /// again — a client that missed the answer, or an SDK that repeats its
    /// last range — and answers what the first one did. Anything else is
    /// refused as writing to a committed upload.
    async fn resent(
        &self,
        slot: &Arc<crate::live::Slot>,
        at: WriteAt,
        body: ByteStream,
        checks: PartChecks,
    ) -> Result<WriteResult> {
        let (upload, session) = {
            let live = slot.state.lock().await;
            (live.upload.clone(), live.session.clone())
        };
        let refused = || EngineError::Gone(upload.state.check_writable().unwrap_err());
        let Length::Known(len) = upload.length else {
            return Err(refused());
        };
        let (range, part_no) = match at {
            WriteAt::Part(n) => {
                let (a, b) = upload
                    .plan()
                    .part_range(n.into(), upload.length)
                    .ok_or_else(refused)?;
                (ByteRange::new(a, b), Some(n))
            }
            WriteAt::PartAt { number, range } => (Some(range), Some(number)),
            WriteAt::Range { range, total } => {
                if total.is_some_and(|t| t != len) {
                    return Err(refused());
                }
                (Some(range), None)
            }
            WriteAt::Append { offset, total, .. } => {
                if total.is_some_and(|t| t != len) {
                    return Err(refused());
                }
                (ByteRange::new(offset, len), None)
            }
        };
        let range = range.filter(|r| r.end <= len).ok_or_else(refused)?;
        let whole = range.start == 0 && range.end == len;
        let stored_part = part_no.and_then(|n| upload.parts.get(&n).cloned());
        let want = checks.expected.iter().fold(
            Want {
                sha256: whole || stored_part.is_some(),
                ..checks.want
            },
            |w, d| w.or(Want::algo(d.algo)),
        );
        let mut hashers = Hashers::new(want);
        let mut count = 0u64;
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| EngineError::BodyFailed {
                durable: 0,
                source: e,
            })?;
            count += chunk.len() as u64;
            if count > range.len() {
                return Err(refused());
            }
            hashers.update(&chunk);
        }
        if count != range.len() {
            return Err(refused());
        }
        let digests = hashers.finish();
        let late = match &checks.late {
            Some(late) => late()?,
            None => Vec::new(),
        };
        for d in checks.expected.iter().chain(&late) {
            digests.check(d)?;
        }
        let file = self.file_of(&session, &upload).await?;
        let same = |stored: Option<&str>| match (stored, &digests.sha256) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        if (whole && !same(file.as_ref().map(|f| f.sha256.as_str())))
            || !same(stored_part.as_ref().and_then(|p| p.sha256.as_deref()))
        {
            return Err(refused());
        }
        metrics::counter!("ferry_resent_writes_total").increment(1);
        Ok(WriteResult {
            upload,
            part: stored_part,
            digests,
            file,
            expires_at: session.expires_at,
        })
    }

    /// A whole file in one request (the native `PUT`, a tus or draft
    /// creation that carries every byte): `new` (one upload, committed on
    /// its last byte) is created, `body` written to it and committed; the
    /// file is the answer. All or nothing: whatever fails aborts the
    /// session (unless its commit already ended it), and the error is the
    /// answer — its client never learnt the upload's address, so there is
    /// nothing to resume. Nobody else knows the session until this
    /// answers, so in a cluster it is made holding its turn and committed
    /// without leases of its own ([`crate::live::Live::private`]).
    pub async fn upload_whole(
        &self,
        caller: &Caller,
        mut new: crate::NewSession,
        body: ByteStream,
        checks: PartChecks,
    ) -> Result<WholeUpload> {
        if new.uploads.len() != 1 {
            return Err(EngineError::invalid(
                "invalid_request",
                "a one-request upload is one file",
            ));
        }
        new.whole_in_request = true;
        new.commit = ferry_core::CommitMode::OnLastByte;
        let body = match self.whole_at_once(caller, &new, body, &checks).await? {
            Ok(done) => return Ok(done),
            Err(body) => body,
        };
        let size = new.uploads[0].size;
        let view = self.create_session(caller, new).await?;
        let session = view.session.id.clone();
        // However this ends (this future dropped too), the session's turn
        // goes if its commit did not take it.
        struct Born<'a>(&'a Engine, &'a str);
        impl Drop for Born<'_> {
            fn drop(&mut self) {
                self.0.forget_born_turn(self.1);
            }
        }
        let _born = Born(self, &session);
        let upload = &view.uploads[0].upload.id;
        let written = async {
            let at = WriteAt::Append {
                offset: 0,
                total: size,
                len: size,
            };
            let w = self.write(caller, upload, at, body, checks).await?;
            if let Some(file) = w.file {
                return Ok(WholeUpload {
                    file,
                    upload: w.upload,
                    expires_at: w.expires_at,
                });
            }
            // A body of unknown length: it ended here, which makes its length.
            let end = w.upload.received.prefix_len();
            let at = WriteAt::Append {
                offset: end,
                total: Some(end),
                len: Some(0),
            };
            let empty = Box::pin(futures::stream::empty());
            let w = self
                .write(caller, upload, at, empty, Default::default())
                .await?;
            let file = w
                .file
                .ok_or_else(|| EngineError::Conflict("the file was not committed".into()))?;
            Ok(WholeUpload {
                file,
                upload: w.upload,
                expires_at: w.expires_at,
            })
        }
        .await;
        if written.is_err()
            && let Err(abort) = self.abort_session(caller, &session).await
        {
            tracing::debug!(%session, error = %abort, "one-request upload: session not aborted");
        }
        written
    }

    /// In a cluster, the lease of the bytes a write is about to stream
    /// ([`crate::lease`]): an append takes the upload over from another
    /// node's, a part or range is refused while another node writes
    /// bytes it overlaps. An append of at most [`BORN_TURN_MAX`] bytes
    /// that completes an upload its session commits on the last byte
    /// also leases the session's turn for that commit in the same claim,
    /// if no other node holds it (kept until the write is over). The
    /// claim reads the upload once granted when `read_in_claim` (an
    /// append's always), else only its states.
    async fn write_lease(
        &self,
        slot: &crate::live::Slot,
        upload_id: &str,
        at: WriteAt,
        read_in_claim: bool,
    ) -> Result<WriteLease> {
        if !self.in_cluster() {
            return Ok((None, None, None, None));
        }
        let everything = (0, u64::MAX);
        let ((lo, hi), kind) = match at {
            WriteAt::Append { offset, total, len } => {
                let session = {
                    let live = slot.state.lock().await;
                    let end = total.or(live.upload.length.known());
                    let completes =
                        len.is_some_and(|n| n <= BORN_TURN_MAX && end == Some(offset + n));
                    (completes && live.session.commit_mode().is_auto())
                        .then(|| live.session.id.clone())
                };
                let (lo, hi) = everything;
                let leased = self
                    .lease_upload(
                        upload_id,
                        (lo, hi),
                        LeaseKind::Append,
                        session.as_deref(),
                        Reading::Whole,
                    )
                    .await?;
                let ahead = session
                    .zip(leased.turn)
                    .map(|(s, turn)| self.keep_turn_ahead(&s, turn));
                return Ok((leased.lease, ahead, leased.read, None));
            }
            WriteAt::Range { range, .. } | WriteAt::PartAt { range, .. } => {
                ((range.start, range.end), LeaseKind::Write)
            }
            WriteAt::Part(n) => {
                let live = slot.state.lock().await;
                let up = &live.upload;
                let bounds = up.plan().part_range(n.into(), up.length);
                (bounds.unwrap_or(everything), LeaseKind::Write)
            }
        };
        let reading = match read_in_claim {
            true => Reading::Whole,
            false => Reading::States,
        };
        let leased = self
            .lease_upload(upload_id, (lo, hi), kind, None, reading)
            .await?;
        Ok((leased.lease, None, leased.read, leased.states))
    }

    /// The bytes of one write: streamed, made durable and recorded.
    async fn write_bytes(
        &self,
        slot: &Arc<crate::live::Slot>,
        upload_id: &str,
        at: WriteAt,
        body: ByteStream,
        checks: PartChecks,
        lease: Option<crate::lease::Lease>,
    ) -> Result<WriteResult> {
        let appending = matches!(at, WriteAt::Append { .. });
        let exact = !matches!(at, WriteAt::Append { len: None, .. });
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(lease) = &lease {
            lease.stops(&stop);
        }

        // 1. Under the lock: validate, reserve the range, pick up the cursor.
        let (range, part_no, write_id, epoch, cursor, (resend, whole, small, key)) = {
            let mut live = if appending {
                slot.take_over().await
            } else {
                slot.lock_settled().await
            };
            live.check_writable(now_ms())?;
            let Some((range, part_no)) = self.target(&mut live, at).await? else {
                // An append that only fixed the length: nothing to stream.
                // Its lease ends before the answer, and before the commit
                // that may follow claims the upload.
                let unchanged = Self::unchanged(live);
                if let Some(lease) = lease {
                    lease.release().await;
                }
                return unchanged;
            };
            if let Some(other) = live.inflight.iter().find(|w| w.range.overlaps(&range)) {
                return Err(EngineError::Conflict(format!(
                    "bytes {range} overlap bytes {} that another request is writing now",
                    other.range
                )));
            }
            let id = live.next_write;
            live.next_write += 1;
            live.inflight.push(crate::live::Inflight {
                id,
                range,
                stop: stop.clone(),
            });
            let resend = live.upload.received.intersects(&range);
            let whole = exact
                && !resend
                && range.start == 0
                && live.upload.length.known() == Some(range.end);
            let small = self.is_small(&live.upload);
            let key = live.upload.staged_name().to_owned();
            // In a cluster, bytes are hashed as they come only while this
            // node holds the upload until its commit: a private upload's
            // (`seed_slots`), or an append of the whole file, whose lease
            // goes on to the commit (`Left`). Or when the whole file
            // becomes its final object: the digests are recorded with it
            // (`Upload::sealed`). Elsewhere, the commit reads the file back.
            let held_to_commit = self.in_cluster()
                && appending
                && lease.is_some()
                && live.session.commit_mode().is_auto();
            if live.cursor.is_none()
                && whole
                && !live.upload.direct
                && (held_to_commit || self.seals(small, whole))
            {
                live.cursor = Some(crate::hashing::Cursor {
                    offset: 0,
                    hasher: Hashers::new(Want::whole(&live.upload.whole_digests)),
                });
                live.cursor_gen += 1;
            }
            let cursor = live
                .cursor
                .as_ref()
                .filter(|c| c.offset == range.start && live.follow_end.is_none())
                .map(|c| c.hasher.clone());
            (
                range,
                part_no,
                id,
                live.cursor_gen,
                cursor,
                (resend, whole, small, key),
            )
        };
        // The rest runs as a task of its own, so that a request that goes
        // away (client gone, HTTP/2 reset) cannot leave its write in
        // flight: dropping this future cancels `stop` (the guard), the body
        // ends there, the durable prefix is recorded and the slot settled,
        // as for a write a newer request took over.
        let abandon = stop.clone().drop_guard();
        let this = self.clone();
        let id = upload_id.to_owned();
        let (slot, upload_id) = (slot.clone(), upload_id.to_owned());
        let task = tokio::spawn(async move {
            let streamed = Streamed {
                slot,
                appending,
                exact,
                stop,
                range,
                part_no,
                write_id,
                epoch,
                cursor,
                resend,
                whole,
                small,
                key,
            };
            let mut lease = lease;
            let result = this
                .stream_and_record(&upload_id, streamed, body, checks, &mut lease)
                .await;
            // Released before the answer (by the record, or here): the
            // client's next request finds the bytes free.
            if let Some(lease) = lease {
                lease.release().await;
            }
            result
        });
        let result = match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(EngineError::Conflict("the write was stopped".into())),
        };
        abandon.disarm();
        match result {
            Err(EngineError::Store(ferry_store::StoreError::NotFound(what))) => {
                Err(self.staged_bytes_lost(&id, &what).await)
            }
            other => other,
        }
    }

    /// The store no longer has an open upload's staged bytes (its S3
    /// multipart upload was aborted behind Ferry's back, its staged file
    /// deleted): nothing acknowledged can be trusted any more, so the
    /// upload fails, and its session with the reason, which the session
    /// shows. Returns the error for the request that found out.
    pub(crate) async fn staged_bytes_lost(&self, upload_id: &str, what: &str) -> EngineError {
        // Asked afresh: another node may have sealed it for a commit
        // since this one last looked (then nothing is lost).
        let changed = || {
            EngineError::Conflict(format!(
                "the upload changed in storage meanwhile ({what}); retry the request"
            ))
        };
        // Or committed, or being committed, on another node since: its
        // bytes went with that commit, and nothing is failed.
        if let Ok(Some(up)) = self.inner.meta.get_upload(upload_id).await
            && (up.state != ferry_core::UploadState::Open
                || self.inner.store.staged_exists(up.staged_name()).await.ok() == Some(true))
        {
            return changed();
        }
        tracing::error!(upload = %upload_id, %what, "staged bytes lost; the session fails");
        let reason = "the upload's staged bytes are gone from storage (removed outside Ferry): start a new upload";
        if let Err(e) = self.inner.meta.fail_upload(upload_id, reason).await {
            return e.into();
        }
        let session = match self.inner.meta.get_upload(upload_id).await {
            Ok(Some(up)) => self.fresh_session(&up.session_id).await,
            Ok(None) => return EngineError::NotFound(format!("no upload {upload_id:?}")),
            Err(e) => return e.into(),
        };
        match session {
            Ok(s) => {
                let aborted = [(upload_id.to_owned(), ferry_core::UploadState::Aborted)];
                self.refresh_session(&s, &aborted).await;
                EngineError::Gone(ferry_core::StateError::Failed)
            }
            Err(e) => e,
        }
    }

    /// Deletes what the store keeps of `upload`'s bytes: what is staged
    /// under its id, and the object its write named, if any (idempotent).
    pub(crate) async fn discard_bytes(
        &self,
        upload: &Upload,
    ) -> std::result::Result<(), StoreError> {
        self.inner.store.discard_staged(&upload.id).await?;
        match &upload.object {
            Some(object) => self.inner.store.delete_object(object).await,
            None => Ok(()),
        }
    }

    /// How long after its `PutObject` a write may still record an object
    /// no record names yet: the orphan sweep may take it once the store's
    /// grace is over, so a record comes well within it (half of it, at
    /// most an hour: a store may keep such objects for ever), or not at
    /// all.
    pub(crate) fn unnamed_limit(&self) -> std::time::Duration {
        (self.inner.store.unnamed_grace() / 2).min(std::time::Duration::from_secs(3600))
    }

    /// Whether the store keeps `upload` as a small upload
    /// ([`ferry_store::Store::write_small`]): its length known and at most
    /// the store's small size, and no part of it sent straight to the
    /// store. Every node says the same of one upload.
    pub(crate) fn is_small(&self, upload: &Upload) -> bool {
        let max = self.inner.store.small_size();
        max > 0 && !upload.direct && upload.length.known().is_some_and(|n| n <= max)
    }

    /// Whether a write stores the whole file as its final object
    /// ([`ferry_store::Capabilities::whole_is_final`]), whose digests are
    /// then recorded with it.
    fn seals(&self, small: bool, whole: bool) -> bool {
        small && whole && self.inner.store.capabilities().whole_is_final
    }

    /// Steps 2 and 3 of [`Engine::write`], once the range is reserved.
    async fn stream_and_record(
        &self,
        upload_id: &str,
        w: Streamed,
        body: ByteStream,
        checks: PartChecks,
        lease: &mut Option<crate::lease::Lease>,
    ) -> Result<WriteResult> {
        let Streamed {
            slot,
            appending,
            exact,
            stop,
            range,
            part_no,
            write_id,
            epoch,
            cursor,
            resend,
            whole,
            small,
            key,
        } = w;
        // Bytes that replace bytes already received go to a side object
        // first, so a failed or mismatching resend leaves the earlier,
        // acknowledged bytes untouched.
        // (A store that cannot read staged bytes cannot copy them either:
        // there the resend replaces them in place, part by part, each
        // replacement atomic in the store.)
        let side = (resend && self.inner.store.capabilities().read_staged)
            .then(|| format!("{upload_id}-r{write_id}"));
        if let Some(side) = &side
            && let Err(e) = self.inner.store.create_staged(side).await
        {
            slot.finished(&mut *slot.state.lock().await, write_id);
            return Err(e.into());
        }

        // 2. Stream to storage, hashing on the way, outside the lock.
        let want = checks
            .expected
            .iter()
            .fold(checks.want, |w, d| w.or(Want::algo(d.algo)));
        let seen = Arc::new(Mutex::new(Seen {
            count: 0,
            overflow: false,
        }));
        let limit = range.len();
        let body_len = if exact {
            ferry_store::BodyLen::Exact(limit)
        } else {
            ferry_store::BodyLen::AtMost(limit)
        };
        let (feeder, finisher) = crate::hashing::tap(
            WriteHashes {
                part: Hashers::new(want),
                cursor,
            },
            limit,
        );
        let tap = seen.clone();
        let _flight = self.inner.activity.writing();
        let engine = self.inner.clone();
        let body = body
            .take_until(stop.clone().cancelled_owned())
            .then(move |item| {
                let (tap, feeder, engine) = (tap.clone(), feeder.clone(), engine.clone());
                async move {
                    let chunk = item?;
                    {
                        let mut s = tap.lock().unwrap();
                        if s.count + chunk.len() as u64 > limit {
                            s.overflow = true;
                            return Err(std::io::Error::other("body longer than announced"));
                        }
                        s.count += chunk.len() as u64;
                    }
                    engine.activity.received(chunk.len() as u64);
                    feeder.feed(&chunk).await;
                    Ok(chunk)
                }
            })
            .boxed();
        let outcome = match &side {
            Some(side) => self.inner.store.write_at(side, 0, body_len, body).await,
            None if small => {
                self.inner
                    .store
                    .write_small(&key, range.start, body_len, body, whole)
                    .await
            }
            None if whole => self.inner.store.write_whole(&key, range.len(), body).await,
            None => {
                self.inner
                    .store
                    .write_at(&key, range.start, body_len, body)
                    .await
            }
        };
        let seen = Arc::try_unwrap(seen)
            .ok()
            .expect("the body stream is gone")
            .into_inner()
            .unwrap();
        let hashes = finisher.finish().await;
        metrics::counter!("ferry_bytes_received_total").increment(seen.count);

        // 3. Under the lock again: record what is durable, or undo.
        let mut live = slot.state.lock().await;
        slot.finished(&mut live, write_id);
        let stopped = stop.is_cancelled();
        let superseded = || {
            EngineError::Conflict(
                "a newer request for this upload took over; the bytes this one made durable are kept"
                    .into(),
            )
        };
        // An append keeps what arrived, however short.
        let (range, limit) = match outcome {
            Ok(n) if appending && n < limit && !seen.overflow => {
                match ByteRange::new(range.start, range.start + n) {
                    Some(r) => (r, n),
                    None => {
                        if let Some(side) = &side {
                            let _ = self.inner.store.discard_staged(side).await;
                        }
                        if stopped {
                            return Err(superseded());
                        }
                        return Self::unchanged(live);
                    }
                }
            }
            _ => (range, limit),
        };
        // What the store now holds of this write (what it replaced, on a
        // store that writes a resend in place), whether or not it counts.
        let written = match &outcome {
            Ok(n) => *n,
            Err(f) => f.durable,
        };
        let failure = match outcome {
            Ok(n) if n == limit && !seen.overflow => None,
            Ok(n) => Some((
                n,
                if seen.overflow {
                    too_long(limit)
                } else if stopped {
                    // Cut short by a newer request, not by its client.
                    superseded()
                } else {
                    EngineError::invalid(
                        "invalid_body",
                        format!("the body ended after {n} of the {limit} bytes announced"),
                    )
                },
            )),
            Err(f) => {
                let err = match f.error {
                    _ if seen.overflow => too_long(limit),
                    StoreError::Body(source) => EngineError::BodyFailed {
                        durable: f.durable,
                        source,
                    },
                    e => e.into(),
                };
                Some((f.durable, err))
            }
        };
        let digests = hashes.part.finish();
        let late = match (&failure, &checks.late) {
            (None, Some(late)) => late(),
            _ => Ok(Vec::new()),
        };
        let failure = failure.or_else(|| match late {
            Err(e) => Some((0, e)),
            Ok(late) => checks
                .expected
                .iter()
                .chain(&late)
                .find_map(|d| digests.check(d).err())
                .map(|e| (0, e)),
        });
        let applied = match (&failure, &side) {
            (None, Some(side)) => self
                .inner
                .store
                .copy_staged(side, upload_id, range.start, range.len())
                .await
                .map_err(EngineError::from),
            _ => Ok(()),
        };
        if let Some(side) = &side {
            let _ = self.inner.store.discard_staged(side).await;
        }
        if side.is_some() {
            if let Some((_, err)) = failure {
                return Err(err); // the earlier bytes are intact
            }
            applied?;
        }
        if let Some((durable, err)) = failure {
            // A part is all or nothing; a range keeps its durable prefix.
            let kept = if part_no.is_some() { 0 } else { durable };
            // A whole file refused (a digest that does not match): the
            // store may hold it as the small upload's object already, which
            // later writes would be compared with. Nothing came before it,
            // so nothing staged counts: it all goes.
            if small && whole && kept == 0 && written > 0 {
                let _ = self.inner.store.discard_staged(upload_id).await;
                live.upload.sealed.clear();
                live.upload.object = None;
            }
            let hashed = hashes.cursor.filter(|_| kept == seen.count);
            self.settle(&mut live, range, (kept, written), part_no, epoch, hashed)
                .await?;
            self.keep_cursor_if_held(&mut live, false);
            return Err(err);
        }
        // The session may have ended while the bytes streamed.
        if live.session.state != SessionState::Open {
            return Err(EngineError::Gone(
                live.session.state.check_writable().unwrap_err(),
            ));
        }
        let part = part_no.map(|number| Part {
            number,
            offset: range.start,
            size: range.len(),
            sha256: digests.sha256.clone(),
            sha1: digests.sha1.clone(),
            md5: digests.md5.clone(),
        });
        // The whole file, stored as its final object, hashed from its first
        // byte as it came: its digests are the file's.
        let sealed = match &hashes.cursor {
            Some(h)
                if self.seals(small, whole)
                    && range.start == 0
                    && live.upload.length.known() == Some(range.end) =>
            {
                h.clone().finish().to_list()
            }
            _ => Vec::new(),
        };
        let meta = &self.inner.meta;
        // In a cluster, a write that completes an upload committed on its
        // last byte leaves its record to the commit that follows, and an
        // append of the whole file its lease (`Left`): a private upload's
        // write has none, a part's or a range's covers only its bytes, and
        // the commit after a later append reads the file back (long: its
        // lease would keep other nodes' resumes waiting).
        let completes = || {
            let mut after = live.upload.received.clone();
            after.insert(range);
            live.upload.length.known() == Some(after.prefix_len())
        };
        let leave = self.in_cluster()
            && part.is_none()
            && live.session.commit_mode().is_auto()
            && (live.private || (appending && whole && lease.is_some()))
            && completes();
        match lease.take() {
            lease if leave => live.left = Some(crate::live::Left { range, lease }),
            // On an error the lease is dropped, which releases it.
            Some(l) => {
                meta.record_write_releasing(upload_id, range, part.as_ref(), &sealed, l.token())
                    .await?;
                l.ended();
            }
            None => {
                meta.record_write(upload_id, range, part.as_ref(), &sealed)
                    .await?
            }
        }
        if !sealed.is_empty() {
            live.upload.sealed = sealed;
        }
        live.upload.received.insert(range);
        if let Some(p) = &part {
            live.upload.parts.insert(p.number, p.clone());
        }
        self.advance_cursor(&mut live, range, epoch, hashes.cursor);
        self.keep_cursor_if_held(&mut live, leave);
        self.follow_if_behind(&slot, &mut live);

        let upload = live.upload.clone();
        let extend = self.extension(&live.session);
        let mut expires_at = live.session.expires_at;
        let session = self
            .wants_hook(crate::HookKind::PostReceive)
            .then(|| live.session.clone());
        drop(live);
        if let Some(session) = session {
            self.note_received(&session, &upload).await;
        }
        if let Some((session_id, until)) = extend {
            self.extend_session(&session_id, until).await?;
            expires_at = expires_at.max(until);
        }
        if stopped {
            return Err(superseded());
        }
        Ok(WriteResult {
            upload,
            part,
            digests,
            file: None,
            expires_at,
        })
    }

    /// Where a write moves a sliding-expiry session's expiry, if it moves
    /// it by a tenth of the extension or more (at least a second): the
    /// expiry is recorded now and then, not at every write.
    fn extension(&self, s: &ferry_core::Session) -> Option<(String, ferry_core::Millis)> {
        let secs = s.extend_secs? as i64;
        let cap = s.created_at + (self.inner.limits.max_expiry_secs as i64) * 1000;
        let until = (now_ms() + secs * 1000).min(cap);
        (until >= s.expires_at + (secs * 100).max(1000)).then(|| (s.id.clone(), until))
    }

    /// Records a later expiry and gives it to every live slot of the session.
    async fn extend_session(&self, session_id: &str, until: ferry_core::Millis) -> Result<()> {
        self.inner.meta.extend_session(session_id, until).await?;
        for slot in self.session_slots(session_id) {
            let mut live = slot.state.lock().await;
            live.session.expires_at = live.session.expires_at.max(until);
        }
        Ok(())
    }

    /// Resolves a write target to a byte range, fixing a deferred length
    /// when the write announces it.
    async fn target(
        &self,
        live: &mut Live,
        at: WriteAt,
    ) -> Result<Option<(ByteRange, Option<u32>)>> {
        let up = &live.upload;
        let limits = &self.inner.limits;
        let (range, part) = match at {
            WriteAt::Part(n) => {
                if n == 0 || u64::from(n) > limits.max_parts {
                    return Err(EngineError::RangeNotSatisfiable(format!(
                        "part numbers run from 1 to {}; got {n}",
                        limits.max_parts
                    )));
                }
                let (a, b) = up.plan().part_range(n.into(), up.length).ok_or_else(|| {
                    EngineError::RangeNotSatisfiable(format!(
                        "part {n} is past the end: the upload has {} parts of {} bytes",
                        up.length.known().map_or(0, |s| up.plan().total_parts(s)),
                        up.part_size
                    ))
                })?;
                let range = ByteRange::new(a, b).ok_or_else(|| {
                    EngineError::RangeNotSatisfiable(
                        "the upload is empty; commit it without writing".into(),
                    )
                })?;
                (range, Some(n))
            }
            WriteAt::PartAt { number, range } => {
                if number == 0 || u64::from(number) > limits.max_parts {
                    return Err(EngineError::RangeNotSatisfiable(format!(
                        "part numbers run from 1 to {}; got {number}",
                        limits.max_parts
                    )));
                }
                (range, Some(number))
            }
            WriteAt::Range { range, total } => {
                if let Some(t) = total {
                    self.announce_length(live, t).await?;
                }
                (range, None)
            }
            WriteAt::Append { offset, total, len } => {
                if let Some(t) = total {
                    self.announce_length(live, t).await?;
                }
                let up = &live.upload;
                let at = up.received.prefix_len();
                if offset != at || up.received.max_end() != at {
                    return Err(EngineError::OffsetMismatch {
                        expected: at,
                        provided: offset,
                    });
                }
                if len == Some(0) {
                    return Ok(None); // an empty body: nothing to stream
                }
                let end = match up.length {
                    Length::Known(n) => n.min(offset.saturating_add(limits.max_part_size)),
                    Length::Deferred => offset.saturating_add(limits.max_part_size),
                };
                // A body announced shorter than the room left ends there
                // (one announced longer overflows, and is refused).
                let end = match len {
                    Some(l) => end.min(offset.saturating_add(l)),
                    None => end,
                };
                match ByteRange::new(offset, end) {
                    Some(r) => (r, None),
                    None if total.is_some() => return Ok(None),
                    None => {
                        return Err(EngineError::invalid(
                            "upload_complete",
                            format!(
                                "the upload has all its {offset} bytes; nothing more can be appended"
                            ),
                        ));
                    }
                }
            }
        };
        let up = &live.upload;
        if let Length::Known(size) = up.length
            && range.end > size
        {
            return Err(EngineError::RangeNotSatisfiable(format!(
                "bytes {range} reach past the upload's size of {size} bytes"
            )));
        }
        if range.len() > limits.max_part_size {
            return Err(EngineError::TooLarge {
                message: format!(
                    "one write of {} bytes is over the limit of {} bytes per request",
                    range.len(),
                    limits.max_part_size
                ),
                limit: limits.max_part_size,
            });
        }
        Ok(Some((range, part)))
    }

    /// A write announces the upload's total size: it must match a known
    /// size, and fixes a deferred one.
    async fn announce_length(&self, live: &mut Live, total: u64) -> Result<()> {
        let up = &live.upload;
        match up.length {
            Length::Known(n) if n != total => Err(EngineError::RangeNotSatisfiable(format!(
                "the request gives the total size {total}, but the upload's size is {n}"
            ))),
            Length::Known(_) => Ok(()),
            Length::Deferred if up.received.max_end() > total => {
                Err(EngineError::RangeNotSatisfiable(format!(
                    "the total size {total} is smaller than the {} bytes already received",
                    up.received.max_end()
                )))
            }
            Length::Deferred => self.fix_length(live, total).await,
        }
    }

    /// The answer of a write that wrote nothing: the upload as it is.
    fn unchanged(live: tokio::sync::MutexGuard<'_, Live>) -> Result<WriteResult> {
        Ok(WriteResult {
            upload: live.upload.clone(),
            part: None,
            digests: Hashers::new(Want::default()).finish(),
            file: None,
            expires_at: live.session.expires_at,
        })
    }

    async fn fix_length(&self, live: &mut Live, total: u64) -> Result<()> {
        let limits = &self.inner.limits;
        if total > limits.max_file_size {
            return Err(EngineError::TooLarge {
                message: format!(
                    "the size {total} is over the maximum file size of {} bytes",
                    limits.max_file_size
                ),
                limit: limits.max_file_size,
            });
        }
        let parts = live.upload.plan().total_parts(total);
        if parts > limits.max_parts {
            return Err(EngineError::TooLarge {
                message: format!(
                    "{total} bytes in parts of {} make {parts} parts; the limit is {}",
                    live.upload.part_size, limits.max_parts
                ),
                limit: limits.max_parts,
            });
        }
        let owner = live.session.owner.clone();
        let user = self.user(&owner).await?;
        self.check_quota(&owner, user.and_then(|u| u.quota_bytes), total)
            .await?;
        self.inner
            .meta
            .set_length(&live.upload.id, Length::Known(total))
            .await?;
        live.upload.length = Length::Known(total);
        Ok(())
    }

    /// After a failed write: keep its durable prefix (`kept` bytes, range
    /// writes only) and forget the bytes it clobbered that had counted as
    /// received — those the store replaced (`written`) but that do not
    /// count (a part's, or bytes that failed a digest) — so that status
    /// never claims bytes the store no longer has. Bytes past `written`
    /// were not touched: a store that writes a resend in place replaces
    /// nothing it did not write (an S3 part or piece is all or nothing).
    async fn settle(
        &self,
        live: &mut Live,
        range: ByteRange,
        (kept, written): (u64, u64),
        part: Option<u32>,
        epoch: u64,
        hashed: Option<Hashers>,
    ) -> Result<()> {
        let id = live.upload.id.clone();
        let kept_range = ByteRange::new(range.start, range.start + kept);
        // (An object a write named is never written again, only compared
        // with: nothing of it was clobbered.)
        let clobbered = ByteRange::new(range.start + kept, range.start + written.max(kept))
            .filter(|r| live.upload.received.intersects(r) && live.upload.object.is_none());
        if let Some(c) = clobbered {
            let mut rest = ferry_core::RangeSet::new();
            for r in live.upload.received.ranges() {
                for piece in [
                    ByteRange::new(r.start, r.end.min(c.start)),
                    ByteRange::new(r.start.max(c.end), r.end),
                ]
                .into_iter()
                .flatten()
                {
                    rest.insert(piece);
                }
            }
            if let Some(k) = kept_range {
                rest.insert(k);
            }
            let drop_part = part.filter(|n| live.upload.parts.contains_key(n));
            self.inner
                .meta
                .forget(&id, rest.ranges(), drop_part)
                .await?;
            live.upload.received = rest;
            live.upload.sealed.clear(); // as `forget` does
            live.upload.object = None;
            if let Some(n) = drop_part {
                live.upload.parts.remove(&n);
            }
            if live.cursor.as_ref().is_some_and(|cur| c.start < cur.offset) {
                live.drop_cursor();
            }
        } else if let Some(k) = kept_range {
            self.inner.meta.record_write(&id, k, None, &[]).await?;
            live.upload.received.insert(k);
        }
        if let Some(k) = kept_range {
            self.advance_cursor(live, k, epoch, hashed);
        }
        Ok(())
    }

    /// Moves the in-order hash past `range` when the write hashed it from
    /// the cursor; drops the cursor when a write rewrote hashed bytes.
    /// In a cluster, an upload's in-order hash is kept only while this
    /// node holds the upload until its commit (private, or `held`: the
    /// write left its lease to the commit): once the lease ends, another
    /// node may rewrite bytes below it.
    fn keep_cursor_if_held(&self, live: &mut Live, held: bool) {
        if self.in_cluster() && !live.private && !held && live.cursor.is_some() {
            live.drop_cursor();
        }
    }

    fn advance_cursor(
        &self,
        live: &mut Live,
        range: ByteRange,
        epoch: u64,
        hashed: Option<Hashers>,
    ) {
        let Some(cur) = &live.cursor else { return };
        // Bytes below this are hashed, or being hashed by the follower.
        let covered = cur.offset.max(live.follow_end.unwrap_or(0));
        if let Some(h) = hashed
            && epoch == live.cursor_gen
            && cur.offset == range.start
        {
            live.cursor = Some(crate::hashing::Cursor {
                offset: range.end,
                hasher: h,
            });
            live.cursor_gen += 1;
        } else if range.start < covered {
            live.drop_cursor();
        }
    }

    /// Starts the hash follower if received bytes now extend past the
    /// cursor: it reads them back from storage and hashes them while the
    /// upload goes on, so that commit finds the whole-file digest ready
    /// even when parts arrive out of order or in parallel. Not on a store
    /// that reads only sealed bytes: there commit reads the object once.
    pub(crate) fn follow_if_behind(
        &self,
        slot: &std::sync::Arc<crate::live::Slot>,
        live: &mut Live,
    ) {
        if !self.inner.store.capabilities().read_staged {
            return;
        }
        let behind = live
            .cursor
            .as_ref()
            .is_some_and(|c| live.upload.received.prefix_len() > c.offset);
        if !behind || live.follow_end.is_some() {
            return;
        }
        let prefix = live.upload.received.prefix_len();
        live.follow_end = Some(prefix);
        let (engine, slot) = (self.clone(), slot.clone());
        let name = live.upload.staged_name().to_owned();
        tokio::spawn(async move { engine.follow(slot, name).await });
    }

    /// Hashes the upload's bytes the store keeps under `name` in order,
    /// behind its writes.
    async fn follow(&self, slot: std::sync::Arc<crate::live::Slot>, name: String) {
        const STEP: u64 = 64 << 20;
        let _hashing = slot.hashing.lock().await;
        loop {
            let (start, end, hasher, epoch) = {
                let mut live = slot.state.lock().await;
                let prefix = live.upload.received.prefix_len();
                match &live.cursor {
                    Some(c) if prefix > c.offset => {
                        let end = prefix.min(c.offset + STEP);
                        let job = (c.offset, end, c.hasher.clone(), live.cursor_gen);
                        live.follow_end = Some(end);
                        job
                    }
                    _ => {
                        live.follow_end = None;
                        return;
                    }
                }
            };
            let read = hasher
                .scan(self.inner.store.as_ref(), &name, start, end - start)
                .await;
            let mut live = slot.state.lock().await;
            let current = live.cursor.as_ref().map(|c| c.offset);
            let Ok(hasher) = read else {
                live.follow_end = None;
                return; // commit will read what it needs
            };
            if epoch != live.cursor_gen || current != Some(start) {
                live.follow_end = None;
                return; // superseded; commit will read what it needs
            }
            live.cursor = Some(crate::hashing::Cursor {
                offset: end,
                hasher,
            });
            live.cursor_gen += 1;
            metrics::counter!("ferry_follower_hashed_bytes_total").increment(end - start);
        }
    }
}

/// A fresh name for the object a write that claims nothing stores
/// ([`Upload::object`]): the upload's id, a dot (never in an id) and a
/// random suffix. [`upload_of_object`] reads the id back.
pub(crate) fn object_name(upload_id: &str) -> String {
    format!("{upload_id}.{}", crate::auth::random_hex(8))
}

/// The upload whose write named `object` ([`object_name`]); `None` for an
/// object named by an upload's id.
pub(crate) fn upload_of_object(object: &str) -> Option<&str> {
    object.split_once('.').map(|(id, _)| id)
}

fn too_long(limit: u64) -> EngineError {
    EngineError::TooLarge {
        message: format!("the body is longer than the {limit} bytes announced for this write"),
        limit,
    }
}
