//! Veeva Vault's resumable upload sessions (file staging) under
//! `/api/{version}/services/file_staging/upload`, and the job-status route
//! (`/api/{version}/services/jobs/{job_id}`) their commit points to.
//!
//! A Vault upload session is a Ferry session with one upload, created by
//! this dialect; the Vault session id is the upload's id. Paths are
//! relative to the caller's home space; an admin may name another space as
//! the first segment. Parts are numbered and must come in order, so their
//! byte ranges follow from the size of part 1 (`WriteAt::PartAt`): the
//! rules of that arithmetic are the Vault wire format's, and live here.
//! Ferry commits synchronously: the job a commit answers with is already
//! finished, and its id is the session id, so jobs need no storage of
//! their own. docs/VEEVA.md is the contract.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_core::{
    ByteRange, ConflictPolicy, Digest, DigestAlgo, FileRecord, Part, Session, SpaceName,
    StateError, Upload,
};
use ferry_engine::{
    Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, UploadView, Want, WriteAt,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const MIB: u64 = 1024 * 1024;
/// Smallest part but the last: Vault's "5 MB", read as MiB.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part: Vault's "50 MB", read as MiB.
pub const MAX_PART_SIZE: u64 = 50 * MIB;
/// Most parts in one session.
pub const MAX_PARTS: u32 = 2000;
/// How long a session stays open (capped by the engine's maximum expiry).
pub const SESSION_LIFETIME_SECS: u64 = 72 * 3600;
/// Most parts one page of `GET …/parts` lists, and its default.
pub const MAX_PAGE: usize = 1000;

/// The `dialect` of the sessions this module creates; it sees no others.
const DIALECT: &str = "veeva";

/// What the Veeva handlers share.
#[derive(Clone)]
pub struct VeevaState {
    pub engine: Engine,
    /// Base of the absolute `next_page` URLs (no trailing slash).
    pub public_url: String,
}

pub fn router(state: VeevaState) -> Router {
    const UPLOAD: &str = "/api/{version}/services/file_staging/upload";
    let routes = Router::new()
        .route(UPLOAD, get(list).post(create))
        .route(
            &format!("{UPLOAD}/{{id}}"),
            get(details).put(write).post(commit).delete(abort),
        )
        .route(&format!("{UPLOAD}/{{id}}/parts"), get(parts))
        .route("/api/{version}/services/jobs/{job_id}", get(job))
        // Everything else under /api/ is no resource, in Vault's words.
        // (A catch-all may not sit beside `{version}`, so it sits below it.)
        .route("/api/{version}/{*rest}", any(no_route))
        .route("/api/{version}", any(no_route))
        .route("/api/", any(no_route))
        .route("/api", any(no_route))
        .method_not_allowed_fallback(method_not_supported)
        .route_layer(axum::middleware::from_fn(check_version))
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// Vault's format for an answer the framework made.
fn render_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND => kind::MALFORMED_URL,
        StatusCode::METHOD_NOT_ALLOWED => kind::METHOD_NOT_SUPPORTED,
        StatusCode::UNAUTHORIZED => kind::INVALID_SESSION_ID,
        StatusCode::PAYLOAD_TOO_LARGE => kind::EXCEEDS_FILE_MAX_SIZE,
        s if s.is_server_error() => kind::UNEXPECTED_ERROR,
        _ => kind::INVALID_DATA,
    };
    VeevaError::new(status, kind, message).into_response()
}

// ------------------------------------------------------------------ errors

/// Vault's error types (the `type` of each entry in `errors`).
mod kind {
    pub const INVALID_SESSION_ID: &str = "INVALID_SESSION_ID";
    pub const PARAMETER_REQUIRED: &str = "PARAMETER_REQUIRED";
    pub const INVALID_DATA: &str = "INVALID_DATA";
    pub const MALFORMED_URL: &str = "MALFORMED_URL";
    pub const METHOD_NOT_SUPPORTED: &str = "METHOD_NOT_SUPPORTED";
    pub const INSUFFICIENT_ACCESS: &str = "INSUFFICIENT_ACCESS";
    pub const OPERATION_NOT_ALLOWED: &str = "OPERATION_NOT_ALLOWED";
    pub const RACE_CONDITION: &str = "RACE_CONDITION";
    pub const EXCEEDS_FILE_MAX_SIZE: &str = "EXCEEDS_FILE_MAX_SIZE";
    pub const UNEXPECTED_ERROR: &str = "UNEXPECTED_ERROR";
}

