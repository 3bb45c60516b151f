//! The IETF "Resumable Uploads for HTTP" draft: interop version 8
//! (draft-ietf-httpbis-resumable-upload-09 to -11) and 9 (-12), chosen per
//! request by its `Upload-Draft-Interop-Version`.
//!
//! The two differ in little: under 9 every creation and append answer says
//! with `Upload-Complete` whether it comes from processing the whole
//! representation (`?1`: the upload is over, do not resume) or from the
//! upload protocol (`?0`), and an empty completing append to a completed
//! upload replays the final answer (-11 answered `410` with the
//! `completed-upload` problem type, which -12 removed).

use super::{Destination, TusState, create, header, int_header, known_length, offset, set};
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header as h};
use axum::response::{IntoResponse, Response};
use ferry_core::{FileRecord, StateError, Upload, UploadState};
use ferry_engine::{Caller, EngineError, PartChecks, WriteAt};
use serde::Deserialize;
use serde_json::json;

/// The draft's interop versions, as far as Ferry's answers differ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Interop {
    /// Interop 8 (-09 to -11); older numbers are served the same way.
    V8,
    /// Interop 9 (-12).
    V9,
}

impl Interop {
    /// `Upload-Draft-Interop-Version` (an RFC 8941 integer): up to 8 is
    /// served as 8, 9 as 9; a newer or malformed one is refused, so that a
    /// client of a later revision fails loudly instead of half-working.
    pub(super) fn of(headers: &HeaderMap) -> Result<Interop, String> {
        let raw = header(headers, "upload-draft-interop-version").unwrap_or("");
        match raw.parse::<u32>() {
            Ok(0..=8) => Ok(Interop::V8),
            Ok(9) => Ok(Interop::V9),
            _ => Err(format!(
                "Upload-Draft-Interop-Version {raw:?} is not supported: \
                 this server speaks interop versions 8 (drafts -09 to -11) and 9 (-12)"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Interop::V8 => "8",
            Interop::V9 => "9",
        }
    }
}
const PARTIAL: &str = "application/partial-upload";
const PROBLEMS: &str = "https://iana.org/assignments/http-problem-types";

/// An RFC 9457 problem: the draft's own types where it defines one.
struct Problem {
    status: StatusCode,
    body: serde_json::Value,
    /// The upload's true offset, for a mismatch.
    offset: Option<u64>,
    /// `Upload-Limit`, on answers caused by a limit.
    limit: Option<String>,
    /// `Upload-Complete: ?1` when the answer comes from processing the
    /// whole representation (a commit refused after the last byte), so the
    /// client must not resume; creation and append answers default to `?0`.
    processed: bool,
}

impl Problem {
    fn new(status: StatusCode, kind: Option<&str>, title: &str, detail: String) -> Problem {
        let mut body = json!({"title": title, "status": status.as_u16(), "detail": detail});
        body["type"] =
            json!(kind.map_or_else(|| "about:blank".into(), |k| format!("{PROBLEMS}#{k}")));
        Problem {
            status,
            body,
            offset: None,
            limit: None,
            processed: false,
        }
    }

    fn bad(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, None, "Bad Request", detail.into())
    }

    fn inconsistent(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            Some("inconsistent-upload-length"),
            "inconsistent length values for upload",
            detail.into(),
        )
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Self {
        let detail = ferry_http::public_message(&e);
        match e {
            EngineError::OffsetMismatch { expected, provided } => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    Some("mismatching-upload-offset"),
                    "offset from request does not match offset of resource",
                    detail,
                );
                p.body["expected-offset"] = json!(expected);
                p.body["provided-offset"] = json!(provided);
                p.offset = Some(expected);
                p
            }
            EngineError::RangeNotSatisfiable(m) => Problem::inconsistent(m),
            EngineError::Invalid {
                code: "upload_complete",
                ..
            }
            | EngineError::Gone(StateError::Committed | StateError::Committing) => {
                Problem::inconsistent(format!("the upload is complete: {detail}"))
            }
            e => {
                let status = ferry_http::status_of(&e);
                let mut p = Problem::new(
                    status,
                    None,
                    status.canonical_reason().unwrap_or("Error"),
                    detail,
                );
                p.body["code"] = json!(e.code());
                p
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body.to_string()).into_response();
        let hs = r.headers_mut();
        if let Some(o) = self.offset {
            set(hs, "upload-offset", o);
        }
        if self.processed {
            set(hs, "upload-complete", "?1");
        }
        if let Some(l) = self.limit {
            set(hs, "upload-limit", l);
        }
        set(hs, "content-type", "application/problem+json");
        ferry_http::rendered(r)
    }
}

