//! deepset AI Platform upload sessions
//! (`/api/v1/workspaces/{workspace}/upload_sessions…`) and the S3-style
//! POST-object endpoint their `aws_prefixed_request_config` points at.
//!
//! A workspace is a Ferry space. A deepset session is an `open_ended` Ferry
//! session in it: each POSTed file becomes one upload when it arrives
//! ([`Engine::put_upload`]: a name sent twice replaces the earlier body, as
//! on S3), streamed by one append of unknown length whose end then fixes
//! the length. A `<name>.meta.json` companion is not a file: its JSON
//! becomes the metadata of the upload `<name>`, whether it comes before or
//! after the bytes ([`Engine::set_upload_metadata`]). Closing
//! ([`Engine::close_session`]) commits every complete file atomically with
//! the write mode's conflict policy; what could not become a file counts as
//! failed.
//!
//! The POST form carries a policy (base64 JSON: expiration, conditions)
//! signed by Ferry with its own key; the policy is the only credential of
//! the POST, and names the session, its workspace and its owner. Every
//! form field must match a condition; a tampered field or policy is `403`
//! in S3's XML error format. docs/DEEPSET.md is the contract.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use ferry_core::{ConflictPolicy, Session, SessionState, UploadState};
use ferry_engine::{
    Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, Principal, SessionView, WriteAt,
};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the deepset handlers share.
#[derive(Clone)]
pub struct DeepsetState {
    pub engine: Engine,
    /// Base of the absolute POST-object URL (no trailing slash).
    pub public_url: String,
}

/// Where the presigned POST form is sent.
pub const POST_PATH: &str = "/deepset/objects";
const DOCS: &str = "https://docs.cloud.deepset.ai/docs/upload-files";
/// deepset's longest (and default) session lifetime.
const MAX_EXPIRY: u64 = 86_400;
const META_SUFFIX: &str = ".meta.json";
/// Largest `.meta.json` companion: it is read into memory to become metadata.
const MAX_META: usize = 1 << 20;
/// Largest text field of the form, and most fields.
pub(crate) const MAX_FIELD: usize = 64 << 10;
pub(crate) const MAX_FIELDS: usize = 32;
/// What `x-amz-algorithm` says: this is Ferry's HMAC, not AWS SigV4.
const ALGORITHM: &str = "FERRY-HMAC-SHA256";
/// The signing purpose of policies (see [`Engine::sign`]).
const PURPOSE: &str = "deepsetpolicy";
const TOO_MANY_SESSIONS: &str = "You can't upload files because you've reached the maximum number of upload sessions allowed per user. Close existing sessions using the Close Session endpoint before starting a new one.";

pub fn router(state: DeepsetState) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/workspaces/{workspace}/upload_sessions",
            post(create).get(list),
        )
        .route(
            "/api/v1/workspaces/{workspace}/upload_sessions/{id}",
            get(status).put(close),
        )
        .route(
            "/api/v1/workspaces/{workspace}/upload_sessions/{id}/files",
            get(files),
        )
        .route(
            "/api/v1/workspaces/{workspace}/upload_sessions/{id}/{*rest}",
            axum::routing::any(ferry_http::no_route),
        )
        .with_state(state.clone());
    let form = Router::new()
        .route(POST_PATH, post(post_object))
        .route("/deepset/{*rest}", axum::routing::any(ferry_http::no_route))
        .with_state(state);
    ferry_http::with_errors(api, render_error).merge(ferry_http::with_errors(form, render_s3_error))
}

/// FastAPI's `{"detail"}` for an answer the framework made.
fn render_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let detail = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            status.canonical_reason().unwrap_or("Error").to_owned()
        }
        _ => message,
    };
    ds(status, detail).into_response()
}

/// S3's XML error for an answer the framework made at the POST form.
fn render_s3_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => "NoSuchKey",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "EntityTooLarge",
        s if s.is_server_error() => "InternalError",
        _ => "InvalidArgument",
    };
    s3(status, code, message).into_response()
}

// ------------------------------------------------------------ errors

/// deepset's (FastAPI's) error body: `{"detail": "…"}`, or for `422` a
/// list of `{"loc","msg","type",…}`.
pub struct DsError {
    status: StatusCode,
    detail: Value,
}

fn ds(status: StatusCode, msg: impl Into<String>) -> DsError {
    DsError {
        status,
        detail: Value::String(msg.into()),
    }
}

/// One validation error, as pydantic reports it.
fn invalid(loc: Value, kind: &str, msg: impl Into<String>, input: Option<&Value>) -> Value {
    let mut e = json!({"loc": loc, "msg": msg.into(), "type": kind});
    if let Some(i) = input {
        e["input"] = i.clone();
    }
    e
}

fn unprocessable(errors: Vec<Value>) -> DsError {
    DsError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        detail: Value::Array(errors),
    }
}

