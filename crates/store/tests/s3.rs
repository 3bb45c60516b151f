//! The S3 staging layer against a real S3-compatible server.
//!
//! Needs `FERRY_S3_ENDPOINT` and AWS credentials in the environment
//! (`eval "$(scripts/s3-local.sh)"` starts one on 127.0.0.1); without them
//! the tests say so and pass, unless `FERRY_REQUIRE_S3=1` (CI's S3 stage)
//! makes that a failure.
#![cfg(feature = "s3")]

use bytes::Bytes;
use ferry_store::s3::{MIN_PART, S3Config, S3Staging};
use ferry_store::{BodyLen, ByteStream, StoreError};
use futures::{StreamExt, TryStreamExt, stream};

const CELL: u64 = MIN_PART;

fn endpoint() -> Option<String> {
    match std::env::var("FERRY_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("FERRY_REQUIRE_S3").is_err(),
                "FERRY_REQUIRE_S3 is set but FERRY_S3_ENDPOINT is not"
            );
            eprintln!("SKIPPED: no FERRY_S3_ENDPOINT (eval \"$(scripts/s3-local.sh)\")");
            None
        }
    }
}

/// A fresh bucket and a staging layer on it.
async fn staging(endpoint: &str, name: &str) -> (S3Staging, S3Config) {
    let bucket = format!(
        "ferry-{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut cfg = S3Config::new(&bucket);
    cfg.endpoint = Some(endpoint.to_owned());
    cfg.path_style = true;
    cfg.cell_size = CELL;
    cfg.prefix = "pre/".into();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build(),
    );
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    (S3Staging::connect(&cfg).await.unwrap(), cfg)
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u8).wrapping_mul(31)).wrapping_add(seed) ^ ((i >> 13) as u8))
        .collect()
}

/// `data` as a body of 64 KiB chunks.
fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<_> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks).boxed()
}

/// `data`, then a failure.
fn cut_body(data: &[u8]) -> ByteStream {
    body(data)
        .chain(stream::iter([Err(std::io::Error::other("client gone"))]))
        .boxed()
}

async fn read_all(s: &S3Staging, upload: &str, offset: u64, len: u64) -> Vec<u8> {
    s.read_object(upload, offset, len)
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut v, b| async move {
            v.extend_from_slice(&b);
            Ok(v)
        })
        .await
        .unwrap()
}

async fn write(s: &S3Staging, upload: &str, data: &[u8], a: u64, b: u64) {
    let n = s
        .write_at(
            upload,
            a,
            BodyLen::Exact(b - a),
            body(&data[a as usize..b as usize]),
        )
        .await
        .unwrap();
    assert_eq!(n, b - a);
}

