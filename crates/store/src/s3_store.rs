//! [`Store`] on S3-compatible object storage: staged uploads are the
//! multipart uploads of [`S3Staging`], a committed file is the object its
//! upload sealed (`<prefix>objects/<upload>`), named by id. The namespace
//! (space and path → object) is the metadata's alone: `promote` seals and
//! returns the object's id, a replace or a commit under `fail` is a
//! metadata transaction, and no byte is copied.
//!
//! Staged bytes cannot be read before they are sealed (S3 does not serve
//! the parts of an incomplete multipart upload), nor copied from before:
//! [`Capabilities::read_staged`] is `false`.

use crate::s3::{S3Config, S3Staging};
use crate::{
    BodyLen, ByteStream, Capabilities, FileLoc, OpenFile, Promote, Store, StoreError, WriteFailure,
};
use ferry_core::{SpaceName, SpacePath};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::Duration;

/// How long a replaced or deleted object stays readable by default: a
/// download that opened it before has this long to finish.
pub const RETIRE_AFTER: Duration = Duration::from_secs(15 * 60);

/// See the module docs.
pub struct S3Store {
    staging: Arc<S3Staging>,
    retire_after: Duration,
}

impl S3Store {
    /// Connects to the bucket of `cfg` (credentials from the standard AWS
    /// chain). Does not check that it is reachable: see [`Store::ready`].
    pub async fn connect(cfg: &S3Config) -> Result<S3Store, StoreError> {
        Ok(S3Store {
            staging: Arc::new(S3Staging::connect(cfg).await?),
            retire_after: RETIRE_AFTER,
        })
    }

    /// How long a retired object stays readable.
    pub fn with_retire_after(mut self, after: Duration) -> S3Store {
        self.retire_after = after;
        self
    }

    /// The staging layer, for tests and sweeps.
    pub fn staging(&self) -> &S3Staging {
        &self.staging
    }
}

fn object_of(file: FileLoc<'_>) -> Result<&str, StoreError> {
    file.object
        .ok_or_else(|| StoreError::NotFound(format!("{file} has no object in this bucket")))
}

/// A sealed object, opened: objects never change, so it is its own
/// version; whether a path still names it is the metadata's to say.
struct S3File {
    staging: Arc<S3Staging>,
    object: String,
    size: u64,
}

#[async_trait::async_trait]
impl OpenFile for S3File {
    fn size(&self) -> u64 {
        self.size
    }

    async fn is_current(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn read(self: Box<Self>, offset: u64, len: u64) -> ByteStream {
        futures::stream::once(async move {
            self.staging
                .read_object_ahead(&self.object, offset, len)
                .await
                .map_err(std::io::Error::other)
        })
        .try_flatten()
        .boxed()
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            paths: false,
            read_staged: false,
            presign: true,
            whole_is_final: true,
        }
    }

    async fn create_staged(&self, upload: &str) -> Result<(), StoreError> {
        self.staging.create(upload).await
    }

    async fn create_staged_many(&self, uploads: &[String]) -> Result<(), StoreError> {
        let staging = &self.staging;
        futures::stream::iter(uploads.iter().cloned())
            .map(|u| async move { staging.create(&u).await })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
    }

    async fn create_staged_whole(&self, uploads: &[String]) -> Result<(), StoreError> {
        for u in uploads {
            self.staging.defer(u);
        }
        Ok(())
    }

    fn small_size(&self) -> u64 {
        self.staging.small_size()
    }

    async fn create_staged_small(&self, uploads: &[String]) -> Result<(), StoreError> {
        // Nothing in the bucket: every node knows a small upload has no
        // multipart upload. (Not deferred either: presigning a part on
        // another node starts one, which this node must then find.)
        let _ = uploads;
        Ok(())
    }

    async fn write_small(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
        whole: bool,
    ) -> Result<u64, WriteFailure> {
        self.staging
            .write_small(upload, offset, len, body, whole)
            .await
    }

    async fn create_small_named(&self, name: &str, data: bytes::Bytes) -> Result<bool, StoreError> {
        self.staging.put_whole_named(name, data).await?;
        Ok(true)
    }

    async fn write_at(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        self.staging.write_at(upload, offset, len, body).await
    }

    async fn write_whole(
        &self,
        upload: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        self.staging.write_whole(upload, len, body).await
    }

    async fn seal(&self, upload: &str, size: u64) -> Result<(), StoreError> {
        self.staging.seal(upload, size).await
    }

    async fn presign_part(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        size: u64,
        sha256: Option<&[u8]>,
        expires_in: Duration,
    ) -> Result<crate::Presigned, StoreError> {
        self.staging
            .presign_part(upload, offset, len, size, sha256, expires_in)
            .await
    }

