//! Committed files: look up, read, list, delete.

use crate::admin::principal;
use crate::auth::Caller;
use crate::{Engine, EngineError, Result, now_ms};
use ferry_core::{FileRecord, SpaceName, SpacePath};
use ferry_meta::Entry;
use ferry_store::ByteStream;

/// A file opened for reading a byte range.
pub struct FileRead {
    pub file: FileRecord,
    pub body: ByteStream,
}

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

    /// Opens `len` bytes from `offset` of a file (the caller has checked
    /// the range against `stat_file`).
    pub async fn read_file(&self, file: &FileRecord, offset: u64, len: u64) -> Result<ByteStream> {
        metrics::counter!("ferry_bytes_sent_total").increment(len);
        Ok(self
            .inner
            .store
            .read_file(&file.space, &file.path, offset, len)
            .await?)
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
        if self.inner.meta.delete_file(&space, &path).await?.is_none() {
            return Err(EngineError::NotFound(format!("no file {space}/{path}")));
        }
        self.inner.store.delete_file(&space, &path).await?;
        Ok(())
    }
}
