//! UCloud's upload protocols (`files.createUpload` and the data endpoints
//! it hands out), onto the engine.
//!
//! - `POST /api/files/upload` is the bulk create: each FILE item becomes a
//!   one-upload session, each FOLDER item an open-ended session whose
//!   uploads arrive as LISTING entries over a WebSocket. The answer's
//!   `token` is signed by the server and grants that one upload (FILE) or
//!   session (FOLDER), nothing else.
//! - `POST /ucloud/chunked` is CHUNKED: raw bytes at `Chunked-Upload-Offset`.
//! - `GET /ucloud/file` is the single-file WebSocket ([`ws_file`]).
//! - `GET /ucloud/folder` is the folder WebSocket ([`ws_folder`], binary
//!   messages in [`wire`]).
//!
//! Every session has a sliding expiry (`idle_secs` past the last write,
//! 30 minutes by default) and a lifetime cap (`max_lifetime_secs`,
//! 48 hours). There is no commit call in UCloud: a FILE upload commits
//! with its last byte (`CommitMode::OnLastByte`), a folder's files are committed in
//! batches as they finish. docs/UCLOUD.md is the contract.

mod queue;
pub(crate) mod wire;
mod ws_file;
mod ws_folder;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_core::{ConflictPolicy, Session, StateError};
use ferry_engine::{Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, WriteAt};
use serde::Deserialize;
use serde_json::json;

/// Most bytes one CHUNKED request may carry (UCloud: "at most 32MB").
pub const MAX_CHUNK: u64 = 32_000_000;

/// What the UCloud handlers share.
#[derive(Clone)]
pub struct UcloudState {
    pub engine: Engine,
    /// Base of the absolute endpoints handed out (no trailing slash).
    pub public_url: String,
    /// A session lives at least this long after its last write.
    pub idle_secs: u64,
    /// ... and never longer than this from its creation.
    pub max_lifetime_secs: u64,
}

pub fn router(state: UcloudState) -> Router {
    let routes = Router::new()
        .route("/api/files/upload", post(create))
        .route(
            "/api/files/{*rest}",
            axum::routing::any(ferry_http::no_route),
        )
        .route("/ucloud/chunked", post(chunk))
        .route("/ucloud/file", get(ws_file::upgrade))
        .route("/ucloud/folder", get(ws_folder::upgrade))
        .route("/ucloud/{*rest}", axum::routing::any(ferry_http::no_route))
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// UCloud's format for an answer the framework made (a refused
/// WebSocket upgrade, a bad query, a route that is not there).
fn render_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::PAYLOAD_TOO_LARGE => "TOO_LARGE",
        s if s.is_server_error() => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    };
    UcloudError::new(status, code, message).into_response()
}

/// UCloud's `CommonErrorMessage`: `{"why","errorCode"}`.
#[derive(Debug)]
pub struct UcloudError {
    pub status: StatusCode,
    pub code: &'static str,
    pub why: String,
}

impl UcloudError {
    fn new(status: StatusCode, code: &'static str, why: impl Into<String>) -> UcloudError {
        UcloudError {
            status,
            code,
            why: why.into(),
        }
    }

    fn bad(why: impl Into<String>) -> UcloudError {
        UcloudError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", why)
    }

    /// A WebSocket that broke the WebSocket protocol itself (a frame
    /// over the size limit, a malformed frame): closed with 1008.
    fn violation(why: impl std::fmt::Display) -> UcloudError {
        UcloudError::new(
            StatusCode::BAD_REQUEST,
            "PROTOCOL_VIOLATION",
            format!("the WebSocket broke the protocol: {why}"),
        )
    }

    /// The WebSocket close code of this error: 1008 (policy violation)
    /// for a broken WebSocket protocol, else 4000 + the HTTP status.
    fn close_code(&self) -> u16 {
        if self.code == "PROTOCOL_VIOLATION" {
            1008
        } else {
            4000 + self.status.as_u16()
        }
    }
}

