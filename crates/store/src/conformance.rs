//! The shared test suite every [`Store`] backend must pass.
//!
//! Call [`run_all`] from a backend's tests with a fresh, empty store. Each
//! check uses its own upload ids and paths, so they can share one store.

use crate::{ByteStream, Promote, Sink, Store, StoreError};
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

pub async fn writes_land_at_their_offsets_in_any_order(store: &dyn Store) {
    let id = "c1";
    store.create_staged(id).await.unwrap();
    let data = pattern(1_000_000, 1);
    let tail = Bytes::copy_from_slice(&data[600_000..]);
    let head = Bytes::copy_from_slice(&data[..600_000]);
    let n = store
        .write_at(id, 600_000, stream::iter([Ok(tail)]).boxed())
        .await
        .unwrap();
    assert_eq!(n, 400_000);
    let n = store
        .write_at(id, 0, stream::iter([Ok(head)]).boxed())
        .await
        .unwrap();
    assert_eq!(n, 600_000);
    let back = collect(store.read_staged(id, 0, 1_000_000).await.unwrap()).await;
    assert!(back == data, "staged bytes differ from what was written");
    let mid = collect(store.read_staged(id, 599_990, 20).await.unwrap()).await;
    assert_eq!(mid, &data[599_990..600_010]);
    assert!(store.list_staged().await.unwrap().contains(&id.to_owned()));
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
        store.write_at(id, (i * 300_000) as u64, stream::iter(parts).boxed())
    });
    for r in futures::future::join_all(writes).await {
        assert_eq!(r.unwrap(), 300_000);
    }
    let back = collect(store.read_staged(id, 0, data.len() as u64).await.unwrap()).await;
    assert!(back == data, "concurrent writes corrupted each other");
    store.discard_staged(id).await.unwrap();
}

pub async fn failed_body_keeps_durable_prefix(store: &dyn Store) {
    let id = "c3";
    store.create_staged(id).await.unwrap();
    let chunks: Vec<Result<Bytes, io::Error>> = vec![
        Ok(Bytes::from(vec![7u8; 300_000])),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
        Ok(Bytes::from_static(b"never")),
    ];
    let err = store
        .write_at(id, 10, stream::iter(chunks).boxed())
        .await
        .unwrap_err();
    assert!(matches!(err.error, StoreError::Body(_)), "{err:?}");
    assert_eq!(
        err.durable, 300_000,
        "every byte before the failure is kept"
    );
    let back = collect(store.read_staged(id, 10, 300_000).await.unwrap()).await;
    assert!(back.iter().all(|&b| b == 7));
    store.discard_staged(id).await.unwrap();
}

pub async fn write_to_unknown_upload_is_not_found(store: &dyn Store) {
    let err = store
        .write_at("never-created", 0, body(vec![b"x"]))
        .await
        .unwrap_err();
    assert!(matches!(err.error, StoreError::NotFound(_)), "{err:?}");
    assert!(!store.staged_exists("never-created").await.unwrap());
}

async fn stage(store: &dyn Store, id: &str, content: &'static [u8]) {
    store.create_staged(id).await.unwrap();
    store.write_at(id, 0, body(vec![content])).await.unwrap();
}

async fn read_all(store: &dyn Store, space: &SpaceName, path: &SpacePath, len: u64) -> Vec<u8> {
    collect(store.read_file(space, path, 0, len).await.unwrap()).await
}

pub async fn promote_no_replace_refuses_existing(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("nr/a.txt"));
    stage(store, "c4a", b"first").await;
    store
        .promote("c4a", &s, &path, Promote::NoReplace)
        .await
        .unwrap();
    assert!(!store.staged_exists("c4a").await.unwrap());
    stage(store, "c4b", b"second").await;
    let err = store
        .promote("c4b", &s, &path, Promote::NoReplace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    assert_eq!(read_all(store, &s, &path, 100).await, b"first");
    assert!(
        store.staged_exists("c4b").await.unwrap(),
        "the loser stays staged"
    );
    store.discard_staged("c4b").await.unwrap();
}

