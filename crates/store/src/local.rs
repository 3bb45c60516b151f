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

use crate::{BodyLen, ByteStream, FileLoc, Promote, Store, StoreError, WriteFailure};
use bytes::Bytes;
use ferry_core::{SpaceName, SpacePath};
use futures::StreamExt;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read as _, Seek as _};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    staging: PathBuf,
    spaces: PathBuf,
    /// One fsync coalescer per directory that commits write into.
    dir_syncs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
    /// Idle I/O buffers. Reusing them keeps their pages resident: a fresh
    /// buffer costs page faults and zeroing on every write.
    buffers: Mutex<Vec<Aligned>>,
}

impl Inner {
    fn take_buffer(&self) -> Aligned {
        self.buffers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(Aligned::new)
    }

    fn give_buffer(&self, mut b: Aligned) {
        b.len = 0;
        let mut pool = self.buffers.lock().unwrap();
        if pool.len() < 32 {
            pool.push(b);
        }
    }
}

/// Coalesces fsyncs of one directory. A caller whose change came before a
/// sync *started* is covered by it, so many concurrent creates or renames in
/// one folder share a few fsyncs instead of one each. Blocking: call it
/// from blocking threads only.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    requested: u64,
    completed: u64,
    running: bool,
}

impl DirSync {
    fn sync(&self, dir: &Path) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap();
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.completed >= ticket {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap();
                continue;
            }
            st.running = true;
            let target = st.requested;
            drop(st);
            let result = sync_dir(dir);
            st = self.state.lock().unwrap();
            st.running = false;
            if result.is_ok() {
                st.completed = st.completed.max(target);
            }
            self.done.notify_all();
            result?;
        }
    }
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
                dir_syncs: Mutex::new(HashMap::new()),
                buffers: Mutex::new(Vec::new()),
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

    /// Makes `dir`'s entries durable, sharing the fsync with concurrent callers.
    fn sync_dir_shared(inner: &Inner, dir: &Path) -> Result<(), StoreError> {
        let syncer = inner
            .dir_syncs
            .lock()
            .unwrap()
            .entry(dir.to_path_buf())
            .or_default()
            .clone();
        syncer.sync(dir)
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

/// Other file-system calls (open, create, rename, fsync of a folder) on
/// blocking threads at a time: a burst of a thousand requests opening
/// their files waits here instead of growing the blocking pool.
static FILE_JOBS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let permit = FILE_JOBS.acquire().await.expect("never closed");
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
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

/// A committed file held open: the handle pins its inode, so its bytes
/// are this version's even after a `rename` replaced the path, and the
/// inode cannot be reused while it is held, which makes `(dev, ino)` an
/// exact identity for [`crate::OpenFile::is_current`].
struct LocalFile {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
}

#[async_trait::async_trait]
impl crate::OpenFile for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    async fn is_current(&self) -> Result<bool, StoreError> {
        match tokio::fs::metadata(&self.path).await {
            Ok(m) => Ok(m.dev() == self.dev && m.ino() == self.ino),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }

    fn read(self: Box<Self>, offset: u64, len: u64) -> ByteStream {
        use futures::TryStreamExt;
        let mut file = tokio::fs::File::from_std(self.file);
        futures::stream::once(async move {
            file.seek(io::SeekFrom::Start(offset)).await?;
            Ok::<_, io::Error>(stream_file(file, len))
        })
        .try_flatten()
        .boxed()
    }
}

/// Alignment O_DIRECT needs for offsets, lengths and buffer addresses.
const ALIGN: usize = 4096;
/// Size of one write (and of the one buffer each write holds).
const DIRECT_CHUNK: usize = 512 * 1024;
/// Size of one read of staged bytes.
const READ_CHUNK: usize = 4 << 20;

/// A buffer whose start is aligned for O_DIRECT, without unsafe code:
/// over-allocate and start at the first aligned byte.
#[derive(Debug)]
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new() -> Aligned {
        Aligned::sized(DIRECT_CHUNK)
    }

    fn sized(size: usize) -> Aligned {
        let buf = vec![0u8; size + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Aligned { buf, start, len: 0 }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_CHUNK - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// The blocking side of `write_at`: positioned writes of everything the
/// driver delivers, then `fdatasync`. Writes that start on a 4 KiB boundary
/// go through O_DIRECT in `DIRECT_CHUNK` blocks (the unaligned tail, if
/// any, through the page cache): large uploads then cost the disk's speed,
/// not the page cache's, which on memory-ballooned VMs is far slower.
///
/// One write's state between batches: the staged file, the direct-I/O
/// handle once a full block was written, the pooled block being filled.
struct WriteState {
    inner: Arc<Inner>,
    path: PathBuf,
    offset: u64,
    file: File,
    /// Full blocks go through O_DIRECT when the write started aligned
    /// (every block then stays aligned), else through the page cache. The
    /// direct handle is opened at the first full block: a small write is
    /// cheaper as one buffered write and one fdatasync.
    direct: Option<Option<File>>,
    aligned: bool,
    block: Aligned,
    written: u64,
}

impl WriteState {
    fn open(inner: Arc<Inner>, path: PathBuf, offset: u64) -> Result<WriteState, StoreError> {
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let what = format!("staged upload at {}", path.display());
                return Err(StoreError::NotFound(what));
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let block = inner.take_buffer();
        Ok(WriteState {
            aligned: offset.is_multiple_of(ALIGN as u64),
            inner,
            path,
            offset,
            file,
            direct: None,
            block,
            written: 0,
        })
    }

    /// Writes `range` of the block (through the direct handle if asked
    /// and open) where the write has got to.
    fn put(&mut self, direct: bool, range: std::ops::Range<usize>) -> Result<(), StoreError> {
        let f = match (&self.direct, direct) {
            (Some(Some(d)), true) => d,
            _ => &self.file,
        };
        let data = &self.block.filled()[range];
        let len = data.len();
        f.write_all_at(data, self.offset + self.written)
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.written += len as u64;
        Ok(())
    }

    /// Takes a chunk: fills the block, writing each full one.
    fn take(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = self.block.push(rest);
            rest = &rest[n..];
            if self.block.len == DIRECT_CHUNK {
                let (aligned, path) = (self.aligned, &self.path);
                self.direct.get_or_insert_with(|| {
                    aligned
                        .then(|| {
                            OpenOptions::new()
                                .write(true)
                                .custom_flags(libc::O_DIRECT)
                                .open(path)
                                .ok()
                        })
                        .flatten()
                });
                self.put(true, 0..DIRECT_CHUNK)?;
                self.block.len = 0;
            }
        }
        Ok(())
    }

    /// Writes the tail (if the write went well so far), syncs whatever was
    /// written even after a failure, so that the bytes reported durable
    /// are, and gives the block back to the pool.
    fn finish(mut self, mut result: Result<(), StoreError>) -> (u64, Result<(), StoreError>) {
        if result.is_ok() {
            let len = self.block.len;
            result = if matches!(self.direct, Some(Some(_))) {
                // Whole aligned blocks direct, the tail through the cache.
                let whole = len / ALIGN * ALIGN;
                self.put(true, 0..whole)
                    .and_then(|()| self.put(false, whole..len))
            } else {
                self.put(false, 0..len)
            };
        }
        let synced = self.file.sync_data();
        let WriteState {
            inner,
            block,
            path,
            written,
            ..
        } = self;
        inner.give_buffer(block);
        match synced {
            Err(e) => (0, Err(StoreError::io(&path, e))),
            Ok(()) => (written, result),
        }
    }
}

/// Batches of write data on blocking threads at a time, across all writes:
/// what data work may take of the blocking pool (its threads, once made,
/// linger), so that a burst of a thousand writes cannot grow it past what
/// metadata and control requests need.
static WRITE_JOBS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// Runs `f` on a blocking thread once `WRITE_JOBS` lets it.
async fn write_job<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let permit = WRITE_JOBS.acquire().await.expect("never closed");
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| StoreError::io("<blocking task>", io::Error::other(e)))
}

