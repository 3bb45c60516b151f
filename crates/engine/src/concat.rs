//! Concatenation: complete uploads become one new upload (tus
//! `Upload-Concat: final`).

use crate::auth::Caller;
use crate::session::NewSession;
use crate::{Engine, EngineError, Result, SessionView};
use ferry_core::{ByteRange, Length};

impl Engine {
    /// Creates a session whose one upload is the concatenation of `parts`
    /// (complete, open uploads of the caller, in order). The staged bytes
    /// are joined by the store (`copy_staged`: in-kernel, or shared blocks
    /// where the file system has reflinks; on S3 each part is sealed and
    /// its object streamed into the new upload), the new upload's whole-file
    /// digest is computed by the hash follower, and the parts are aborted,
    /// freeing their staged bytes. `new` must name exactly one upload;
    /// its size is the sum of the parts'.
    pub async fn concat(
        &self,
        caller: &Caller,
        parts: &[String],
        mut new: NewSession,
    ) -> Result<SessionView> {
        if parts.is_empty() {
            return Err(EngineError::invalid(
                "invalid_concat",
                "a concatenation needs at least one upload",
            ));
        }
        let [target] = new.uploads.as_mut_slice() else {
            return Err(EngineError::invalid(
                "invalid_concat",
                "a concatenation makes exactly one upload",
            ));
        };
        let mut sizes = Vec::with_capacity(parts.len());
        // The names the store keeps the parts' bytes under.
        let mut names = Vec::with_capacity(parts.len());
        for id in parts {
            let slot = self.slot(caller, id).await?;
            let live = slot.state.lock().await;
            live.check_writable(crate::now_ms())?;
            let up = &live.upload;
            match up.length {
                Length::Known(n) if up.is_complete() && live.inflight.is_empty() => {
                    sizes.push(n);
                    names.push(up.staged_name().to_owned());
                }
                _ => {
                    return Err(EngineError::invalid(
                        "incomplete_part",
                        format!(
                            "upload {id} is not complete ({} bytes received); only complete uploads can be concatenated",
                            up.received.prefix_len()
                        ),
                    ));
                }
            }
        }
        let total: u64 = sizes.iter().sum();
        target.size = Some(total);
        let view = self.create_session(caller, new).await?;
        let id = view.uploads[0].upload.id.clone();
        let mut offset = 0;
        let sealed_only = !self.inner.store.capabilities().read_staged;
        // The parts are copied into it as writes at offsets (S3: into its
        // multipart upload), which a small upload is made without.
        if self.is_small(&view.uploads[0].upload) {
            self.inner.store.create_staged(&id).await?;
        }
        for (part, size) in names.iter().zip(&sizes) {
            if *size > 0 {
                // A store that reads only sealed bytes (S3) seals each
                // part first: it is complete, and aborted once joined.
                if sealed_only {
                    self.inner.store.seal(part, *size).await?;
                }
                self.inner
                    .store
                    .copy_staged(part, &id, offset, *size)
                    .await?;
            }
            offset += size;
        }
        if let Some(all) = ByteRange::new(0, total) {
            let slot = self.slot(caller, &id).await?;
            let mut live = slot.state.lock().await;
            self.inner.meta.record_write(&id, all, None, &[]).await?;
            live.upload.received.insert(all);
            self.follow_if_behind(&slot, &mut live);
        }
        for part in parts {
            self.abort_upload(caller, part).await?;
        }
        self.commit_if_auto(caller, &id).await?;
        self.get_session(caller, &view.session.id).await
    }
}
