//! Box chunked uploads (`/2.0/files/upload_sessions…`), with the few file
//! and folder calls an upload flow needs. Every route is served under both
//! `/2.0` (Box's API host) and `/api/2.0` (its upload host), so one base URL
//! serves a client's `base_url` and `upload_url` alike.
//!
//! A Box upload session is a one-upload Ferry session; its id is the
//! upload's id. Parts are the engine's numbered parts of the server-chosen
//! `part_size`, each checked against its `digest: sha=` SHA-1; the whole
//! file's SHA-1 is kept as the bytes arrive, so commit checks the client's
//! `Digest` without reading the file again.
//!
//! Folder `0` is the root of the caller's home space; other folder ids name
//! a space and a path (see [`crate::folder_id`]). Folders are implicit in Ferry:
//! one exists as long as a file lies under it.

use crate::folder_id;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ferry_core::{ConflictPolicy, Digest, DigestAlgo, FileRecord, Session, Upload};
use ferry_engine::{Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, WriteAt};
use ferry_meta::Entry;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// What the Box handlers share.
#[derive(Clone)]
pub struct BoxState {
    pub engine: Engine,
    /// Base of the absolute `session_endpoints` (no trailing slash).
    pub public_url: String,
    /// How long a commit may take before the answer is `202` with
    /// `Retry-After` (the commit goes on; the retry finds it done).
    pub commit_wait: Duration,
}

/// Box's part size for files up to `PART_SIZE * max_parts`; larger files
/// get larger parts.
pub const PART_SIZE: u64 = 8 << 20;
/// Box keeps upload sessions 7 days (capped by Ferry's maximum expiry).
const SESSION_SECS: u64 = 7 * 24 * 3600;

pub fn router(state: BoxState) -> Router {
    let routes = Router::new()
        .route("/files/upload_sessions", post(create))
        .route(
            "/files/upload_sessions/{id}",
            put(upload_part).get(status).delete(abort),
        )
        .route("/files/upload_sessions/{id}/parts", get(list_parts))
        .route("/files/upload_sessions/{id}/commit", post(commit))
        .route("/files/{id}/upload_sessions", post(create_version))
        .route("/files/{id}", get(file_info))
        .route("/files/{id}/content", get(file_content))
        .route("/folders", post(create_folder))
        .route("/folders/{id}", get(folder_info))
        .route("/folders/{id}/items", get(folder_items))
        .route("/{*rest}", axum::routing::any(ferry_http::no_route));
    let routes = Router::new()
        .nest("/2.0", routes.clone())
        .nest("/api/2.0", routes)
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// Box's `ClientError` for an answer the framework made.
fn render_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::PAYLOAD_TOO_LARGE => "request_entity_too_large",
        s if s.is_server_error() => "internal_server_error",
        _ => "bad_request",
    };
    err(status, code, message).into_response()
}

/// Box's `ClientError`: `{"type":"error","status","code","message","request_id"}`.
pub struct BoxError {
    status: StatusCode,
    code: &'static str,
    message: String,
    context: Option<Value>,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> BoxError {
    BoxError {
        status,
        code,
        message: message.into(),
        context: None,
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> BoxError {
    err(StatusCode::BAD_REQUEST, code, message)
}

impl From<EngineError> for BoxError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            EngineError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "access_denied_insufficient_permissions",
            ),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            // An expired, aborted or committed session is gone for Box.
            EngineError::Gone(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::AlreadyExists { .. } => (StatusCode::CONFLICT, "item_name_in_use"),
            EngineError::RangeNotSatisfiable(_) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested_range_not_satisfiable",
            ),
            EngineError::Conflict(_)
            | EngineError::Unsupported(_)
            | EngineError::OffsetMismatch { .. } => {
                (StatusCode::CONFLICT, "range_overlaps_existing_part")
            }
            EngineError::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "bad_digest"),
            EngineError::Incomplete { .. } => (StatusCode::BAD_REQUEST, "incomplete_upload"),
            EngineError::TooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "file_size_limit_exceeded")
            }
            EngineError::InsufficientStorage(_) => {
                (StatusCode::FORBIDDEN, "storage_limit_exceeded")
            }
            EngineError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            EngineError::Rejected { .. } => (ferry_http::status_of(&e), "access_denied"),
            EngineError::TooManySessions { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
            }
            EngineError::Invalid { .. } | EngineError::BodyFailed { .. } => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error"),
        };
        err(status, code, ferry_http::public_message(&e))
    }
}