impl From<EngineError> for UcloudError {
    fn from(e: EngineError) -> Self {
        let status = ferry_http::status_of(&e);
        let (status, code) = match &e {
            EngineError::Unauthenticated(_) => (status, "UNAUTHENTICATED"),
            EngineError::Forbidden(_) => (status, "PERMISSION_DENIED"),
            EngineError::NotFound(_) => (status, "NOT_FOUND"),
            EngineError::AlreadyExists { .. } => (status, "ALREADY_EXISTS"),
            // A session that is gone is, to UCloud, a session that is not
            // there: start over with a new createUpload.
            EngineError::Gone(StateError::Expired) => (StatusCode::NOT_FOUND, "SESSION_EXPIRED"),
            EngineError::Gone(StateError::Aborted | StateError::Failed) => {
                (StatusCode::NOT_FOUND, "SESSION_ENDED")
            }
            EngineError::Gone(_) => (status, "ALREADY_COMPLETE"),
            EngineError::OffsetMismatch { .. } | EngineError::RangeNotSatisfiable(_) => {
                (StatusCode::CONFLICT, "BAD_OFFSET")
            }
            EngineError::Conflict(_) | EngineError::Unsupported(_) => (status, "CONFLICT"),
            EngineError::TooLarge { .. } => (status, "TOO_LARGE"),
            EngineError::TooManySessions { .. } => (status, "TOO_MANY_SESSIONS"),
            EngineError::InsufficientStorage(_) => (status, "QUOTA_EXCEEDED"),
            EngineError::Rejected { .. } => (status, "PERMISSION_DENIED"),
            e if ferry_http::is_internal(e) => (status, "INTERNAL_ERROR"),
            _ => (status, "BAD_REQUEST"),
        };
        UcloudError::new(status, code, ferry_http::public_message(&e))
    }
}

impl IntoResponse for UcloudError {
    fn into_response(self) -> Response {
        let body = json!({"why": self.why, "errorCode": self.code});
        ferry_http::rendered((self.status, axum::Json(body)).into_response())
    }
}

type UcloudResult = Result<Response, UcloudError>;

/// What a data token grants.
enum Grant {
    /// A FILE item: its one upload.
    File { upload: String, caller: Caller },
    /// A FOLDER item: its open-ended session, and the folder (in the
    /// session's space) its LISTING paths are relative to.
    Folder {
        session: String,
        folder: String,
        caller: Caller,
    },
}

fn file_token(engine: &Engine, upload: &str) -> String {
    format!("u{upload}.{}", engine.sign_upload(upload))
}

/// The signed text of a folder token: the session and its folder.
fn folder_claim(session: &str, folder_hex: &str) -> String {
    format!("{session}/{folder_hex}")
}

fn folder_token(engine: &Engine, session: &str, folder: &str) -> String {
    let folder_hex = hex::encode(folder);
    let sig = engine.sign_session(&folder_claim(session, &folder_hex));
    format!("s{session}.{folder_hex}.{sig}")
}

/// A data token's claim, read before its signature is checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim<'a> {
    /// `u<upload>.<sig>`.
    File { upload: &'a str, sig: &'a str },
    /// `s<session>.<folder hex>.<sig>`.
    Folder {
        session: &'a str,
        folder_hex: &'a str,
        folder: String,
        sig: &'a str,
    },
}

/// Reads a data token: `u<upload>.<sig>`, or `s<session>.<folder>.<sig>`
/// (the folder hex-encoded UTF-8).
pub(crate) fn parse_token(token: &str) -> Result<Claim<'_>, UcloudError> {
    let malformed = || {
        UcloudError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_TOKEN",
            "the upload token is malformed",
        )
    };
    let (head, sig) = token.trim().rsplit_once('.').ok_or_else(malformed)?;
    match head.split_at_checked(1) {
        Some(("u", upload)) if !upload.is_empty() => Ok(Claim::File { upload, sig }),
        Some(("s", rest)) => {
            let (session, folder_hex) = rest.split_once('.').ok_or_else(malformed)?;
            let folder = hex::decode(folder_hex)
                .ok()
                .and_then(|f| String::from_utf8(f).ok())
                .ok_or_else(malformed)?;
            if session.is_empty() {
                return Err(malformed());
            }
            Ok(Claim::Folder {
                session,
                folder_hex,
                folder,
                sig,
            })
        }
        _ => Err(malformed()),
    }
}

