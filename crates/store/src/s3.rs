//! Staged uploads in S3-compatible object storage.
//!
//! An upload is staged as one S3 multipart upload on its final object key,
//! `<prefix>objects/<upload>`, over a fixed grid of *cells* ([`Grid`]: of
//! `cell_size` bytes, then larger so that the largest file fits)
//! bytes: cell `k` is S3 part `k + 1`. Nothing is kept on a node: whatever a
//! write reports durable is in the bucket, so any node can continue it.
//!
//! - A write that covers a whole cell streams it as that part (no buffer,
//!   no temporary file).
//! - A write that covers part of a cell is stored as a *piece*, a small
//!   object `<prefix>pieces/<upload>/<cell>/<start>-<end>` (absolute
//!   offsets). When a cell's pieces cover it, they are read back in order
//!   and streamed into the cell's part, then deleted. Unaligned bytes thus
//!   cost one extra write and one read in the bucket.
//! - Sealing (commit) uploads the last cell from its pieces and completes
//!   the multipart upload: the object then exists, but belongs to no path
//!   until the metadata says so.
//!
//! Which multipart upload belongs to an upload is found with
//! ListMultipartUploads on its key and cached; the bucket is the source of
//! truth, so a node that never saw the upload finds it too.

use crate::{BodyLen, ByteStream, StoreError, WriteFailure};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Mutex;

/// The smallest S3 part other than the last one.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// The most parts of one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// Bytes per ranged GET of a long read, and how many run at once.
pub const READ_RANGE: u64 = 16 * 1024 * 1024;
pub const READ_AHEAD: usize = 4;

/// Client bodies streaming to the store as parts at once, per node; further ones wait
/// (their clients' bytes wait in the kernel). Each streaming part holds
/// up to ~1 MiB of the SDK's aws-chunked copies (it re-frames the body to
/// send its CRC32 as a trailer) queued in hyper's write buffer while the
/// store is slower than the clients, so memory stays bounded however many
/// uploads arrive at once: 100 concurrent 16 MiB parts into SeaweedFS
/// peaked at 102–112 MiB RSS without the cap.
pub const STREAMING_PARTS: usize = 32;

/// Sealed uploads a node remembers ([`S3Staging`]'s `sealed`): about
/// 100 bytes each.
const SEALED_KEPT: usize = 100_000;

/// Remembers in `sealed` that `upload` is sealed at `size` bytes; past
/// [`SEALED_KEPT`] uploads it starts afresh, so that a node that seals
/// uploads all day keeps a bounded map.
fn remember(sealed: &Mutex<HashMap<String, u64>>, upload: &str, size: u64) {
    let mut sealed = sealed.lock().unwrap();
    if sealed.len() >= SEALED_KEPT && !sealed.contains_key(upload) {
        sealed.clear();
    }
    sealed.insert(upload.to_owned(), size);
}

/// The largest S3 part.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// Where each cell (S3 part) of a staged upload lies: the first
/// `MAX_PARTS / 2` cells are `base` bytes (the configured part size, so
/// parts of ordinary files stream whole), the rest `large`, chosen so that
/// the largest allowed file fits in `MAX_PARTS` parts. Every node must
/// compute the same grid: the same part size and largest file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    base: u64,
    small: u64,
    large: u64,
}

impl Grid {
    pub fn new(base: u64, max_size: u64) -> Result<Grid, StoreError> {
        if !(MIN_PART..=MAX_PART).contains(&base) {
            return Err(StoreError::Config(format!(
                "the S3 part size must be {MIN_PART}..={MAX_PART} bytes"
            )));
        }
        let small = MAX_PARTS / 2;
        let rest = max_size.saturating_sub(small * base);
        let large = rest
            .div_ceil(MAX_PARTS - small)
            .div_ceil(1 << 20)
            .saturating_mul(1 << 20)
            .max(base);
        if large > MAX_PART {
            return Err(StoreError::Config(format!(
                "a file of {max_size} bytes does not fit in {MAX_PARTS} S3 parts"
            )));
        }
        Ok(Grid { base, small, large })
    }

    /// Where cell `k` starts.
    pub fn start(&self, k: u64) -> u64 {
        if k <= self.small {
            k * self.base
        } else {
            self.small * self.base + (k - self.small) * self.large
        }
    }

    /// The bytes of cell `k`.
    pub fn len(&self, k: u64) -> u64 {
        if k < self.small {
            self.base
        } else {
            self.large
        }
    }

    /// The cell that holds byte `at`.
    pub fn cell_of(&self, at: u64) -> u64 {
        let edge = self.small * self.base;
        if at < edge {
            at / self.base
        } else {
            self.small + (at - edge) / self.large
        }
    }

    /// How many cells a file of `size` bytes has (an empty file: one).
    pub fn cells(&self, size: u64) -> u64 {
        if size == 0 {
            1
        } else {
            self.cell_of(size - 1) + 1
        }
    }
}

/// Where the bucket is and how to address it.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (`team/ferry/`); empty for the bucket's root.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which local S3
    /// servers need.
    pub path_style: bool,
    /// Bytes per cell (S3 part) of a staged upload; at least [`MIN_PART`].
    pub cell_size: u64,
    /// The largest file: later cells grow so that it fits in
    /// [`MAX_PARTS`] parts (see [`Grid`]).
    pub max_size: u64,
}

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            endpoint: None,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: false,
            cell_size: 16 * 1024 * 1024,
            max_size: 5 << 40,
        }
    }
}

/// Staged uploads in an S3 bucket; see the module docs.
pub struct S3Staging {
    client: Client,
    bucket: String,
    prefix: String,
    grid: Grid,
    /// Where a browser form POSTs objects: the bucket's URL.
    bucket_url: String,
    region: String,
    /// Signs presigned POST policies (the SDK signs everything else).
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    /// upload → its multipart upload id, as found or created.
    mpus: Mutex<HashMap<String, String>>,
    /// Uploads staged on this node without a multipart upload yet
    /// ([`S3Staging::defer`]): one is started by the first write that
    /// needs it; none ever for a body stored whole.
    deferred: Mutex<std::collections::HashSet<String>>,
    /// upload → size, of uploads this node sealed (a sealed object never
    /// changes; a discard forgets it), so that sealing again is free. A
    /// cache of at most [`SEALED_KEPT`] uploads ([`remember`]): what it
    /// forgot, a seal or a write asks the bucket about.
    sealed: Mutex<HashMap<String, u64>>,
    /// upload → part number → the ETag of the version this node uploaded
    /// last, to tell it from older ones a server lists too.
    etags: Mutex<HashMap<String, HashMap<u64, String>>>,
    /// Permits for [`STREAMING_PARTS`].
    streaming: tokio::sync::Semaphore,
}

/// One part of a multipart upload, as ListParts gives it.
struct Listed {
    size: u64,
    etag: String,
    /// Base64, as S3 sends it.
    sha256: Option<String>,
    modified: Option<(i64, u32)>,
}

/// A key as CopyObject's source wants it: each byte outside the
/// unreserved set (and `/`) percent-encoded.
fn percent_encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `2026-12-03T12:00:00Z`: a policy's expiration, and (without `-` and
/// `:`) its `x-amz-date`.
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    aws_sdk_s3::primitives::DateTime::from_secs(secs as i64)
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
}