impl IntoResponse for BoxError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "error",
            "status": self.status.as_u16(),
            "code": self.code,
            "message": self.message,
            "request_id": ferry_http::request_id(),
        });
        if let Some(c) = self.context {
            body["context_info"] = c;
        }
        ferry_http::rendered((self.status, axum::Json(body)).into_response())
    }
}

type BoxResult = Result<Response, BoxError>;

async fn caller(st: &BoxState, headers: &HeaderMap) -> Result<Caller, BoxError> {
    Ok(ferry_http::authenticate(&st.engine, headers).await?)
}

/// The caller's home space.
async fn home(st: &BoxState, caller: &Caller) -> Result<String, BoxError> {
    Ok(st.engine.home_space(caller).await?.to_string())
}

/// A folder's entries; a folder in a space the caller cannot read is not
/// found, as Box answers for items one cannot see.
async fn listing(
    st: &BoxState,
    caller: &Caller,
    space: &str,
    path: &str,
) -> Result<Vec<Entry>, BoxError> {
    st.engine
        .list(caller, space, path)
        .await
        .map_err(|e| match e {
            EngineError::Forbidden(_) => err(StatusCode::NOT_FOUND, "not_found", "no such folder"),
            e => e.into(),
        })
}

/// A folder id resolved to (space, path in it); `0` is the home root.
async fn folder(st: &BoxState, caller: &Caller, id: &str) -> Result<(String, String), BoxError> {
    if id == "0" {
        return Ok((home(st, caller).await?, String::new()));
    }
    folder_id::decode(id).ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no folder {id:?}"),
        )
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Box's rules for an item name.
fn check_name(name: &str) -> Result<(), BoxError> {
    let invalid = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.trim() != name
        || name.chars().any(char::is_control);
    if invalid {
        return Err(bad(
            "item_name_invalid",
            format!(
                "{name:?} is not a valid name: 1 to 255 characters, no slashes, no leading or trailing spaces"
            ),
        ));
    }
    Ok(())
}

fn folder_ref(space: &str, path: &str, home: &str) -> Value {
    let (id, name) = if path.is_empty() && space == home {
        ("0".to_owned(), "All Files".to_owned())
    } else {
        (
            folder_id::encode(space, path),
            path.rsplit('/').next().unwrap_or(path).to_owned(),
        )
    };
    let name = if path.is_empty() && space != home {
        space.to_owned()
    } else {
        name
    };
    json!({"type": "folder", "id": id, "sequence_id": null, "etag": null, "name": name})
}

/// The folders from the root down to (not including) `path`.
fn path_collection(space: &str, path: &str, home: &str) -> Value {
    let mut entries = vec![folder_ref(space, "", home)];
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for k in 1..segments.len() {
        entries.push(folder_ref(space, &segments[..k].join("/"), home));
    }
    json!({"total_count": entries.len(), "entries": entries})
}

fn file_json(f: &FileRecord, home: &str) -> Value {
    let path = f.path.as_str();
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let when = ferry_http::rfc3339(f.created_at);
    let sha1 = f.sha1.clone().unwrap_or_default();
    json!({
        "type": "file",
        "id": f.id,
        "etag": "0",
        "sequence_id": "0",
        "name": f.path.name(),
        "size": f.size,
        "sha1": sha1,
        "file_version": {"type": "file_version", "id": f.id, "sha1": sha1},
        "created_at": when,
        "modified_at": when,
        "content_created_at": when,
        "content_modified_at": when,
        "item_status": "active",
        "parent": folder_ref(f.space.as_str(), dir, home),
        "path_collection": path_collection(f.space.as_str(), path, home),
    })
}