/// `{"responseStatus":"FAILURE","errors":[{"type","message"}]}` with an
/// HTTP status that says the same (Vault itself answers 200).
#[derive(Debug)]
pub struct VeevaError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl VeevaError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> VeevaError {
        VeevaError {
            status,
            kind,
            message: message.into(),
        }
    }
}

fn invalid(message: impl Into<String>) -> VeevaError {
    VeevaError::new(StatusCode::BAD_REQUEST, kind::INVALID_DATA, message)
}

fn required(name: &str) -> VeevaError {
    VeevaError::new(
        StatusCode::BAD_REQUEST,
        kind::PARAMETER_REQUIRED,
        format!("Missing required parameter [{name}]"),
    )
}

fn not_allowed(message: impl Into<String>) -> VeevaError {
    VeevaError::new(StatusCode::CONFLICT, kind::OPERATION_NOT_ALLOWED, message)
}

fn not_found(message: impl Into<String>) -> VeevaError {
    VeevaError::new(StatusCode::NOT_FOUND, kind::MALFORMED_URL, message)
}

impl From<EngineError> for VeevaError {
    fn from(e: EngineError) -> Self {
        use StatusCode as S;
        let (status, kind) = match &e {
            EngineError::Unauthenticated(_) => (S::UNAUTHORIZED, kind::INVALID_SESSION_ID),
            EngineError::Forbidden(_) => (S::FORBIDDEN, kind::INSUFFICIENT_ACCESS),
            EngineError::NotFound(_) => (S::NOT_FOUND, kind::MALFORMED_URL),
            EngineError::Invalid { .. }
            | EngineError::RangeNotSatisfiable(_)
            | EngineError::BodyFailed { .. } => (S::BAD_REQUEST, kind::INVALID_DATA),
            EngineError::DigestMismatch { .. } => (S::UNPROCESSABLE_ENTITY, kind::INVALID_DATA),
            EngineError::AlreadyExists { .. }
            | EngineError::Incomplete { .. }
            | EngineError::OffsetMismatch { .. } => (S::CONFLICT, kind::OPERATION_NOT_ALLOWED),
            EngineError::Conflict(_) | EngineError::Unsupported(_) => {
                (S::CONFLICT, kind::RACE_CONDITION)
            }
            EngineError::Gone(StateError::Committed | StateError::Committing) => {
                (S::CONFLICT, kind::OPERATION_NOT_ALLOWED)
            }
            EngineError::Gone(_) => (S::GONE, kind::OPERATION_NOT_ALLOWED),
            EngineError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, kind::EXCEEDS_FILE_MAX_SIZE),
            EngineError::TooManySessions { .. } => {
                (S::TOO_MANY_REQUESTS, kind::OPERATION_NOT_ALLOWED)
            }
            EngineError::InsufficientStorage(_) => {
                (S::INSUFFICIENT_STORAGE, kind::OPERATION_NOT_ALLOWED)
            }
            EngineError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, kind::UNEXPECTED_ERROR),
            EngineError::Rejected { .. } => {
                (ferry_http::status_of(&e), kind::OPERATION_NOT_ALLOWED)
            }
            _ => (S::INTERNAL_SERVER_ERROR, kind::UNEXPECTED_ERROR),
        };
        let message = match &e {
            EngineError::Gone(StateError::Expired) => {
                "the upload session has expired; its parts were purged".to_owned()
            }
            _ => ferry_http::public_message(&e),
        };
        VeevaError::new(status, kind, message)
    }
}

impl IntoResponse for VeevaError {
    fn into_response(self) -> Response {
        let body = json!({
            "responseStatus": "FAILURE",
            "errors": [{"type": self.kind, "message": self.message}],
        });
        ferry_http::rendered((self.status, axum::Json(body)).into_response())
    }
}