impl From<EngineError> for DsError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::TooManySessions { .. } => {
                return ds(StatusCode::NOT_ACCEPTABLE, TOO_MANY_SESSIONS);
            }
            EngineError::Gone(ferry_core::StateError::Expired) => {
                return ds(StatusCode::CONFLICT, "The session has expired.");
            }
            EngineError::Gone(_) => {
                return ds(StatusCode::CONFLICT, "The session is already closed.");
            }
            EngineError::Conflict(_)
            | EngineError::Unsupported(_)
            | EngineError::AlreadyExists { .. } => StatusCode::CONFLICT,
            EngineError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Rejected { .. } => ferry_http::status_of(&e),
            EngineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Invalid { .. } => {
                return unprocessable(vec![invalid(
                    json!(["body"]),
                    "value_error",
                    ferry_http::public_message(&e),
                    None,
                )]);
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ds(status, ferry_http::public_message(&e))
    }
}

impl IntoResponse for DsError {
    fn into_response(self) -> Response {
        ferry_http::rendered(
            (self.status, axum::Json(json!({"detail": self.detail}))).into_response(),
        )
    }
}

type DsResult = Result<Response, DsError>;

/// S3's XML error, for the POST-object endpoint (the SDK reads only the
/// status; people read the message).
pub struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn s3(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
    S3Error {
        status,
        code,
        message: message.into(),
    }
}

fn denied(message: impl Into<String>) -> S3Error {
    s3(StatusCode::FORBIDDEN, "AccessDenied", message)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{}</RequestId></Error>",
            self.code,
            xml_escape(&self.message),
            ferry_http::request_id()
        );
        ferry_http::rendered(
            (
                self.status,
                [(header::CONTENT_TYPE, "application/xml")],
                body,
            )
                .into_response(),
        )
    }
}