/// A base64 SHA-256 as hex.
fn b64_to_hex(b64: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (raw.len() == 32).then(|| raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// One piece of a cell, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    key: String,
    start: u64,
    end: u64,
    /// When it was written (ns since the epoch): where pieces overlap,
    /// the newest bytes are the upload's.
    seq: u64,
}

/// An SDK error, its whole chain in the text (the SDK's `Display` says
/// only "service error"). No answer, a timeout or a 5xx is `Unavailable`.
fn sdk<E>(
    what: impl Into<String>,
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let unavailable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        // 501: the server does not implement what was asked, for good.
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 && status != 501
        }
        _ => false,
    };
    let what = what.into();
    let source = Box::new(std::io::Error::other(
        aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    ));
    if unavailable {
        StoreError::Unavailable { what, source }
    } else {
        StoreError::Remote { what, source }
    }
}

/// The bucket's own URL, where a presigned POST form is sent.
fn bucket_url(cfg: &S3Config) -> String {
    match &cfg.endpoint {
        Some(e) if cfg.path_style => format!("{}/{}", e.trim_end_matches('/'), cfg.bucket),
        Some(e) => match e.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}", cfg.bucket),
            None => format!("{}.{e}", cfg.bucket),
        }
        .trim_end_matches('/')
        .to_owned(),
        None => format!("https://{}.s3.{}.amazonaws.com", cfg.bucket, cfg.region),
    }
}