/// Checks a data token (see [`parse_token`]; the folder is signed with
/// the session). A token of the right shape whose signature does not
/// match names nothing of yours: `404`.
fn grant(engine: &Engine, token: &str) -> Result<Grant, UcloudError> {
    let unknown = |_| {
        UcloudError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no upload session for this token",
        )
    };
    match parse_token(token)? {
        Claim::File { upload, sig } => Ok(Grant::File {
            upload: upload.to_owned(),
            caller: engine.verify_upload_sig(upload, sig).map_err(unknown)?,
        }),
        Claim::Folder {
            session,
            folder_hex,
            folder,
            sig,
        } => {
            engine
                .verify_session_sig(&folder_claim(session, folder_hex), sig)
                .map_err(unknown)?;
            Ok(Grant::Folder {
                session: session.to_owned(),
                folder,
                caller: Caller::Session(session.to_owned()),
            })
        }
    }
}

/// A session past its lifetime cap takes no more bytes (its sliding
/// expiry would otherwise keep it alive as long as bytes come).
fn check_lifetime(st: &UcloudState, session: &Session) -> Result<(), UcloudError> {
    check_cap(st, session.created_at)?;
    session
        .state
        .check_writable()
        .map_err(|e| EngineError::Gone(e).into())
}

/// The lifetime cap alone, for a connection that goes on writing to a
/// session it checked when it opened.
fn check_cap(st: &UcloudState, created_at: ferry_core::Millis) -> Result<(), UcloudError> {
    let cap = created_at + (st.max_lifetime_secs as i64) * 1000;
    if ferry_engine::now_ms() >= cap {
        return Err(EngineError::Gone(StateError::Expired).into());
    }
    Ok(())
}

/// `{ "items": [ … ] }`.
#[derive(Deserialize)]
pub(crate) struct CreateBody {
    items: Vec<CreateItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateItem {
    id: String,
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    supported_protocols: Vec<String>,
    conflict_policy: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum Kind {
    File,
    Folder,
}

/// UCloud's `WriteConflictPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Rename,
    Reject,
    Replace,
    MergeRename,
}

impl Policy {
    fn parse(raw: Option<&str>) -> Result<Policy, UcloudError> {
        Ok(match raw {
            // The web client's default.
            None | Some("RENAME") => Policy::Rename,
            Some("REJECT") => Policy::Reject,
            Some("REPLACE") | Some("OVERWRITE") => Policy::Replace,
            Some("MERGE_RENAME") | Some("MERGE") => Policy::MergeRename,
            Some(other) => {
                return Err(UcloudError::bad(format!(
                    "conflictPolicy must be RENAME, REJECT, REPLACE or MERGE_RENAME; got {other:?}"
                )));
            }
        })
    }

    /// The engine's policy for the files of an item.
    fn engine(self) -> ConflictPolicy {
        match self {
            Policy::Rename => ConflictPolicy::Rename,
            Policy::Reject => ConflictPolicy::Fail,
            Policy::Replace => ConflictPolicy::Replace,
            Policy::MergeRename => ConflictPolicy::MergeRename,
        }
    }
}

/// The protocol the server picks from what the client offers: the
/// WebSocket when offered (under whichever name the client used), else
/// CHUNKED. A folder needs the WebSocket.
fn negotiate(kind: Kind, offered: &[String]) -> Result<&str, UcloudError> {
    let ws: &[&str] = match kind {
        Kind::File => &["WEBSOCKET", "WEBSOCKET_V1"],
        Kind::Folder => &["WEBSOCKET", "WEBSOCKET_V2"],
    };
    if let Some(p) = offered.iter().find(|p| ws.contains(&p.as_str())) {
        return Ok(p.as_str());
    }
    if kind == Kind::File && offered.iter().any(|p| p == "CHUNKED") {
        return Ok("CHUNKED");
    }
    Err(UcloudError::bad(format!(
        "none of the supportedProtocols {offered:?} can carry a {}; this provider speaks {}",
        if kind == Kind::File { "file" } else { "folder" },
        if kind == Kind::File {
            "CHUNKED and WEBSOCKET"
        } else {
            "WEBSOCKET"
        }
    )))
}

/// `/<space>/<path>` → (space, path); the path may be empty for a folder.
fn split_id(id: &str) -> Result<(String, String), UcloudError> {
    let rest = id
        .strip_prefix('/')
        .ok_or_else(|| UcloudError::bad(format!("id {id:?} must be a path /<space>/<path>")))?;
    let (space, path) = rest.split_once('/').unwrap_or((rest, ""));
    if space.is_empty() {
        return Err(UcloudError::bad(format!("id {id:?} names no space")));
    }
    Ok((space.to_owned(), path.trim_end_matches('/').to_owned()))
}

/// What a file's upload keeps as its dialect state (and so the committed
/// file too): the client's modification time and the path it meant, so
/// that a resumed folder upload recognises the file (SKIP).
#[derive(Debug, Default, serde::Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Stored {
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_at: Option<i64>,
    /// The path the client asked for (the file may have been renamed).
    path: String,
}