type VeevaResult = Result<Response, VeevaError>;

fn success(data: Value) -> Response {
    axum::Json(json!({"responseStatus": "SUCCESS", "data": data})).into_response()
}

// ------------------------------------------------------------ plumbing

/// `v` + digits + `.` + digits, as in `v25.1`.
fn is_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    v.strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// Every route of the dialect sits under `/api/{version}/`; any other
/// version is no resource at all.
async fn check_version(req: Request, next: Next) -> Response {
    let version = req.uri().path().split('/').nth(2).unwrap_or_default();
    if !is_version(version) {
        return not_found(format!(
            "{version:?} is not an API version: use vNN.N, e.g. v25.1"
        ))
        .into_response();
    }
    next.run(req).await
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> VeevaError {
    not_found(format!("no resource {method} {}", uri.path()))
}

async fn method_not_supported(method: axum::http::Method, uri: axum::http::Uri) -> VeevaError {
    VeevaError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kind::METHOD_NOT_SUPPORTED,
        format!("{} does not support {method}", uri.path()),
    )
}

/// Vault sends the session id as the whole `Authorization` value; a
/// `Bearer ` prefix is accepted too.
async fn authenticate(engine: &Engine, headers: &HeaderMap) -> Result<Caller, VeevaError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            VeevaError::new(
                StatusCode::UNAUTHORIZED,
                kind::INVALID_SESSION_ID,
                "this needs an 'Authorization: {SESSION_ID}' header",
            )
        })?;
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => value,
    };
    Ok(engine.authenticate(token).await?)
}

fn is_admin(caller: &Caller) -> bool {
    matches!(caller, Caller::User(p) if p.admin)
}

/// The upload behind a Vault session id, with its session. Sessions other
/// dialects created are not Vault sessions: they are not found here.
async fn veeva_upload(
    st: &VeevaState,
    caller: &Caller,
    id: &str,
) -> Result<(UploadView, Session), VeevaError> {
    let (view, session) = st.engine.upload_and_session(caller, id).await?;
    if session.dialect != DIALECT {
        return Err(not_found(format!("no upload session {id:?}")));
    }
    Ok((view, session))
}

/// An open session, or why it is not.
fn check_open(session: &Session) -> Result<(), VeevaError> {
    session
        .state
        .check_writable()
        .map_err(|e| EngineError::Gone(e).into())
}

/// Vault's timestamps: UTC with milliseconds, `2020-12-11T23:30:43.000Z`.
fn date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

// ------------------------------------------------------------- sessions

/// What the upload keeps between requests: the path as the client gave it.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    path: String,
}

fn shown_path(u: &Upload) -> String {
    serde_json::from_str::<Stored>(u.dialect_state.as_deref().unwrap_or("{}"))
        .ok()
        .map(|s| s.path)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("/{}", u.path))
}

/// The Vault session object.
fn session_json(s: &Session, u: &Upload) -> Value {
    json!({
        "path": shown_path(u),
        "name": u.path.name(),
        "id": u.id,
        "expiration_date": date(s.expires_at),
        "created_date": date(s.created_at),
        // Ferry keeps no time per part; see docs/VEEVA.md.
        "last_uploaded_date": date(s.created_at),
        "owner": s.owner,
        "uploaded_parts": u.parts.len(),
        "size": u.length.known().unwrap_or(0),
        "uploaded": u.received.len(),
        "overwrite": s.conflict == ConflictPolicy::Replace,
    })
}

/// The create form; every field is checked by hand so that a missing one
/// answers `PARAMETER_REQUIRED`.
#[derive(Default, Deserialize)]
pub(crate) struct CreateForm {
    path: Option<String>,
    size: Option<String>,
    overwrite: Option<String>,
}

/// A parsed create request.
#[derive(Debug, PartialEq, Eq)]
struct Create {
    /// The path as shown back: `/` + the path relative to the home space
    /// (or, for an admin, possibly `/{space}/…`).
    shown: String,
    /// Without the leading `/`.
    relative: String,
    size: u64,
    overwrite: bool,
}