/// A body of exactly `len` bytes for the SDK, streamed from `chunks`.
fn s3_body(
    chunks: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> S3Body {
    let frames = chunks.map_ok(http_body::Frame::data);
    let body = http_body_util::StreamBody::new(sync_wrapper::SyncStream::new(frames));
    S3Body::from_body_1_x(body)
}

impl S3Staging {
    /// A client for `cfg` with credentials from the standard AWS chain
    /// (environment, profile, instance role…).
    pub async fn connect(cfg: &S3Config) -> Result<S3Staging, StoreError> {
        let grid = Grid::new(cfg.cell_size, cfg.max_size)?;
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()))
            .load()
            .await;
        // An endpoint that does not answer fails fast (then `Unavailable`,
        // 503 to the client) rather than holding requests.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build();
        // A store that takes no byte of a part for 30 s is unavailable;
        // the SDK's 5 s default failed parts of a busy but healthy server
        // (100 concurrent 16 MiB parts into SeaweedFS on 2 cores).
        let stalls = aws_sdk_s3::config::StalledStreamProtectionConfig::enabled()
            .grace_period(std::time::Duration::from_secs(30))
            .build();
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .timeout_config(timeouts)
            .stalled_stream_protection(stalls);
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        Ok(S3Staging {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            grid,
            bucket_url: bucket_url(cfg),
            region: cfg.region.clone(),
            credentials: shared.credentials_provider(),
            mpus: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Default::default()),
            sealed: Mutex::new(HashMap::new()),
            etags: Mutex::new(HashMap::new()),
            streaming: tokio::sync::Semaphore::new(STREAMING_PARTS),
        })
    }

    /// Bytes per cell.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    fn object_key(&self, upload: &str) -> String {
        format!("{}objects/{upload}", self.prefix)
    }

    fn pieces_prefix(&self, upload: &str, cell: u64) -> String {
        format!("{}pieces/{upload}/{cell:010}/", self.prefix)
    }

    /// Checks that the bucket takes a write and a delete.
    pub async fn ready(&self) -> Result<(), StoreError> {
        // Some servers create a bucket on a first write: ask first.
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_not_found() => StoreError::Config(format!(
                    "the bucket {:?} does not exist (NoSuchBucket)",
                    self.bucket
                )),
                _ => sdk(format!("reaching the bucket {:?}", self.bucket), e),
            })?;
        let key = format!("{}ready-check", self.prefix);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(S3Body::from_static(b"ok"))
            .send()
            .await
            .map_err(|e| sdk("writing to the bucket", e))?;
        self.delete_key(&key, "deleting in the bucket").await
    }

    /// Starts the multipart upload of `upload` (a second call in this
    /// process keeps the first).
    pub async fn create(&self, upload: &str) -> Result<(), StoreError> {
        // Ids are fresh: no listing first (a request as costly as the
        // create). Should one be created twice, `find_mpu` takes the
        // oldest and the other is an orphan the sweep aborts.
        if self.mpus.lock().unwrap().contains_key(upload) {
            return Ok(());
        }
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .send()
            .await
            .map_err(|e| sdk("starting a multipart upload", e))?;
        let id = out
            .upload_id
            .ok_or_else(|| StoreError::Config("the S3 server gave no upload id".into()))?;
        self.mpus.lock().unwrap().insert(upload.to_owned(), id);
        Ok(())
    }

    /// Stages `upload` without a multipart upload: its one request writes
    /// it (`Store::create_staged_whole`). `write_whole` stores it in one
    /// `PutObject` with no multipart upload to abort; any other write
    /// starts the multipart upload first.
    pub fn defer(&self, upload: &str) {
        self.deferred.lock().unwrap().insert(upload.to_owned());
    }

    /// Starts the multipart upload of a deferred `upload` before a write
    /// that needs it (nothing for one that was not deferred).
    async fn undefer(&self, upload: &str) -> Result<(), StoreError> {
        if self.deferred.lock().unwrap().contains(upload) {
            self.create(upload).await?;
            self.deferred.lock().unwrap().remove(upload);
        }
        Ok(())
    }

    /// The multipart upload id of `upload`, if it has one.
    async fn find_mpu(&self, upload: &str) -> Result<Option<String>, StoreError> {
        if let Some(id) = self.mpus.lock().unwrap().get(upload) {
            return Ok(Some(id.clone()));
        }
        if self.deferred.lock().unwrap().contains(upload) {
            return Ok(None);
        }
        // Should a create have run twice, the oldest one is the upload's.
        let id = self.list_mpus(upload).await?.into_iter().next();
        if let Some(id) = &id {
            self.mpus
                .lock()
                .unwrap()
                .insert(upload.to_owned(), id.clone());
        }
        Ok(id)
    }

    /// The ids of `upload`'s multipart uploads in progress, oldest first.
    async fn list_mpus(&self, upload: &str) -> Result<Vec<String>, StoreError> {
        let key = self.object_key(upload);
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&key)
            .send()
            .await
            .map_err(|e| sdk("listing multipart uploads", e))?;
        let mut found: Vec<_> = out
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(key.as_str()))
            .filter_map(|u| Some((u.initiated().copied(), u.upload_id()?.to_owned())))
            .collect();
        found.sort_by_key(|(at, _)| at.map(|t| (t.secs(), t.subsec_nanos())));
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    /// Writes `len` bytes of `body` at `offset`; returns what is durable
    /// from `offset` (a body that ends early keeps the pieces it
    /// completed and the bytes of the piece it was in).
    pub async fn write_at(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        let fail = |durable, error| WriteFailure { durable, error };
        self.undefer(upload).await.map_err(|e| fail(0, e))?;
        let mpu = match self.find_mpu(upload).await.map_err(|e| fail(0, e))? {
            Some(mpu) => mpu,
            // Sealed for its commit (which a crash may have cut short):
            // its bytes are all there, and a resend must match them.
            None if self
                .object_size(upload)
                .await
                .map_err(|e| fail(0, e))?
                .is_some() =>
            {
                return self.compare_sealed(upload, offset, body).await;
            }
            None => {
                return Err(fail(
                    0,
                    StoreError::NotFound(format!("staged upload {upload}")),
                ));
            }
        };
        let mut body = Chunks::new(body);
        let mut at = offset;
        let end = offset + len.max();
        // A whole cell streams as its part only when the body is known to
        // fill it: S3 keeps nothing of a part cut short. A body of unknown
        // length goes in pieces, whatever its alignment.
        let exact = matches!(len, BodyLen::Exact(_));
        while at < end {
            let cell = self.grid.cell_of(at);
            let (cell_start, cell_len) = (self.grid.start(cell), self.grid.len(cell));
            let seg_end = end.min(cell_start + cell_len);
            let seg = seg_end - at;
            if exact && at == cell_start && seg == cell_len {
                // A whole cell: streamed as its part. A body that ends
                // inside it keeps nothing of it.
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let part = futures::stream::poll_fn({
                    let mut rx = rx;
                    move |cx| rx.poll_recv(cx)
                });
                // A client's body, at the client's pace: one of the node's
                // `STREAMING_PARTS` (combining pieces, which reads the
                // bucket, takes none, so slow clients never hold up a seal).
                let _streaming = self
                    .streaming
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                let (sent, fed) = tokio::join!(
                    self.upload_part(upload, &mpu, cell, seg, part),
                    body.feed(seg, tx)
                );
                match (sent, fed) {
                    (Ok(()), Ok(())) => {}
                    (_, Err(e)) | (Err(e), Ok(())) => return Err(fail(at - offset, e)),
                }
            } else {
                // Part of a cell: a piece, gathered in memory (at most
                // `MIN_PART` at a time), so a body that ends early still
                // keeps what came.
                let (data, err) = body.gather(seg.min(MIN_PART)).await;
                if !data.is_empty() {
                    let piece_end = at + data.len() as u64;
                    if let Err(e) = self.put_piece(upload, cell, at, piece_end, data).await {
                        return Err(fail(at - offset, e));
                    }
                    if let Err(e) = self.combine_if_full(upload, &mpu, cell).await {
                        return Err(fail(piece_end - offset, e));
                    }
                    at = piece_end;
                }
                match err {
                    // A body shorter than announced: what came is kept.
                    Some(Ended) => return Ok(at - offset),
                    Some(Failed(e)) => return Err(fail(at - offset, e)),
                    None => {}
                }
                continue;
            }
            at = seg_end;
        }
        Ok(at - offset)
    }

    /// The largest *small* upload: one that never needs a multipart
    /// upload, since its bytes fit one `PutObject` and never fill a cell
    /// (see [`S3Staging::write_small`]).
    pub fn small_size(&self) -> u64 {
        MIN_PART.min(self.grid.len(0) - 1)
    }

    /// Writes into a small upload (at most [`S3Staging::small_size`]
    /// bytes, not sent straight to the bucket), which needs no multipart
    /// upload: a body carrying the whole file (`whole`) is stored as the
    /// object by one `PutObject`; what other writes carry becomes pieces,
    /// which become the object when it is sealed. Once an object is there,
    /// a write is compared with it.
    ///
    /// Neither way looks for a multipart upload, so none is listed, made
    /// or aborted. One made before the upload's length was known holds no
    /// part (a part is a whole cell, larger than the file): the seal
    /// completes it when it finds no object; when a whole body made the
    /// object, it stays until start-up recovery aborts it
    /// ([`S3Staging::discard_unsealed`]).
    pub async fn write_small(
        &self,
        upload: &str,
        offset: u64,
        len: BodyLen,
        body: ByteStream,
        whole: bool,
    ) -> Result<u64, WriteFailure> {
        if whole {
            // None of its bytes were received before: no object holds
            // bytes a client was told of, so this one can replace any.
            return self.put_whole(upload, len.max(), body, false).await;
        }
        let fail = |durable, error| WriteFailure { durable, error };
        let sealed = self.sealed.lock().unwrap().contains_key(upload)
            || self
                .object_size(upload)
                .await
                .map_err(|e| fail(0, e))?
                .is_some();
        if sealed {
            return self.compare_sealed(upload, offset, body).await;
        }
        let (data, stop) = Chunks::new(body).gather(len.max().min(MIN_PART)).await;
        let got = data.len() as u64;
        if got > 0 {
            self.put_piece(upload, 0, offset, offset + got, data)
                .await
                .map_err(|e| fail(0, e))?;
        }
        match stop {
            Some(Failed(e)) => Err(fail(got, e)),
            _ => Ok(got),
        }
    }

    /// A whole file of at most [`MIN_PART`] bytes that arrives in one body
    /// before any other: gathered, then stored as the sealed object in one
    /// PutObject, and its multipart upload aborted. No piece, part,
    /// listing or completion follows (about three requests instead of
    /// ten). A body that ends early keeps what came, as a piece.
    pub async fn write_whole(
        &self,
        upload: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        if len == 0 || len > MIN_PART {
            return self.write_at(upload, 0, BodyLen::Exact(len), body).await;
        }
        self.put_whole(upload, len, body, true).await
    }

    /// [`S3Staging::write_whole`] of at most [`MIN_PART`] bytes; `mpu`:
    /// the upload may have a multipart upload (not a small one), which is
    /// aborted, and which takes what came of a body that ends early.
    async fn put_whole(
        &self,
        upload: &str,
        len: u64,
        body: ByteStream,
        mpu: bool,
    ) -> Result<u64, WriteFailure> {
        let fail = |durable, error| WriteFailure { durable, error };
        let (data, stop) = Chunks::new(body).gather(len).await;
        let got = data.len() as u64;
        if got < len || stop.is_some() {
            // What came is kept for a resend, as pieces: a small upload's
            // seal makes them the object; a larger one's multipart upload,
            // which a deferred upload starts now, takes them.
            if mpu {
                self.undefer(upload).await.map_err(|e| fail(0, e))?;
            }
            if got > 0 {
                self.put_piece(upload, 0, 0, got, data)
                    .await
                    .map_err(|e| fail(0, e))?;
            }
            return match stop {
                Some(Failed(e)) => Err(fail(got, e)),
                _ => Ok(got),
            };
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(|e| fail(0, sdk(format!("storing {upload}"), e)))?;
        // The object is the file only once no multipart upload can
        // complete over it: until the abort succeeds, nothing is durable
        // (a retry puts the object again; other writes go to the
        // multipart upload, whose completion replaces the object). A
        // deferred upload has none (`find_mpu` says so without asking);
        // a small one's is never completed over an object.
        if mpu {
            self.abort_mpu(upload).await.map_err(|e| fail(0, e))?;
        }
        self.deferred.lock().unwrap().remove(upload);
        remember(&self.sealed, upload, len);
        Ok(len)
    }

    /// [`crate::Store::create_small_named`]: one `PutObject` of `data` as
    /// the object `name`, sealed (as a look at it would find it: its
    /// commit here seals with no request). A small upload has no multipart
    /// upload, and nothing else is ever stored under a write's own name.
    pub async fn put_whole_named(&self, name: &str, data: Bytes) -> Result<(), StoreError> {
        let size = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(name))
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(|e| sdk(format!("storing {name}"), e))?;
        remember(&self.sealed, name, size);
        Ok(())
    }

    /// A write to a sealed upload: its bytes are compared with the
    /// object's (a resend of what the upload holds is answered as written;
    /// different bytes are refused, and nothing changes).
    async fn compare_sealed(
        &self,
        upload: &str,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, WriteFailure> {
        let fail = |durable, error| WriteFailure { durable, error };
        let size = self
            .object_size(upload)
            .await
            .map_err(|e| fail(0, e))?
            .unwrap_or(0);
        let len = size.saturating_sub(offset);
        let mut stored = Chunks::new(
            self.read_object(upload, offset, len)
                .await
                .map_err(|e| fail(0, e))?,
        );
        let mut seen = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| fail(0, StoreError::Body(e)))?;
            let (have, stop) = stored.gather(chunk.len() as u64).await;
            if have != chunk || matches!(stop, Some(Failed(_))) {
                return Err(fail(
                    0,
                    StoreError::Sealed(format!(
                        "bytes from {} differ from what {upload} holds, sealed for its commit",
                        offset + seen
                    )),
                ));
            }
            seen += chunk.len() as u64;
        }
        Ok(seen)
    }

    fn forget_etags(&self, upload: &str) {
        self.etags.lock().unwrap().remove(upload);
    }

    /// An error of a request on `upload`'s multipart upload: one that is
    /// gone (aborted behind Ferry's back) is `NotFound`, its bytes lost.
    fn mpu_error<E>(
        &self,
        upload: &str,
        what: String,
        e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
    {
        if e.as_service_error()
            .is_some_and(|s| s.code() == Some("NoSuchUpload"))
        {
            self.mpus.lock().unwrap().remove(upload);
            return StoreError::NotFound(format!("the multipart upload of {upload}"));
        }
        sdk(what, e)
    }

    async fn upload_part(
        &self,
        upload: &str,
        mpu: &str,
        cell: u64,
        len: u64,
        body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), StoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .upload_id(mpu)
            .part_number(cell as i32 + 1)
            .content_length(len as i64)
            .body(s3_body(body))
            .send()
            .await
            .map_err(|e| {
                self.mpu_error(
                    upload,
                    format!("uploading part {} of {upload}", cell + 1),
                    e,
                )
            })?;
        if let Some(etag) = out.e_tag {
            let mut etags = self.etags.lock().unwrap();
            etags
                .entry(upload.to_owned())
                .or_default()
                .insert(cell + 1, etag);
        }
        Ok(())
    }

    async fn put_piece(
        &self,
        upload: &str,
        cell: u64,
        start: u64,
        end: u64,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let key = format!(
            "{}{start:020}-{end:020}-{seq:020}",
            self.pieces_prefix(upload, cell)
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(|e| sdk(format!("storing bytes {start}..{end} of {upload}"), e))?;
        Ok(())
    }

    async fn list_pieces(&self, upload: &str, cell: u64) -> Result<Vec<Piece>, StoreError> {
        let prefix = self.pieces_prefix(upload, cell);
        let mut pieces = Vec::new();
        for (key, _) in self.list(&prefix, "listing staged pieces").await? {
            let mut fields = key[prefix.len()..].split('-').map(str::parse::<u64>);
            if let (Some(Ok(start)), Some(Ok(end))) = (fields.next(), fields.next()) {
                let seq = fields.next().and_then(Result::ok).unwrap_or(0);
                pieces.push(Piece {
                    key,
                    start,
                    end,
                    seq,
                });
            }
        }
        Ok(pieces)
    }

    /// The pieces (and the range of each to read) that cover
    /// `start..end` in order, if they do; where pieces overlap, the newest
    /// one's bytes are taken (a range written again).
    fn cover(pieces: &[Piece], start: u64, end: u64) -> Option<Vec<(Piece, u64, u64)>> {
        let mut by_age: Vec<&Piece> = pieces.iter().collect();
        by_age.sort_by_key(|p| p.seq);
        // Disjoint (from, to, piece) segments, in order, newest painted last.
        let mut segs: Vec<(u64, u64, &Piece)> = Vec::new();
        for p in by_age {
            let (a, b) = (p.start.max(start), p.end.min(end));
            if a >= b {
                continue;
            }
            let mut next = Vec::with_capacity(segs.len() + 2);
            for &(s, e, q) in &segs {
                if e <= a || s >= b {
                    next.push((s, e, q));
                    continue;
                }
                if s < a {
                    next.push((s, a, q));
                }
                if e > b {
                    next.push((b, e, q));
                }
            }
            next.push((a, b, p));
            next.sort_by_key(|x| x.0);
            segs = next;
        }
        let mut at = start;
        for &(s, e, _) in &segs {
            if s > at {
                return None; // a hole
            }
            at = at.max(e);
        }
        (at >= end).then(|| {
            segs.into_iter()
                .map(|(s, e, p)| (p.clone(), s, e))
                .collect()
        })
    }

    /// The bytes of a [`S3Staging::cover`], read in order.
    fn read_cover(
        &self,
        cover: Vec<(Piece, u64, u64)>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        futures::stream::iter(cover)
            .then(move |(p, a, b)| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    let out = client
                        .get_object()
                        .bucket(bucket)
                        .key(&p.key)
                        .range(format!("bytes={}-{}", a - p.start, b - p.start - 1))
                        .send()
                        .await
                        .map_err(|e| std::io::Error::other(e.into_service_error()))?;
                    Ok::<_, std::io::Error>(object_stream(out.body))
                }
            })
            .try_flatten()
    }

    /// Uploads cell `cell` from its pieces if they cover `cell..cell_end`
    /// (the whole cell, or up to the file's end for the last one), then
    /// deletes them. Returns whether it did.
    async fn combine(
        &self,
        upload: &str,
        mpu: &str,
        cell: u64,
        cell_end: u64,
    ) -> Result<bool, StoreError> {
        let pieces = self.list_pieces(upload, cell).await?;
        let Some(cover) = Self::cover(&pieces, self.grid.start(cell), cell_end) else {
            return Ok(false);
        };
        let reads = self.read_cover(cover);
        self.upload_part(upload, mpu, cell, cell_end - self.grid.start(cell), reads)
            .await?;
        for p in pieces {
            self.delete_key(&p.key, "deleting a staged piece").await?;
        }
        Ok(true)
    }

    async fn combine_if_full(&self, upload: &str, mpu: &str, cell: u64) -> Result<(), StoreError> {
        match self
            .combine(upload, mpu, cell, self.grid.start(cell + 1))
            .await
        {
            Ok(_) => Ok(()),
            // Another writer combined the cell and deleted a piece this
            // one was reading: the part is there.
            Err(e)
                if self.part_sizes(upload, mpu).await?.get(&(cell + 1))
                    == Some(&self.grid.len(cell)) =>
            {
                tracing::debug!(upload, cell, error = %e, "cell combined by another writer");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The parts uploaded so far, by part number, for a file of `size`
    /// bytes (`None`: not known yet, every cell whole).
    ///
    /// A part sent twice should be listed once, as its latest version
    /// (AWS); some servers (SeaweedFS) list every version, in no order,
    /// and complete with whichever ETag they are given. Of several
    /// versions this takes the one this node uploaded last, else one of
    /// the cell's size, else the latest by `LastModified`: commit then
    /// reads the object back, so a wrong pick fails the digest check
    /// rather than passing unseen.
    async fn parts(
        &self,
        upload: &str,
        mpu: &str,
        size: Option<u64>,
    ) -> Result<HashMap<u64, Listed>, StoreError> {
        let mut versions: HashMap<u64, Vec<Listed>> = HashMap::new();
        let mut pages = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .upload_id(mpu)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| self.mpu_error(upload, format!("listing the parts of {upload}"), e))?;
            for p in page.parts() {
                if let (Some(n), Some(size), Some(etag)) = (p.part_number(), p.size(), p.e_tag()) {
                    versions.entry(n as u64).or_default().push(Listed {
                        size: size as u64,
                        etag: etag.to_owned(),
                        sha256: p.checksum_sha256().map(str::to_owned),
                        modified: p.last_modified().map(|t| (t.secs(), t.subsec_nanos())),
                    });
                }
            }
        }
        let mine = self.etags.lock().unwrap();
        Ok(versions
            .into_iter()
            .map(|(n, mut vs)| {
                let cell = n - 1;
                let want = match size {
                    Some(size) => self.cell_bytes(cell, size),
                    None => self.grid.len(cell),
                };
                let own = mine.get(upload).and_then(|m| m.get(&n));
                let rank = |v: &Listed| (Some(&v.etag) == own, v.size == want, v.modified);
                let mut best = 0;
                for (i, v) in vs.iter().enumerate() {
                    if rank(v) > rank(&vs[best]) {
                        best = i;
                    }
                }
                (n, vs.swap_remove(best))
            })
            .collect())
    }

    async fn part_sizes(&self, upload: &str, mpu: &str) -> Result<HashMap<u64, u64>, StoreError> {
        Ok(self
            .parts(upload, mpu, None)
            .await?
            .into_iter()
            .map(|(n, p)| (n, p.size))
            .collect())
    }

    /// The bytes cell `cell` of a file of `size` bytes holds.
    fn cell_bytes(&self, cell: u64, size: u64) -> u64 {
        size.saturating_sub(self.grid.start(cell))
            .min(self.grid.len(cell))
    }

    /// A presigned UploadPart for the cell that is exactly bytes
    /// `offset..offset + len` of a file of `size` bytes; see
    /// [`crate::Store::presign_part`].
    pub async fn presign_part(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        size: u64,
        sha256: Option<&[u8]>,
        expires_in: std::time::Duration,
    ) -> Result<crate::Presigned, StoreError> {
        let cell = self.grid.cell_of(offset);
        if self.grid.start(cell) != offset || len != self.cell_bytes(cell, size) || len == 0 {
            return Err(StoreError::Unsupported(format!(
                "sending bytes {offset}..{} straight to the bucket: there, parts are the \
                 store's own {} bytes (the last one shorter); make the upload's part size {}",
                offset + len,
                self.grid.len(cell),
                self.grid.len(cell)
            )));
        }
        let mpu = match self.find_mpu(upload).await? {
            Some(mpu) => mpu,
            // A small upload has none until its parts go straight to the
            // bucket (presigning marks it so on every node).
            None if self.object_size(upload).await?.is_none() => {
                self.deferred.lock().unwrap().insert(upload.to_owned());
                self.undefer(upload).await?;
                self.find_mpu(upload).await?.ok_or_else(|| {
                    StoreError::NotFound(format!("the multipart upload of {upload}"))
                })?
            }
            None => {
                return Err(StoreError::Sealed(format!(
                    "{upload} is sealed: its bytes can no longer change"
                )));
            }
        };
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .upload_id(mpu)
            .part_number(cell as i32 + 1)
            .content_length(len as i64);
        if let Some(d) = sha256 {
            use base64::Engine as _;
            req = req.checksum_sha256(base64::engine::general_purpose::STANDARD.encode(d));
        }
        // The client's bytes will be the part's latest version.
        if let Some(mine) = self.etags.lock().unwrap().get_mut(upload) {
            mine.remove(&(cell + 1));
        }
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in)
            .map_err(|e| StoreError::Config(format!("presigning for {expires_in:?}: {e}")))?;
        let p = req
            .presigned(cfg)
            .await
            .map_err(|e| sdk(format!("presigning part {} of {upload}", cell + 1), e))?;
        Ok(crate::Presigned {
            method: p.method().to_owned(),
            url: p.uri().to_owned(),
            headers: p
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// The parts of a file of `size` bytes that the multipart upload holds
    /// (every cell once it is sealed); see [`crate::Store::stored_parts`].
    pub async fn stored_parts(
        &self,
        upload: &str,
        size: u64,
    ) -> Result<Vec<crate::StoredPart>, StoreError> {
        let cells = self.grid.cells(size);
        let part = |cell: u64, size_held: u64, sha256: Option<String>| crate::StoredPart {
            number: cell as u32 + 1,
            offset: self.grid.start(cell),
            expected: self.cell_bytes(cell, size),
            size: size_held,
            sha256,
        };
        // Sealed (by this node or, its cached id stale, another one): the
        // object holds every cell.
        let sealed = || async {
            match self.object_size(upload).await? {
                Some(s) if s == size => Ok((0..cells)
                    .map(|c| part(c, self.cell_bytes(c, size), None))
                    .collect()),
                _ => Err(StoreError::NotFound(format!("staged upload {upload}"))),
            }
        };
        let Some(mpu) = self.find_mpu(upload).await? else {
            return sealed().await;
        };
        let parts = match self.parts(upload, &mpu, Some(size)).await {
            Err(StoreError::NotFound(_)) => return sealed().await,
            other => other?,
        };
        let mut out: Vec<_> = parts
            .into_iter()
            .filter(|(n, _)| (1..=cells).contains(n))
            .map(|(n, p)| part(n - 1, p.size, p.sha256.as_deref().and_then(b64_to_hex)))
            .collect();
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// Completes the upload of `size` bytes into its object: the cells
    /// still in pieces are uploaded, then the parts joined. Idempotent: an
    /// upload already sealed answers `Ok`.
    pub async fn seal(&self, upload: &str, size: u64) -> Result<(), StoreError> {
        if self.sealed.lock().unwrap().get(upload) == Some(&size) {
            return Ok(());
        }
        if size <= self.small_size() {
            return self.seal_small(upload, size).await;
        }
        // The multipart upload may be gone because another node sealed it
        // (this node's cached id is then stale): its object tells.
        match self.seal_mpu(upload, size).await {
            Err(StoreError::NotFound(what)) => match self.object_size(upload).await? {
                Some(s) if s == size => Ok(()),
                _ => Err(StoreError::NotFound(what)),
            },
            other => other,
        }
    }

    /// Seals an upload of at most [`S3Staging::small_size`] bytes: its
    /// object is there already (a write carried the whole file, or another
    /// node sealed it), or it has a multipart upload (made before its
    /// length was known, or for parts sent straight to the bucket), or its
    /// pieces are read and stored as the object in one `PutObject`, then
    /// deleted.
    async fn seal_small(&self, upload: &str, size: u64) -> Result<(), StoreError> {
        match self.object_size(upload).await? {
            Some(s) if s == size => {
                remember(&self.sealed, upload, size);
                return Ok(());
            }
            Some(s) => {
                return Err(StoreError::Sealed(format!(
                    "{upload} is sealed at {s} bytes, not {size}"
                )));
            }
            None => {}
        }
        if self.find_mpu(upload).await?.is_some() {
            return self.seal_mpu(upload, size).await;
        }
        let pieces = self.list_pieces(upload, 0).await?;
        let Some(cover) = Self::cover(&pieces, 0, size) else {
            // The metadata says every byte came: the pieces were removed
            // behind Ferry's back.
            return Err(StoreError::NotFound(format!("staged upload {upload}")));
        };
        let whole: BytesMut =
            self.read_cover(cover)
                .try_collect()
                .await
                .map_err(|e| StoreError::Unavailable {
                    what: format!("reading the pieces of {upload}"),
                    source: Box::new(e),
                })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .body(S3Body::from(whole.freeze()))
            .send()
            .await
            .map_err(|e| sdk(format!("storing {upload}"), e))?;
        self.deferred.lock().unwrap().remove(upload);
        remember(&self.sealed, upload, size);
        for p in pieces {
            self.delete_key(&p.key, "deleting a staged piece").await?;
        }
        Ok(())
    }

    async fn seal_mpu(&self, upload: &str, size: u64) -> Result<(), StoreError> {
        let Some(mpu) = self.find_mpu(upload).await? else {
            return Err(StoreError::NotFound(format!("staged upload {upload}")));
        };
        let cells = self.grid.cells(size);
        let mut parts = self.parts(upload, &mpu, Some(size)).await?;
        let mut changed = false;
        for cell in 0..cells {
            let start = self.grid.start(cell);
            let want = size.saturating_sub(start).min(self.grid.len(cell));
            if parts.get(&(cell + 1)).map(|p| p.size) == Some(want) {
                continue;
            }
            let end = start + want;
            changed = true;
            if want == 0 {
                // An empty file: one empty part.
                self.upload_part(upload, &mpu, 0, 0, futures::stream::empty())
                    .await?;
            } else if !self.combine(upload, &mpu, cell, end).await? {
                return Err(StoreError::Incomplete(format!(
                    "bytes {start}..{end} of {upload} are missing"
                )));
            }
        }
        if changed {
            parts = self.parts(upload, &mpu, Some(size)).await?;
        }
        let mut done: Vec<_> = parts
            .into_iter()
            .filter(|(n, _)| *n <= cells)
            .map(|(n, p)| {
                CompletedPart::builder()
                    .part_number(n as i32)
                    .e_tag(p.etag)
                    .build()
            })
            .collect();
        done.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .upload_id(&mpu)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.mpu_error(upload, format!("completing {upload}"), e))?;
        self.mpus.lock().unwrap().remove(upload);
        self.forget_etags(upload);
        remember(&self.sealed, upload, size);
        Ok(())
    }

    /// The size of `upload`'s sealed object, if it exists.
    pub async fn object_size(&self, upload: &str) -> Result<Option<u64>, StoreError> {
        let head = self.head_object(upload).await?;
        Ok(head.map(|o| o.content_length().unwrap_or(0) as u64))
    }

    /// The `HeadObject` of `upload`'s object, if it exists.
    async fn head_object(
        &self,
        upload: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .send()
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk(format!("reading the object of {upload}"), e)),
        }
    }

    /// Streams `len` bytes of the sealed object of `upload` from `offset`,
    /// in order, with up to [`READ_AHEAD`] ranged GETs of [`READ_RANGE`]
    /// bytes in flight (one GET stream is slower than the store: a
    /// commit's read-back and a large download run several). The GETs
    /// ahead are flow-controlled by their connections: memory stays small.
    pub async fn read_object_ahead(
        self: &std::sync::Arc<Self>,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        if len <= READ_RANGE {
            return self.read_object(upload, offset, len).await;
        }
        let end = offset + len;
        let (this, upload) = (self.clone(), upload.to_owned());
        let mut gets = futures::stream::iter((offset..end).step_by(READ_RANGE as usize))
            .map(move |at| {
                let (this, upload) = (this.clone(), upload.clone());
                async move {
                    this.read_object(&upload, at, READ_RANGE.min(end - at))
                        .await
                }
            })
            .buffered(READ_AHEAD);
        // The first answer says whether the object is there at all; the
        // GETs after it are on their way meanwhile.
        let first = gets.next().await.expect("at least one range")?;
        let rest = gets.map_err(std::io::Error::other).try_flatten();
        Ok(first.chain(rest).boxed())
    }

    /// Streams `len` bytes of the sealed object of `upload` from `offset`
    /// (one ranged GET, read as it arrives).
    pub async fn read_object(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => StoreError::NotFound(format!("object {upload}")),
                _ if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                    StoreError::Incomplete(format!(
                        "bytes from {offset} are past the end of {upload}"
                    ))
                }
                _ => sdk(format!("reading {upload}"), e),
            })?;
        // S3 clips a range to the object's end: fewer bytes is an error.
        if out.content_length() != Some(len as i64) {
            return Err(StoreError::Incomplete(format!(
                "{upload} holds fewer than the {len} bytes read from {offset}"
            )));
        }
        Ok(object_stream(out.body).boxed())
    }

    fn posted_prefix(&self, folder: &str) -> String {
        format!("{}posted/{folder}/", self.prefix)
    }

    /// A presigned POST policy (SigV4) for objects `posted/<folder>/<name>`
    /// of at most `max` bytes, valid for `expires_in`; see
    /// [`crate::Store::presign_post`].
    pub async fn presign_post(
        &self,
        folder: &str,
        max: u64,
        expires_in: std::time::Duration,
    ) -> Result<crate::PostForm, StoreError> {
        use aws_sdk_s3::config::ProvideCredentials;
        use base64::Engine as _;
        let creds = self
            .credentials
            .clone()
            .ok_or_else(|| StoreError::Config("no S3 credentials to sign a form with".into()))?
            .provide_credentials()
            .await
            .map_err(|e| StoreError::Config(format!("S3 credentials: {e}")))?;
        let now = std::time::SystemTime::now();
        let date: String = rfc3339(now)
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let expiration = rfc3339(now + expires_in);
        let credential = format!(
            "{}/{}/{}/s3/aws4_request",
            creds.access_key_id(),
            &date[..8],
            self.region
        );
        let prefix = self.posted_prefix(folder);
        let mut conditions = vec![
            serde_json::json!({"bucket": self.bucket}),
            serde_json::json!(["starts-with", "$key", prefix]),
            serde_json::json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}),
            serde_json::json!({"x-amz-credential": credential}),
            serde_json::json!({"x-amz-date": date}),
            serde_json::json!(["content-length-range", 0, max]),
        ];
        if let Some(token) = creds.session_token() {
            conditions.push(serde_json::json!({"x-amz-security-token": token}));
        }
        let doc = serde_json::json!({"expiration": expiration, "conditions": conditions});
        let policy = base64::engine::general_purpose::STANDARD.encode(doc.to_string());
        let key = aws_sigv4::sign::v4::generate_signing_key(
            creds.secret_access_key(),
            now,
            &self.region,
            "s3",
        );
        let signature = aws_sigv4::sign::v4::calculate_signature(key, policy.as_bytes());
        let mut fields = vec![
            ("key".to_owned(), format!("{prefix}${{filename}}")),
            ("policy".to_owned(), policy),
            ("x-amz-algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
            ("x-amz-credential".to_owned(), credential),
            ("x-amz-date".to_owned(), date),
            ("x-amz-signature".to_owned(), signature),
        ];
        if let Some(token) = creds.session_token() {
            fields.push(("x-amz-security-token".to_owned(), token.to_owned()));
        }
        Ok(crate::PostForm {
            url: self.bucket_url.clone(),
            fields,
        })
    }

    /// Objects POSTed into `folder`: (name, size).
    pub async fn posted(&self, folder: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = self.posted_prefix(folder);
        Ok(self
            .list_sized(&prefix, "listing posted objects")
            .await?
            .into_iter()
            .filter_map(|(key, _, size)| Some((key.strip_prefix(&prefix)?.to_owned(), size)))
            .collect())
    }

    /// A posted object, whole, if it holds at most `max` bytes.
    pub async fn read_posted(
        &self,
        folder: &str,
        name: &str,
        max: u64,
    ) -> Result<Bytes, StoreError> {
        let key = format!("{}{name}", self.posted_prefix(folder));
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => StoreError::NotFound(format!("posted {name}")),
                _ => sdk(format!("reading posted {name}"), e),
            })?;
        if out.content_length().unwrap_or(0) as u64 > max {
            return Err(StoreError::Incomplete(format!(
                "{name} is over {max} bytes"
            )));
        }
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Body(std::io::Error::other(e)))?;
        Ok(data.into_bytes())
    }

    /// Makes the posted object `name` the sealed upload `upload` (a copy
    /// inside the bucket; the posted object and the upload's multipart
    /// upload go); returns its size.
    pub async fn adopt_posted(
        &self,
        folder: &str,
        name: &str,
        upload: &str,
    ) -> Result<u64, StoreError> {
        let key = format!("{}{name}", self.posted_prefix(folder));
        let source = format!("{}/{}", self.bucket, percent_encode_key(&key));
        let copied = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .copy_source(source)
            .send()
            .await;
        match copied {
            Ok(_) => {}
            // Gone meanwhile (another request adopted it).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.meta().code() == Some("NoSuchKey")) =>
            {
                return Err(StoreError::NotFound(format!("posted {name}")));
            }
            Err(e) => return Err(sdk(format!("adopting posted {name}"), e)),
        }
        let size = self
            .object_size(upload)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("posted {name}")))?;
        self.abort_mpu(upload).await?;
        remember(&self.sealed, upload, size);
        Ok(size)
    }

    /// Deletes the posted file `name` of `folder` (idempotent).
    pub async fn forget_posted(&self, folder: &str, name: &str) -> Result<(), StoreError> {
        let key = format!("{}{name}", self.posted_prefix(folder));
        self.delete_key(&key, "deleting a posted object").await
    }

    /// Deletes every object posted into `folder`.
    pub async fn discard_posted(&self, folder: &str) -> Result<(), StoreError> {
        for (key, _) in self
            .list(&self.posted_prefix(folder), "listing posted objects")
            .await?
        {
            self.delete_key(&key, "deleting a posted object").await?;
        }
        Ok(())
    }

    async fn delete_key(&self, key: &str, what: impl Into<String>) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk(what, e))?;
        Ok(())
    }

    /// Aborts `upload`'s multipart upload, if it has one (one already gone
    /// is fine); a sealed object stays.
    async fn abort_mpu(&self, upload: &str) -> Result<(), StoreError> {
        let Some(mpu) = self.find_mpu(upload).await? else {
            return Ok(());
        };
        self.abort_mpu_id(upload, &mpu).await?;
        self.mpus.lock().unwrap().remove(upload);
        Ok(())
    }

    /// Aborts multipart upload `mpu` of `upload` (one already gone is
    /// aborted).
    async fn abort_mpu_id(&self, upload: &str, mpu: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.object_key(upload))
            .upload_id(mpu)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(sdk(format!("aborting {upload}"), e)),
        }
    }

    /// Aborts the multipart upload, deletes its pieces and any sealed
    /// object (idempotent).
    pub async fn discard(&self, upload: &str) -> Result<(), StoreError> {
        self.sealed.lock().unwrap().remove(upload);
        self.forget_etags(upload);
        self.abort_mpu(upload).await?;
        self.deferred.lock().unwrap().remove(upload);
        self.delete_pieces(upload).await?;
        self.delete_key(
            &self.object_key(upload),
            format!("deleting what {upload} staged"),
        )
        .await
    }

    /// Aborts every multipart upload of `upload` and deletes its pieces,
    /// keeping its object: for an upload whose file is recorded, yet which
    /// a multipart upload or pieces outlived (a create sent twice; one made
    /// before a small upload's length was known, when a whole body made the
    /// object; pieces whose delete a crash cut off after a seal, or of a
    /// write never recorded). Idempotent.
    pub async fn discard_unsealed(&self, upload: &str) -> Result<(), StoreError> {
        for mpu in self.list_mpus(upload).await? {
            self.abort_mpu_id(upload, &mpu).await?;
        }
        self.mpus.lock().unwrap().remove(upload);
        self.forget_etags(upload);
        self.delete_pieces(upload).await
    }

    /// The uploads that have pieces under the prefix.
    pub async fn list_piece_owners(&self) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{}pieces/", self.prefix);
        let mut owners: Vec<String> = self
            .list(&prefix, "listing staged pieces")
            .await?
            .into_iter()
            .filter_map(|(key, _)| {
                let rest = &key[prefix.len()..];
                rest.split_once('/').map(|(upload, _)| upload.to_owned())
            })
            .collect();
        owners.dedup();
        Ok(owners)
    }

    async fn delete_pieces(&self, upload: &str) -> Result<(), StoreError> {
        let prefix = format!("{}pieces/{upload}/", self.prefix);
        for (key, _) in self.list(&prefix, "listing staged pieces").await? {
            self.delete_key(&key, format!("deleting what {upload} staged"))
                .await?;
        }
        Ok(())
    }

    /// Deletes the sealed object of `upload` (idempotent).
    pub async fn delete_object(&self, upload: &str) -> Result<(), StoreError> {
        self.sealed.lock().unwrap().remove(upload);
        self.delete_key(&self.object_key(upload), format!("deleting {upload}"))
            .await
    }

    /// Whether this node sealed `upload` (its object holds its bytes).
    pub fn sealed_here(&self, upload: &str) -> bool {
        self.sealed.lock().unwrap().contains_key(upload)
    }

    /// Whether `upload` has a multipart upload in progress.
    pub async fn in_progress(&self, upload: &str) -> Result<bool, StoreError> {
        Ok(self.find_mpu(upload).await?.is_some())
    }

    /// Every key under `prefix`, with when it was written (ms since the
    /// epoch), all pages; `what` names the listing in errors.
    async fn list(&self, prefix: &str, what: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .list_sized(prefix, what)
            .await?
            .into_iter()
            .map(|(key, at, _)| (key, at))
            .collect())
    }

    /// Keys under `prefix` with when each was written and its size.
    async fn list_sized(
        &self,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<(String, i64, u64)>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk(what, e))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    let at = o
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0);
                    out.push((key.to_owned(), at, o.size().unwrap_or(0) as u64));
                }
            }
        }
        Ok(out)
    }

    /// Sealed objects under the prefix, as (upload, last modified in ms
    /// since the epoch).
    pub async fn list_objects(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let prefix = format!("{}objects/", self.prefix);
        let all = self.list(&prefix, "listing objects").await?;
        Ok(all
            .into_iter()
            .map(|(key, at)| (key[prefix.len()..].to_owned(), at))
            .collect())
    }

    /// Multipart uploads in progress under the prefix, as (upload, id):
    /// what a sweep compares with the metadata.
    pub async fn list_in_progress(&self) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = format!("{}objects/", self.prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| sdk("listing multipart uploads", e))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k[prefix.len()..].to_owned(), id.to_owned()));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
        }
    }
}

