//! Where the bytes live.
//!
//! A [`Store`] holds two kinds of objects: *staged* uploads, written at
//! arbitrary offsets while a session is open, and *files*, the committed
//! results at `(space, path)`. The engine never touches a filesystem or an
//! object store directly; it goes through this trait, and every backend
//! proves it keeps the contract by passing [`conformance`] (enabled with
//! the `conformance` feature).
//!
//! The contract, in short:
//! - `create_staged` returns once the new object would survive a crash.
//! - `write_at` returns only once the bytes it reports are durable. If the
//!   body fails part-way, the bytes already written are made durable too and
//!   reported in [`WriteFailure::durable`], so a resumed client loses
//!   nothing the server saw.
//! - Writes to disjoint ranges of one staged upload may run concurrently.
//!   Overlapping concurrent writes are the caller's business (the engine
//!   serializes them).
//! - `promote` moves a staged upload to its destination atomically: a
//!   reader sees the old file (or none) or the whole new one. It is
//!   idempotent across crashes: calling it again after it completed, or
//!   after a crash half-way, finishes the job or reports that it is done.
//! - `open_file` pins one version of a committed file: its bytes stay that
//!   version's whatever later happens to the path, and
//!   [`OpenFile::is_current`] says whether the path still names it, so a
//!   reader can match the version it holds with the file's record.
//!
//! Backends differ in two ways, which [`Store::capabilities`] tells the
//! engine:
//! - Where the namespace lives. The local disk keeps files at their paths
//!   (other programs pick them up there); `promote` renames. An object
//!   store keeps each file as an object named by id, and the metadata alone
//!   maps paths to objects: `promote` seals the object and returns its id,
//!   paths and conflict modes are the engine's business, and a replaced or
//!   deleted object is *retired* (deleted once readers had time).
//! - Whether staged bytes read back before they are sealed. An S3
//!   multipart upload's parts cannot be read until it completes: the
//!   engine then hashes as bytes stream, and otherwise reads the sealed
//!   object once, before it is published.

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "s3")]
mod s3_store;

#[cfg(feature = "conformance")]
pub mod conformance;

use bytes::Bytes;
use ferry_core::{SpaceName, SpacePath};
use futures::stream::BoxStream;
use std::io;
use std::path::PathBuf;

pub use local::LocalStore;
#[cfg(feature = "s3")]
pub use s3_store::{RETIRE_AFTER, S3Store};

/// A stream of body bytes, as the HTTP layer hands it over.
pub type ByteStream = BoxStream<'static, Result<Bytes, io::Error>>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no space left on the storage device")]
    NoSpace,
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("the request body failed: {0}")]
    Body(#[source] io::Error),
    /// The object store could not be reached, timed out or failed on its
    /// side (5xx): worth retrying later.
    #[error("the object store is unavailable ({what}): {source}")]
    Unavailable {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object store refused a request.
    #[error("the object store refused {what}: {source}")]
    Remote {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Bytes a completion needs are not staged.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// The staged upload is sealed for its commit: bytes sent again must
    /// be the ones it holds.
    #[error("sealed: {0}")]
    Sealed(String),
    /// This backend cannot do that.
    #[error("not supported by this storage backend: {0}")]
    Unsupported(String),
    /// The store is configured wrongly.
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::NoSpace;
        }
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A write that stopped early; `durable` bytes from the requested offset
/// were nevertheless written and synced.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {durable} durable bytes)")]
pub struct WriteFailure {
    pub durable: u64,
    #[source]
    pub error: StoreError,
}

/// Something that consumes bytes in order, such as a hasher.
pub trait Sink: Send + 'static {
    fn feed(&mut self, data: &[u8]);
    /// Recovers the concrete sink after a scan.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// One version of a committed file, opened: a local file handle, an
/// object version, an immutable blob. Its bytes never change, even when
/// the path is replaced or deleted after it was opened.
#[async_trait::async_trait]
pub trait OpenFile: Send + Sync {
    /// Size of this version in bytes.
    fn size(&self) -> u64;
    /// Whether `(space, path)` still names this version (`false` once it
    /// was replaced or deleted).
    async fn is_current(&self) -> Result<bool, StoreError>;
    /// Streams `len` bytes of this version from `offset`.
    fn read(self: Box<Self>, offset: u64, len: u64) -> ByteStream;
}

/// How long a write's body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// Announced (a byte range, a Content-Length): it should end there.
    Exact(u64),
    /// Unknown, but never more than this (a chunked body, a form field,
    /// a stream of frames).
    AtMost(u64),
}

impl BodyLen {
    /// The most bytes the body may hold.
    pub fn max(self) -> u64 {
        match self {
            BodyLen::Exact(n) | BodyLen::AtMost(n) => n,
        }
    }
}

/// What a backend can do; see the crate docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Files live at their paths in the store: it holds the namespace as
    /// well as the metadata does. When `false`, a file is an object named
    /// by the id `promote` returns, and only the metadata knows its path.
    pub paths: bool,
    /// Staged bytes can be read (and copied) before `seal`.
    pub read_staged: bool,
    /// A client can send parts straight to the store with a presigned
    /// request ([`Store::presign_part`]), past Ferry.
    pub presign: bool,
    /// A small upload's write of the whole file ([`Store::write_small`]
    /// with `whole`, all its bytes stored) makes its final object, which
    /// later writes are compared with and never change: the digests of
    /// what streamed are the file's, whichever node commits it.
    pub whole_is_final: bool,
}