impl Stored {
    fn json(&self) -> String {
        json!({ "ucloud": self }).to_string()
    }

    fn of(metadata: Option<&str>) -> Option<Stored> {
        let v: serde_json::Value = serde_json::from_str(metadata?).ok()?;
        serde_json::from_value(v.get("ucloud")?.clone()).ok()
    }
}

fn ws_base(public_url: &str) -> String {
    if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_owned()
    }
}

async fn create(State(st): State<UcloudState>, headers: HeaderMap, body: Bytes) -> UcloudResult {
    let caller = ferry_http::authenticate(&st.engine, &headers).await?;
    let req: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| UcloudError::bad(format!("the body does not fit: {e}")))?;
    if req.items.is_empty() {
        return Err(UcloudError::bad("items is empty"));
    }
    // All or nothing: every item is checked, then the engine records all
    // the sessions in one step (or none).
    let mut news = Vec::with_capacity(req.items.len());
    let mut plans = Vec::with_capacity(req.items.len());
    for item in &req.items {
        let (new, plan) = plan_one(&st, &caller, item).await?;
        news.push(new);
        plans.push(plan);
    }
    let views = st
        .engine
        .create_sessions(&caller, news)
        .await
        .map_err(|e| match e {
            EngineError::AlreadyExists { path } => EngineError::AlreadyExists {
                path: format!("/{path}"),
            },
            e => e,
        })?;
    let responses: Vec<serde_json::Value> = views
        .iter()
        .zip(plans)
        .map(|(view, plan)| answer(&st, view, plan))
        .collect();
    Ok(axum::Json(json!({ "responses": responses })).into_response())
}

/// What an item becomes once its session exists.
enum Planned {
    File { protocol: String },
    Folder { protocol: String, folder: String },
}

/// The `{endpoint, protocol, token}` answer of one created item.
fn answer(st: &UcloudState, view: &ferry_engine::SessionView, plan: Planned) -> serde_json::Value {
    let (protocol, token, endpoint) = match plan {
        Planned::File { protocol } => {
            let token = file_token(&st.engine, &view.uploads[0].upload.id);
            let endpoint = if protocol == "CHUNKED" {
                format!("{}/ucloud/chunked", st.public_url)
            } else {
                format!("{}/ucloud/file?token={token}", ws_base(&st.public_url))
            };
            (protocol, token, endpoint)
        }
        Planned::Folder { protocol, folder } => {
            let token = folder_token(&st.engine, &view.session.id, &folder);
            let endpoint = format!("{}/ucloud/folder?token={token}", ws_base(&st.public_url));
            (protocol, token, endpoint)
        }
    };
    json!({"endpoint": endpoint, "protocol": protocol, "token": token})
}