fn folder_json(space: &str, path: &str, home: &str, entries: &[Entry]) -> Value {
    let mut v = folder_ref(space, path, home);
    v["item_status"] = json!("active");
    v["path_collection"] = if path.is_empty() {
        json!({"total_count": 0, "entries": []})
    } else {
        let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
        let mut pc = path_collection(space, parent, home);
        if !parent.is_empty() {
            let list = pc["entries"].as_array_mut().expect("an array");
            list.push(folder_ref(space, parent, home));
            pc["total_count"] = json!(list.len());
        }
        pc
    };
    v["parent"] = if path.is_empty() {
        Value::Null
    } else {
        folder_ref(space, path.rsplit_once('/').map_or("", |(d, _)| d), home)
    };
    v["item_collection"] = items_json(space, path, entries, home, 0, entries.len().max(1));
    v
}

/// A page of a folder's entries (`dir` is the folder's path).
fn items_json(
    space: &str,
    dir: &str,
    entries: &[Entry],
    home: &str,
    offset: usize,
    limit: usize,
) -> Value {
    let page: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| match e {
            Entry::Folder(name) => folder_ref(space, &join(dir, name), home),
            Entry::File(f) => file_json(f, home),
        })
        .collect();
    json!({
        "total_count": entries.len(),
        "offset": offset,
        "limit": limit,
        "order": [{"by": "type", "direction": "ASC"}, {"by": "name", "direction": "ASC"}],
        "entries": page,
    })
}

fn session_json(st: &BoxState, s: &Session, u: &Upload) -> Value {
    let base = format!("{}/api/2.0/files/upload_sessions/{}", st.public_url, u.id);
    let size = u.length.known().unwrap_or(0);
    json!({
        "type": "upload_session",
        "id": u.id,
        "session_expires_at": ferry_http::rfc3339(s.expires_at),
        "part_size": u.part_size,
        "total_parts": u.plan().total_parts(size),
        "num_parts_processed": u.parts.len(),
        "session_endpoints": {
            "upload_part": base,
            "commit": format!("{base}/commit"),
            "abort": base,
            "list_parts": format!("{base}/parts"),
            "status": base,
            "log_event": format!("{base}/log"),
        },
    })
}

/// The part size for a file: Box's 8 MiB, larger when the part count
/// would pass the engine's limit.
fn part_size_for(engine: &Engine, size: u64) -> u64 {
    let max_parts = engine.limits().max_parts.max(1);
    let needed = size.div_ceil(max_parts).next_multiple_of(1 << 20);
    PART_SIZE.max(needed)
}

/// Reads a JSON body into a value; an empty body is `{}`.
pub(crate) fn json_body(body: &Bytes) -> Result<Value, BoxError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| bad("bad_request", format!("the body is not JSON: {e}")))
}

pub(crate) fn file_size(v: &Value) -> Result<u64, BoxError> {
    match v.get("file_size") {
        None | Some(Value::Null) => Err(bad("missing_file_size", "file_size is required")),
        Some(n) => n.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            bad(
                "invalid_file_size",
                format!("file_size must be a positive number of bytes; got {n}"),
            )
        }),
    }
}