/// An S3 response body as a stream of chunks.
fn object_stream(
    body: S3Body,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::try_unfold(body, |mut b| async move {
        match b.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, b))),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(e)),
        }
    })
}

/// Why a gather stopped short.
enum Stop {
    /// The body ended: what came is all there is.
    Ended,
    Failed(StoreError),
}
use Stop::{Ended, Failed};

/// A request body consumed in segments.
struct Chunks {
    body: ByteStream,
    /// Bytes read from `body` but not yet handed out.
    held: Option<Bytes>,
}

impl Chunks {
    fn new(body: ByteStream) -> Chunks {
        Chunks { body, held: None }
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        match self.held.take() {
            Some(b) => Some(Ok(b)),
            None => self.body.next().await,
        }
    }

    /// Gathers up to `n` bytes; stops early at the body's end or error.
    async fn gather(&mut self, n: u64) -> (Bytes, Option<Stop>) {
        let mut buf = BytesMut::new();
        while (buf.len() as u64) < n {
            match self.next().await {
                Some(Ok(mut b)) => {
                    let want = (n - buf.len() as u64) as usize;
                    if b.len() > want {
                        self.held = Some(b.split_off(want));
                    }
                    buf.extend_from_slice(&b);
                }
                Some(Err(e)) => return (buf.freeze(), Some(Failed(StoreError::Body(e)))),
                None => return (buf.freeze(), Some(Ended)),
            }
        }
        (buf.freeze(), None)
    }