/// A request that sends one part of a staged upload straight to the
/// store: the client sends the part's bytes as the body, with `headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presigned {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// A form that lets a client POST files straight into the store (an S3
/// presigned POST policy): the `fields`, then the file, sent to `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostForm {
    pub url: String,
    pub fields: Vec<(String, String)>,
}

/// A part the store holds for a staged upload, as the store lists it: the
/// bytes `offset..offset + expected` are the part's, and it holds `size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    pub number: u32,
    pub offset: u64,
    pub expected: u64,
    pub size: u64,
    /// The SHA-256 (hex) the store checked the part's bytes against, when
    /// the sender gave one and the store reports it.
    pub sha256: Option<String>,
}

/// A committed file's address in the store, as its record keeps it.
#[derive(Clone, Copy, Debug)]
pub struct FileLoc<'a> {
    pub space: &'a SpaceName,
    pub path: &'a SpacePath,
    /// The object holding the bytes on a store without paths
    /// (`Capabilities::paths` false); `None` on one that keeps files at
    /// their paths.
    pub object: Option<&'a str>,
}

impl<'a> FileLoc<'a> {
    /// A file at its path, on a store with paths.
    pub fn at_path(space: &'a SpaceName, path: &'a SpacePath) -> FileLoc<'a> {
        FileLoc {
            space,
            path,
            object: None,
        }
    }
}

impl std::fmt::Display for FileLoc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.space, self.path)
    }
}

/// How `promote` treats an existing destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promote {
    /// Fail with [`StoreError::AlreadyExists`] if the destination exists.
    NoReplace,
    /// Atomically replace whatever file is there.
    Replace,
}

