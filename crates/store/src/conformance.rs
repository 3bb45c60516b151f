//! The shared test suite every [`Store`] backend must pass.
//!
//! Call [`run_all`] from a backend's tests with a fresh, empty store. Each
//! check uses its own upload ids and paths, so they can share one store.
//! Checks of what only some backends do (paths and folders in the store,
//! reading staged bytes before sealing) follow [`Store::capabilities`].

use crate::{BodyLen, ByteStream, FileLoc, Promote, Sink, Store, StoreError};
use bytes::Bytes;
use ferry_core::{SpaceName, SpacePath};
use futures::{StreamExt, TryStreamExt, stream};
use std::io;

fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn collect(s: ByteStream) -> Vec<u8> {
    s.try_fold(Vec::new(), |mut acc, b| async move {
        acc.extend_from_slice(&b);
        Ok(acc)
    })
    .await
    .expect("stream reads")
}

fn sp(s: &str) -> SpaceName {
    SpaceName::parse(s).unwrap()
}

fn p(s: &str) -> SpacePath {
    SpacePath::parse(s).unwrap()
}

/// Runs every check.
pub async fn run_all(store: &dyn Store) {
    writes_land_at_their_offsets_in_any_order(store).await;
    concurrent_disjoint_writes(store).await;
    failed_body_keeps_durable_prefix(store).await;
    a_body_of_unknown_length_keeps_all_that_came(store).await;
    write_to_unknown_upload_is_not_found(store).await;
    promote_no_replace_refuses_existing(store).await;
    promote_replace_swaps_atomically(store).await;
    promote_creates_folders_and_refuses_file_as_folder(store).await;
    promote_is_idempotent(store).await;
    read_file_ranges(store).await;
    an_opened_file_keeps_its_version_across_a_replace(store).await;
    copy_between_staged_objects(store).await;
    scan_feeds_every_byte_in_order(store).await;
    discard_and_delete_are_idempotent(store).await;
    store.ready().await.expect("ready");
}

async fn write(store: &dyn Store, id: &str, offset: u64, data: Vec<u8>) -> u64 {
    let len = data.len() as u64;
    store
        .write_at(
            id,
            offset,
            BodyLen::Exact(len),
            stream::iter([Ok(Bytes::from(data))]).boxed(),
        )
        .await
        .unwrap()
}

/// Reads staged bytes back, sealing the upload (of `size` bytes) first on
/// a backend that reads only sealed uploads.
async fn read_back(store: &dyn Store, id: &str, size: u64, offset: u64, len: u64) -> Vec<u8> {
    if !store.capabilities().read_staged {
        store.seal(id, size).await.unwrap();
    }
    collect(store.read_staged(id, offset, len).await.unwrap()).await
}

pub async fn writes_land_at_their_offsets_in_any_order(store: &dyn Store) {
    let id = "c1";
    store.create_staged(id).await.unwrap();
    let data = pattern(1_000_000, 1);
    assert_eq!(
        write(store, id, 600_000, data[600_000..].to_vec()).await,
        400_000
    );
    assert_eq!(write(store, id, 0, data[..600_000].to_vec()).await, 600_000);
    assert!(store.list_staged().await.unwrap().contains(&id.to_owned()));
    let back = read_back(store, id, 1_000_000, 0, 1_000_000).await;
    assert!(back == data, "staged bytes differ from what was written");
    let mid = collect(store.read_staged(id, 599_990, 20).await.unwrap()).await;
    assert_eq!(mid, &data[599_990..600_010]);
    store.discard_staged(id).await.unwrap();
}

pub async fn concurrent_disjoint_writes(store: &dyn Store) {
    let id = "c2";
    store.create_staged(id).await.unwrap();
    let data = pattern(4 * 300_000, 2);
    let writes = (0..4).map(|i| {
        let chunk = Bytes::copy_from_slice(&data[i * 300_000..(i + 1) * 300_000]);
        // Split each body in uneven chunks to exercise buffering.
        let parts: Vec<Result<Bytes, io::Error>> = vec![
            Ok(chunk.slice(..1)),
            Ok(chunk.slice(1..70_001)),
            Ok(chunk.slice(70_001..)),
        ];
        store.write_at(
            id,
            (i * 300_000) as u64,
            BodyLen::Exact(300_000),
            stream::iter(parts).boxed(),
        )
    });
    for r in futures::future::join_all(writes).await {
        assert_eq!(r.unwrap(), 300_000);
    }
    let n = data.len() as u64;
    let back = read_back(store, id, n, 0, n).await;
    assert!(back == data, "concurrent writes corrupted each other");
    store.discard_staged(id).await.unwrap();
}

pub async fn failed_body_keeps_durable_prefix(store: &dyn Store) {
    let id = "c3";
    store.create_staged(id).await.unwrap();
    write(store, id, 0, vec![1u8; 10]).await;
    let chunks: Vec<Result<Bytes, io::Error>> = vec![
        Ok(Bytes::from(vec![7u8; 300_000])),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
        Ok(Bytes::from_static(b"never")),
    ];
    let err = store
        .write_at(
            id,
            10,
            BodyLen::Exact(400_000),
            stream::iter(chunks).boxed(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err.error, StoreError::Body(_)), "{err:?}");
    assert_eq!(
        err.durable, 300_000,
        "every byte before the failure is kept"
    );
    let back = read_back(store, id, 300_010, 10, 300_000).await;
    assert!(back.iter().all(|&b| b == 7));
    store.discard_staged(id).await.unwrap();
}