    /// Sends the next `n` bytes into `tx`, for one part upload; if the
    /// body ends early or fails, the part's stream ends in an error, so
    /// that the part is not stored short.
    async fn feed(
        &mut self,
        n: u64,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), StoreError> {
        let mut sent = 0u64;
        while sent < n {
            let chunk = match self.next().await {
                Some(Ok(mut b)) => {
                    let want = (n - sent) as usize;
                    if b.len() > want {
                        self.held = Some(b.split_off(want));
                    }
                    b
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(std::io::Error::other("the body failed"))).await;
                    return Err(StoreError::Body(e));
                }
                None => {
                    let _ = tx
                        .send(Err(std::io::Error::other("the body ended early")))
                        .await;
                    return Err(StoreError::Body(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the body ended early",
                    )));
                }
            };
            sent += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                // The part upload stopped; its error is the answer.
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_sealed_uploads_a_node_remembers_stay_bounded() {
        let sealed = Mutex::new(HashMap::new());
        for k in 0..SEALED_KEPT + 10 {
            remember(&sealed, &format!("u{k}"), 7);
        }
        let kept = sealed.lock().unwrap();
        assert!(kept.len() <= SEALED_KEPT, "{}", kept.len());
        assert_eq!(kept.get(&format!("u{}", SEALED_KEPT + 9)), Some(&7));
    }

