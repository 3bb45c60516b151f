//! Local-disk storage: sparse staged files written at their offsets, and a
//! real directory tree of committed files that other programs can read.
//!
//! Layout under the root:
//! ```text
//! staging/<upload-id>        one sparse file per open upload
//! spaces/<space>/<path>      committed files, at their real paths
//! ```
//! Commit is a `rename` (replace) or `link` + `unlink` (no-replace) within
//! one filesystem, so it costs O(1) whatever the file size; every directory
//! whose entries change is fsync'd before the call returns.

use crate::{ByteStream, Promote, Store, StoreError, WriteFailure};
use bytes::{Bytes, BytesMut};
use ferry_core::{SpaceName, SpacePath};
use futures::StreamExt;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Writes smaller than this are gathered before they reach the disk. Kept
/// well under 1 MiB: on VMs that reclaim idle guest memory, large buffered
/// writes into cold page cache cost far more CPU than 256 KiB ones.
pub const WRITE_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    staging: PathBuf,
    spaces: PathBuf,
    /// Staged files whose directory entry is known to be durable.
    dir_synced: Mutex<HashSet<String>>,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let root = root.as_ref();
        let staging = root.join("staging");
        let spaces = root.join("spaces");
        for dir in [&staging, &spaces] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        sync_dir(root)?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                staging,
                spaces,
                dir_synced: Mutex::new(HashSet::new()),
            }),
        })
    }

    fn staged_path(&self, upload: &str) -> Result<PathBuf, StoreError> {
        let ok = !upload.is_empty()
            && upload.len() <= 128
            && upload
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StoreError::NotFound(format!("staged upload {upload:?}")));
        }
        Ok(self.inner.staging.join(upload))
    }

    fn space_root(&self, space: &SpaceName) -> PathBuf {
        self.inner.spaces.join(space.as_str())
    }

    /// The on-disk path of a committed file.
    pub fn file_path(&self, space: &SpaceName, path: &SpacePath) -> PathBuf {
        self.space_root(space).join(path.as_str())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::io("<blocking task>", io::Error::other(e))))
}

/// Creates each missing folder of `rel` under `root`, fsyncing the parent of
/// every folder it creates. A path component that is a file is a conflict.
fn ensure_dirs(root: &Path, rel: Option<&str>) -> Result<(), StoreError> {
    if !root.exists() {
        fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        sync_dir(root.parent().unwrap_or(root))?;
    }
    let Some(rel) = rel else { return Ok(()) };
    let mut at = root.to_path_buf();
    for seg in rel.split('/') {
        let parent = at.clone();
        at.push(seg);
        match fs::create_dir(&at) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !at.is_dir() {
                    let shown = at.strip_prefix(root).unwrap_or(&at);
                    return Err(StoreError::AlreadyExists(format!(
                        "a file at {} (where a folder is needed)",
                        shown.display()
                    )));
                }
            }
            Err(e) => return Err(StoreError::io(&at, e)),
        }
    }
    Ok(())
}

fn stream_file(file: tokio::fs::File, len: u64) -> ByteStream {
    tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024).boxed()
}