pub async fn a_body_of_unknown_length_keeps_all_that_came(store: &dyn Store) {
    let id = "c3u";
    store.create_staged(id).await.unwrap();
    // More than a cell of S3 (5 MiB at least), in uneven chunks, under a
    // bound of 64 MiB that the body never reaches.
    let data = pattern(12 << 20, 3);
    let chunks: Vec<Result<Bytes, io::Error>> = data
        .chunks(700_001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let n = store
        .write_at(
            id,
            0,
            BodyLen::AtMost(64 << 20),
            stream::iter(chunks).boxed(),
        )
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64, "every byte that came is kept");
    let back = read_back(store, id, n, 0, n).await;
    assert!(back == data, "staged bytes differ");
    store.discard_staged(id).await.unwrap();
}

pub async fn write_to_unknown_upload_is_not_found(store: &dyn Store) {
    let err = store
        .write_at("never-created", 0, BodyLen::Exact(1), body(vec![b"x"]))
        .await
        .unwrap_err();
    assert!(matches!(err.error, StoreError::NotFound(_)), "{err:?}");
    assert!(!store.staged_exists("never-created").await.unwrap());
}

async fn stage(store: &dyn Store, id: &str, content: &'static [u8]) -> u64 {
    store.create_staged(id).await.unwrap();
    let n = content.len() as u64;
    store
        .write_at(id, 0, BodyLen::Exact(n), body(vec![content]))
        .await
        .unwrap();
    n
}

/// A promoted file, as its record would keep it.
struct Placed {
    space: SpaceName,
    path: SpacePath,
    object: Option<String>,
}

impl Placed {
    fn loc(&self) -> FileLoc<'_> {
        FileLoc {
            space: &self.space,
            path: &self.path,
            object: self.object.as_deref(),
        }
    }
}

/// Stages `content` as `id` and promotes it to `path`.
async fn place(
    store: &dyn Store,
    id: &str,
    path: &str,
    content: &'static [u8],
    mode: Promote,
) -> Placed {
    let size = stage(store, id, content).await;
    let (space, path) = (sp("conf"), p(path));
    let object = store.promote(id, size, &space, &path, mode).await.unwrap();
    assert_eq!(
        object.is_some(),
        !store.capabilities().paths,
        "a store without paths names its objects"
    );
    Placed {
        space,
        path,
        object,
    }
}

/// The whole file, as long as its opened version says.
async fn read_all(store: &dyn Store, file: &Placed) -> Vec<u8> {
    let open = store.open_file(file.loc()).await.unwrap();
    let len = open.size();
    collect(open.read(0, len)).await
}