/// Opens the one-upload session behind a Box upload session.
#[allow(clippy::too_many_arguments)]
async fn open(
    st: &BoxState,
    caller: &Caller,
    space: String,
    path: String,
    size: u64,
    conflict: ConflictPolicy,
    replaces: Option<String>,
    precondition: ferry_engine::Precondition,
) -> BoxResult {
    let engine = &st.engine;
    let at = (space.clone(), path.clone());
    let view = engine
        .create_session(
            caller,
            NewSession {
                space: Some(space),
                conflict,
                expires_in_secs: Some(SESSION_SECS.min(engine.limits().max_expiry_secs)),
                commit: ferry_core::CommitMode::Manual,
                uploads: vec![NewUpload {
                    path,
                    size: Some(size),
                    part_size: Some(part_size_for(engine, size)),
                    whole_digests: vec![DigestAlgo::Sha1],
                    replaces,
                    ..Default::default()
                }],
                dialect: "box".into(),
                extend_secs: None,
                open_ended: false,
                files_expire: false,
                precondition,
                whole_in_request: false,
            },
        )
        .await;
    // The engine checks permission first, then what is at the path.
    let view = match view {
        Err(EngineError::AlreadyExists { .. }) => {
            return Err(name_in_use(st, caller, &at.0, &at.1).await);
        }
        other => other?,
    };
    let body = session_json(st, &view.session, &view.uploads[0].upload);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// 409 `item_name_in_use` for an item at `path` (the engine refused it),
/// naming the file in `context_info.conflicts` as Box does.
async fn name_in_use(st: &BoxState, caller: &Caller, space: &str, path: &str) -> BoxError {
    let name = path.rsplit('/').next().unwrap_or(path);
    let plain = err(
        StatusCode::CONFLICT,
        "item_name_in_use",
        format!("an item named {name:?} already exists in this folder"),
    );
    match (
        st.engine.stat_file(caller, space, path).await,
        home(st, caller).await,
    ) {
        (Ok(f), Ok(home)) => BoxError {
            context: Some(json!({"conflicts": file_json(&f, &home)})),
            ..plain
        },
        _ => plain,
    }
}

/// `POST /files/upload_sessions`: a session for a new file.
async fn create(State(st): State<BoxState>, headers: HeaderMap, body: Bytes) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let v = json_body(&body)?;
    let folder_id = match v.get("folder_id") {
        None | Some(Value::Null) => {
            return Err(bad("missing_destination", "folder_id is required"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(bad(
                "invalid_folder_id",
                format!("folder_id must be a string; got {other}"),
            ));
        }
    };
    let size = file_size(&v)?;
    let name = match v.get("file_name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => return Err(bad("missing_file_name", "file_name is required")),
    };
    check_name(&name)?;
    let (space, dir) = folder(&st, &caller, &folder_id)
        .await
        .map_err(|_| bad("invalid_folder_id", format!("no folder {folder_id:?}")))?;
    let path = join(&dir, &name);
    open(
        &st,
        &caller,
        space,
        path,
        size,
        ConflictPolicy::Fail,
        None,
        ferry_engine::Precondition::Absent,
    )
    .await
}

/// `POST /files/{file_id}/upload_sessions`: a new version of a file,
/// optionally under a new name. The upload `replaces` the file: its commit
/// moves the file to the new name (same id) with the new bytes, in one step.
async fn create_version(
    State(st): State<BoxState>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let v = json_body(&body)?;
    let size = file_size(&v)?;
    let file = st.engine.file_by_id(&caller, &file_id).await?;
    let old = file.path.as_str().to_owned();
    let (path, precondition) = match v.get("file_name").and_then(Value::as_str) {
        Some(name) if name != file.path.name() => {
            check_name(name)?;
            let dir = old.rsplit_once('/').map_or("", |(d, _)| d);
            (join(dir, name), ferry_engine::Precondition::Absent)
        }
        _ => (old, ferry_engine::Precondition::None),
    };
    open(
        &st,
        &caller,
        file.space.to_string(),
        path,
        size,
        ConflictPolicy::Replace,
        Some(file.id.clone()),
        precondition,
    )
    .await
}

/// `digest: sha=<base64 SHA-1>` (Box supports SHA-1 only).
pub(crate) fn sha1_digest(headers: &HeaderMap, name: &str) -> Result<Digest, BoxError> {
    let v = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            bad(
                "missing_digest",
                format!("a {name} header is required: sha=<base64 SHA-1>"),
            )
        })?;
    let value = v
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
        .find(|(algo, _)| algo.trim().eq_ignore_ascii_case("sha"))
        .map(|(_, value)| value)
        .ok_or_else(|| {
            bad(
                "bad_digest",
                format!("{name}: {v:?} has no SHA-1 (sha=<base64>); Box supports SHA-1 only"),
            )
        })?;
    ferry_http::decode_digest(DigestAlgo::Sha1, value, name).map_err(|m| bad("bad_digest", m))
}