impl From<EngineError> for S3Error {
    fn from(e: EngineError) -> Self {
        let m = ferry_http::public_message(&e);
        match &e {
            EngineError::Gone(_) => denied(format!("the upload session is closed: {m}")),
            EngineError::NotFound(_) | EngineError::Unauthenticated(_) => denied(m),
            EngineError::Forbidden(_) => denied(m),
            EngineError::Invalid { .. } => s3(StatusCode::BAD_REQUEST, "InvalidArgument", m),
            EngineError::TooLarge { .. } => s3(StatusCode::BAD_REQUEST, "TooManyObjects", m),
            EngineError::Conflict(_) | EngineError::Unsupported(_) => {
                s3(StatusCode::CONFLICT, "OperationAborted", m)
            }
            EngineError::InsufficientStorage(_) => {
                s3(StatusCode::INSUFFICIENT_STORAGE, "QuotaExceeded", m)
            }
            EngineError::Unavailable(_) => s3(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", m),
            EngineError::Rejected { .. } => s3(ferry_http::status_of(&e), "AccessDenied", m),
            EngineError::BodyFailed { .. } => s3(StatusCode::BAD_REQUEST, "IncompleteBody", m),
            _ => s3(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m),
        }
    }
}

// ------------------------------------------------------------ ids and shapes

/// A Ferry session id (32 hex digits) written as the UUID deepset uses.
fn uuid_of(hex: &str) -> String {
    if hex.len() != 32 {
        return hex.to_owned();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A `session_id` path parameter (a UUID, with or without dashes) as the
/// Ferry session id; `422 uuid_parsing` otherwise, as FastAPI answers.
fn session_id(raw: &str) -> Result<String, DsError> {
    let hex: String = raw.chars().filter(|c| *c != '-').collect();
    let dashes_ok = raw.len() == 32 || (raw.len() == 36 && uuid_of(&hex) == raw.to_lowercase());
    if hex.len() == 32 && dashes_ok && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(hex.to_ascii_lowercase());
    }
    Err(unprocessable(vec![invalid(
        json!(["path", "session_id"]),
        "uuid_parsing",
        "Input should be a valid UUID",
        Some(&json!(raw)),
    )]))
}

/// A stable UUID for a user name (deepset's `created_by.user_id`).
fn user_uuid(name: &str) -> String {
    uuid_of(&hex::encode(&ferry_engine::auth::token_hash(name)[..16]))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteMode {
    Keep,
    Overwrite,
    Fail,
    Temporary,
}

impl WriteMode {
    const EXPECTED: &str = "'KEEP', 'OVERWRITE', 'FAIL' or 'TEMPORARY'";

    fn parse(s: &str) -> Option<WriteMode> {
        Some(match s {
            "KEEP" => WriteMode::Keep,
            "OVERWRITE" => WriteMode::Overwrite,
            "FAIL" => WriteMode::Fail,
            "TEMPORARY" => WriteMode::Temporary,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            WriteMode::Keep => "KEEP",
            WriteMode::Overwrite => "OVERWRITE",
            WriteMode::Fail => "FAIL",
            WriteMode::Temporary => "TEMPORARY",
        }
    }

    /// The engine's conflict policy, and whether files expire with the
    /// session. KEEP keeps both (the new file is renamed `name (1).ext`);
    /// FAIL keeps the existing file and reports the new one failed (Ferry's
    /// `skip`: a clash fails that file, not the whole session); TEMPORARY
    /// files never displace a file and are deleted when the session expires.
    fn engine(self) -> (ConflictPolicy, bool) {
        match self {
            WriteMode::Keep => (ConflictPolicy::Rename, false),
            WriteMode::Overwrite => (ConflictPolicy::Replace, false),
            WriteMode::Fail => (ConflictPolicy::Skip, false),
            WriteMode::Temporary => (ConflictPolicy::Rename, true),
        }
    }

    fn of(s: &Session) -> WriteMode {
        match (s.conflict, s.files_expire) {
            (_, true) => WriteMode::Temporary,
            (ConflictPolicy::Replace, _) => WriteMode::Overwrite,
            (ConflictPolicy::Skip | ConflictPolicy::Fail, _) => WriteMode::Fail,
            _ => WriteMode::Keep,
        }
    }
}

/// A file's state in deepset's words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ingestion {
    Pending,
    Finished,
    Failed,
}

impl Ingestion {
    fn as_str(self) -> &'static str {
        match self {
            Ingestion::Pending => "PENDING",
            Ingestion::Finished => "FINISHED",
            Ingestion::Failed => "FAILED",
        }
    }
}

/// One entry per file name of the session (the newest upload at a name is
/// the one that counts: earlier ones were replaced), in the order they
/// first arrived.
fn file_states(view: &SessionView) -> Vec<(Ingestion, &ferry_engine::UploadView)> {
    let mut order: Vec<&str> = Vec::new();
    let mut latest: HashMap<&str, &ferry_engine::UploadView> = HashMap::new();
    for u in &view.uploads {
        let name = u.upload.path.as_str();
        // The newest upload of a name, unless an older one outlives it (a
        // body sent again that broke off leaves the earlier one).
        match latest.get(name) {
            None => order.push(name),
            Some(_) if u.upload.state == UploadState::Aborted => continue,
            Some(_) => {}
        }
        latest.insert(name, u);
    }
    order
        .into_iter()
        .map(|name| {
            let u = latest[name];
            let state = match u.upload.state {
                UploadState::Committed => Ingestion::Finished,
                UploadState::Skipped | UploadState::Aborted => Ingestion::Failed,
                UploadState::Open | UploadState::Committing => Ingestion::Pending,
            };
            (state, u)
        })
        .collect()
}

fn session_status(s: &Session) -> &'static str {
    match s.state {
        SessionState::Open if s.is_expired_at(ferry_engine::now_ms()) => "EXPIRED",
        SessionState::Open => "OPEN",
        SessionState::Expired => "EXPIRED",
        _ => "CLOSED",
    }
}

// ------------------------------------------------------------ the JSON API

async fn caller(st: &DeepsetState, headers: &HeaderMap) -> Result<Caller, DsError> {
    Ok(ferry_http::authenticate(&st.engine, headers).await?)
}

/// The session, if it belongs to `workspace` (another workspace's session
/// is not found there).
async fn session_in(
    st: &DeepsetState,
    caller: &Caller,
    workspace: &str,
    raw_id: &str,
) -> Result<SessionView, DsError> {
    let id = session_id(raw_id)?;
    let view = st.engine.get_session(caller, &id).await?;
    if view.session.space.as_str() != workspace || view.session.dialect != "deepset" {
        return Err(ds(
            StatusCode::NOT_FOUND,
            format!("no upload session {raw_id} in workspace {workspace}"),
        ));
    }
    Ok(view)
}

/// The create body, checked field by field as pydantic would.
struct CreateBody {
    write_mode: WriteMode,
    expires_in: u64,
}

fn parse_create(body: &Bytes) -> Result<CreateBody, DsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(unprocessable(vec![invalid(
            json!(["body"]),
            "missing",
            "Field required",
            Some(&Value::Null),
        )]));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        unprocessable(vec![invalid(
            json!(["body", e.column()]),
            "json_invalid",
            "JSON decode error",
            Some(&json!({})),
        )])
    })?;
    let Some(obj) = v.as_object() else {
        return Err(unprocessable(vec![invalid(
            json!(["body"]),
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            Some(&v),
        )]));
    };
    let mut errors = Vec::new();
    let mut write_mode = WriteMode::Keep;
    match obj.get("write_mode") {
        None => {}
        Some(Value::String(s)) if WriteMode::parse(s).is_some() => {
            write_mode = WriteMode::parse(s).expect("checked");
        }
        Some(other) => {
            let mut e = invalid(
                json!(["body", "write_mode"]),
                "enum",
                format!("Input should be {}", WriteMode::EXPECTED),
                Some(other),
            );
            e["ctx"] = json!({"expected": WriteMode::EXPECTED});
            errors.push(e);
        }
    }
    let mut expires_in = MAX_EXPIRY;
    match obj.get("expires_in_seconds") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        }) {
            None => errors.push(invalid(
                json!(["body", "expires_in_seconds", "int"]),
                "int_type",
                "Input should be a valid integer",
                Some(n),
            )),
            Some(k) if k < 1 => {
                let mut e = invalid(
                    json!(["body", "expires_in_seconds", "int"]),
                    "greater_than_equal",
                    "Input should be greater than or equal to 1",
                    Some(n),
                );
                e["ctx"] = json!({"ge": 1});
                errors.push(e);
            }
            Some(k) if k as u64 > MAX_EXPIRY => {
                let mut e = invalid(
                    json!(["body", "expires_in_seconds", "int"]),
                    "less_than_equal",
                    format!("Input should be less than or equal to {MAX_EXPIRY}"),
                    Some(n),
                );
                e["ctx"] = json!({"le": MAX_EXPIRY});
                errors.push(e);
            }
            Some(k) => expires_in = k as u64,
        },
    }
    if let Some(p) = obj.get("parallel_processing_enabled")
        && !p.is_boolean()
    {
        errors.push(invalid(
            json!(["body", "parallel_processing_enabled"]),
            "bool_type",
            "Input should be a valid boolean",
            Some(p),
        ));
    }
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    Ok(CreateBody {
        write_mode,
        expires_in,
    })
}