/// One item: the session to create for it, and what it becomes.
async fn plan_one(
    st: &UcloudState,
    caller: &Caller,
    item: &CreateItem,
) -> Result<(NewSession, Planned), UcloudError> {
    let (space, path) = split_id(&item.id)?;
    let protocol = negotiate(item.kind, &item.supported_protocols)?.to_owned();
    let policy = Policy::parse(item.conflict_policy.as_deref())?;
    let limits = st.engine.limits();
    let idle = st.idle_secs.min(limits.max_expiry_secs).max(1);
    let new = |uploads, open_ended: bool| NewSession {
        space: Some(space.clone()),
        conflict: policy.engine(),
        expires_in_secs: Some(idle),
        // A file commits with its last byte; a folder's files are
        // committed in batches by the connection that wrote them.
        commit: if open_ended {
            ferry_core::CommitMode::Manual
        } else {
            ferry_core::CommitMode::OnLastByte
        },
        uploads,
        dialect: "ucloud".into(),
        extend_secs: Some(idle),
        open_ended,
        files_expire: false,
        // REJECT fails the request itself when something is at the path.
        precondition: if policy == Policy::Reject && !open_ended {
            ferry_engine::Precondition::Absent
        } else {
            ferry_engine::Precondition::None
        },
        whole_in_request: false,
    };
    Ok(match item.kind {
        Kind::File => {
            if path.is_empty() {
                return Err(UcloudError::bad(format!(
                    "a FILE id names a file: /<space>/<path>, got {:?}",
                    item.id
                )));
            }
            let stored = Stored {
                modified_at: None,
                path: path.clone(),
            };
            let upload = NewUpload {
                path,
                size: None,
                dialect_state: Some(stored.json()),
                ..Default::default()
            };
            (new(vec![upload], false), Planned::File { protocol })
        }
        Kind::Folder => {
            // The engine chooses the folder under its namespace lock:
            // REJECT refuses an existing one, RENAME picks `name (n)`.
            let folder = st
                .engine
                .choose_folder(caller, &space, &path, policy.engine())
                .await
                .map_err(|e| match e {
                    EngineError::AlreadyExists { .. } => EngineError::AlreadyExists {
                        path: item.id.clone(),
                    },
                    e => e,
                })?;
            (new(Vec::new(), true), Planned::Folder { protocol, folder })
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What a CHUNKED request asks, parsed from its headers.
#[derive(Debug, PartialEq, Eq)]
struct ChunkRequest {
    token: String,
    /// `None`: append (`-1`).
    offset: Option<u64>,
    total: Option<u64>,
    /// `Content-Length`; `None` for a body of unknown length (chunked
    /// transfer coding, or an empty body some clients send without one).
    len: Option<u64>,
}

fn parse_chunk(headers: &HeaderMap) -> Result<ChunkRequest, UcloudError> {
    let token = header(headers, "chunked-upload-token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            UcloudError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TOKEN",
                "a chunk needs a Chunked-Upload-Token header",
            )
        })?
        .to_owned();
    let bad_offset = |why: String| UcloudError::new(StatusCode::BAD_REQUEST, "BAD_OFFSET", why);
    let raw = header(headers, "chunked-upload-offset").ok_or_else(|| {
        bad_offset("a chunk needs a Chunked-Upload-Offset header (-1: append)".into())
    })?;
    let offset = match raw.parse::<i64>() {
        Ok(-1) => None,
        Ok(n) if n >= 0 => Some(n as u64),
        _ => {
            return Err(bad_offset(format!(
                "Chunked-Upload-Offset must be -1 or a byte offset, got {raw:?}"
            )));
        }
    };
    let total = match header(headers, "chunked-upload-total-size") {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            UcloudError::bad(format!(
                "Chunked-Upload-Total-Size must be a byte count, got {raw:?}"
            ))
        })?),
    };
    let len = match header(headers, "content-length") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            UcloudError::bad(format!("Content-Length must be a byte count, got {v:?}"))
        })?),
    };
    if let Some(len) = len
        && len > MAX_CHUNK
    {
        return Err(UcloudError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "CHUNK_TOO_LARGE",
            format!("a chunk carries at most {MAX_CHUNK} bytes; this one has {len}"),
        ));
    }
    Ok(ChunkRequest {
        token,
        offset,
        total,
        len,
    })
}