fn part_json(p: &ferry_core::Part) -> Value {
    json!({
        "part_id": format!("{:08X}", p.number),
        "offset": p.offset,
        "size": p.size,
        "sha1": p.sha1.clone().unwrap_or_default(),
    })
}

/// Everything a part must pass before its bytes are read: a digest, a
/// `content-range` on the session's part grid, and no overlap with a part
/// already received. Returns the part number and digest.
async fn check_part(
    st: &BoxState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
) -> Result<(u32, Digest), BoxError> {
    let digest = sha1_digest(headers, "digest")?;
    let cr = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            bad(
                "bad_request",
                "a content-range header is required: bytes lo-hi/total",
            )
        })?;
    let cr = ferry_http::parse_content_range(cr).map_err(|m| bad("bad_request", m))?;
    let (view, _) = st.engine.upload_and_session(caller, id).await?;
    let up = view.upload;
    // A part sent again after the commit is answered by the engine's
    // resend policy; otherwise the session must be open.
    let resent = up.state.is_done();
    if !resent {
        open_session(st, caller, id).await?;
    }
    let size = up.length.known().unwrap_or(0);
    let unsatisfiable = |m: String| {
        err(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "requested_range_not_satisfiable",
            m,
        )
    };
    if cr.total != Some(size) {
        return Err(unsatisfiable(format!(
            "the content-range total must be the session's file size, {size}"
        )));
    }
    let (lo, end) = (cr.range.start, cr.range.end);
    if lo % up.part_size != 0 || end != (lo + up.part_size).min(size) {
        return Err(unsatisfiable(format!(
            "bytes {lo}-{} are not a part: parts are {} bytes at multiples of {} (the last may be shorter)",
            end - 1,
            up.part_size,
            up.part_size
        )));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = length
        && n != end - lo
    {
        return Err(bad(
            "bad_request",
            format!(
                "content-length {n} does not match the {} bytes of the content-range",
                end - lo
            ),
        ));
    }
    let number = (lo / up.part_size + 1) as u32;
    if !resent && (up.parts.contains_key(&number) || up.received.intersects(&cr.range)) {
        return Err(err(
            StatusCode::CONFLICT,
            "range_overlaps_existing_part",
            format!(
                "bytes {lo}-{} were already uploaded; parts cannot be replaced",
                end - 1
            ),
        ));
    }
    Ok((number, digest))
}