    async fn stored_parts(
        &self,
        upload: &str,
        size: u64,
    ) -> Result<Vec<crate::StoredPart>, StoreError> {
        self.staging.stored_parts(upload, size).await
    }

    async fn presign_post(
        &self,
        folder: &str,
        max: u64,
        expires_in: Duration,
    ) -> Result<crate::PostForm, StoreError> {
        self.staging.presign_post(folder, max, expires_in).await
    }

    async fn posted(&self, folder: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.staging.posted(folder).await
    }

    async fn read_posted(
        &self,
        folder: &str,
        name: &str,
        max: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        self.staging.read_posted(folder, name, max).await
    }

    async fn adopt_posted(
        &self,
        folder: &str,
        name: &str,
        upload: &str,
    ) -> Result<u64, StoreError> {
        self.staging.adopt_posted(folder, name, upload).await
    }

    async fn forget_posted(&self, folder: &str, name: &str) -> Result<(), StoreError> {
        self.staging.forget_posted(folder, name).await
    }

    async fn discard_posted(&self, folder: &str) -> Result<(), StoreError> {
        self.staging.discard_posted(folder).await
    }

    /// Reads a sealed upload only.
    async fn read_staged(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        // Sealed here (a commit seals, then reads): no need to ask.
        if !self.staging.sealed_here(upload) && self.staging.in_progress(upload).await? {
            return Err(StoreError::Incomplete(format!(
                "{upload} is not sealed: S3 reads no part of a multipart upload in progress"
            )));
        }
        self.staging.read_object_ahead(upload, offset, len).await
    }

    /// Copies from a *sealed* upload (the engine seals the uploads it
    /// joins): its object streams into `to` with ranged reads, as a write
    /// at `offset` (whole cells become parts, the edges pieces).
    async fn copy_staged(
        &self,
        from: &str,
        to: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), StoreError> {
        let body = self.read_staged(from, 0, len).await?;
        let n = self
            .staging
            .write_at(to, offset, BodyLen::Exact(len), body)
            .await
            .map_err(|f| f.error)?;
        if n != len {
            return Err(StoreError::Incomplete(format!(
                "copied {n} of {len} bytes of {from}"
            )));
        }
        Ok(())
    }

    /// A multipart upload in progress, or sealed but not yet recorded.
    async fn staged_exists(&self, upload: &str) -> Result<bool, StoreError> {
        Ok(self.staging.in_progress(upload).await?
            || self.staging.object_size(upload).await?.is_some())
    }

    async fn discard_staged(&self, upload: &str) -> Result<(), StoreError> {
        self.staging.discard(upload).await
    }

    /// The object is the file's: only what outlived it goes.
    async fn discard_staged_of_file(&self, upload: &str) -> Result<(), StoreError> {
        self.staging.discard_unsealed(upload).await
    }

    /// Uploads with a multipart upload in progress or pieces (a small
    /// upload's, which has none).
    async fn list_staged(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .staging
            .list_in_progress()
            .await?
            .into_iter()
            .map(|(upload, _)| upload)
            .chain(self.staging.list_piece_owners().await?)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn promote(
        &self,
        upload: &str,
        size: u64,
        _space: &SpaceName,
        _path: &SpacePath,
        _mode: Promote,
    ) -> Result<Option<String>, StoreError> {
        self.staging.seal(upload, size).await?;
        Ok(Some(upload.to_owned()))
    }

    async fn open_file(&self, file: FileLoc<'_>) -> Result<Box<dyn OpenFile>, StoreError> {
        let object = object_of(file)?;
        let size = self
            .staging
            .object_size(object)
            .await?
            .ok_or_else(|| StoreError::NotFound(file.to_string()))?;
        Ok(Box::new(S3File {
            staging: self.staging.clone(),
            object: object.to_owned(),
            size,
        }))
    }

    async fn file_exists(&self, _space: &SpaceName, _path: &SpacePath) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn delete_file(&self, file: FileLoc<'_>) -> Result<(), StoreError> {
        self.staging.delete_object(object_of(file)?).await
    }

    async fn retire_file(&self, file: FileLoc<'_>) -> Result<(), StoreError> {
        let object = object_of(file)?.to_owned();
        let (staging, after) = (self.staging.clone(), self.retire_after);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = staging.delete_object(&object).await {
                tracing::warn!(%object, error = %e, "cannot delete a retired object; the sweep will");
            }
        });
        Ok(())
    }

    fn unnamed_grace(&self) -> Duration {
        self.retire_after
    }

    async fn list_objects(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.staging.list_objects().await
    }

    async fn delete_object(&self, object: &str) -> Result<(), StoreError> {
        self.staging.delete_object(object).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.staging.ready().await
    }
}
