//! Committed files: look up, read, list, delete.

use crate::admin::principal;
use crate::auth::Caller;
use crate::hooks::HookKind;
use crate::{Engine, EngineError, Result, loc, now_ms};
use ferry_core::{FileRecord, SpaceName, SpacePath};
use ferry_meta::Entry;
use ferry_store::{ByteStream, FileLoc, OpenFile, StoreError};
use std::time::Duration;

/// A committed file opened for reading: its record, and a handle on the
/// very version that record names (its size, SHA-256 and ETag), whatever
/// happens to the path afterwards.
pub struct FileRead {
    pub file: FileRecord,
    version: Box<dyn OpenFile>,
}

impl FileRead {
    /// Streams `len` bytes of this version from `offset` (the caller has
    /// checked the range against `file.size`).
    pub fn read(self, offset: u64, len: u64) -> ByteStream {
        metrics::counter!("ferry_bytes_sent_total").increment(len);
        self.version.read(offset, len)
    }
}

/// How often opening a file is retried while commits to its path keep
/// landing between the open and the record (each wait doubles, to 20 ms).
const OPEN_ATTEMPTS: u32 = 200;

fn parse(space: &str, path: &str) -> Result<(SpaceName, SpacePath)> {
    let space =
        SpaceName::parse(space).map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
    let path =
        SpacePath::parse(path).map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
    Ok((space, path))
}

impl Engine {
    pub async fn stat_file(&self, caller: &Caller, space: &str, path: &str) -> Result<FileRecord> {
        let p = principal(caller)?;
        let (space, path) = parse(space, path)?;
        self.access(p, &space).await?;
        self.inner
            .meta
            .get_file(&space, &path)
            .await?
            .filter(|f| !f.is_expired_at(now_ms()))
            .ok_or_else(|| EngineError::NotFound(format!("no file {space}/{path}")))
    }

    /// A file by its id, if the caller may read its space (others get
    /// `NotFound`, so ids leak nothing).
    pub async fn file_by_id(&self, caller: &Caller, id: &str) -> Result<FileRecord> {
        let p = principal(caller)?;
        let not_found = || EngineError::NotFound(format!("no file with id {id:?}"));
        let file = self
            .inner
            .meta
            .get_file_by_id(id)
            .await?
            .filter(|f| !f.is_expired_at(now_ms()))
            .ok_or_else(not_found)?;
        self.access(p, &file.space).await.map_err(|_| not_found())?;
        Ok(file)
    }

    /// Opens the file at `path` for reading: the record and the bytes of
    /// one committed version, never the record of one and the bytes of
    /// another (a download during a `replace` sees the old or the new
    /// file whole).
    pub async fn open_file(&self, caller: &Caller, space: &str, path: &str) -> Result<FileRead> {
        let p = principal(caller)?;
        let (space, path) = parse(space, path)?;
        self.access(p, &space).await?;
        self.open_version(&space, &path).await
    }

    /// Opens a file by its id, like [`Engine::open_file`]. Should the path
    /// meanwhile hold another file (deleted, then created again), the id
    /// is not found.
    pub async fn open_file_by_id(&self, caller: &Caller, id: &str) -> Result<FileRead> {
        let file = self.file_by_id(caller, id).await?;
        let read = self.open_version(&file.space, &file.path).await?;
        if read.file.id != id {
            return Err(EngineError::NotFound(format!("no file with id {id:?}")));
        }
        Ok(read)
    }

    /// Reads `len` bytes from `offset` of exactly the version `file` names
    /// (the caller has checked the range against it). If the path has
    /// meanwhile been given another version, that is a `Conflict`: the
    /// bytes `file` describes are gone. Prefer [`Engine::open_file`], which
    /// answers whichever version it opened, with its record.
    pub async fn read_file(&self, file: &FileRecord, offset: u64, len: u64) -> Result<ByteStream> {
        let read = self.open_version(&file.space, &file.path).await?;
        let same = |a: &FileRecord, b: &FileRecord| {
            a.id == b.id && a.sha256 == b.sha256 && a.size == b.size && a.created_at == b.created_at
        };
        if !same(&read.file, file) {
            return Err(EngineError::Conflict(format!(
                "{}/{} was replaced while it was being opened; retry",
                file.space, file.path
            )));
        }
        Ok(read.read(offset, len))
    }