/// `POST /ucloud/chunked`: bytes at an offset of a FILE upload. Answers
/// once they are durable; the chunk that completes the file commits it.
async fn chunk(State(st): State<UcloudState>, headers: HeaderMap, body: Body) -> UcloudResult {
    let checked = async {
        let req = parse_chunk(&headers)?;
        let (upload, caller) = match grant(&st.engine, &req.token)? {
            Grant::File { upload, caller } => (upload, caller),
            Grant::Folder { .. } => {
                return Err(UcloudError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TOKEN",
                    "this token is for a folder upload, which goes over its WebSocket endpoint",
                ));
            }
        };
        // Stops a dead request still writing (a client that lost its
        // network and resends), and reads the true offset.
        let (view, session) = st.engine.take_over(&caller, &upload).await?;
        // A committed upload holds its every byte; a chunk sent again
        // after the commit is answered by the engine's resend policy.
        let received = match (view.upload.state.is_done(), view.upload.length.known()) {
            (true, Some(n)) => n,
            _ => {
                check_lifetime(&st, &session)?;
                view.upload.received.prefix_len()
            }
        };
        let at = target(&req, received, view.upload.length.known())?;
        Ok::<_, UcloudError>((upload, caller, at, view))
    }
    .await;
    let (upload, caller, at, view) = checked?;
    match at {
        // Only the length was new (or nothing): no bytes to write. An
        // upload that holds every byte is committed if it was not yet.
        None => {
            drop(body);
            if !view.upload.state.is_done() {
                st.engine.resume(&caller, &upload).await?;
            }
        }
        // The engine commits with the last byte; its error is the answer.
        Some(at) => {
            st.engine
                .write(
                    &caller,
                    &upload,
                    at,
                    at_most(ferry_http::body_stream(body), MAX_CHUNK),
                    PartChecks::default(),
                )
                .await?;
        }
    }
    Ok(axum::Json(json!({})).into_response())
}

/// A body that fails once it has carried more than `limit` bytes (a chunk
/// of unknown length that turns out too large; the bytes before are kept,
/// as for any body that stops).
fn at_most(body: ferry_store::ByteStream, limit: u64) -> ferry_store::ByteStream {
    use futures::StreamExt;
    let mut seen = 0u64;
    body.map(move |item| {
        let b = item?;
        seen += b.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "a chunk carries at most {limit} bytes"
            )));
        }
        Ok(b)
    })
    .boxed()
}