/// `POST …/upload_sessions`.
async fn create(
    State(st): State<DeepsetState>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DsResult {
    let caller = caller(&st, &headers).await?;
    let req = parse_create(&body)?;
    let (conflict, files_expire) = req.write_mode.engine();
    let engine = &st.engine;
    let view = engine
        .create_session(
            &caller,
            NewSession {
                space: Some(workspace.clone()),
                conflict,
                expires_in_secs: Some(req.expires_in.min(engine.limits().max_expiry_secs)),
                commit: ferry_core::CommitMode::Manual,
                uploads: Vec::new(),
                dialect: "deepset".into(),
                extend_secs: None,
                open_ended: true,
                files_expire,
                precondition: ferry_engine::Precondition::None,
                whole_in_request: false,
            },
        )
        .await?;
    let s = &view.session;
    // On object storage, files go straight into the bucket with a real S3
    // presigned POST policy; else to Ferry's own endpoint, which checks a
    // policy of the same shape.
    let (url, fields): (String, BTreeMap<String, String>) = match engine
        .presign_post(&caller, &s.id, max_object(engine))
        .await?
    {
        Some(form) => (form.url, form.fields.into_iter().collect()),
        None => (
            format!("{}{POST_PATH}", st.public_url),
            policy_for(engine, s)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        ),
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "session_id": uuid_of(&s.id),
            "documentation_url": DOCS,
            "expires_at": ferry_http::rfc3339(s.expires_at),
            "aws_prefixed_request_config": {"url": url, "fields": fields},
        })),
    )
        .into_response())
}

fn status_json(view: &SessionView) -> Value {
    let states = file_states(view);
    let count = |want: Ingestion| states.iter().filter(|(s, _)| *s == want).count();
    json!({
        "session_id": uuid_of(&view.session.id),
        "documentation_url": DOCS,
        "expires_at": ferry_http::rfc3339(view.session.expires_at),
        "ingestion_status": {
            "failed_files": count(Ingestion::Failed),
            "finished_files": count(Ingestion::Finished),
        },
    })
}