/// `PUT /files/upload_sessions/{id}`: one part.
async fn upload_part(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> BoxResult {
    let checked = async {
        let caller = caller(&st, &headers).await?;
        let (number, digest) = check_part(&st, &caller, &id, &headers).await?;
        Ok::<_, BoxError>((caller, number, digest))
    }
    .await;
    let (caller, number, digest) = checked?;
    let w = st
        .engine
        .write(
            &caller,
            &id,
            WriteAt::Part(number),
            ferry_http::body_stream(body),
            PartChecks {
                expected: vec![digest],
                ..Default::default()
            },
        )
        .await?;
    let part = w.part.expect("a part write records its part");
    Ok(axum::Json(json!({"part": part_json(&part)})).into_response())
}

/// A session's upload with its session, open or not (a committed session
/// is gone for Box).
async fn open_session(
    st: &BoxState,
    caller: &Caller,
    id: &str,
) -> Result<(Upload, Session), BoxError> {
    let (view, session) = st.engine.upload_and_session(caller, id).await?;
    session.state.check_writable().map_err(EngineError::Gone)?;
    if session.is_expired_at(ferry_engine::now_ms()) {
        return Err(EngineError::Gone(ferry_core::StateError::Expired).into());
    }
    Ok((view.upload, session))
}

async fn status(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let (upload, session) = open_session(&st, &caller, &id).await?;
    Ok(axum::Json(session_json(&st, &session, &upload)).into_response())
}

async fn abort(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let (_, session) = open_session(&st, &caller, &id).await?;
    st.engine.abort_session(&caller, &session.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Page {
    offset: Option<String>,
    limit: Option<String>,
}

impl Page {
    /// `offset` (default 0) and `limit` (default 100, at most 1000).
    fn parse(&self) -> Result<(usize, usize), BoxError> {
        let num = |name: &str, v: &Option<String>, default: usize| match v {
            None => Ok(default),
            Some(s) => s.parse::<usize>().map_err(|_| {
                bad(
                    "bad_request",
                    format!("{name} must be a non-negative integer; got {s:?}"),
                )
            }),
        };
        let offset = num("offset", &self.offset, 0)?;
        let limit = num("limit", &self.limit, 100)?;
        if !(1..=1000).contains(&limit) {
            return Err(bad(
                "bad_request",
                format!("limit must be 1 to 1000; got {limit}"),
            ));
        }
        Ok((offset, limit))
    }
}

async fn list_parts(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let (offset, limit) = page.parse()?;
    let (upload, _) = open_session(&st, &caller, &id).await?;
    let entries: Vec<Value> = upload
        .parts
        .values()
        .skip(offset)
        .take(limit)
        .map(part_json)
        .collect();
    Ok(axum::Json(json!({
        "total_count": upload.parts.len(),
        "offset": offset,
        "limit": limit,
        "order": [{"by": "offset", "direction": "ASC"}],
        "entries": entries,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct CommitBody {
    parts: Option<Vec<CommitPart>>,
}

#[derive(Deserialize)]
struct CommitPart {
    part_id: String,
    offset: u64,
    size: u64,
    sha1: Option<String>,
}

/// The client's part list must be exactly the parts received.
fn check_part_list(upload: &Upload, listed: &[CommitPart]) -> Result<(), BoxError> {
    let mismatch = |m: String| bad("bad_request", m);
    if listed.len() != upload.parts.len() {
        return Err(mismatch(format!(
            "the commit lists {} parts, but {} were uploaded",
            listed.len(),
            upload.parts.len()
        )));
    }
    for (p, want) in listed.iter().zip(upload.parts.values()) {
        let same = p
            .part_id
            .eq_ignore_ascii_case(&format!("{:08X}", want.number))
            && p.offset == want.offset
            && p.size == want.size
            && p.sha1
                .as_deref()
                .is_none_or(|s| Some(s.to_ascii_lowercase()) == want.sha1);
        if !same {
            return Err(mismatch(format!(
                "part {} at offset {} does not match the uploaded part {:08X} (offset {}, size {}); list the parts in offset order as uploaded",
                p.part_id, p.offset, want.number, want.offset, want.size
            )));
        }
    }
    Ok(())
}

/// `POST /files/upload_sessions/{id}/commit`.
async fn commit(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let digest = sha1_digest(&headers, "digest")?;
    let req: CommitBody = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "bad_request",
            format!("the body must be {{\"parts\":[…]}}: {e}"),
        )
    })?;
    let parts = req.parts.ok_or_else(|| {
        bad(
            "bad_request",
            "the body must list the uploaded parts: {\"parts\":[…]}",
        )
    })?;
    let (view, session) = st.engine.upload_and_session(&caller, &id).await?;
    if view.file.is_none() {
        session.state.check_writable().map_err(EngineError::Gone)?;
        check_part_list(&view.upload, &parts)?;
    }
    // The commit runs on its own: a client that stops waiting (202) finds
    // it done when it retries, as Box's `Retry-After` promises.
    let task = {
        let (engine, caller, id) = (st.engine.clone(), caller.clone(), id.clone());
        tokio::spawn(async move { engine.commit_upload(&caller, &id, Some(digest)).await })
    };
    // A commit already done answers at once, however long it takes to
    // say so (a retry after a 202 must find it done, not another 202).
    let wait = if view.file.is_some() {
        Duration::MAX
    } else {
        st.commit_wait
    };
    let view = match tokio::time::timeout(wait, task).await {
        Err(_) => {
            let mut resp = StatusCode::ACCEPTED.into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(resp);
        }
        Ok(joined) => joined.map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                ferry_http::internal_message(&e),
            )
        })??,
    };
    let file = view.file.ok_or_else(|| {
        err(
            StatusCode::CONFLICT,
            "item_name_in_use",
            "the file was skipped",
        )
    })?;
    let home = home(&st, &caller).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"total_count": 1, "entries": [file_json(&file, &home)]})),
    )
        .into_response())
}

