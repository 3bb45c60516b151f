//! Parts sent straight to the store (presigned requests), past Ferry.
//!
//! A client asks for a presigned request per part, sends the part's bytes
//! to the store itself, and commits as usual. Ferry sees none of those
//! bytes: the upload is marked [`ferry_core::Upload::direct`] (no hash of
//! what streamed through Ferry is trusted for it any more), and at commit
//! the parts the store holds are learnt (their sizes checked) before the
//! usual completeness check; the sealed object is then read back once to
//! compute and check the file's SHA-256, before any record names it.

use crate::auth::Caller;
use crate::live::Slot;
use crate::{Engine, EngineError, Result, now_ms};
use ferry_core::{ByteRange, Digest, DigestAlgo, Length, Millis, Part};
use std::time::Duration;

/// How long a presigned request stays valid at most (never past the
/// session's expiry): a leaked URL is worth little for long, and a client
/// asks again for each part.
pub const PRESIGN_TTL: Duration = Duration::from_secs(3600);

/// A request that sends one part straight to the store.
#[derive(Clone, Debug)]
pub struct PresignedPart {
    pub part: u32,
    pub offset: u64,
    pub size: u64,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: Millis,
}

impl Engine {
    /// Whether clients can send parts straight to the store.
    pub fn can_presign(&self) -> bool {
        self.inner.store.capabilities().presign
    }

    /// A presigned request for part `n` of the upload's part plan, valid
    /// until the session expires or [`PRESIGN_TTL`], whichever comes
    /// first. With `sha256`, the store refuses any other bytes.
    pub async fn presign_part(
        &self,
        caller: &Caller,
        upload_id: &str,
        n: u32,
        sha256: Option<Digest>,
    ) -> Result<PresignedPart> {
        if let Some(d) = &sha256
            && d.algo != DigestAlgo::Sha256
        {
            return Err(EngineError::invalid(
                "invalid_digest",
                "a presigned part takes a SHA-256 digest only",
            ));
        }
        let slot = self.slot(caller, upload_id).await?;
        if !self.can_presign() {
            return Err(EngineError::Unsupported(
                "presigned part uploads need object storage (ferry serve --store s3); \
                 this server keeps bytes on its local disk: send the part through Ferry"
                    .into(),
            ));
        }
        let mut live = slot.state.lock().await;
        let now = now_ms();
        live.check_writable(now)?;
        let up = &live.upload;
        let Length::Known(size) = up.length else {
            return Err(EngineError::Conflict(
                "presigning a part needs the upload's size; declare it first".into(),
            ));
        };
        let (start, end) = up.plan().part_range(n.into(), up.length).ok_or_else(|| {
            EngineError::RangeNotSatisfiable(format!(
                "part {n} is not a part of this upload: it has {} parts of {} bytes",
                up.plan().total_parts(size),
                up.part_size
            ))
        })?;
        if start == end {
            return Err(EngineError::RangeNotSatisfiable(
                "the upload is empty; commit it without writing".into(),
            ));
        }
        let expires_at = live
            .session
            .expires_at
            .min(now + PRESIGN_TTL.as_millis() as Millis);
        let ttl = Duration::from_millis(expires_at.saturating_sub(now).max(1000) as u64);
        let p = self
            .inner
            .store
            .presign_part(
                // (A file a write named is sealed: the store refuses.)
                up.staged_name(),
                start,
                end - start,
                size,
                sha256.as_ref().map(|d| d.bytes.as_slice()),
                ttl,
            )
            .await?;
        if !live.upload.direct {
            self.inner.meta.mark_direct(upload_id).await?;
            live.upload.direct = true;
        }
        // Bytes may now change past Ferry: the in-order hash is void.
        live.drop_cursor();
        Ok(PresignedPart {
            part: n,
            offset: start,
            size: end - start,
            method: p.method,
            url: p.url,
            headers: p.headers,
            expires_at,
        })
    }

    /// Records the parts a direct upload holds in the store and Ferry has
    /// not recorded yet: by commit, before the completeness check (`strict`:
    /// a part of the wrong size is refused by name), and by status reads,
    /// so a client that resumes sees what already arrived (a part of the
    /// wrong size then shows as missing).
    pub(crate) async fn learn_direct_parts(&self, slot: &Slot, strict: bool) -> Result<()> {
        let mut live = slot.lock_settled().await;
        let up = &live.upload;
        let Length::Known(size) = up.length else {
            return Ok(());
        };
        if !up.direct || up.is_complete() {
            return Ok(());
        }
        let id = up.id.clone();
        let stored = match self.inner.store.stored_parts(&id, size).await {
            Err(ferry_store::StoreError::NotFound(what)) => {
                drop(live);
                return Err(self.staged_bytes_lost(&id, &what).await);
            }
            other => other?,
        };
        for p in stored {
            let Some(range) = ByteRange::new(p.offset, p.offset + p.expected) else {
                continue;
            };
            if live.upload.received.covers(&range) {
                continue;
            }
            if p.size != p.expected {
                if !strict {
                    continue;
                }
                return Err(EngineError::Conflict(format!(
                    "part {} in storage holds {} bytes, but bytes {range} are {} bytes: \
                     send that part again",
                    p.number, p.size, p.expected
                )));
            }
            let plan = live.upload.plan();
            let number = (plan.part_range(p.number.into(), live.upload.length)
                == Some((range.start, range.end)))
            .then_some(p.number);
            let part = number.map(|number| Part {
                number,
                offset: range.start,
                size: range.len(),
                sha256: p.sha256.clone(),
                sha1: None,
                md5: None,
            });
            self.inner
                .meta
                .record_write(&id, range, part.as_ref(), &[])
                .await?;
            live.upload.received.insert(range);
            if let Some(part) = part {
                live.upload.parts.insert(part.number, part);
            }
        }
        Ok(())
    }
}