impl Create {
    fn parse(f: CreateForm) -> Result<Create, VeevaError> {
        let path = f.path.ok_or_else(|| required("path"))?;
        let relative = path.trim().trim_start_matches('/').to_owned();
        if relative.is_empty() {
            return Err(invalid(
                "path must name a file, e.g. /folder/file.bin: it is empty",
            ));
        }
        let size = f.size.ok_or_else(|| required("size"))?;
        let size: u64 = size
            .trim()
            .parse()
            .map_err(|_| invalid(format!("size must be a number of bytes, not {size:?}")))?;
        let most = u64::from(MAX_PARTS) * MAX_PART_SIZE;
        if size > most {
            return Err(VeevaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                kind::EXCEEDS_FILE_MAX_SIZE,
                format!(
                    "a file of {size} bytes does not fit in {MAX_PARTS} parts of at most {MAX_PART_SIZE} bytes ({most} bytes)"
                ),
            ));
        }
        let overwrite = match f.overwrite.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(invalid(format!(
                    "overwrite must be true or false, not {v:?}"
                )));
            }
        };
        Ok(Create {
            shown: format!("/{relative}"),
            relative,
            size,
            overwrite,
        })
    }

    /// For an admin, the space the first segment may name and the path
    /// in it: that space is meant when it exists.
    fn named_space(&self) -> Option<(String, String)> {
        let (first, rest) = self.relative.split_once('/')?;
        let rest = rest.trim_start_matches('/');
        (SpaceName::parse(first).is_ok() && !rest.is_empty())
            .then(|| (first.to_owned(), rest.to_owned()))
    }
}

async fn create(State(st): State<VeevaState>, req: axum::extract::Request) -> VeevaResult {
    let headers = req.headers().clone();
    let req = ferry_http::utf8_form(req)
        .await
        .map_err(|(status, message)| match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                VeevaError::new(status, kind::EXCEEDS_FILE_MAX_SIZE, message)
            }
            _ => invalid(message),
        })?;
    let caller = authenticate(&st.engine, &headers).await?;
    let form = match Form::<CreateForm>::from_request(req, &()).await {
        Ok(Form(form)) => form,
        // No body at all: every parameter is missing.
        Err(FormRejection::InvalidFormContentType(_))
            if !headers.contains_key(header::CONTENT_TYPE) =>
        {
            CreateForm::default()
        }
        Err(e) => {
            return Err(invalid(format!(
                "the body must be form-urlencoded path, size and overwrite: {}",
                e.body_text()
            )));
        }
    };
    let req = Create::parse(form)?;
    let limits = st.engine.limits();
    let new = |space: Option<String>, path: String| NewSession {
        space,
        conflict: if req.overwrite {
            ConflictPolicy::Replace
        } else {
            ConflictPolicy::Fail
        },
        expires_in_secs: Some(SESSION_LIFETIME_SECS.min(limits.max_expiry_secs)),
        commit: ferry_core::CommitMode::Manual,
        uploads: vec![NewUpload {
            path,
            size: Some(req.size),
            dialect_state: Some(
                serde_json::to_string(&Stored {
                    path: req.shown.clone(),
                })
                .expect("serializable"),
            ),
            ..Default::default()
        }],
        dialect: DIALECT.into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        precondition: ferry_engine::Precondition::None,
        whole_in_request: false,
    };
    let home = || new(None, req.relative.clone());
    let view = match req.named_space().filter(|_| is_admin(&caller)) {
        // The engine checks the space before it creates anything: a space
        // that does not exist means the admin's home was meant.
        Some((space, rest)) => match st
            .engine
            .create_session(&caller, new(Some(space), rest))
            .await
        {
            Err(EngineError::NotFound(_)) => st.engine.create_session(&caller, home()).await?,
            other => other?,
        },
        None => st.engine.create_session(&caller, home()).await?,
    };
    Ok(success(session_json(
        &view.session,
        &view.uploads[0].upload,
    )))
}