pub async fn promote_replace_swaps_atomically(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("r/a.txt"));
    stage(store, "c5a", b"old").await;
    store
        .promote("c5a", &s, &path, Promote::Replace)
        .await
        .unwrap();
    stage(store, "c5b", b"new!").await;
    store
        .promote("c5b", &s, &path, Promote::Replace)
        .await
        .unwrap();
    assert_eq!(read_all(store, &s, &path, 100).await, b"new!");
}

pub async fn promote_creates_folders_and_refuses_file_as_folder(store: &dyn Store) {
    let s = sp("conf");
    stage(store, "c6a", b"deep").await;
    store
        .promote("c6a", &s, &p("f/g/h/i.bin"), Promote::NoReplace)
        .await
        .unwrap();
    assert!(store.file_exists(&s, &p("f/g")).await.unwrap());
    stage(store, "c6b", b"x").await;
    let err = store
        .promote("c6b", &s, &p("f/g/h/i.bin/j"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    let err = store
        .promote("c6b", &s, &p("f/g"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(_)),
        "a folder is not replaced: {err:?}"
    );
    store.discard_staged("c6b").await.unwrap();
}

pub async fn promote_is_idempotent(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("idem.bin"));
    stage(store, "c7", b"once").await;
    store
        .promote("c7", &s, &path, Promote::NoReplace)
        .await
        .unwrap();
    store
        .promote("c7", &s, &path, Promote::NoReplace)
        .await
        .unwrap();
    store
        .promote("c7", &s, &path, Promote::Replace)
        .await
        .unwrap();
    assert_eq!(read_all(store, &s, &path, 100).await, b"once");
    let err = store
        .promote("never", &s, &p("nothing.bin"), Promote::Replace)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn read_file_ranges(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("range.bin"));
    stage(store, "c8", b"0123456789").await;
    store
        .promote("c8", &s, &path, Promote::NoReplace)
        .await
        .unwrap();
    let part = collect(store.read_file(&s, &path, 3, 4).await.unwrap()).await;
    assert_eq!(part, b"3456");
    let err = store
        .read_file(&s, &p("missing.bin"), 0, 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn an_opened_file_keeps_its_version_across_a_replace(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("pinned.bin"));
    stage(store, "c10a", b"old version").await;
    store
        .promote("c10a", &s, &path, Promote::Replace)
        .await
        .unwrap();
    let old = store.open_file(&s, &path).await.unwrap();
    assert_eq!(old.size(), 11);
    assert!(old.is_current().await.unwrap());
    stage(store, "c10b", b"the new one").await;
    store
        .promote("c10b", &s, &path, Promote::Replace)
        .await
        .unwrap();
    assert!(
        !old.is_current().await.unwrap(),
        "the path names another version now"
    );
    assert_eq!(collect(old.read(4, 7)).await, b"version");
    let new = store.open_file(&s, &path).await.unwrap();
    assert!(new.is_current().await.unwrap());
    store.delete_file(&s, &path).await.unwrap();
    assert!(!new.is_current().await.unwrap(), "deleted");
    assert_eq!(collect(new.read(0, 11)).await, b"the new one");
}

pub async fn discard_and_delete_are_idempotent(store: &dyn Store) {
    let (s, path) = (sp("conf"), p("del.bin"));
    stage(store, "c9", b"bye").await;
    store
        .promote("c9", &s, &path, Promote::NoReplace)
        .await
        .unwrap();
    store.delete_file(&s, &path).await.unwrap();
    store.delete_file(&s, &path).await.unwrap();
    assert!(!store.file_exists(&s, &path).await.unwrap());
    store.discard_staged("c9").await.unwrap();
    store.discard_staged("c9").await.unwrap();
}

pub async fn copy_between_staged_objects(store: &dyn Store) {
    store.create_staged("c10").await.unwrap();
    store.create_staged("c10-side").await.unwrap();
    store
        .write_at("c10", 0, body(vec![b"aaaaaaaaaa"]))
        .await
        .unwrap();
    store
        .write_at("c10-side", 0, body(vec![b"XYZ"]))
        .await
        .unwrap();
    store.copy_staged("c10-side", "c10", 4, 3).await.unwrap();
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
    store
        .write_at(id, 0, stream::iter([Ok(Bytes::from(data.clone()))]).boxed())
        .await
        .unwrap();
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
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    store.discard_staged(id).await.unwrap();
}