async fn file_info(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let file = st.engine.file_by_id(&caller, &id).await?;
    let home = home(&st, &caller).await?;
    Ok(axum::Json(file_json(&file, &home)).into_response())
}

async fn file_content(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let opened = st.engine.open_file_by_id(&caller, &id).await?;
    let file = opened.file.clone();
    let range = ferry_http::parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        file.size,
    );
    let (status, offset, len) = match range {
        ferry_http::RangeRequest::Full => (StatusCode::OK, 0, file.size),
        ferry_http::RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.len()),
        ferry_http::RangeRequest::Unsatisfiable => {
            return Err(err(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested_range_not_satisfiable",
                format!("the file has {} bytes", file.size),
            ));
        }
    };
    let body = opened.read(offset, len);
    let mut resp = (status, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            offset,
            offset + len - 1,
            file.size
        ))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

/// `POST /folders {name, parent:{id}}`. Folders are implicit in Ferry, so
/// this records nothing: it checks the name is free and answers the id.
async fn create_folder(State(st): State<BoxState>, headers: HeaderMap, body: Bytes) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let v = json_body(&body)?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("bad_request", "name is required"))?;
    check_name(name)?;
    let parent = match v.pointer("/parent/id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("bad_request", "parent.id is required")),
    };
    let (space, dir) = folder(&st, &caller, &parent).await?;
    let path = join(&dir, name);
    ferry_core::SpacePath::parse(&path).map_err(|e| bad("item_name_invalid", e.to_string()))?;
    // The engine checks permission first, then whether the name is taken
    // (a file or a folder), under its namespace lock.
    match st
        .engine
        .choose_folder(&caller, &space, &path, ConflictPolicy::Fail)
        .await
    {
        Err(EngineError::AlreadyExists { .. }) => {
            return Err(err(
                StatusCode::CONFLICT,
                "item_name_in_use",
                format!("an item named {name:?} already exists in this folder"),
            ));
        }
        other => other?,
    };
    let home = home(&st, &caller).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(folder_json(&space, &path, &home, &[])),
    )
        .into_response())
}

async fn folder_info(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let (space, path) = folder(&st, &caller, &id).await?;
    let entries = listing(&st, &caller, &space, &path).await?;
    let home = home(&st, &caller).await?;
    Ok(axum::Json(folder_json(&space, &path, &home, &entries)).into_response())
}

async fn folder_items(
    State(st): State<BoxState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> BoxResult {
    let caller = caller(&st, &headers).await?;
    let (offset, limit) = page.parse()?;
    let (space, path) = folder(&st, &caller, &id).await?;
    let entries = listing(&st, &caller, &space, &path).await?;
    let home = home(&st, &caller).await?;
    Ok(axum::Json(items_json(&space, &path, &entries, &home, offset, limit)).into_response())
}