    /// Opens the store's current version of `(space, path)` and matches it
    /// with the file's record.
    ///
    /// Why this is exact: the store's handle pins one version. A commit
    /// claims its path (`pending`) before it promotes and releases it only
    /// once the file is recorded. So if, after opening, no commit claims the
    /// path, the opened version's record was written before that check; if
    /// then, after reading the record, the path still names the opened
    /// version, no commit promoted anything there in between, and the
    /// record read is the opened version's own. Otherwise a commit to the
    /// path is landing: wait a little and open again.
    async fn open_version(&self, space: &SpaceName, path: &SpacePath) -> Result<FileRead> {
        let not_found = || EngineError::NotFound(format!("no file {space}/{path}"));
        if !self.inner.store.capabilities().paths {
            return self.open_object(space, path).await;
        }
        let at = FileLoc::at_path(space, path);
        let mut wait = Duration::from_millis(1);
        for _ in 0..OPEN_ATTEMPTS {
            let version = match self.inner.store.open_file(at).await {
                Ok(v) => Some(v),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            if !self.claimed(space, path) {
                let record = self
                    .inner
                    .meta
                    .get_file(space, path)
                    .await?
                    .filter(|f| !f.is_expired_at(now_ms()));
                match (version, record) {
                    (None, None) => return Err(not_found()),
                    (Some(v), None) => {
                        // A delete removes the record first: the file goes.
                        if v.is_current().await? {
                            return Err(not_found());
                        }
                    }
                    (Some(v), Some(file)) => {
                        if v.is_current().await? && v.size() == file.size {
                            return Ok(FileRead { file, version: v });
                        }
                    }
                    // Recorded without bytes: a replace never leaves the
                    // path empty (it renames over it), so they are lost.
                    (None, Some(_)) => return Err(not_found()),
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
        Err(EngineError::Conflict(format!(
            "{space}/{path} keeps changing; retry"
        )))
    }

    /// On a store without paths the record names the object, which never
    /// changes: the record read is the version opened. A replace or delete
    /// after this point retires the object with a delay, so its bytes stay
    /// readable for the download.
    async fn open_object(&self, space: &SpaceName, path: &SpacePath) -> Result<FileRead> {
        let not_found = || EngineError::NotFound(format!("no file {space}/{path}"));
        let file = self
            .inner
            .meta
            .get_file(space, path)
            .await?
            .filter(|f| !f.is_expired_at(now_ms()))
            .ok_or_else(not_found)?;
        let version = match self.inner.store.open_file(loc(&file)).await {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        if version.size() != file.size {
            return Err(EngineError::Store(StoreError::Incomplete(format!(
                "the object of {space}/{path} holds {} bytes, its record {}",
                version.size(),
                file.size
            ))));
        }
        Ok(FileRead { file, version })
    }

    /// Whether a commit in progress has claimed `(space, path)`.
    fn claimed(&self, space: &SpaceName, path: &SpacePath) -> bool {
        self.inner
            .pending
            .lock()
            .unwrap()
            .contains(&(space.to_string(), path.to_string()))
    }

    pub async fn list(&self, caller: &Caller, space: &str, prefix: &str) -> Result<Vec<Entry>> {
        let p = principal(caller)?;
        let space = SpaceName::parse(space)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        let prefix = SpacePath::parse_prefix(prefix)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        self.access(p, &space).await?;
        let now = now_ms();
        // Files past their expiry are gone, whether or not the reaper has
        // come by yet.
        let mut entries = self.inner.meta.list(&space, prefix.as_ref()).await?;
        entries.retain(|e| !matches!(e, Entry::File(f) if f.is_expired_at(now)));
        Ok(entries)
    }

    pub async fn delete_file(&self, caller: &Caller, space: &str, path: &str) -> Result<()> {
        let p = principal(caller)?;
        let (space, path) = parse(space, path)?;
        self.require_write(p, &space).await?;
        let _guard = self.inner.namespace.lock().await;
        // The record goes first: a crash in between leaves bytes nobody
        // lists, never a listed file without bytes.
        // The event says what was there; it is written only if it went.
        let existing = if self.wants_hook(HookKind::PostTerminate) {
            self.inner.meta.get_file(&space, &path).await?
        } else {
            None
        };
        let events = match &existing {
            Some(f) => {
                let key = format!("file:{}", f.id);
                self.hook_events(
                    HookKind::PostTerminate,
                    [(key.as_str(), crate::session::file_data(f))],
                )
            }
            None => Vec::new(),
        };
        let Some(gone) = self
            .inner
            .meta
            .delete_file_reporting(&space, &path, &events)
            .await?
        else {
            return Err(EngineError::NotFound(format!("no file {space}/{path}")));
        };
        if !events.is_empty() {
            self.hooks_written();
        }
        self.remove_bytes(&gone).await
    }

    /// Deletes the objects of a store without paths that nothing owns: no
    /// file record names them and no upload in progress sealed them, and
    /// they were written more than `grace` ago (a retired object is kept
    /// that long for the downloads streaming it). Run at start-up and
    /// periodically; returns how many went. A crash between a replace and
    /// its delayed delete leaves such objects.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<usize> {
        if self.in_cluster() {
            let dead = self.inner.meta.forget_dead_leases().await?;
            if dead > 0 {
                tracing::info!(leases = dead, "leases of nodes that died removed");
            }
        }
        let store = &self.inner.store;
        if store.capabilities().paths {
            return Ok(0);
        }
        let before = now_ms() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut gone = 0;
        for (object, written) in store.list_objects().await? {
            if written > before {
                continue;
            }
            let meta = &self.inner.meta;
            // An upload sealed for its commit's read-back, not yet recorded:
            // named by its id, or by the name its write gave it (which
            // its record must still give it). Read before the files: a
            // commit landing in between is then found by the second read.
            let upload = match crate::write::upload_of_object(&object) {
                Some(id) => meta
                    .get_upload(id)
                    .await?
                    .filter(|u| u.object.as_deref() == Some(object.as_str())),
                None => meta.get_upload(&object).await?,
            };
            if upload.is_some_and(|u| {
                matches!(
                    u.state,
                    ferry_core::UploadState::Open | ferry_core::UploadState::Committing
                )
            }) {
                continue;
            }
            if meta.get_file_by_object(&object).await?.is_some() {
                continue;
            }
            store.delete_object(&object).await?;
            gone += 1;
        }
        if gone > 0 {
            tracing::info!(objects = gone, "orphan objects removed");
        }
        Ok(gone)
    }

    /// Removes the bytes of a file whose record is gone: at once from a
    /// store with paths (an open handle keeps reading), after a while for
    /// an object, which a download may be streaming.
    /// Renames a file, or a folder (every file below it, all or none), in
    /// one space: `to` is the new path of `from`. Returns how many files
    /// moved. A taken destination (a file, a folder, a file above it) is
    /// `AlreadyExists`, and nothing moves.
    pub async fn move_path(
        &self,
        caller: &Caller,
        space: &str,
        from: &str,
        to: &str,
    ) -> Result<usize> {
        let p = principal(caller)?;
        let (space, from) = parse(space, from)?;
        let to = SpacePath::parse(to)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        self.require_write(p, &space).await?;
        if to == from || to.as_str().starts_with(&format!("{from}/")) {
            return Err(EngineError::invalid(
                "invalid_path",
                format!("{from} cannot move to {to}, which is itself or below it"),
            ));
        }
        let _guard = self.inner.namespace.lock().await;
        let meta = &self.inner.meta;
        let moves: Vec<(SpacePath, SpacePath)> = match meta.get_file(&space, &from).await? {
            Some(_) => vec![(from.clone(), to.clone())],
            None => {
                // A folder takes a free name: it never merges into another.
                if meta.occupant(&space, &to).await?.is_some() {
                    return Err(EngineError::AlreadyExists {
                        path: format!("{space}/{to}"),
                    });
                }
                let mut moves = Vec::new();
                for f in self.files_below(&space, &from).await? {
                    let rest = &f.as_str()[from.as_str().len()..];
                    let dest = SpacePath::parse(&format!("{to}{rest}"))
                        .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
                    moves.push((f, dest));
                }
                moves
            }
        };
        if moves.is_empty() {
            return Err(EngineError::NotFound(format!(
                "no file or folder {space}/{from}"
            )));
        }
        let taken = |to: &SpacePath| EngineError::AlreadyExists {
            path: format!("{space}/{to}"),
        };
        // On a store with paths the bytes get their new names first, and
        // lose the old ones after the record moved.
        let paths = self.inner.store.capabilities().paths;
        let store = &self.inner.store;
        let mut linked: Vec<&SpacePath> = Vec::new();
        let mut outcome = Ok(());
        if paths {
            for (f, t) in &moves {
                match store
                    .link_file(FileLoc::at_path(&space, f), &space, t)
                    .await
                {
                    Ok(()) => linked.push(t),
                    Err(StoreError::AlreadyExists(_)) => {
                        outcome = Err(taken(t));
                        break;
                    }
                    Err(e) => {
                        outcome = Err(e.into());
                        break;
                    }
                }
            }
        }
        if outcome.is_ok() {
            outcome = match meta.move_files(&space, &moves).await {
                Ok(old) => {
                    for f in &old {
                        if paths {
                            self.remove_bytes(f).await?;
                        }
                    }
                    return Ok(old.len());
                }
                Err(ferry_meta::MetaError::AlreadyExists(ferry_meta::Record::File(t))) => {
                    Err(taken(&t))
                }
                Err(ferry_meta::MetaError::NotFound(ferry_meta::Record::File(f))) => Err(
                    EngineError::NotFound(format!("no file {space}/{f} (it went meanwhile)")),
                ),
                Err(e) => Err(e.into()),
            };
        }
        for t in linked {
            if let Err(e) = store.delete_file(FileLoc::at_path(&space, t)).await {
                tracing::warn!(error = %e, "a new name of a file whose move failed stays");
            }
        }
        outcome.map(|()| 0)
    }

    /// Every file below folder `prefix`, at any depth.
    async fn files_below(&self, space: &SpaceName, prefix: &SpacePath) -> Result<Vec<SpacePath>> {
        let mut out = Vec::new();
        let mut folders = vec![prefix.clone()];
        while let Some(folder) = folders.pop() {
            for e in self.inner.meta.list(space, Some(&folder)).await? {
                match e {
                    Entry::File(f) => out.push(f.path),
                    Entry::Folder(name) => folders.push(
                        SpacePath::parse(&format!("{folder}/{name}"))
                            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?,
                    ),
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn remove_bytes(&self, gone: &FileRecord) -> Result<()> {
        if gone.object.is_some() {
            self.inner.store.retire_file(loc(gone)).await?;
        } else {
            self.inner.store.delete_file(loc(gone)).await?;
        }
        Ok(())
    }
}