async fn list(State(st): State<VeevaState>, headers: HeaderMap) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    let sessions = st
        .engine
        .list_sessions(
            &caller,
            Some(ferry_core::SessionState::Open),
            is_admin(&caller),
        )
        .await?;
    let now = ferry_engine::now_ms();
    let mut out = Vec::new();
    for s in sessions {
        if s.dialect != DIALECT || s.is_expired_at(now) {
            continue;
        }
        let view = match st.engine.get_session(&caller, &s.id).await {
            Ok(v) => v,
            // Ended or expired since it was listed.
            Err(EngineError::NotFound(_) | EngineError::Gone(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if view.session.state.check_writable().is_err() {
            continue;
        }
        if let Some(u) = view.uploads.first() {
            out.push(session_json(&view.session, &u.upload));
        }
    }
    Ok(success(Value::Array(out)))
}

async fn details(
    State(st): State<VeevaState>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    let (view, session) = veeva_upload(&st, &caller, &id).await?;
    check_open(&session)?;
    Ok(success(session_json(&session, &view.upload)))
}

async fn abort(
    State(st): State<VeevaState>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    veeva_upload(&st, &caller, &id).await?;
    st.engine.abort_upload(&caller, &id).await?;
    Ok(axum::Json(json!({"responseStatus": "SUCCESS"})).into_response())
}

// ---------------------------------------------------------------- parts

/// The headers of a part.
#[derive(Debug)]
struct PartHeaders {
    number: u32,
    length: u64,
    md5: Option<Digest>,
}

fn part_headers(headers: &HeaderMap) -> Result<PartHeaders, VeevaError> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or("\u{fffd}"))
    };
    let number =
        text("x-vaultapi-filepartnumber").ok_or_else(|| required("X-VaultAPI-FilePartNumber"))?;
    let number = number
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "X-VaultAPI-FilePartNumber must be a number from 1 to {MAX_PARTS}, not {number:?}"
            ))
        })?;
    let length = text("content-length")
        .ok_or_else(|| {
            VeevaError::new(
                StatusCode::LENGTH_REQUIRED,
                kind::PARAMETER_REQUIRED,
                "Missing required parameter [Content-Length]: send each part with its length",
            )
        })?
        .parse::<u64>()
        .map_err(|_| invalid("Content-Length is not a number"))?;
    if length > MAX_PART_SIZE {
        return Err(VeevaError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            kind::INVALID_DATA,
            format!("a part of {length} bytes is over the limit of {MAX_PART_SIZE} bytes per part"),
        ));
    }
    let md5 = text("content-md5").map(parse_md5).transpose()?;
    Ok(PartHeaders {
        number,
        length,
        md5,
    })
}

/// `Content-MD5`: hex as Vault writes it, or base64 as RFC 1864 does.
pub(crate) fn parse_md5(v: &str) -> Result<Digest, VeevaError> {
    Digest::from_hex(DigestAlgo::Md5, v)
        .map_or_else(
            || ferry_http::decode_digest(DigestAlgo::Md5, v, "Content-MD5"),
            Ok,
        )
        .map_err(|_| {
            invalid(format!(
                "Content-MD5 {v:?} is neither 32 hex digits nor the base64 of 16 bytes"
            ))
        })
}