async fn open_at(path: &Path, offset: u64, what: String) -> Result<tokio::fs::File, StoreError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound(what)),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    file.seek(io::SeekFrom::Start(offset))
        .await
        .map_err(|e| StoreError::io(path, e))?;
    Ok(file)
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn create_staged(&self, upload: &str) -> Result<(), StoreError> {
        let path = self.staged_path(upload)?;
        blocking(move || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map(drop)
                .map_err(|e| StoreError::io(&path, e))
        })
        .await
    }

    async fn write_at(
        &self,
        upload: &str,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        let fail = |durable, error| WriteFailure { durable, error };
        let path = self.staged_path(upload).map_err(|e| fail(0, e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let worker_path = path.clone();
        // One blocking thread per write: it does the pwrites while this task
        // keeps reading the socket, so disk and network overlap.
        let worker = tokio::task::spawn_blocking(move || -> (u64, Result<(), StoreError>) {
            let path = worker_path;
            let file = match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return (
                        0,
                        Err(StoreError::NotFound(format!(
                            "staged upload at {}",
                            path.display()
                        ))),
                    );
                }
                Err(e) => return (0, Err(StoreError::io(&path, e))),
            };
            let mut written = 0u64;
            let mut result = Ok(());
            while let Some(buf) = rx.blocking_recv() {
                if let Err(e) = file.write_all_at(&buf, offset + written) {
                    result = Err(StoreError::io(&path, e));
                    break;
                }
                written += buf.len() as u64;
            }
            // Sync whatever was written, even after a failure, so that the
            // bytes we report as durable are.
            if let Err(e) = file.sync_data() {
                return (0, Err(StoreError::io(&path, e)));
            }
            (written, result)
        });

        let mut buf = BytesMut::new();
        let mut body_error = None;
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            };
            let out = if buf.is_empty() && chunk.len() >= WRITE_CHUNK {
                chunk
            } else {
                buf.extend_from_slice(&chunk);
                if buf.len() < WRITE_CHUNK {
                    continue;
                }
                buf.split().freeze()
            };
            if tx.send(out).await.is_err() {
                break; // the worker stopped on an error; it reports it below
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(buf.freeze()).await;
        }
        drop(tx);
        let (written, result) = worker
            .await
            .unwrap_or_else(|e| (0, Err(StoreError::io(&path, io::Error::other(e)))));
        result.map_err(|e| fail(written, e))?;

        // The staged file's directory entry must be durable before we
        // acknowledge its first bytes.
        let first = !self.inner.dir_synced.lock().unwrap().contains(upload);
        if first && written > 0 {
            let dir = self.inner.staging.clone();
            blocking(move || sync_dir(&dir))
                .await
                .map_err(|e| fail(0, e))?;
            self.inner
                .dir_synced
                .lock()
                .unwrap()
                .insert(upload.to_owned());
        }
        match body_error {
            Some(e) => Err(fail(written, StoreError::Body(e))),
            None => Ok(written),
        }
    }

    async fn read_staged(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        let path = self.staged_path(upload)?;
        let file = open_at(&path, offset, format!("staged upload {upload}")).await?;
        Ok(stream_file(file, len))
    }

    async fn staged_exists(&self, upload: &str) -> Result<bool, StoreError> {
        let path = self.staged_path(upload)?;
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
    }

    async fn discard_staged(&self, upload: &str) -> Result<(), StoreError> {
        let path = self.staged_path(upload)?;
        self.inner.dir_synced.lock().unwrap().remove(upload);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    async fn list_staged(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.inner.staging.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
                let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn promote(
        &self,
        upload: &str,
        space: &SpaceName,
        path: &SpacePath,
        mode: Promote,
    ) -> Result<(), StoreError> {
        let staged = self.staged_path(upload)?;
        let root = self.space_root(space);
        let dest = self.file_path(space, path);
        let parent_rel = path.parent();
        let shown = format!("{space}/{path}");
        self.inner.dir_synced.lock().unwrap().remove(upload);
        blocking(move || {
            ensure_dirs(&root, parent_rel.as_ref().map(SpacePath::as_str))?;
            if !staged.exists() {
                // Promoted before a crash, or never staged.
                return if dest.exists() {
                    Ok(())
                } else {
                    Err(StoreError::NotFound(format!("staged upload for {shown}")))
                };
            }
            if dest.is_dir() {
                return Err(StoreError::AlreadyExists(format!("a folder at {shown}")));
            }
            match mode {
                Promote::Replace => {
                    fs::rename(&staged, &dest).map_err(|e| StoreError::io(&dest, e))?;
                }
                Promote::NoReplace => {
                    match fs::hard_link(&staged, &dest) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            // Linked before a crash? Then only the unlink is left.
                            let same = match (fs::metadata(&staged), fs::metadata(&dest)) {
                                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                                _ => false,
                            };
                            if !same {
                                return Err(StoreError::AlreadyExists(shown));
                            }
                        }
                        Err(e) => return Err(StoreError::io(&dest, e)),
                    }
                    fs::remove_file(&staged).map_err(|e| StoreError::io(&staged, e))?;
                }
            }
            sync_dir(dest.parent().expect("a file path has a parent"))?;
            if let Some(staging) = staged.parent() {
                sync_dir(staging)?;
            }
            Ok(())
        })
        .await
    }

    async fn read_file(
        &self,
        space: &SpaceName,
        path: &SpacePath,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        let dest = self.file_path(space, path);
        let file = open_at(&dest, offset, format!("{space}/{path}")).await?;
        Ok(stream_file(file, len))
    }

    async fn file_exists(&self, space: &SpaceName, path: &SpacePath) -> Result<bool, StoreError> {
        let dest = self.file_path(space, path);
        Ok(tokio::fs::symlink_metadata(&dest).await.is_ok())
    }

    async fn delete_file(&self, space: &SpaceName, path: &SpacePath) -> Result<(), StoreError> {
        let dest = self.file_path(space, path);
        blocking(move || {
            match fs::remove_file(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(&dest, e)),
            }
            sync_dir(dest.parent().expect("a file path has a parent"))
        })
        .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        for dir in [&self.inner.staging, &self.inner.spaces] {
            let meta = tokio::fs::metadata(dir)
                .await
                .map_err(|e| StoreError::io(dir, e))?;
            if !meta.is_dir() {
                return Err(StoreError::io(dir, io::Error::other("not a directory")));
            }
        }
        Ok(())
    }
}