/// A problem document for an answer the framework made.
pub fn framework_error(headers: &HeaderMap, status: StatusCode, message: String) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let v = Interop::of(headers).unwrap_or(Interop::V9);
    stamp(
        v,
        Problem::new(status, None, title, message).into_response(),
    )
}

/// What every draft answer carries: the interop version applied.
fn stamp(v: Interop, mut r: Response) -> Response {
    set(r.headers_mut(), "upload-draft-interop-version", v.as_str());
    r
}

/// The answer to a creation or an append: `Upload-Complete` on every one,
/// errors included (`?0` unless the answer says otherwise).
fn creation_or_append(mut r: Response) -> Response {
    if !r.headers().contains_key("upload-complete") {
        set(r.headers_mut(), "upload-complete", "?0");
    }
    r
}

type DraftResult = Result<Response, Problem>;

fn respond(status: StatusCode, mut hs: HeaderMap, body: Option<serde_json::Value>) -> Response {
    match body {
        Some(b) => {
            set(&mut hs, "content-type", "application/json");
            (status, hs, b.to_string()).into_response()
        }
        None => (status, hs).into_response(),
    }
}

pub async fn collection(
    st: &TusState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(m) => return framework_error(headers, StatusCode::BAD_REQUEST, m),
    };
    let r = match method {
        Method::OPTIONS => options(st),
        Method::POST | Method::PUT => {
            creation_or_append(done(create_upload(st, uri, headers, body).await))
        }
        m => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "Method Not Allowed",
            format!("{m} is not allowed here: POST or PUT creates an upload"),
        )
        .into_response(),
    };
    stamp(v, r)
}

pub async fn resource(
    st: &TusState,
    id: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(m) => return framework_error(headers, StatusCode::BAD_REQUEST, m),
    };
    let r = match method {
        Method::OPTIONS => options(st),
        Method::HEAD | Method::GET => done(head(st, id, headers).await),
        Method::PATCH => creation_or_append(done(append(st, v, id, headers, body).await)),
        Method::DELETE => done(cancel(st, id, headers).await),
        m => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "Method Not Allowed",
            format!("{m} is not allowed on an upload: use HEAD, PATCH or DELETE"),
        )
        .into_response(),
    };
    stamp(v, r)
}