#[tokio::test]
async fn whole_cells_unaligned_pieces_and_any_order_seal_into_the_exact_object() {
    let Some(ep) = endpoint() else { return };
    let (s, _) = staging(&ep, "order").await;
    let size = 2 * CELL + 1_234_567;
    let data = pattern(size, 7);
    s.create("u1").await.unwrap();
    // The last, short cell first; then cell 1 in three unaligned pieces,
    // one of them sent twice; then cell 0 whole.
    write(&s, "u1", &data, 2 * CELL, size).await;
    write(&s, "u1", &data, CELL + 100, CELL + 3_000_000).await;
    write(&s, "u1", &data, CELL + 100, CELL + 3_000_000).await;
    write(&s, "u1", &data, CELL, CELL + 100).await;
    write(&s, "u1", &data, CELL + 3_000_000, 2 * CELL).await;
    write(&s, "u1", &data, 0, CELL).await;
    s.seal("u1", size).await.unwrap();
    assert_eq!(s.object_size("u1").await.unwrap(), Some(size));
    assert!(read_all(&s, "u1", 0, size).await == data, "object differs");
    let mid = read_all(&s, "u1", CELL - 10, 20).await;
    assert_eq!(mid, &data[(CELL - 10) as usize..(CELL + 10) as usize]);
    // Sealing again is a no-op; nothing is left in progress.
    s.seal("u1", size).await.unwrap();
    assert!(s.list_in_progress().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_body_cut_inside_a_piece_keeps_its_prefix_and_inside_a_whole_cell_keeps_none_of_it() {
    let Some(ep) = endpoint() else { return };
    let (s, _) = staging(&ep, "cut").await;
    let data = pattern(2 * CELL, 3);
    s.create("u2").await.unwrap();
    // Unaligned start: a piece; the body fails after 1 MB.
    let e = s
        .write_at(
            "u2",
            10,
            BodyLen::Exact(CELL),
            cut_body(&data[10..1_000_010]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.durable, 1_000_000);
    assert!(matches!(e.error, StoreError::Body(_)), "{e}");
    // A whole cell whose body fails half-way: nothing of it is durable.
    let e = s
        .write_at(
            "u2",
            CELL,
            BodyLen::Exact(CELL),
            cut_body(&data[CELL as usize..(CELL + CELL / 2) as usize]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.durable, 0);
    // The client resumes from what was durable and completes.
    write(&s, "u2", &data, 0, 10).await;
    write(&s, "u2", &data, 1_000_010, CELL).await;
    write(&s, "u2", &data, CELL, 2 * CELL).await;
    s.seal("u2", 2 * CELL).await.unwrap();
    assert!(read_all(&s, "u2", 0, 2 * CELL).await == data);
}

#[tokio::test]
async fn another_node_continues_an_upload_it_never_saw() {
    let Some(ep) = endpoint() else { return };
    let (a, cfg) = staging(&ep, "nodes").await;
    let b = S3Staging::connect(&cfg).await.unwrap();
    let size = CELL + 5;
    let data = pattern(size, 9);
    a.create("u3").await.unwrap();
    write(&a, "u3", &data, 0, 77).await;
    write(&b, "u3", &data, 77, CELL).await;
    write(&b, "u3", &data, CELL, size).await;
    b.seal("u3", size).await.unwrap();
    assert!(read_all(&a, "u3", 0, size).await == data);
}

#[tokio::test]
async fn sealing_with_bytes_missing_is_refused_and_discard_leaves_nothing_behind() {
    let Some(ep) = endpoint() else { return };
    let (s, _) = staging(&ep, "discard").await;
    let data = pattern(CELL + 10, 1);
    s.create("u4").await.unwrap();
    write(&s, "u4", &data, 0, 100).await;
    write(&s, "u4", &data, CELL, CELL + 10).await;
    let e = s.seal("u4", CELL + 10).await.unwrap_err();
    assert!(matches!(e, StoreError::Incomplete(_)), "{e}");
    assert_eq!(s.list_in_progress().await.unwrap().len(), 1);
    s.discard("u4").await.unwrap();
    s.discard("u4").await.unwrap();
    assert!(s.list_in_progress().await.unwrap().is_empty());
    assert_eq!(s.object_size("u4").await.unwrap(), None);
}

#[tokio::test]
async fn a_small_file_in_one_body_is_its_object_at_once_and_any_node_seals_and_reads_it() {
    let Some(ep) = endpoint() else { return };
    let (a, cfg) = staging(&ep, "whole").await;
    let b = S3Staging::connect(&cfg).await.unwrap();
    let data = pattern(4096, 5);
    a.create("w1").await.unwrap();
    let n = a.write_whole("w1", 4096, body(&data)).await.unwrap();
    assert_eq!(n, 4096);
    // The object exists and no multipart upload is left to complete over it.
    assert_eq!(a.object_size("w1").await.unwrap(), Some(4096));
    assert!(a.list_in_progress().await.unwrap().is_empty());
    // Another node (which never saw the upload) seals it and lists it whole.
    b.seal("w1", 4096).await.unwrap();
    let parts = b.stored_parts("w1", 4096).await.unwrap();
    assert_eq!((parts.len(), parts[0].size), (1, 4096));
    assert!(read_all(&b, "w1", 0, 4096).await == data);
    // The same bytes again are answered as written; other bytes are refused.
    let again = b.write_at("w1", 0, BodyLen::Exact(4096), body(&data)).await;
    assert_eq!(again.unwrap(), 4096);
    let other = pattern(4096, 6);
    let e = b
        .write_at("w1", 0, BodyLen::Exact(4096), body(&other))
        .await
        .unwrap_err();
    assert!(matches!(e.error, StoreError::Sealed(_)), "{e}");
    assert!(read_all(&a, "w1", 0, 4096).await == data);
}

#[tokio::test]
async fn a_small_file_whose_one_body_is_cut_keeps_what_came_and_completes_as_usual() {
    let Some(ep) = endpoint() else { return };
    let (s, _) = staging(&ep, "wholecut").await;
    let data = pattern(300_000, 8);
    s.create("w2").await.unwrap();
    let e = s
        .write_whole("w2", 300_000, cut_body(&data[..120_000]))
        .await
        .unwrap_err();
    assert_eq!(e.durable, 120_000);
    // No object yet: the rest arrives and the seal combines the pieces.
    assert_eq!(s.object_size("w2").await.unwrap(), None);
    write(&s, "w2", &data, 120_000, 300_000).await;
    s.seal("w2", 300_000).await.unwrap();
    assert!(read_all(&s, "w2", 0, 300_000).await == data);
    assert!(s.list_in_progress().await.unwrap().is_empty());
}

/// Every key in the bucket of `cfg`.
async fn keys(cfg: &S3Config) -> Vec<String> {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(cfg.endpoint.as_deref().unwrap())
            .force_path_style(true)
            .build(),
    );
    let out = client
        .list_objects_v2()
        .bucket(&cfg.bucket)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_small_upload_never_has_a_multipart_upload_and_any_node_writes_and_seals_it() {
    let Some(ep) = endpoint() else { return };
    let (a, cfg) = staging(&ep, "small").await;
    let (b, c) = (
        S3Staging::connect(&cfg).await.unwrap(),
        S3Staging::connect(&cfg).await.unwrap(),
    );
    let size = 300_000;
    assert!(size <= a.small_size());
    let data = pattern(size, 3);
    // Made on a, as `create_staged_small` makes it: nothing in the bucket,
    // nothing on any node.
    // b never saw it, and writes the first bytes; a writes the rest, cut
    // once (what came is kept) and resumed.
    let n = b
        .write_small(
            "s1",
            0,
            BodyLen::Exact(100_000),
            body(&data[..100_000]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(n, 100_000);
    let e = a
        .write_small(
            "s1",
            100_000,
            BodyLen::Exact(200_000),
            cut_body(&data[100_000..150_000]),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.durable, 50_000);
    let rest = &data[150_000..];
    let n = a
        .write_small("s1", 150_000, BodyLen::Exact(150_000), body(rest), false)
        .await
        .unwrap();
    assert_eq!(n, 150_000);
    assert!(a.list_in_progress().await.unwrap().is_empty());
    // A third node seals it: the pieces become the object, and go.
    c.seal("s1", size).await.unwrap();
    assert!(read_all(&a, "s1", 0, size).await == data);
    assert!(a.list_in_progress().await.unwrap().is_empty());
    assert_eq!(keys(&cfg).await, ["pre/objects/s1"]);
    // Sealed: the same bytes again are answered as written, others refused.
    let again = b
        .write_small("s1", 0, BodyLen::Exact(1000), body(&data[..1000]), false)
        .await;
    assert_eq!(again.unwrap(), 1000);
    let e = b
        .write_small(
            "s1",
            0,
            BodyLen::Exact(1000),
            body(&pattern(1000, 99)),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(e.error, StoreError::Sealed(_)), "{e}");
    // A whole body on a node that did not make the upload: the object, in
    // one PutObject, and still no multipart upload.
    let n = b
        .write_small("s2", 0, BodyLen::Exact(4096), body(&data[..4096]), true)
        .await
        .unwrap();
    assert_eq!(n, 4096);
    c.seal("s2", 4096).await.unwrap();
    assert!(read_all(&c, "s2", 0, 4096).await == data[..4096]);
    assert!(a.list_in_progress().await.unwrap().is_empty());
    // Made before its length was known (a multipart upload, no part):
    // pieces written as a small upload's are completed into it by the
    // seal, on any node.
    a.create("s4").await.unwrap();
    let n = b
        .write_small("s4", 0, BodyLen::Exact(5000), body(&data[..5000]), false)
        .await
        .unwrap();
    assert_eq!(n, 5000);
    c.seal("s4", 5000).await.unwrap();
    assert!(read_all(&a, "s4", 0, 5000).await == data[..5000]);
    assert!(a.list_in_progress().await.unwrap().is_empty());
    // ... and a whole body on another node is the object at once; the
    // multipart upload is never completed over it. Once the file is
    // recorded, start-up recovery finds it listed and discards it, the
    // object kept.
    a.create("s5").await.unwrap();
    b.write_small("s5", 0, BodyLen::Exact(700), body(&data[..700]), true)
        .await
        .unwrap();
    c.seal("s5", 700).await.unwrap();
    assert!(read_all(&a, "s5", 0, 700).await == data[..700]);
    let open: Vec<_> = a.list_in_progress().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].0, "s5");
    b.discard_unsealed("s5").await.unwrap();
    assert!(a.list_in_progress().await.unwrap().is_empty());
    assert!(read_all(&c, "s5", 0, 700).await == data[..700]);
    // Bytes the metadata counted that the bucket lost: not found.
    let n = a
        .write_small("s3", 0, BodyLen::Exact(10), body(&data[..10]), false)
        .await
        .unwrap();
    assert_eq!(n, 10);
    let e = b.seal("s3", 20).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    // Discarded: nothing of it is left.
    b.discard("s3").await.unwrap();
    let left = keys(&cfg).await;
    assert!(left.iter().all(|k| !k.contains("s3")), "{left:?}");
}

#[tokio::test]
async fn an_empty_upload_seals_into_an_empty_object() {
    let Some(ep) = endpoint() else { return };
    let (s, _) = staging(&ep, "empty").await;
    s.create("u5").await.unwrap();
    s.seal("u5", 0).await.unwrap();
    assert_eq!(s.object_size("u5").await.unwrap(), Some(0));
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error_at_the_readiness_check() {
    let Some(ep) = endpoint() else { return };
    let bucket = format!(
        "ferry-absent-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut cfg = S3Config::new(&bucket);
    cfg.endpoint = Some(ep);
    cfg.path_style = true;
    let s = S3Staging::connect(&cfg).await.unwrap();
    let e = s.ready().await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // The check created nothing.
    let e = s.ready().await.unwrap_err();
    assert!(e.to_string().contains(&bucket), "{e}");
}

#[tokio::test]
async fn s3_store_passes_conformance() {
    let Some(endpoint) = endpoint() else { return };
    let (_, cfg) = staging(&endpoint, "conf").await;
    let store = ferry_store::S3Store::connect(&cfg)
        .await
        .unwrap()
        .with_retire_after(std::time::Duration::from_secs(2));
    ferry_store::conformance::run_all(&store).await;
    // Retired objects go once their time is up.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for object in ["c10a", "c10b"] {
        assert_eq!(
            store.staging().object_size(object).await.unwrap(),
            None,
            "{object}"
        );
    }
}
