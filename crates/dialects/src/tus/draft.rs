//! The IETF "Resumable Uploads for HTTP" draft, interop version 8
//! (draft-ietf-httpbis-resumable-upload-09 to -11).

use super::{Destination, TusState, create, header, int_header, known_length, offset, set};
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header as h};
use axum::response::{IntoResponse, Response};
use ferry_core::{FileRecord, StateError, Upload, UploadState};
use ferry_engine::{Caller, EngineError, PartChecks, WriteAt};
use serde::Deserialize;
use serde_json::json;

const INTEROP: &str = "8";
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
            set(hs, "upload-complete", "?0");
        }
        if let Some(l) = self.limit {
            set(hs, "upload-limit", l);
        }
        set(hs, "content-type", "application/problem+json");
        set(hs, "upload-draft-interop-version", INTEROP);
        ferry_http::rendered(r)
    }
}

/// A problem document for an answer the framework made.
pub fn framework_error(status: StatusCode, message: String) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    Problem::new(status, None, title, message).into_response()
}

type DraftResult = Result<Response, Problem>;

fn respond(status: StatusCode, mut hs: HeaderMap, body: Option<serde_json::Value>) -> Response {
    set(&mut hs, "upload-draft-interop-version", INTEROP);
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
    let result = match method {
        Method::OPTIONS => Ok(options(st)),
        Method::POST | Method::PUT => create_upload(st, uri, headers, body).await,
        m => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "Method Not Allowed",
            format!("{m} is not allowed here: POST or PUT creates an upload"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn resource(
    st: &TusState,
    id: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let result = match method {
        Method::OPTIONS => Ok(options(st)),
        Method::HEAD | Method::GET => head(st, id, headers).await,
        Method::PATCH => append(st, id, headers, body).await,
        Method::DELETE => cancel(st, id, headers).await,
        m => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "Method Not Allowed",
            format!("{m} is not allowed on an upload: use HEAD, PATCH or DELETE"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
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
    let (upload, file) = write(st, &caller, &id, 0, total, complete, body, checks)
        .await
        .map_err(|e| problem(st, e))?;
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

async fn append(st: &TusState, id: &str, headers: &HeaderMap, body: Body) -> DraftResult {
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
    let written = write(st, &caller, id, start, total, complete, body, checks).await;
    let (upload, file) = match written {
        // An empty append to a completed upload (-09 §4.4); with bytes, it
        // is an inconsistent length (the From impl).
        Err(
            e @ (EngineError::Invalid {
                code: "upload_complete",
                ..
            }
            | EngineError::Gone(StateError::Committed)),
        ) if int_header(headers, "content-length")? == Some(0) => {
            return Err(Problem::new(
                StatusCode::GONE,
                Some("completed-upload"),
                "upload is already completed",
                e.to_string(),
            ));
        }
        other => other.map_err(|e| problem(st, e))?,
    };
    Ok(answer(
        HeaderMap::new(),
        &upload,
        file,
        StatusCode::NO_CONTENT,
    ))
}

async fn cancel(st: &TusState, id: &str, headers: &HeaderMap) -> DraftResult {
    let caller = caller(st, headers).await?;
    st.engine.take_over(&caller, id).await?;
    st.engine.abort_upload(&caller, id).await?;
    Ok(respond(StatusCode::NO_CONTENT, HeaderMap::new(), None))
}