/// Drives one write: each batch of queued chunks is written on a blocking
/// thread, which goes back to the pool when the queue is empty. A write
/// waiting for a slow client's next bytes holds no thread, so a thousand
/// slow uploads do not exhaust the blocking pool that control requests
/// need; a fast one still overlaps disk and network (the next chunk is
/// received while a batch is written).
async fn write_driver(
    inner: Arc<Inner>,
    path: PathBuf,
    offset: u64,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> (u64, Result<(), StoreError>) {
    use tokio::sync::mpsc::error::TryRecvError;
    // The file is opened by the first batch's job, and synced by the job of
    // the batch after which the body ended: a body that arrives at once (a
    // small upload) costs one trip to a blocking thread, not three.
    let mut state: Option<WriteState> = None;
    loop {
        let mut batch = Vec::new();
        let mut ended = false;
        match rx.recv().await {
            Some(first) => batch.push(first),
            None => ended = true,
        }
        while !ended {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => ended = true,
            }
        }
        let (inner, path) = (inner.clone(), path.clone());
        let open = state.take();
        let job = write_job(move || {
            let mut state = match open {
                Some(s) => s,
                None => WriteState::open(inner, path, offset)?,
            };
            let r = batch.iter().try_for_each(|b| state.take(b));
            Ok(if ended || r.is_err() {
                Step::Done(state.finish(r))
            } else {
                Step::More(state)
            })
        });
        match job.await.and_then(|r| r) {
            Ok(Step::More(s)) => state = Some(s),
            Ok(Step::Done(outcome)) => return outcome,
            // Not opened (or the job never ran): nothing was written.
            Err(e) => return (0, Err(e)),
        }
    }
}