/// Where part `number` of `length` bytes goes in a file of `size` bytes
/// that has received `parts`. Part 1 fixes the part size `p`: part `n`
/// covers `[(n-1)p, min(np, size))`. Parts come in order (part `n` needs
/// parts `1..n`); a part may be sent again, with the same size.
fn part_range(
    size: u64,
    parts: &BTreeMap<u32, Part>,
    number: u32,
    length: u64,
) -> Result<ByteRange, VeevaError> {
    let next = (1..=MAX_PARTS)
        .find(|n| !parts.contains_key(n))
        .unwrap_or(MAX_PARTS + 1);
    if number > next {
        return Err(not_allowed(format!(
            "part {number} cannot come before part {next}: parts must be uploaded in numerical order"
        )));
    }
    if size == 0 {
        return Err(invalid(
            "the file is empty: commit the session without uploading parts",
        ));
    }
    if let Some(old) = parts.get(&number)
        && old.size != length
    {
        return Err(invalid(format!(
            "part {number} was received with {} bytes; a part sent again must have the same size, not {length}",
            old.size
        )));
    }
    let p = match parts.get(&1) {
        Some(first) if number != 1 => first.size,
        _ => length,
    };
    let start = u64::from(number - 1) * p;
    if start >= size {
        return Err(invalid(format!(
            "part {number} starts past the end: the file of {size} bytes has {} parts of {p} bytes",
            size.div_ceil(p)
        )));
    }
    let end = (start + p).min(size);
    if length != end - start {
        return Err(invalid(if number == 1 {
            format!("part 1 of {length} bytes is larger than the file of {size} bytes")
        } else {
            format!(
                "part {number} must be {} bytes (bytes {start}-{} of the {size}, in parts the size of part 1), not {length}",
                end - start,
                end - 1
            )
        }));
    }
    if end < size && length < MIN_PART_SIZE {
        return Err(invalid(format!(
            "a part of {length} bytes is under the minimum of {MIN_PART_SIZE} bytes; only the last part may be smaller"
        )));
    }
    if number == 1 && size.div_ceil(p) > u64::from(MAX_PARTS) {
        return Err(invalid(format!(
            "in parts of {p} bytes the file of {size} bytes needs {} parts; the limit is {MAX_PARTS}: send larger parts",
            size.div_ceil(p)
        )));
    }
    Ok(ByteRange::new(start, end).expect("start < end"))
}

async fn write(
    State(st): State<VeevaState>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> VeevaResult {
    let checked = async {
        let caller = authenticate(&st.engine, &headers).await?;
        let part = part_headers(&headers)?;
        let (view, session) = veeva_upload(&st, &caller, &id).await?;
        let up = &view.upload;
        // A part sent again after the commit is answered by the engine's
        // resend policy; otherwise the session must be open.
        if !up.state.is_done() {
            check_open(&session)?;
            up.state
                .check_writable()
                .map_err(|e| VeevaError::from(EngineError::Gone(e)))?;
        }
        let size = up.length.known().unwrap_or(0);
        let range = part_range(size, &up.parts, part.number, part.length)?;
        Ok::<_, VeevaError>((caller, part, range))
    }
    .await;
    let (caller, part, range) = checked?;
    let w = st
        .engine
        .write(
            &caller,
            &id,
            WriteAt::PartAt {
                number: part.number,
                range,
            },
            ferry_http::body_stream(body),
            PartChecks {
                expected: part.md5.into_iter().collect(),
                want: Want::algo(DigestAlgo::Md5),
                late: None,
            },
        )
        .await?;
    let p = w.part.as_ref().ok_or_else(|| {
        VeevaError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            kind::UNEXPECTED_ERROR,
            "the write recorded no part",
        )
    })?;
    Ok(success(part_json(p)))
}

fn part_json(p: &Part) -> Value {
    json!({"size": p.size, "part_number": p.number, "part_content_md5": p.md5})
}

#[derive(Deserialize)]
struct PartsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

fn cursor_of(after: u32) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{after}"))
}

pub(crate) fn cursor_after(cursor: &str) -> Option<u32> {
    let raw = URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("after:")?
        .parse()
        .ok()
}

async fn parts(
    State(st): State<VeevaState>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<PartsQuery>, QueryRejection>,
) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    let Query(q) = query.map_err(|e| invalid(e.body_text()))?;
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => MAX_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| invalid(format!("limit must be from 1 to {MAX_PAGE}, not {l:?}")))?,
    };
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => cursor_after(c)
            .ok_or_else(|| invalid(format!("cursor {c:?} is not one this server handed out")))?,
    };
    let (view, session) = veeva_upload(&st, &caller, &id).await?;
    check_open(&session)?;
    let page: Vec<&Part> = view
        .upload
        .parts
        .range(after.saturating_add(1)..)
        .map(|(_, p)| p)
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut details = json!({"limit": limit, "size": page.len()});
    if more && let Some(last) = page.last() {
        details["next_page"] = json!(format!(
            "{}/api/{version}/services/file_staging/upload/{id}/parts?cursor={}&limit={limit}",
            st.public_url,
            cursor_of(last.number)
        ));
    }
    let data: Vec<Value> = page.iter().map(|p| part_json(p)).collect();
    Ok(axum::Json(json!({
        "responseStatus": "SUCCESS",
        "responseDetails": details,
        "data": data,
    }))
    .into_response())
}