/// `GET …/upload_sessions/{id}`.
async fn status(
    State(st): State<DeepsetState>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> DsResult {
    let caller = caller(&st, &headers).await?;
    let view = session_in(&st, &caller, &workspace, &id).await?;
    Ok(axum::Json(status_json(&view)).into_response())
}

/// `PUT …/upload_sessions/{id}` with `{"status":"CLOSED"}`: commits the
/// session's files; `204`, `409` once closed.
async fn close(
    State(st): State<DeepsetState>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> DsResult {
    let caller = caller(&st, &headers).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match v.get("status") {
        Some(Value::String(s)) if s == "CLOSED" => {}
        other => {
            let (loc, kind, msg) = match other {
                None => (json!(["body", "status"]), "missing", "Field required"),
                Some(_) => (
                    json!(["body", "status"]),
                    "enum",
                    "Input should be 'CLOSED'",
                ),
            };
            return Err(unprocessable(vec![invalid(loc, kind, msg, other)]));
        }
    }
    let view = session_in(&st, &caller, &workspace, &id).await?;
    adopt_posted(&st.engine, &caller, &view.session.id).await?;
    st.engine.close_session(&caller, &view.session.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Files the session's form posted straight into object storage become
/// its uploads (metadata companions their metadata), before it closes. A
/// name the workspace cannot hold is left out, and said so in the log.
async fn adopt_posted(engine: &Engine, caller: &Caller, session: &str) -> Result<(), DsError> {
    let posted = engine.posted_files(caller, session).await?;
    let (companions, files): (Vec<_>, Vec<_>) = posted
        .into_iter()
        .partition(|(name, _)| name.ends_with(META_SUFFIX) && name.len() > META_SUFFIX.len());
    for (key, _) in files {
        // As Ferry's own form endpoint does: the SDK's client quotes names.
        let name = percent_decode(&key).unwrap_or_else(|| key.clone());
        if name.contains('/') {
            tracing::warn!(%session, %name, "a posted file's name holds '/': left out");
            continue;
        }
        match engine
            .adopt_posted(caller, session, &key, &name, None)
            .await
        {
            Ok(_) => {}
            Err(EngineError::Invalid { message, .. }) => {
                tracing::warn!(%session, %name, %message, "a posted file's name is refused: left out");
            }
            // Adopted meanwhile by another request closing the session.
            Err(EngineError::Store(ferry_store::StoreError::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Each companion is read and applied on its own: several at a time
    // (a session of 300 files spent most of its close on them, one by one).
    futures::stream::iter(companions)
        .map(|(name, size)| async move {
            let decoded = percent_decode(&name).unwrap_or_else(|| name.clone());
            let target = decoded.strip_suffix(META_SUFFIX).unwrap_or(&decoded);
            if size > MAX_META as u64 || target.contains('/') {
                tracing::warn!(%session, %name, "a posted metadata file is too large or misnamed: left out");
                return Ok(());
            }
            let raw = engine
                .read_posted(caller, session, &name, MAX_META as u64)
                .await?;
            match serde_json::from_slice::<Value>(&raw) {
                Ok(meta) if meta.is_object() => {
                    engine
                        .set_upload_metadata(caller, session, target, meta.to_string())
                        .await?;
                }
                _ => tracing::warn!(%session, %name, "posted metadata is not a JSON object: left out"),
            }
            Ok::<(), DsError>(())
        })
        .buffer_unordered(COMPANIONS_AT_ONCE)
        .try_collect::<()>()
        .await
}

/// Metadata companions a close reads and applies at once.
const COMPANIONS_AT_ONCE: usize = 8;

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    page_number: Option<String>,
    is_expired: Option<String>,
    ingestion_status: Option<String>,
}

impl ListQuery {
    /// `limit` (1..=max, default 10) and `page_number` (from 1).
    fn page(&self, max: usize) -> Result<(usize, usize), DsError> {
        let mut errors = Vec::new();
        let mut num = |name: &str, v: &Option<String>, default: usize, lo: usize, hi: usize| {
            let Some(s) = v else { return default };
            match s.parse::<usize>() {
                Ok(n) if (lo..=hi).contains(&n) => n,
                Ok(_) => {
                    errors.push(invalid(
                        json!(["query", name]),
                        "value_error",
                        format!("Input should be from {lo} to {hi}"),
                        Some(&json!(s)),
                    ));
                    default
                }
                Err(_) => {
                    errors.push(invalid(
                        json!(["query", name]),
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        Some(&json!(s)),
                    ));
                    default
                }
            }
        };
        let limit = num("limit", &self.limit, 10, 1, max);
        let page = num("page_number", &self.page_number, 1, 1, usize::MAX);
        if errors.is_empty() {
            Ok((limit, page))
        } else {
            Err(unprocessable(errors))
        }
    }
}

fn bool_param(name: &str, v: &Option<String>) -> Result<Option<bool>, DsError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
        Some("false" | "0" | "no" | "off") => Ok(Some(false)),
        Some(_) => Err(unprocessable(vec![invalid(
            json!(["query", name]),
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
            v.as_ref().map(|s| json!(s)).as_ref(),
        )])),
    }
}

/// `GET …/upload_sessions?limit&page_number&is_expired`: the caller's
/// sessions in the workspace, newest first.
async fn list(
    State(st): State<DeepsetState>,
    Path(workspace): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> DsResult {
    let caller = caller(&st, &headers).await?;
    let (limit, page) = q.page(100)?;
    let expired = bool_param("is_expired", &q.is_expired)?;
    let sessions = st.engine.list_space_sessions(&caller, &workspace).await?;
    let mine: Vec<&Session> = sessions
        .iter()
        .filter(|s| s.dialect == "deepset")
        .filter(|s| expired.is_none_or(|e| e == (session_status(s) == "EXPIRED")))
        .collect();
    let skip = (page - 1).saturating_mul(limit);
    let data: Vec<Value> = mine
        .iter()
        .skip(skip)
        .take(limit)
        .map(|s| {
            json!({
                "session_id": uuid_of(&s.id),
                "created_by": {
                    "user_id": user_uuid(&s.owner),
                    "given_name": s.owner,
                    "family_name": "",
                },
                "created_at": ferry_http::rfc3339(s.created_at),
                "expires_at": ferry_http::rfc3339(s.expires_at),
                "write_mode": WriteMode::of(s).as_str(),
                "status": session_status(s),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "total": mine.len(),
        "has_more": skip.saturating_add(data.len()) < mine.len(),
        "data": data,
    }))
    .into_response())
}

/// `GET …/upload_sessions/{id}/files?ingestion_status&limit&page_number`.
async fn files(
    State(st): State<DeepsetState>,
    Path((workspace, id)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> DsResult {
    let caller = caller(&st, &headers).await?;
    let (limit, page) = q.page(100)?;
    let want = match q.ingestion_status.as_deref() {
        None => None,
        Some("PENDING") => Some(Ingestion::Pending),
        Some("FINISHED") => Some(Ingestion::Finished),
        Some("FAILED") => Some(Ingestion::Failed),
        Some(other) => {
            return Err(unprocessable(vec![invalid(
                json!(["query", "ingestion_status"]),
                "enum",
                "Input should be 'PENDING', 'FAILED' or 'FINISHED'",
                Some(&json!(other)),
            )]));
        }
    };
    let view = session_in(&st, &caller, &workspace, &id).await?;
    let states: Vec<_> = file_states(&view)
        .into_iter()
        .filter(|(s, _)| want.is_none_or(|w| w == *s))
        .collect();
    let skip = (page - 1).saturating_mul(limit);
    let data: Vec<Value> = states
        .iter()
        .skip(skip)
        .take(limit)
        .map(|(state, u)| {
            let metadata = u
                .upload
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str::<Value>(m).ok());
            json!({
                "name": u.upload.path.as_str(),
                "ingestion_status": state.as_str(),
                "file_id": u.file.as_ref().map(|f| f.id.clone()),
                "stored_as": u.file.as_ref().map(|f| f.path.to_string()),
                "size": u.file.as_ref().map(|f| f.size),
                "meta": metadata,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "total": states.len(),
        "has_more": skip.saturating_add(data.len()) < states.len(),
        "data": data,
    }))
    .into_response())
}

// ------------------------------------------------------------ the policy

/// The key prefix of a session's objects: `<workspace>/<session uuid>/`.
fn key_prefix(s: &Session) -> String {
    format!("{}/{}/", s.space, uuid_of(&s.id))
}

fn amz_date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default()
}

/// The largest object one POST may carry.
fn max_object(engine: &Engine) -> u64 {
    let l = engine.limits();
    l.max_file_size.min(l.max_part_size)
}

/// The form fields of a session: a policy valid until the session
/// expires, signed with the server's key.
fn policy_for(engine: &Engine, s: &Session) -> BTreeMap<&'static str, String> {
    let prefix = key_prefix(s);
    let date = amz_date(s.created_at);
    let credential = format!("{}/{}/ferry/s3/aws4_request", s.owner, &date[..8]);
    let doc = json!({
        "expiration": ferry_http::rfc3339(s.expires_at),
        "conditions": [
            ["starts-with", "$key", prefix],
            {"x-amz-algorithm": ALGORITHM},
            {"x-amz-credential": credential},
            {"x-amz-date": date},
            ["content-length-range", 0, max_object(engine)],
        ],
    });
    let policy = base64::engine::general_purpose::STANDARD.encode(doc.to_string());
    let signature = engine.sign(PURPOSE, &policy);
    BTreeMap::from([
        ("key", format!("{prefix}${{filename}}")),
        ("policy", policy),
        ("x-amz-algorithm", ALGORITHM.to_owned()),
        ("x-amz-credential", credential),
        ("x-amz-date", date),
        ("x-amz-signature", signature),
    ])
}

/// What a verified policy grants.
#[derive(Debug, PartialEq, Eq)]
struct Grant {
    owner: String,
    session: String,
    /// `<workspace>/<session uuid>/`
    prefix: String,
    min: u64,
    max: u64,
}

/// Checks the signature, the expiry and every condition against the form's
/// fields (names lower-cased; `key` before `${filename}` is filled in,
/// with the `starts-with` checked on the final key by the caller).
fn verify_policy(
    engine: &Engine,
    fields: &BTreeMap<String, String>,
    now_ms: i64,
) -> Result<Grant, S3Error> {
    let policy = fields.get("policy").ok_or_else(|| {
        s3(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Bucket POST must contain a field named 'policy'",
        )
    })?;
    let sig = fields.get("x-amz-signature").ok_or_else(|| {
        denied(
            "Bucket POST must contain a field named 'x-amz-signature' with the policy's signature",
        )
    })?;
    if !engine.verify_signed(PURPOSE, policy, sig) {
        return Err(s3(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    let bad = |m: &str| denied(format!("Invalid Policy: {m}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(policy)
        .map_err(|_| bad("not base64"))?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
    let expiration = doc
        .get("expiration")
        .and_then(Value::as_str)
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .ok_or_else(|| bad("no expiration"))?;
    let expires_ms = (expiration.unix_timestamp_nanos() / 1_000_000) as i64;
    if now_ms >= expires_ms {
        return Err(denied("Invalid according to Policy: Policy expired."));
    }
    let conditions = doc
        .get("conditions")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no conditions"))?;
    let mut covered: Vec<String> = Vec::new();
    let mut prefix = None;
    let (mut min, mut max) = (0, u64::MAX);
    let failed = |c: &Value| {
        denied(format!(
            "Invalid according to Policy: Policy Condition failed: {c}"
        ))
    };
    let field = |name: &str| fields.get(&name.trim_start_matches('$').to_ascii_lowercase());
    for c in conditions {
        match c {
            Value::Object(map) => {
                for (name, want) in map {
                    let name = name.to_ascii_lowercase();
                    let want = want.as_str().ok_or_else(|| failed(c))?;
                    if field(&name).map(String::as_str) != Some(want) {
                        return Err(failed(c));
                    }
                    covered.push(name);
                }
            }
            Value::Array(a) => match a.first().and_then(Value::as_str) {
                Some("content-length-range") => {
                    min = a.get(1).and_then(Value::as_u64).ok_or_else(|| failed(c))?;
                    max = a.get(2).and_then(Value::as_u64).ok_or_else(|| failed(c))?;
                }
                Some(op @ ("eq" | "starts-with")) => {
                    let name = a.get(1).and_then(Value::as_str).ok_or_else(|| failed(c))?;
                    let want = a.get(2).and_then(Value::as_str).ok_or_else(|| failed(c))?;
                    let name = name.trim_start_matches('$').to_ascii_lowercase();
                    let have = field(&name).ok_or_else(|| failed(c))?;
                    let ok = if op == "eq" {
                        have == want
                    } else {
                        have.starts_with(want)
                    };
                    if !ok {
                        return Err(failed(c));
                    }
                    if name == "key" && op == "starts-with" {
                        prefix = Some(want.to_owned());
                    }
                    covered.push(name);
                }
                _ => return Err(bad("unknown condition")),
            },
            _ => return Err(bad("unknown condition")),
        }
    }
    for name in fields.keys() {
        let exempt = matches!(name.as_str(), "policy" | "x-amz-signature" | "file")
            || name.starts_with("x-ignore-");
        if !exempt && !covered.contains(name) {
            return Err(denied(format!(
                "Invalid according to Policy: Extra input fields: {name}"
            )));
        }
    }
    let prefix = prefix.ok_or_else(|| bad("no key prefix"))?;
    let session = prefix
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(|u| u.replace('-', ""))
        .filter(|h| h.len() == 32)
        .ok_or_else(|| bad("the key prefix names no session"))?;
    let owner = fields
        .get("x-amz-credential")
        .filter(|_| covered.iter().any(|c| c == "x-amz-credential"))
        .and_then(|c| c.split('/').next())
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("no credential"))?
        .to_owned();
    Ok(Grant {
        owner,
        session,
        prefix,
        min,
        max,
    })
}

/// `%XX` escapes decoded (aiohttp quotes form field values in headers);
/// `None` when the result is not UTF-8 (never a name nobody sent).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

// ------------------------------------------------------------ POST object

/// Reads the form's fields up to the `file` part, which it returns
/// unread (S3: every field comes before the file).
pub(crate) async fn read_fields<'r>(
    form: &mut multer::Multipart<'r>,
) -> Result<(BTreeMap<String, String>, multer::Field<'r>), S3Error> {
    let malformed = |m: String| s3(StatusCode::BAD_REQUEST, "MalformedPOSTRequest", m);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let field = form.next_field().await.map_err(|e| {
            malformed(format!(
                "The body of your POST request is not well-formed multipart/form-data: {e}"
            ))
        })?;
        let Some(mut field) = field else {
            return Err(s3(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
            ));
        };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            return Ok((fields, field));
        }
        if fields.len() >= MAX_FIELDS {
            return Err(malformed("too many form fields".into()));
        }
        let mut value = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| malformed(format!("form field {name}: {e}")))?
        {
            if value.len() + chunk.len() > MAX_FIELD {
                return Err(malformed(format!("form field {name} is too long")));
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value)
            .map_err(|_| malformed(format!("form field {name} is not UTF-8")))?;
        fields.insert(name, value);
    }
}

/// `POST /deepset/objects`: S3 POST-object semantics. Form fields first,
/// `file` last; the file streams to storage as it arrives.
async fn post_object(
    State(st): State<DeepsetState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, S3Error> {
    let malformed = |m: String| s3(StatusCode::BAD_REQUEST, "MalformedPOSTRequest", m);
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            malformed(
                "The body of your POST request is not well-formed multipart/form-data.".into(),
            )
        })?;
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let (fields, file) = read_fields(&mut form).await?;
    let grant = verify_policy(&st.engine, &fields, ferry_engine::now_ms())?;
    let filename = match file.file_name() {
        None => String::new(),
        Some(f) => percent_decode(f)
            .ok_or_else(|| malformed("the file's name is not UTF-8 once percent-decoded".into()))?,
    };
    let key = fields
        .get("key")
        .map(|k| k.replace("${filename}", &filename))
        .unwrap_or_default();
    let name = key
        .strip_prefix(&grant.prefix)
        .ok_or_else(|| denied("Invalid according to Policy: Policy Condition failed: key"))?
        .to_owned();
    if name.is_empty() || name.contains('/') {
        return Err(s3(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!(
                "{key:?}: a workspace is flat: the key must be {}<file name>",
                grant.prefix
            ),
        ));
    }
    let caller = Caller::User(Principal {
        user: grant.owner.clone(),
        admin: false,
    });
    let content_type = file.content_type().map(ToString::to_string);

    let too_large = || {
        s3(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            format!(
                "Your proposed upload exceeds the maximum allowed size of {} bytes",
                grant.max
            ),
        )
    };
    if let Some(target) = name.strip_suffix(META_SUFFIX).filter(|t| !t.is_empty()) {
        // A companion: its JSON becomes the metadata of `target`.
        let mut file = file;
        let mut raw = Vec::new();
        while let Some(chunk) = file
            .chunk()
            .await
            .map_err(|e| s3(StatusCode::BAD_REQUEST, "IncompleteBody", e.to_string()))?
        {
            if (raw.len() + chunk.len()) as u64 > grant.max.min(MAX_META as u64) {
                return Err(too_large());
            }
            raw.extend_from_slice(&chunk);
        }
        let meta: Value = serde_json::from_slice(&raw).map_err(|e| {
            s3(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("{name}: metadata must be a JSON object: {e}"),
            )
        })?;
        if !meta.is_object() {
            return Err(s3(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("{name}: metadata must be a JSON object"),
            ));
        }
        st.engine
            .set_upload_metadata(&caller, &grant.session, target, meta.to_string())
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let upload = st
        .engine
        .put_upload(
            &caller,
            &grant.session,
            NewUpload {
                path: name,
                content_type,
                ..Default::default()
            },
        )
        .await?;
    let seen = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let max = grant.max;
    let (count, flag) = (seen.clone(), over.clone());
    let stream = file
        .map(move |item| {
            let chunk = item.map_err(std::io::Error::other)?;
            let n = count.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            if n > max {
                flag.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other(
                    "the object is over the policy's size",
                ));
            }
            Ok(chunk)
        })
        .boxed();
    let written = st
        .engine
        .write(
            &caller,
            &upload.id,
            WriteAt::Append {
                offset: 0,
                total: None,
                len: None,
            },
            stream,
            PartChecks::default(),
        )
        .await;
    let w = match written {
        Ok(w) => w,
        Err(_) if over.load(Ordering::Relaxed) => return Err(too_large()),
        Err(e) => return Err(e.into()),
    };
    let n = w.upload.received.prefix_len();
    if n < grant.min {
        return Err(s3(
            StatusCode::BAD_REQUEST,
            "EntityTooSmall",
            format!(
                "Your proposed upload is smaller than the minimum allowed size of {} bytes",
                grant.min
            ),
        ));
    }
    st.engine
        .write(
            &caller,
            &upload.id,
            WriteAt::Append {
                offset: n,
                total: Some(n),
                len: Some(0),
            },
            futures::stream::empty().boxed(),
            PartChecks::default(),
        )
        .await?;
    // Whatever follows `file` is ignored, as S3 does.
    while let Ok(Some(_)) = form.next_field().await {}
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_uuids() {
        let hex = "0123456789abcdef0123456789abcdef";
        let u = uuid_of(hex);
        assert_eq!(u, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(session_id(&u).ok(), Some(hex.to_owned()));
        assert_eq!(session_id(hex).ok(), Some(hex.to_owned()));
        assert!(session_id("0123-4567").is_err());
        assert!(session_id("0123456789abcdef0123456789abcdeg").is_err());
        assert!(session_id("0-123456789abcdef0123456789abcdef---").is_err());
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%20b.txt").unwrap(), "a b.txt");
        assert_eq!(percent_decode("%E2%9C%93.txt").unwrap(), "✓.txt");
        assert_eq!(percent_decode("100%").unwrap(), "100%");
        assert_eq!(percent_decode("x%zz").unwrap(), "x%zz");
        assert_eq!(percent_decode("x%FF.txt"), None);
    }

    fn check_create(body: &str, expect: Result<(WriteMode, u64), &[&str]>) {
        match (parse_create(&Bytes::from(body.to_owned())), expect) {
            (Ok(b), Ok((mode, secs))) => assert_eq!((b.write_mode, b.expires_in), (mode, secs)),
            (Err(e), Err(types)) => {
                assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
                let got: Vec<&str> = e
                    .detail
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["type"].as_str().unwrap())
                    .collect();
                assert_eq!(got, types, "{body}");
            }
            (got, want) => panic!(
                "{body}: got {:?}, want {want:?}",
                got.err().map(|e| e.detail)
            ),
        }
    }

    #[test]
    fn create_bodies() {
        check_create("{}", Ok((WriteMode::Keep, MAX_EXPIRY)));
        check_create(
            r#"{"write_mode":"TEMPORARY","expires_in_seconds":60,"parallel_processing_enabled":true}"#,
            Ok((WriteMode::Temporary, 60)),
        );
        check_create(
            r#"{"expires_in_seconds":null}"#,
            Ok((WriteMode::Keep, MAX_EXPIRY)),
        );
        check_create(r#"{"write_mode":"keep"}"#, Err(&["enum"]));
        check_create(
            r#"{"expires_in_seconds":0,"parallel_processing_enabled":"x"}"#,
            Err(&["greater_than_equal", "bool_type"]),
        );
        check_create(r#"{"expires_in_seconds":86401}"#, Err(&["less_than_equal"]));
        check_create(r#"{"expires_in_seconds":"soon"}"#, Err(&["int_type"]));
        check_create("[1]", Err(&["model_attributes_type"]));
        check_create("{", Err(&["json_invalid"]));
        check_create("", Err(&["missing"]));
    }
}