/// Where a chunk goes: an append at the received end, or (a re-sent
/// chunk that overlaps bytes already received) a range the engine writes
/// aside and swaps in once complete. A chunk past the end is refused: it
/// would leave a hole UCloud's clients never fill.
fn target(
    req: &ChunkRequest,
    received: u64,
    known: Option<u64>,
) -> Result<Option<WriteAt>, UcloudError> {
    let total = req.total.or(known);
    if let (Some(t), Some(k)) = (req.total, known)
        && t != k
    {
        return Err(UcloudError::new(
            StatusCode::CONFLICT,
            "BAD_SIZE",
            format!("Chunked-Upload-Total-Size {t} differs from the size given before, {k}"),
        ));
    }
    let start = req.offset.unwrap_or(received);
    let Some(len) = req.len else {
        // Length unknown: only an append can stream it.
        if start != received {
            return Err(UcloudError::new(
                StatusCode::LENGTH_REQUIRED,
                "LENGTH_REQUIRED",
                "a chunk that re-sends received bytes needs a Content-Length",
            ));
        }
        if known.is_some_and(|k| received >= k) && req.total.is_none() {
            return Ok(None);
        }
        return Ok(Some(WriteAt::Append {
            offset: start,
            total,
            len: None,
        }));
    };
    if start > received {
        return Err(UcloudError::new(
            StatusCode::CONFLICT,
            "BAD_OFFSET",
            format!(
                "offset {start} is past the {received} bytes received; send from {received} (or -1)"
            ),
        ));
    }
    if let Some(t) = total
        && start + len > t
    {
        return Err(UcloudError::new(
            StatusCode::BAD_REQUEST,
            "BAD_OFFSET",
            format!("bytes {start}..{} run past the total size {t}", start + len),
        ));
    }
    if len == 0 {
        // An empty chunk may announce the size (and so complete an
        // upload whose bytes are all there).
        return Ok(
            (req.total.is_some() && known.is_none()).then_some(WriteAt::Append {
                offset: received,
                total: req.total,
                len: Some(0),
            }),
        );
    }
    let end = start + len;
    Ok(Some(if start == received {
        WriteAt::Append {
            offset: start,
            total,
            len: Some(len),
        }
    } else {
        WriteAt::Range {
            range: ferry_core::ByteRange::new(start, end).expect("non-empty"),
            total,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(offset: Option<u64>, total: Option<u64>, len: u64) -> ChunkRequest {
        ChunkRequest {
            token: "t".into(),
            offset,
            total,
            len: Some(len),
        }
    }

    #[test]
    fn chunks_append_resend_or_are_refused() {
        let append = |offset, total, len| Some(WriteAt::Append { offset, total, len });
        assert_eq!(
            target(&req(None, None, 10), 0, None).unwrap(),
            append(0, None, Some(10))
        );
        assert_eq!(
            target(&req(Some(20), Some(50), 10), 20, None).unwrap(),
            append(20, Some(50), Some(10))
        );
        assert_eq!(
            target(&req(None, None, 10), 20, Some(50)).unwrap(),
            append(20, Some(50), Some(10))
        );
        assert_eq!(
            target(&req(Some(10), Some(50), 20), 20, Some(50)).unwrap(),
            Some(WriteAt::Range {
                range: ferry_core::ByteRange::new(10, 30).unwrap(),
                total: Some(50)
            })
        );
        assert_eq!(
            target(&req(Some(21), None, 1), 20, None).unwrap_err().code,
            "BAD_OFFSET"
        );
        assert_eq!(
            target(&req(Some(45), None, 10), 45, Some(50))
                .unwrap_err()
                .code,
            "BAD_OFFSET"
        );
        assert_eq!(
            target(&req(None, Some(60), 1), 0, Some(50))
                .unwrap_err()
                .code,
            "BAD_SIZE"
        );
        assert_eq!(target(&req(None, None, 0), 5, None).unwrap(), None);
        assert_eq!(
            target(&req(None, Some(5), 0), 5, None).unwrap(),
            append(5, Some(5), Some(0))
        );
        let unknown = |offset| ChunkRequest {
            len: None,
            ..req(offset, Some(9), 0)
        };
        assert_eq!(
            target(&unknown(None), 5, None).unwrap(),
            append(5, Some(9), None)
        );
        assert_eq!(
            target(&unknown(Some(3)), 5, None).unwrap_err().code,
            "LENGTH_REQUIRED"
        );
    }

    #[test]
    fn ids_are_a_space_and_a_path() {
        assert_eq!(
            split_id("/alice/a/b.txt").unwrap(),
            ("alice".into(), "a/b.txt".into())
        );
        assert_eq!(
            split_id("/alice/dir/").unwrap(),
            ("alice".into(), "dir".into())
        );
        assert_eq!(split_id("/alice").unwrap(), ("alice".into(), "".into()));
        assert!(split_id("alice/x").is_err());
        assert!(split_id("//x").is_err());
    }

    #[test]
    fn the_websocket_is_preferred() {
        let p = |k, o: &[&str]| {
            negotiate(k, &o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(str::to_owned)
                .ok()
        };
        assert_eq!(
            p(Kind::File, &["CHUNKED", "WEBSOCKET"]).as_deref(),
            Some("WEBSOCKET")
        );
        assert_eq!(p(Kind::File, &["CHUNKED"]).as_deref(), Some("CHUNKED"));
        assert_eq!(
            p(Kind::Folder, &["WEBSOCKET_V2"]).as_deref(),
            Some("WEBSOCKET_V2")
        );
        assert_eq!(p(Kind::Folder, &["CHUNKED"]), None);
        assert_eq!(p(Kind::File, &[]), None);
    }

    #[test]
    fn stored_metadata_round_trips() {
        let s = Stored {
            modified_at: Some(5),
            path: "d/x".into(),
        };
        assert_eq!(Stored::of(Some(&s.json())), Some(s));
        assert_eq!(Stored::of(Some("{}")), None);
        assert_eq!(Stored::of(None), None);
    }
}