// --------------------------------------------------------- commit + jobs

async fn commit(
    State(st): State<VeevaState>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    veeva_upload(&st, &caller, &id).await?;
    let view = st.engine.commit_upload(&caller, &id, None).await?;
    Ok(success(json!({"job_id": view.upload.id})))
}

/// The finished job of a committed session: Vault's job-status shape, plus
/// where the file landed.
fn job_json(
    version: &str,
    session: &Session,
    view: &UploadView,
    file: Option<&FileRecord>,
) -> Value {
    let id = &view.upload.id;
    let when = date(file.map_or(session.created_at, |f| f.created_at));
    let mut links = vec![json!({
        "rel": "self",
        "href": format!("/api/{version}/services/jobs/{id}"),
        "method": "GET",
        "accept": "application/json",
    })];
    let landed = file.map(|f| {
        links.push(json!({
            "rel": "file",
            "href": format!("/v1/spaces/{}/files/{}", f.space, f.path),
            "method": "GET",
            "accept": "application/octet-stream",
        }));
        json!({
            "space": f.space.as_str(),
            "path": f.path.as_str(),
            "id": f.id,
            "size": f.size,
            "sha256": f.sha256,
        })
    });
    json!({
        "id": id,
        "status": "SUCCESS",
        "method": "POST",
        "title": format!("Commit upload session {id} ({})", shown_path(&view.upload)),
        "created_by": session.owner,
        "created_date": when,
        "run_start_date": when,
        "run_end_date": when,
        "links": links,
        "file": landed,
    })
}