fn done(r: DraftResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `Upload-Limit`: the file size and per-request limits, and the seconds
/// the upload has left (when one exists).
fn limits(st: &TusState, expires_at: Option<i64>) -> String {
    let l = st.engine.limits();
    let mut v = format!(
        "max-size={}, max-append-size={}",
        l.max_file_size, l.max_part_size
    );
    if let Some(at) = expires_at {
        let left = (at - ferry_engine::now_ms()).max(0) / 1000;
        v.push_str(&format!(", max-age={left}"));
    }
    v
}

fn options(st: &TusState) -> Response {
    let mut hs = HeaderMap::new();
    set(&mut hs, "accept-patch", PARTIAL);
    set(&mut hs, "upload-limit", limits(st, None));
    respond(StatusCode::NO_CONTENT, hs, None)
}

/// `?0` / `?1` (an RFC 8941 boolean).
fn upload_complete(headers: &HeaderMap) -> Result<bool, Problem> {
    match header(headers, "upload-complete") {
        Some("?1") => Ok(true),
        Some("?0") => Ok(false),
        Some(v) => Err(Problem::bad(format!(
            "Upload-Complete must be ?0 or ?1; got {v:?}"
        ))),
        None => Err(Problem::bad(
            "this request needs the Upload-Complete header",
        )),
    }
}

/// An engine error as a problem; limits add `Upload-Limit` (-11 §4.1.2).
fn problem(st: &TusState, e: EngineError) -> Problem {
    let too_large = matches!(e, EngineError::TooLarge { .. });
    let mut p = Problem::from(e);
    if too_large {
        p.limit = Some(limits(st, None));
    }
    p
}

async fn caller(st: &TusState, headers: &HeaderMap) -> Result<Caller, Problem> {
    Ok(ferry_http::authenticate(&st.engine, headers).await?)
}

#[derive(Deserialize)]
struct Target {
    path: Option<String>,
    space: Option<String>,
    conflict: Option<String>,
}

/// `filename` of `Content-Disposition: attachment; filename="…"`.
fn disposition_filename(v: &str) -> Option<String> {
    v.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Checks for one request: `Content-Digest` on its bytes.
fn content_digest(headers: &HeaderMap) -> Result<PartChecks, Problem> {
    let mut checks = PartChecks::default();
    if let Some(v) = header(headers, "content-digest") {
        checks.expected = ferry_http::parse_content_digest(v).map_err(Problem::bad)?;
    }
    Ok(checks)
}

/// The length a request with `Upload-Complete: ?1` and a known body length
/// implies, checked against `Upload-Length`.
fn implied_total(headers: &HeaderMap, start: u64, complete: bool) -> Result<Option<u64>, Problem> {
    let declared = int_header(headers, "upload-length")?;
    let body = int_header(headers, "content-length")?;
    let implied = match (complete, body) {
        (true, Some(n)) => Some(start + n),
        _ => None,
    };
    match (declared, implied) {
        (Some(d), Some(i)) if d != i => Err(Problem::inconsistent(format!(
            "Upload-Length says {d} bytes, but this last request ends the upload at {i}"
        ))),
        (Some(d), _) => Ok(Some(d)),
        (None, i) => Ok(i),
    }
}

async fn create_upload(st: &TusState, uri: &Uri, headers: &HeaderMap, body: Body) -> DraftResult {
    let caller = caller(st, headers).await?;
    let complete = upload_complete(headers)?;
    let target = axum::extract::Query::<Target>::try_from_uri(uri)
        .map_err(|e| Problem::bad(e.body_text()))?
        .0;
    let conflict = match &target.conflict {
        Some(c) => c.parse().map_err(|e: String| Problem::bad(e))?,
        None => st.conflict,
    };
    let path = target
        .path
        .or_else(|| header(headers, "content-disposition").and_then(disposition_filename))
        .unwrap_or_else(|| format!("upload-{}", ferry_engine::auth::random_hex(8)));
    let total = implied_total(headers, 0, complete)?;
    let mut sha256 = None;
    if let Some(v) = header(headers, "repr-digest") {
        sha256 = ferry_http::parse_content_digest(v)
            .map_err(Problem::bad)?
            .into_iter()
            .find(|d| d.algo == ferry_core::DigestAlgo::Sha256);
    }
    let dest = Destination {
        space: target.space,
        path,
        conflict,
        content_type: header(headers, "content-type").map(str::to_owned),
        sha256,
        metadata: None,
    };
    // The whole file in the creation: made, written and committed as one,
    // or not at all (see `Engine::upload_whole`).
    let whole =
        complete && total.is_some_and(|n| n > 0) && int_header(headers, "content-length")? == total;
    if whole {
        let commit = ferry_core::CommitMode::OnLastByte;
        let new = super::new_session(dest, total, None, "ietf-draft", commit);
        let checks = content_digest(headers)?;
        let body = ferry_http::body_stream(body);
        let w = match st.engine.upload_whole(&caller, new, body, checks).await {
            Ok(w) => w,
            Err(e) => {
                // Refused once every byte was in: not to be resumed.
                let processed = matches!(
                    e,
                    EngineError::AlreadyExists { .. }
                        | EngineError::Rejected { .. }
                        | EngineError::DigestMismatch { .. }
                );
                let mut p = problem(st, e);
                p.processed = processed;
                return Err(p);
            }
        };
        let mut hs = HeaderMap::new();
        set(&mut hs, "location", st.upload_url(&w.upload.id));
        set(&mut hs, "upload-limit", limits(st, Some(w.expires_at)));
        return Ok(answer(hs, &w.upload, Some(w.file), StatusCode::CREATED));
    }
    let (view, session) = create(
        st,
        &caller,
        dest,
        total,
        None,
        "ietf-draft",
        ferry_core::CommitMode::OnLastByte,
    )
    .await
    .map_err(|e| problem(st, e))?;
    let checks = content_digest(headers)?;
    let id = view.upload.id.clone();
    let (upload, file) = match view.file {
        // An empty upload is committed as it is created.
        Some(f) => (view.upload, Some(f)),
        None => match write(st, &caller, &id, 0, total, complete, body, checks).await {
            Ok(w) => w,
            Err(e) => return Err(failed(st, &caller, &id, complete, e).await),
        },
    };
    let mut hs = HeaderMap::new();
    set(&mut hs, "location", st.upload_url(&id));
    set(
        &mut hs,
        "upload-limit",
        limits(st, Some(session.expires_at)),
    );
    Ok(answer(hs, &upload, file, StatusCode::CREATED))
}

/// The answer of a request that sent bytes: the committed file (`200`,
/// `Upload-Complete: ?1`, `Repr-Digest`, the file as JSON) or, while the
/// upload goes on, `incomplete` with `Upload-Complete: ?0`.
fn answer(
    mut hs: HeaderMap,
    upload: &Upload,
    file: Option<FileRecord>,
    incomplete: StatusCode,
) -> Response {
    set(&mut hs, "upload-offset", offset(upload));
    match file {
        Some(f) => {
            set(&mut hs, "upload-complete", "?1");
            digest_header(&mut hs, &f);
            respond(StatusCode::OK, hs, Some(file_json(&f)))
        }
        None => {
            set(&mut hs, "upload-complete", "?0");
            respond(incomplete, hs, None)
        }
    }
}

/// Appends a request's body at `start`; with `complete`, the upload ends
/// with it (its length fixed, then committed). Returns the upload and, once
/// committed, its file.
#[allow(clippy::too_many_arguments)]
async fn write(
    st: &TusState,
    caller: &Caller,
    id: &str,
    start: u64,
    total: Option<u64>,
    complete: bool,
    body: Body,
    checks: PartChecks,
) -> Result<(Upload, Option<FileRecord>), EngineError> {
    let len = axum::body::HttpBody::size_hint(&body).exact();
    let stream = ferry_http::body_stream(body);
    let mut w = st
        .engine
        .write(
            caller,
            id,
            WriteAt::Append {
                offset: start,
                total,
                len,
            },
            stream,
            checks,
        )
        .await?;
    // A completing request (chunked: its length was not known before) that
    // ended short of the upload's length.
    if complete
        && w.file.is_none()
        && let Some(n) = known_length(&w.upload).filter(|&n| offset(&w.upload) < n)
    {
        return Err(EngineError::RangeNotSatisfiable(format!(
            "the upload is {n} bytes long, but this last request ended it at {}",
            offset(&w.upload)
        )));
    }
    if complete && known_length(&w.upload).is_none() {
        // A last request of unknown length: the upload ends where it
        // stopped (and the engine commits it).
        let end = offset(&w.upload);
        w = st
            .engine
            .write(
                caller,
                id,
                WriteAt::Append {
                    offset: end,
                    total: Some(end),
                    len: Some(0),
                },
                Box::pin(futures::stream::empty()),
                PartChecks::default(),
            )
            .await?;
    }
    Ok((w.upload, w.file))
}

fn file_json(f: &FileRecord) -> serde_json::Value {
    json!({
        "space": f.space.as_str(),
        "path": f.path.as_str(),
        "size": f.size,
        "sha256": f.sha256,
        "content_type": f.content_type,
    })
}

/// `Repr-Digest: sha-256=:…:` of the whole file.
fn digest_header(hs: &mut HeaderMap, f: &FileRecord) {
    if let Ok(raw) = hex::decode(&f.sha256) {
        set(
            hs,
            "repr-digest",
            format!("sha-256=:{}:", ferry_http::b64(&raw)),
        );
    }
}

async fn head(st: &TusState, id: &str, headers: &HeaderMap) -> DraftResult {
    let caller = caller(st, headers).await?;
    st.engine.take_over(&caller, id).await?;
    let (view, session) = st.engine.resume(&caller, id).await?;
    let upload = view.upload;
    if upload.state == UploadState::Aborted {
        return Err(EngineError::Gone(StateError::Aborted).into());
    }
    let file = view.file;
    let mut hs = HeaderMap::new();
    set(&mut hs, "upload-offset", offset(&upload));
    let complete = upload.is_complete() || upload.state != UploadState::Open;
    set(
        &mut hs,
        "upload-complete",
        if complete { "?1" } else { "?0" },
    );
    if let Some(n) = known_length(&upload) {
        set(&mut hs, "upload-length", n);
    }
    set(
        &mut hs,
        "upload-limit",
        limits(st, Some(session.expires_at)),
    );
    set(&mut hs, h::CACHE_CONTROL.as_str(), "no-store");
    if let Some(f) = &file {
        digest_header(&mut hs, f);
    }
    Ok(respond(StatusCode::NO_CONTENT, hs, None))
}

async fn append(
    st: &TusState,
    v: Interop,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> DraftResult {
    let caller = caller(st, headers).await?;
    if !header(headers, "content-type").is_some_and(|t| t.starts_with(PARTIAL)) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            "Unsupported Media Type",
            format!("an append must be sent as Content-Type: {PARTIAL}"),
        ));
    }
    let complete = upload_complete(headers)?;
    let start = int_header(headers, "upload-offset")?
        .ok_or_else(|| Problem::bad("an append needs the Upload-Offset header"))?;
    let total = implied_total(headers, start, complete)?;
    let checks = content_digest(headers)?;
    let empty = int_header(headers, "content-length")? == Some(0);
    let written = write(st, &caller, id, start, total, complete, body, checks).await;
    let (upload, file) = match written {
        Ok(w) => w,
        // An empty completing append to a completed upload: its final
        // answer was lost. -12 lets the server replay it; -11 answered 410
        // `completed-upload`. With bytes it is an inconsistent length (the
        // From impl), in both.
        Err(
            e @ (EngineError::Invalid {
                code: "upload_complete",
                ..
            }
            | EngineError::Gone(StateError::Committed)),
        ) if complete && empty => {
            if v == Interop::V8 {
                return Err(Problem::new(
                    StatusCode::GONE,
                    Some("completed-upload"),
                    "upload is already completed",
                    e.to_string(),
                ));
            }
            let (view, _) = st.engine.resume(&caller, id).await?;
            match view.file {
                Some(f) => (view.upload, Some(f)),
                None => return Err(problem(st, e)),
            }
        }
        Err(e) => return Err(failed(st, &caller, id, complete, e).await),
    };
    Ok(answer(
        HeaderMap::new(),
        &upload,
        file,
        StatusCode::NO_CONTENT,
    ))
}