impl Engine {
    /// [`Engine::learn_direct_parts`] for every open direct upload of a
    /// session, before its status is read.
    pub(crate) async fn learn_direct_in_session(
        &self,
        uploads: &[ferry_core::Upload],
    ) -> Result<()> {
        for up in uploads {
            if up.direct && up.state == ferry_core::UploadState::Open && !up.is_complete() {
                let slot = self.slot(&Caller::Upload(up.id.clone()), &up.id).await?;
                self.learn_direct_parts(&slot, false).await?;
            }
        }
        Ok(())
    }
}

impl Engine {
    /// A form that lets a client POST files straight into the store for
    /// session `session_id`, each at most `max` bytes, valid until the
    /// session expires; `None` on a store that takes bytes only through
    /// Ferry. At close, [`Engine::adopt_posted`] makes each posted file an
    /// upload of the session.
    pub async fn presign_post(
        &self,
        caller: &Caller,
        session_id: &str,
        max: u64,
    ) -> Result<Option<ferry_store::PostForm>> {
        if !self.can_presign() {
            return Ok(None);
        }
        let s = self.load_session(caller, session_id).await?;
        let ttl = Duration::from_millis(s.expires_at.saturating_sub(now_ms()).max(1000) as u64);
        Ok(Some(self.inner.store.presign_post(&s.id, max, ttl).await?))
    }

    /// The files POSTed into the store for a session: (name, size).
    pub async fn posted_files(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<Vec<(String, u64)>> {
        let s = self.load_session(caller, session_id).await?;
        Ok(self.inner.store.posted(&s.id).await?)
    }

    /// A small posted file, whole (at most `max` bytes).
    pub async fn read_posted(
        &self,
        caller: &Caller,
        session_id: &str,
        name: &str,
        max: u64,
    ) -> Result<bytes::Bytes> {
        let s = self.load_session(caller, session_id).await?;
        Ok(self.inner.store.read_posted(&s.id, name, max).await?)
    }

    /// Makes the posted file `posted` an upload of the session at `path`,
    /// holding every byte (a direct upload: commit reads it back for its
    /// SHA-256 before it becomes visible).
    pub async fn adopt_posted(
        &self,
        caller: &Caller,
        session_id: &str,
        posted: &str,
        path: &str,
        content_type: Option<String>,
    ) -> Result<ferry_core::Upload> {
        // The session's turn from choosing the upload until it holds its
        // bytes: another request adopting or sending the same name (a
        // close sent twice at once) waits, then finds this one complete,
        // instead of aborting it as an attempt that never completed.
        let turn = self.session_turn(session_id).await?;
        let new = crate::NewUpload {
            path: path.to_owned(),
            content_type,
            ..Default::default()
        };
        let up = self
            .put_upload_in(caller, session_id, new, Some(&turn))
            .await?;
        let size = self
            .inner
            .store
            .adopt_posted(&up.session_id, posted, &up.id)
            .await?;
        let slot = self.slot(caller, &up.id).await?;
        let mut live = slot.state.lock().await;
        let meta = &self.inner.meta;
        meta.mark_direct(&up.id).await?;
        meta.set_length(&up.id, Length::Known(size)).await?;
        if let Some(all) = ByteRange::new(0, size) {
            meta.record_write(&up.id, all, None, &[]).await?;
            live.upload.received.insert(all);
        }
        live.upload.length = Length::Known(size);
        live.upload.direct = true;
        live.drop_cursor();
        let upload = live.upload.clone();
        drop(live);
        drop(turn);
        // Recorded: the posted file may go (before this, a crash leaves it
        // to be adopted again).
        self.inner
            .store
            .forget_posted(&up.session_id, posted)
            .await?;
        Ok(upload)
    }

    /// Deletes what was posted for a session and not adopted.
    pub(crate) async fn discard_posted(&self, session_id: &str) {
        if !self.can_presign() {
            return;
        }
        if let Err(e) = self.inner.store.discard_posted(session_id).await {
            tracing::warn!(session = %session_id, error = %e, "cannot delete posted files");
        }
    }
}