async fn job(
    State(st): State<VeevaState>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> VeevaResult {
    let caller = authenticate(&st.engine, &headers).await?;
    let no_job = || not_found(format!("no job {job_id:?}"));
    let (view, session) = match veeva_upload(&st, &caller, &job_id).await {
        Ok(found) => found,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(no_job()),
        Err(e) => return Err(e),
    };
    if !view.upload.state.is_done() {
        return Err(no_job());
    }
    Ok(success(job_json(
        &version,
        &session,
        &view,
        view.file.as_ref(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(sizes: &[(u32, u64)]) -> BTreeMap<u32, Part> {
        let mut offset = 0;
        sizes
            .iter()
            .map(|&(number, size)| {
                let p = Part {
                    number,
                    offset,
                    size,
                    sha256: None,
                    sha1: None,
                    md5: None,
                };
                offset += size;
                (number, p)
            })
            .collect()
    }

    const M: u64 = MIB;

    /// `(size, parts received, part number, Content-Length)` → range or
    /// the error's HTTP status.
    fn check(size: u64, have: &[(u32, u64)], n: u32, len: u64) -> Result<(u64, u64), u16> {
        part_range(size, &parts(have), n, len)
            .map(|r| (r.start, r.end))
            .map_err(|e| e.status.as_u16())
    }

    #[test]
    fn part_ranges_follow_the_size_of_part_one() {
        let size = 12 * M;
        assert_eq!(check(size, &[], 1, 5 * M), Ok((0, 5 * M)));
        assert_eq!(check(size, &[(1, 5 * M)], 2, 5 * M), Ok((5 * M, 10 * M)));
        assert_eq!(
            check(size, &[(1, 5 * M), (2, 5 * M)], 3, 2 * M),
            Ok((10 * M, 12 * M))
        );
        // A part sent again covers the same bytes.
        assert_eq!(
            check(size, &[(1, 5 * M), (2, 5 * M)], 2, 5 * M),
            Ok((5 * M, 10 * M))
        );
        // One part is the whole file, however small.
        assert_eq!(check(10, &[], 1, 10), Ok((0, 10)));
        assert_eq!(check(50 * M, &[], 1, 50 * M), Ok((0, 50 * M)));
    }

    #[test]
    fn part_rules_refuse_with_precise_statuses() {
        let size = 12 * M;
        // Out of order.
        assert_eq!(check(size, &[], 2, 5 * M), Err(409));
        assert_eq!(check(size, &[(1, 5 * M)], 3, 2 * M), Err(409));
        // Too small, but not the last.
        assert_eq!(check(size, &[], 1, 4 * M), Err(400));
        // Not the size the plan gives.
        assert_eq!(check(size, &[(1, 5 * M)], 2, 6 * M), Err(400));
        assert_eq!(check(size, &[(1, 5 * M), (2, 5 * M)], 3, 3 * M), Err(400));
        // Past the end.
        assert_eq!(check(10 * M, &[(1, 5 * M), (2, 5 * M)], 3, 1), Err(400));
        // Larger than the file.
        assert_eq!(check(10, &[], 1, 11), Err(400));
        // A resent part 1 must keep its size.
        assert_eq!(check(size, &[(1, 5 * M)], 1, 6 * M), Err(400));
        // Too many parts for the file in parts of that size.
        assert_eq!(check(2001 * 5 * M, &[], 1, 5 * M), Err(400));
        assert_eq!(check(2000 * 5 * M, &[], 1, 5 * M), Ok((0, 5 * M)));
        // Empty file; an empty part.
        assert_eq!(check(0, &[], 1, 0), Err(400));
        assert_eq!(check(size, &[], 1, 0), Err(400));
        assert_eq!(check(size, &[(1, 5 * M)], 2, 0), Err(400));
    }

    #[test]
    fn versions_cursors_dates_and_md5() {
        for ok in ["v25.1", "v23.2", "v1.0", "v100.12"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["25.1", "v25", "v.1", "v25.", "v25.1.2", "vx.1", "V25.1", ""] {
            assert!(!is_version(bad), "{bad}");
        }
        assert_eq!(cursor_after(&cursor_of(42)), Some(42));
        assert_eq!(cursor_after("nonsense!"), None);
        assert_eq!(date(1_607_729_443_000), "2020-12-11T23:30:43.000Z");
        assert_eq!(date(1_607_729_443_120), "2020-12-11T23:30:43.120Z");
        let hex = parse_md5("D41D8CD98F00B204E9800998ECF8427E").unwrap();
        let b64 = parse_md5("1B2M2Y8AsgTpgAmY7PhCfg==").unwrap();
        assert_eq!(hex, b64);
        assert!(parse_md5("abc").is_err());
    }

    #[test]
    fn create_forms_parse_and_name_spaces() {
        let form = |path: &str, size: &str, ow: Option<&str>| CreateForm {
            path: Some(path.into()),
            size: Some(size.into()),
            overwrite: ow.map(Into::into),
        };
        let c = Create::parse(form("/veeva/x.bin", "10", None)).unwrap();
        assert_eq!(c.shown, "/veeva/x.bin");
        assert_eq!(c.relative, "veeva/x.bin");
        assert!(!c.overwrite);
        assert_eq!(
            c.named_space(),
            Some(("veeva".to_owned(), "x.bin".to_owned()))
        );
        let c = Create::parse(form("x.bin", "10", Some("TRUE"))).unwrap();
        assert_eq!(c.shown, "/x.bin");
        assert!(c.overwrite);
        assert_eq!(c.named_space(), None);
        assert_eq!(
            Create::parse(form("/Big Folder/x", "1", None))
                .unwrap()
                .named_space(),
            None
        );
        let err = |f: CreateForm| Create::parse(f).unwrap_err();
        assert_eq!(err(form("/", "1", None)).kind, kind::INVALID_DATA);
        assert_eq!(err(form("/a", "-1", None)).kind, kind::INVALID_DATA);
        assert_eq!(err(form("/a", "1", Some("yes"))).kind, kind::INVALID_DATA);
        assert_eq!(
            err(form("/a", &(2000 * 50 * M + 1).to_string(), None)).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let missing = CreateForm {
            path: Some("/a".into()),
            ..Default::default()
        };
        assert_eq!(err(missing).kind, kind::PARAMETER_REQUIRED);
        assert_eq!(err(CreateForm::default()).kind, kind::PARAMETER_REQUIRED);
    }
}