/// Where a write stands after one batch.
enum Step {
    /// The body goes on.
    More(WriteState),
    /// Synced: the bytes written and the first error.
    Done((u64, Result<(), StoreError>)),
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn create_staged(&self, upload: &str) -> Result<(), StoreError> {
        self.create_staged_many(&[upload.to_owned()]).await
    }

    async fn create_staged_many(&self, uploads: &[String]) -> Result<(), StoreError> {
        let paths = uploads
            .iter()
            .map(|u| self.staged_path(u))
            .collect::<Result<Vec<_>, _>>()?;
        let inner = self.inner.clone();
        blocking(move || {
            for path in &paths {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| StoreError::io(path, e))?;
            }
            // One directory sync makes every new entry durable.
            LocalStore::sync_dir_shared(&inner, &inner.staging)
        })
        .await
    }

    async fn write_at(
        &self,
        upload: &str,
        offset: u64,
        _len: BodyLen,
        mut body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        let fail = |durable, error| WriteFailure { durable, error };
        let path = self.staged_path(upload).map_err(|e| fail(0, e))?;
        // A few chunks in flight at most: memory per write stays bounded.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let worker_path = path.clone();
        // The driver does the pwrites on blocking threads while this task
        // keeps reading the socket, so disk and network overlap.
        let inner = self.inner.clone();
        let worker = tokio::spawn(write_driver(inner, worker_path, offset, rx));
        let mut body_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the worker stopped on an error; it reports it below
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let (written, result) = worker
            .await
            .unwrap_or_else(|e| (0, Err(StoreError::io(&path, io::Error::other(e)))));
        result.map_err(|e| fail(written, e))?;

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
        // Hashing goes through `scan_staged`; this plain stream serves the
        // rest (and the trait's default `scan_staged`).
        let path = self.staged_path(upload)?;
        let file = open_at(&path, offset, format!("staged upload {upload}")).await?;
        Ok(stream_file(file, len))
    }

    async fn scan_staged(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        mut sink: Box<dyn crate::Sink>,
    ) -> Result<Box<dyn crate::Sink>, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.staged_path(upload)?;
        let what = format!("staged upload {upload}");
        blocking(move || {
            let direct = offset.is_multiple_of(ALIGN as u64);
            let file = if direct {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&path)
                    .or_else(|_| File::open(&path))
            } else {
                File::open(&path)
            }
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound(what),
                _ => StoreError::io(&path, e),
            })?;
            // Two aligned buffers take turns: one is read into while the
            // sink consumes the other, straight from the buffer.
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Aligned, usize)>(1);
            let (free_tx, free_rx) = std::sync::mpsc::channel::<Aligned>();
            for _ in 0..2 {
                let _ = free_tx.send(Aligned::sized(READ_CHUNK));
            }
            let reader_path = path.clone();
            let reader = std::thread::spawn(move || -> Result<(), StoreError> {
                let mut at = 0u64;
                while at < len {
                    let Ok(mut block) = free_rx.recv() else {
                        return Ok(()); // the consumer stopped
                    };
                    let want = READ_CHUNK.min((len - at).div_ceil(ALIGN as u64) as usize * ALIGN);
                    let start = block.start;
                    let n = file
                        .read_at(&mut block.buf[start..start + want], offset + at)
                        .map_err(|e| StoreError::io(&reader_path, e))?;
                    if n == 0 {
                        return Err(StoreError::io(
                            &reader_path,
                            io::Error::new(ErrorKind::UnexpectedEof, "staged file is short"),
                        ));
                    }
                    let n = (n as u64).min(len - at) as usize;
                    at += n as u64;
                    if full_tx.send((block, n)).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            });
            for (block, n) in full_rx {
                sink.feed(&block.buf[block.start..block.start + n]);
                let _ = free_tx.send(block);
            }
            reader
                .join()
                .map_err(|_| StoreError::io(&path, io::Error::other("reader thread panicked")))??;
            Ok(sink)
        })
        .await
    }

    async fn copy_staged(
        &self,
        from: &str,
        to: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), StoreError> {
        let src = self.staged_path(from)?;
        let dst = self.staged_path(to)?;
        blocking(move || {
            let input = File::open(&src).map_err(|e| StoreError::io(&src, e))?;
            let mut output = OpenOptions::new()
                .write(true)
                .open(&dst)
                .map_err(|e| StoreError::io(&dst, e))?;
            output
                .seek(std::io::SeekFrom::Start(offset))
                .map_err(|e| StoreError::io(&dst, e))?;
            // std turns a File-to-File copy into copy_file_range(2): the
            // bytes never enter user space, and file systems with reflinks
            // (XFS, Btrfs) share the blocks instead of copying them.
            let copied = std::io::copy(&mut input.take(len), &mut output)
                .map_err(|e| StoreError::io(&dst, e))?;
            if copied < len {
                return Err(StoreError::io(
                    &src,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{len} bytes to copy, only {copied} staged"),
                    ),
                ));
            }
            output.sync_data().map_err(|e| StoreError::io(&dst, e))
        })
        .await
    }

    async fn staged_exists(&self, upload: &str) -> Result<bool, StoreError> {
        let path = self.staged_path(upload)?;
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
    }

    async fn discard_staged(&self, upload: &str) -> Result<(), StoreError> {
        let path = self.staged_path(upload)?;
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
        _size: u64,
        space: &SpaceName,
        path: &SpacePath,
        mode: Promote,
    ) -> Result<Option<String>, StoreError> {
        let staged = self.staged_path(upload)?;
        let root = self.space_root(space);
        let dest = self.file_path(space, path);
        let parent_rel = path.parent();
        let shown = format!("{space}/{path}");
        let inner = self.inner.clone();
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
            // The new entry must be durable; the staged name's removal need
            // not be (recovery deletes a staged file whose upload is done).
            LocalStore::sync_dir_shared(&inner, dest.parent().expect("a file path has a parent"))
        })
        .await?;
        Ok(None)
    }

    async fn open_file(&self, file: FileLoc<'_>) -> Result<Box<dyn crate::OpenFile>, StoreError> {
        let dest = self.file_path(file.space, file.path);
        let what = file.to_string();
        blocking(move || {
            let file = File::open(&dest).map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound(what.clone()),
                _ => StoreError::io(&dest, e),
            })?;
            let meta = file.metadata().map_err(|e| StoreError::io(&dest, e))?;
            if !meta.is_file() {
                return Err(StoreError::NotFound(what));
            }
            Ok(Box::new(LocalFile {
                file,
                path: dest,
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
            }) as Box<dyn crate::OpenFile>)
        })
        .await
    }

    async fn file_exists(&self, space: &SpaceName, path: &SpacePath) -> Result<bool, StoreError> {
        let dest = self.file_path(space, path);
        Ok(tokio::fs::symlink_metadata(&dest).await.is_ok())
    }

    async fn delete_file(&self, file: FileLoc<'_>) -> Result<(), StoreError> {
        let dest = self.file_path(file.space, file.path);
        let inner = self.inner.clone();
        blocking(move || {
            match fs::remove_file(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(&dest, e)),
            }
            LocalStore::sync_dir_shared(&inner, dest.parent().expect("a file path has a parent"))
        })
        .await
    }

    async fn link_file(
        &self,
        file: FileLoc<'_>,
        space: &SpaceName,
        path: &SpacePath,
    ) -> Result<(), StoreError> {
        let from = self.file_path(file.space, file.path);
        let root = self.space_root(space);
        let dest = self.file_path(space, path);
        let parent_rel = path.parent();
        let shown = format!("{space}/{path}");
        let inner = self.inner.clone();
        blocking(move || {
            ensure_dirs(&root, parent_rel.as_ref().map(SpacePath::as_str))?;
            match fs::hard_link(&from, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let same = match (fs::metadata(&from), fs::metadata(&dest)) {
                        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                        _ => false,
                    };
                    if !same {
                        return Err(StoreError::AlreadyExists(shown));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(shown));
                }
                Err(e) => return Err(StoreError::io(&dest, e)),
            }
            LocalStore::sync_dir_shared(&inner, dest.parent().expect("a file path has a parent"))
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
