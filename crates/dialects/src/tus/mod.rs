//! tus 1.0 and the IETF "Resumable Uploads for HTTP" draft, on one mount
//! point and one set of upload URLs (see docs/TUS.md).
//!
//! Both protocols append bytes strictly in order to one upload; both map
//! onto the engine the same way: a creation is a one-upload session, an
//! append is `WriteAt::Append`, offset retrieval is `Engine::take_over`
//! (which stops a hanging earlier request instead of answering 423), and
//! the request that completes an upload commits it. A request carrying
//! `Upload-Draft-Interop-Version` is read as a draft request, any other as
//! tus.

mod draft;
pub(crate) mod meta;
pub(crate) mod v1;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use ferry_core::{ConflictPolicy, Length, Session, Upload, UploadState};
use ferry_engine::{Caller, Engine, EngineError, NewSession, NewUpload, UploadView};

/// What the tus handlers share.
#[derive(Clone)]
pub struct TusState {
    pub engine: Engine,
    /// Base of the upload URLs handed out (no trailing slash); empty:
    /// `Location` is a path, resolved by clients against the request URL.
    pub public_url: String,
    /// Where the dialect is mounted, e.g. `/tus` (no trailing slash).
    pub mount: String,
    /// The conflict policy of uploads whose metadata names none.
    pub conflict: ConflictPolicy,
}

impl TusState {
    fn upload_url(&self, id: &str) -> String {
        format!("{}{}/{id}", self.public_url, self.mount)
    }
}

/// The routes: `{mount}/` creates, `{mount}/{id}` is an upload.
pub fn router(state: TusState) -> Router {
    let mount = state.mount.clone();
    let routes = Router::new()
        .route(&format!("{mount}/"), any(collection))
        .route(&mount, any(collection))
        .route(&format!("{mount}/{{id}}"), any(resource))
        .route(
            &format!("{mount}/{{id}}/{{*rest}}"),
            any(ferry_http::no_route),
        )
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// The format of the protocol a request speaks, for an answer the
/// framework made (a bad path segment, a route that is not there).
fn render_error(headers: &HeaderMap, status: axum::http::StatusCode, message: String) -> Response {
    if is_draft(headers) {
        draft::framework_error(headers, status, message)
    } else {
        v1::framework_error(status, message)
    }
}

/// The method a request stands for: `X-HTTP-Method-Override` on a `POST`
/// lets clients behind restrictive proxies send `PATCH`, `DELETE`, `HEAD`.
fn effective_method(method: Method, headers: &HeaderMap) -> Method {
    if method != Method::POST {
        return method;
    }
    headers
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok())
        .unwrap_or(method)
}

fn is_draft(headers: &HeaderMap) -> bool {
    headers.contains_key("upload-draft-interop-version")
}

async fn collection(
    State(st): State<TusState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let method = effective_method(method, &headers);
    if is_draft(&headers) {
        return draft::collection(&st, method, &uri, &headers, body).await;
    }
    v1::collection(&st, method, &headers, body).await
}

async fn resource(
    State(st): State<TusState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let method = effective_method(method, &headers);
    if is_draft(&headers) {
        return draft::resource(&st, &id, method, &headers, body).await;
    }
    v1::resource(&st, &id, method, &headers, body).await
}

/// A header as text, if present and visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A non-negative integer header; `Ok(None)` when absent.
pub(crate) fn int_header(headers: &HeaderMap, name: &str) -> Result<Option<u64>, EngineError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                EngineError::invalid(
                    "invalid_header",
                    format!("{name} must be a non-negative integer; got {v:?}"),
                )
            }),
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

/// Where an upload goes and how it lands.
struct Destination {
    space: Option<String>,
    path: String,
    conflict: ConflictPolicy,
    content_type: Option<String>,
    /// The whole file's SHA-256, when the client announced it.
    sha256: Option<ferry_core::Digest>,
    /// The user's metadata (tus: the `Upload-Metadata` pairs as a JSON
    /// object).
    metadata: Option<String>,
}

/// The one-upload session behind a tus or draft upload.
fn new_session(
    dest: Destination,
    size: Option<u64>,
    state: Option<String>,
    dialect: &str,
    commit: ferry_core::CommitMode,
) -> NewSession {
    // "Fail if exists" is refused at creation, by the engine.
    let precondition = match dest.conflict {
        ConflictPolicy::Fail => ferry_engine::Precondition::Absent,
        _ => ferry_engine::Precondition::None,
    };
    NewSession {
        space: dest.space,
        conflict: dest.conflict,
        expires_in_secs: None,
        commit,
        uploads: vec![NewUpload {
            path: dest.path,
            size,
            content_type: dest.content_type,
            sha256: dest.sha256,
            metadata: dest.metadata,
            dialect_state: state,
            ..Default::default()
        }],
        dialect: dialect.into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        precondition,
        whole_in_request: false,
    }
}

/// Creates the one-upload session behind a tus or draft upload; returns
/// the upload and its session.
async fn create(
    st: &TusState,
    caller: &Caller,
    dest: Destination,
    size: Option<u64>,
    state: Option<String>,
    dialect: &str,
    commit: ferry_core::CommitMode,
) -> Result<(UploadView, Session), EngineError> {
    let view = st
        .engine
        .create_session(caller, new_session(dest, size, state, dialect, commit))
        .await?;
    let upload = view.uploads.into_iter().next().expect("one upload");
    Ok((upload, view.session))
}

/// Bytes received in order: the offset both protocols report. A committed
/// upload has all its bytes (its received ranges are not kept).
fn offset(upload: &Upload) -> u64 {
    match (upload.state, upload.length) {
        (UploadState::Committed | UploadState::Skipped, Length::Known(n)) => n,
        _ => upload.received.prefix_len(),
    }
}

fn known_length(upload: &Upload) -> Option<u64> {
    match upload.length {
        Length::Known(n) => Some(n),
        Length::Deferred => None,
    }
}