/// A failed write as a problem. When a completing request failed because
/// of what the whole representation turned out to be (the file exists, a
/// pre-finish hook refused it, its digest is wrong), the answer is the
/// upload's final one: `Upload-Complete: ?1`, and the client must not
/// resume. A per-request digest that failed kept none of the request's
/// bytes, so it is not.
async fn failed(
    st: &TusState,
    caller: &Caller,
    id: &str,
    complete: bool,
    e: EngineError,
) -> Problem {
    let processed = complete
        && match &e {
            EngineError::AlreadyExists { .. } | EngineError::Rejected { .. } => true,
            EngineError::DigestMismatch { .. } => match st.engine.resume(caller, id).await {
                Ok((view, _)) => {
                    view.upload.state != UploadState::Open
                        || known_length(&view.upload) == Some(offset(&view.upload))
                }
                Err(_) => true,
            },
            _ => false,
        };
    let mut p = problem(st, e);
    p.processed = processed;
    p
}

async fn cancel(st: &TusState, id: &str, headers: &HeaderMap) -> DraftResult {
    let caller = caller(st, headers).await?;
    st.engine.take_over(&caller, id).await?;
    st.engine.abort_upload(&caller, id).await?;
    Ok(respond(StatusCode::NO_CONTENT, HeaderMap::new(), None))
}