    #[test]
    fn where_pieces_overlap_the_newest_bytes_win_and_holes_do_not_cover() {
        let p = |start, end, seq| Piece {
            key: format!("{start}-{end}-{seq}"),
            start,
            end,
            seq,
        };
        let got = |pieces: &[Piece], a, b| {
            S3Staging::cover(pieces, a, b).map(|v| {
                v.into_iter()
                    .map(|(p, s, e)| (p.seq, s, e))
                    .collect::<Vec<_>>()
            })
        };
        // 0..10 written, then 4..7 again: the rewrite shows through.
        let pieces = [p(0, 10, 1), p(4, 7, 2)];
        assert_eq!(
            got(&pieces, 0, 10),
            Some(vec![(1, 0, 4), (2, 4, 7), (1, 7, 10)])
        );
        // An older piece under a newer one is hidden wholly.
        let pieces = [p(4, 7, 1), p(0, 10, 2)];
        assert_eq!(got(&pieces, 0, 10), Some(vec![(2, 0, 10)]));
        // A hole is not covered; a partial range is.
        let pieces = [p(0, 4, 1), p(5, 10, 2)];
        assert_eq!(got(&pieces, 0, 10), None);
        assert_eq!(got(&pieces, 5, 8), Some(vec![(2, 5, 8)]));
    }

    #[test]
    fn the_largest_file_fits_in_10000_parts_and_cells_tile_the_file() {
        for (base, max) in [
            (16 * MIB, 5u64 << 40),
            (5 * MIB, 5 * MIB * 100),
            (16 * MIB, 1 << 30),
        ] {
            let g = Grid::new(base, max).unwrap();
            assert!(g.cells(max) <= MAX_PARTS, "{base} {max}: {}", g.cells(max));
            assert_eq!(g.len(0), base, "ordinary parts keep the configured size");
            for k in [0, 1, 4_999, 5_000, 5_001, 9_998] {
                assert_eq!(g.start(k) + g.len(k), g.start(k + 1), "cell {k}");
                assert_eq!(g.cell_of(g.start(k)), k);
                assert_eq!(g.cell_of(g.start(k + 1) - 1), k);
                assert!(g.len(k) >= MIN_PART && g.len(k) <= MAX_PART);
            }
        }
        assert_eq!(Grid::new(16 * MIB, 5 << 40).unwrap().cells(0), 1);
        assert!(Grid::new(4 * MIB, 1 << 30).is_err(), "parts under 5 MiB");
        assert!(
            Grid::new(16 * MIB, 1 << 50).is_err(),
            "a file that cannot fit"
        );
    }
}