pub async fn promote_no_replace_refuses_existing(store: &dyn Store) {
    let first = place(store, "c4a", "nr/a.txt", b"first", Promote::NoReplace).await;
    assert!(!store.staged_exists("c4a").await.unwrap() || !store.capabilities().paths);
    if !store.capabilities().paths {
        // The metadata holds the namespace: `fail` is the engine's check.
        return;
    }
    let size = stage(store, "c4b", b"second").await;
    let err = store
        .promote("c4b", size, &first.space, &first.path, Promote::NoReplace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    assert_eq!(read_all(store, &first).await, b"first");
    assert!(
        store.staged_exists("c4b").await.unwrap(),
        "the loser stays staged"
    );
    store.discard_staged("c4b").await.unwrap();
}

pub async fn promote_replace_swaps_atomically(store: &dyn Store) {
    let old = place(store, "c5a", "r/a.txt", b"old", Promote::Replace).await;
    let new = place(store, "c5b", "r/a.txt", b"new!", Promote::Replace).await;
    assert_eq!(read_all(store, &new).await, b"new!");
    if !store.capabilities().paths {
        assert_ne!(old.object, new.object, "a new version is a new object");
        assert_eq!(read_all(store, &old).await, b"old");
    }
}

pub async fn promote_creates_folders_and_refuses_file_as_folder(store: &dyn Store) {
    if !store.capabilities().paths {
        return; // no folders in a store without paths
    }
    let s = sp("conf");
    let size = stage(store, "c6a", b"deep").await;
    store
        .promote("c6a", size, &s, &p("f/g/h/i.bin"), Promote::NoReplace)
        .await
        .unwrap();
    assert!(store.file_exists(&s, &p("f/g")).await.unwrap());
    let size = stage(store, "c6b", b"x").await;
    let err = store
        .promote("c6b", size, &s, &p("f/g/h/i.bin/j"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    let err = store
        .promote("c6b", size, &s, &p("f/g"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(_)),
        "a folder is not replaced: {err:?}"
    );
    store.discard_staged("c6b").await.unwrap();
}

pub async fn promote_is_idempotent(store: &dyn Store) {
    let once = place(store, "c7", "idem.bin", b"once", Promote::NoReplace).await;
    for mode in [Promote::NoReplace, Promote::Replace] {
        let again = store
            .promote("c7", 4, &once.space, &once.path, mode)
            .await
            .unwrap();
        assert_eq!(again, once.object, "the same object");
    }
    assert_eq!(read_all(store, &once).await, b"once");
    let err = store
        .promote("never", 1, &once.space, &p("nothing.bin"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn read_file_ranges(store: &dyn Store) {
    let f = place(store, "c8", "range.bin", b"0123456789", Promote::NoReplace).await;
    let part = collect(store.read_file(f.loc(), 3, 4).await.unwrap()).await;
    assert_eq!(part, b"3456");
    let missing = Placed {
        space: sp("conf"),
        path: p("missing.bin"),
        object: f.object.as_ref().map(|_| "no-such-object".to_owned()),
    };
    let err = store.read_file(missing.loc(), 0, 1).await.err().unwrap();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn an_opened_file_keeps_its_version_across_a_replace(store: &dyn Store) {
    let first = place(
        store,
        "c10a",
        "pinned.bin",
        b"old version",
        Promote::Replace,
    )
    .await;
    let old = store.open_file(first.loc()).await.unwrap();
    assert_eq!(old.size(), 11);
    assert!(old.is_current().await.unwrap());
    let second = place(
        store,
        "c10b",
        "pinned.bin",
        b"the new one",
        Promote::Replace,
    )
    .await;
    if store.capabilities().paths {
        assert!(
            !old.is_current().await.unwrap(),
            "the path names another version now"
        );
    } else {
        // The old object leaves the namespace; its bytes stay a while.
        store.retire_file(first.loc()).await.unwrap();
    }
    assert_eq!(collect(old.read(4, 7)).await, b"version");
    let new = store.open_file(second.loc()).await.unwrap();
    assert!(new.is_current().await.unwrap());
    if store.capabilities().paths {
        store.delete_file(second.loc()).await.unwrap();
        assert!(!new.is_current().await.unwrap(), "deleted");
    } else {
        store.retire_file(second.loc()).await.unwrap();
    }
    assert_eq!(collect(new.read(0, 11)).await, b"the new one");
}

pub async fn discard_and_delete_are_idempotent(store: &dyn Store) {
    let f = place(store, "c9", "del.bin", b"bye", Promote::NoReplace).await;
    store.delete_file(f.loc()).await.unwrap();
    store.delete_file(f.loc()).await.unwrap();
    assert!(!store.file_exists(&f.space, &f.path).await.unwrap());
    let err = store.read_file(f.loc(), 0, 3).await.err().expect("gone");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store.discard_staged("c9").await.unwrap();
    store.discard_staged("c9").await.unwrap();
    assert!(!store.staged_exists("c9").await.unwrap());
}

pub async fn copy_between_staged_objects(store: &dyn Store) {
    store.create_staged("c10").await.unwrap();
    store.create_staged("c10-side").await.unwrap();
    write(store, "c10", 0, b"aaaaaaaaaa".to_vec()).await;
    write(store, "c10-side", 0, b"XYZ".to_vec()).await;
    if !store.capabilities().read_staged {
        // Copies only from a sealed upload, and reads none unsealed.
        let err = store
            .copy_staged("c10-side", "c10", 4, 3)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Incomplete(_)), "{err:?}");
        store.seal("c10-side", 3).await.unwrap();
    }
    store.copy_staged("c10-side", "c10", 4, 3).await.unwrap();
    store.seal("c10", 10).await.unwrap();
    let back = collect(store.read_staged("c10", 0, 10).await.unwrap()).await;
    assert_eq!(back, b"aaaaXYZaaa");
    for id in ["c10", "c10-side"] {
        store.discard_staged(id).await.unwrap();
    }
}

/// Collects what a scan feeds it.
struct Collect(Vec<u8>);

impl Sink for Collect {
    fn feed(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

pub async fn scan_feeds_every_byte_in_order(store: &dyn Store) {
    let id = "c11";
    store.create_staged(id).await.unwrap();
    let data = pattern(9 << 20, 11); // more than one read buffer
    write(store, id, 0, data.clone()).await;
    if !store.capabilities().read_staged {
        store.seal(id, data.len() as u64).await.unwrap();
    }
    for (offset, len) in [(0u64, data.len() as u64), (4096, 5_000_000), (12_345, 1000)] {
        let sink = store
            .scan_staged(id, offset, len, Box::new(Collect(Vec::new())))
            .await
            .unwrap();
        let got = sink.into_any().downcast::<Collect>().unwrap().0;
        assert!(
            got == data[offset as usize..(offset + len) as usize],
            "scan of {offset}+{len}"
        );
    }
    let err = store
        .scan_staged(id, 0, data.len() as u64 + 10, Box::new(Collect(Vec::new())))
        .await
        .err()
        .expect("reading past the end fails");
    assert!(
        matches!(err, StoreError::Io { .. } | StoreError::Incomplete(_)),
        "{err:?}"
    );
    store.discard_staged(id).await.unwrap();
}