/// The byte-storage contract; see the crate docs.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            paths: true,
            read_staged: true,
            presign: false,
            whole_is_final: false,
        }
    }

    /// Creates an empty staged object for `upload` (idempotent), durably.
    async fn create_staged(&self, upload: &str) -> Result<(), StoreError>;

    /// Creates several staged objects; backends batch the durability work.
    async fn create_staged_many(&self, uploads: &[String]) -> Result<(), StoreError> {
        for u in uploads {
            self.create_staged(u).await?;
        }
        Ok(())
    }

    /// Stages uploads whose bytes arrive whole in the request that made
    /// them, or not at all (a one-request upload, given up when its body
    /// fails): no other request writes to them, so a store may leave out
    /// what resuming them would need until a write on this node needs it
    /// (S3: the multipart upload — a body stored in one `PutObject` then
    /// never has one). By default, [`Store::create_staged_many`].
    async fn create_staged_whole(&self, uploads: &[String]) -> Result<(), StoreError> {
        self.create_staged_many(uploads).await
    }

    /// The size up to which an upload of a known length is *small*
    /// ([`Store::create_staged_small`], [`Store::write_small`]); 0 when
    /// the store makes no difference.
    fn small_size(&self) -> u64 {
        0
    }

    /// Stages small uploads (their length known when they are made): a
    /// store may keep nothing for them until their bytes come, on any node
    /// (S3: no multipart upload; a body carrying the whole file is the
    /// object, pieces become it when it is sealed). An upload whose length
    /// comes later was staged as any other, and is small from then on. By
    /// default, [`Store::create_staged_many`].
    async fn create_staged_small(&self, uploads: &[String]) -> Result<(), StoreError> {
        self.create_staged_many(uploads).await
    }

    /// [`Store::write_at`] into a small upload that is not sent straight
    /// to the store ([`Store::presign_part`]): the caller says which
    /// uploads are, alike on every node. `whole`: the body carries the
    /// whole file, none of whose bytes were received before (as for
    /// [`Store::write_whole`]). By default, `write_whole` or `write_at`.
    async fn write_small(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
        whole: bool,
    ) -> Result<u64, WriteFailure> {
        if whole {
            self.write_whole(upload, len.max(), body).await
        } else {
            self.write_at(upload, offset, len, body).await
        }
    }

    /// Stores `data`, the whole file of a small upload none of whose bytes
    /// were received, as its final object ([`Capabilities::whole_is_final`])
    /// under `name`, a name of the write's own: for a write that claimed
    /// nothing, whose record then names the object
    /// ([`ferry_core::Upload::object`]) if nothing happened to the upload
    /// meanwhile. No other write uses the name, so storing needs no
    /// condition and replaces nothing. `true`: stored, and the upload's
    /// reads, seal and promotion go to `name`; `false`: this store keeps no
    /// such object (the caller writes the usual way). `false` by default.
    ///
    /// An object no record names is deleted by its write
    /// ([`Store::delete_object`]) when the record is refused, or by the
    /// orphan sweep ([`Store::list_objects`]) after [`Store::unnamed_grace`].
    async fn create_small_named(&self, name: &str, data: bytes::Bytes) -> Result<bool, StoreError> {
        let _ = (name, data);
        Ok(false)
    }

    /// Writes `body` at `offset` of the staged object and makes what
    /// arrived durable. A body that ends before `len` is not an error here:
    /// the count says how much landed (a store that writes fixed parts may
    /// keep less of a body announced `Exact` that ends early).
    async fn write_at(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
    ) -> Result<u64, WriteFailure>;

    /// Writes a whole file of `len` bytes into a staged upload that holds
    /// nothing yet (same contract as [`Store::write_at`] from offset 0). A
    /// store that keeps a small file in one request does so here.
    async fn write_whole(
        &self,
        upload: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        self.write_at(upload, 0, BodyLen::Exact(len), body).await
    }

    /// Seals a staged upload of `size` bytes: no write follows, and its
    /// bytes read back (`read_staged`) whatever the backend. Idempotent.
    /// A backend that reads staged bytes anyway has nothing to do.
    async fn seal(&self, upload: &str, size: u64) -> Result<(), StoreError> {
        let _ = (upload, size);
        Ok(())
    }

    /// A presigned request that stores bytes `offset..offset + len` of a
    /// staged upload of `size` bytes as one part, valid for `expires_in`.
    /// With `sha256` (the part's digest), the store refuses other bytes.
    /// Only where `capabilities().presign`; a range that is not one of the
    /// store's parts is refused (`Unsupported`, saying which sizes work).
    async fn presign_part(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        size: u64,
        sha256: Option<&[u8]>,
        expires_in: std::time::Duration,
    ) -> Result<Presigned, StoreError> {
        let _ = (upload, len, size, sha256, expires_in);
        Err(StoreError::Unsupported(format!(
            "presigned part uploads (bytes from {offset}); they need object storage"
        )))
    }

    /// The parts a staged upload of `size` bytes holds in the store,
    /// however they got there (presigned requests included), so that
    /// bytes sent past Ferry are learnt at commit. Empty on a store that
    /// takes bytes only through Ferry.
    async fn stored_parts(&self, upload: &str, size: u64) -> Result<Vec<StoredPart>, StoreError> {
        let _ = (upload, size);
        Ok(Vec::new())
    }

    /// A form for POSTing files straight into the store's `folder` (an
    /// opaque name: the engine uses a session's id), each at most `max`
    /// bytes, valid for `expires_in`. Only where `capabilities().presign`.
    async fn presign_post(
        &self,
        folder: &str,
        max: u64,
        expires_in: std::time::Duration,
    ) -> Result<PostForm, StoreError> {
        let _ = (max, expires_in);
        Err(StoreError::Unsupported(format!(
            "forms that post into {folder}; they need object storage"
        )))
    }

    /// The files POSTed into `folder`: (name, size).
    async fn posted(&self, folder: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let _ = folder;
        Ok(Vec::new())
    }

    /// A posted file, whole, when it holds at most `max` bytes.
    async fn read_posted(&self, folder: &str, name: &str, max: u64) -> Result<Bytes, StoreError> {
        let _ = max;
        Err(StoreError::NotFound(format!("{folder}/{name}")))
    }

    /// Makes the posted file `name` the staged upload `upload`, sealed
    /// (its bytes are the file's), and returns its size. The posted file
    /// stays until [`Store::forget_posted`]: a crash before the upload is
    /// recorded leaves it to be adopted again. `NotFound` when it is gone.
    async fn adopt_posted(
        &self,
        folder: &str,
        name: &str,
        upload: &str,
    ) -> Result<u64, StoreError> {
        let _ = upload;
        Err(StoreError::NotFound(format!("{folder}/{name}")))
    }

    /// Deletes the posted file `name` once its upload is recorded
    /// (idempotent).
    async fn forget_posted(&self, folder: &str, name: &str) -> Result<(), StoreError> {
        let _ = (folder, name);
        Ok(())
    }

    /// Deletes what was posted into `folder` and not adopted.
    async fn discard_posted(&self, folder: &str) -> Result<(), StoreError> {
        let _ = folder;
        Ok(())
    }

    /// Feeds `len` bytes of the staged object from `offset` to `sink`, in
    /// order, and returns the sink. For consumers that only look at the
    /// bytes (hashing): a backend can hand over its own buffers, uncopied.
    async fn scan_staged(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        mut sink: Box<dyn Sink>,
    ) -> Result<Box<dyn Sink>, StoreError> {
        use futures::TryStreamExt;
        let mut s = self.read_staged(upload, offset, len).await?;
        while let Some(chunk) = s.try_next().await.map_err(StoreError::Body)? {
            sink.feed(&chunk);
        }
        Ok(sink)
    }

    /// Reads `len` bytes of the staged object from `offset`.
    async fn read_staged(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError>;

    /// Copies the first `len` bytes of staged object `from` into staged
    /// object `to` at `offset`, durably. Used to apply a verified
    /// replacement of bytes that had already arrived.
    async fn copy_staged(
        &self,
        from: &str,
        to: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), StoreError>;

    /// Whether a staged object exists for `upload`.
    async fn staged_exists(&self, upload: &str) -> Result<bool, StoreError>;

    /// Deletes the staged object (idempotent).
    async fn discard_staged(&self, upload: &str) -> Result<(), StoreError>;

    /// Deletes what a listing of staged objects ([`Store::list_staged`])
    /// still shows of an upload whose file is recorded, keeping the
    /// file's bytes (idempotent). By default [`Store::discard_staged`]:
    /// a store that moves staged bytes into the file has none left there.
    async fn discard_staged_of_file(&self, upload: &str) -> Result<(), StoreError> {
        self.discard_staged(upload).await
    }

    /// Ids of every staged object, for garbage collection of orphans.
    async fn list_staged(&self) -> Result<Vec<String>, StoreError>;

    /// Makes the staged upload of `size` bytes a committed file at
    /// `(space, path)`; see the crate docs. Returns the object that now
    /// holds it on a store without paths (then `space`, `path` and `mode`
    /// are the engine's to enforce), `None` on one with paths.
    async fn promote(
        &self,
        upload: &str,
        size: u64,
        space: &SpaceName,
        path: &SpacePath,
        mode: Promote,
    ) -> Result<Option<String>, StoreError>;

    /// Opens the version of a committed file that `file` names now; see
    /// [`OpenFile`].
    async fn open_file(&self, file: FileLoc<'_>) -> Result<Box<dyn OpenFile>, StoreError>;

    /// Reads `len` bytes of a committed file from `offset`, whichever
    /// version the path holds when it is opened.
    async fn read_file(
        &self,
        file: FileLoc<'_>,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        Ok(self.open_file(file).await?.read(offset, len))
    }

    /// Whether a file (or a folder) occupies `(space, path)` in the store
    /// itself (always `false` on a store without paths).
    async fn file_exists(&self, space: &SpaceName, path: &SpacePath) -> Result<bool, StoreError>;

    /// Deletes a committed file (idempotent).
    async fn delete_file(&self, file: FileLoc<'_>) -> Result<(), StoreError>;

    /// Gives a committed file a second name, durably, on a store with
    /// paths (a rename is this, the record's change, then `delete_file` of
    /// the old name: a crash leaves an extra name, never no name).
    /// `AlreadyExists` when something else is at the new name; done
    /// already when it names the same file. A store without paths has
    /// nothing to do: its files are objects the metadata names.
    async fn link_file(
        &self,
        _file: FileLoc<'_>,
        _space: &SpaceName,
        _path: &SpacePath,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// A committed object no record names any more (replaced or deleted):
    /// its bytes go once a download already streaming them had time to
    /// finish. Only for files held as objects (`FileLoc::object`): on a
    /// store with paths a replace swaps the path's bytes itself (an open
    /// handle keeps the old ones) and a delete is `delete_file`.
    async fn retire_file(&self, file: FileLoc<'_>) -> Result<(), StoreError> {
        self.delete_file(file).await
    }

    /// Committed objects in the store, with when each was written (ms
    /// since the epoch), for the orphan sweep of a store without paths
    /// (one with paths has none: its files are at their paths).
    async fn list_objects(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(Vec::new())
    }

    /// How long an object no record names is kept before the orphan sweep
    /// may delete it (the sweep is given the same time): a write that
    /// stores an object before any record names it must record it well
    /// within this. Unbounded by default.
    fn unnamed_grace(&self) -> std::time::Duration {
        std::time::Duration::MAX
    }

    /// Deletes an object that no record names (the orphan sweep).
    async fn delete_object(&self, object: &str) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(format!("deleting object {object}")))
    }

    /// Checks the backend is reachable and writable.
    async fn ready(&self) -> Result<(), StoreError>;
}
