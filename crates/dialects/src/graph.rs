//! Microsoft Graph upload sessions (`driveItem: createUploadSession`) under
//! `/v1.0`. A drive is a Ferry space (`me/drive` is the caller's home);
//! the `uploadUrl` handed out is a signed Ferry URL, so the byte requests
//! need no `Authorization` header, as with Graph.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use ferry_core::{ConflictPolicy, DigestAlgo, FileRecord, Length, Session, Upload};
use ferry_engine::{Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, WriteAt};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the Graph handlers share.
#[derive(Clone)]
pub struct GraphState {
    pub engine: Engine,
    /// Base of the absolute `uploadUrl`s handed out (no trailing slash).
    pub public_url: String,
}

pub fn router(state: GraphState) -> Router {
    Router::new()
        .route(
            "/v1.0/uploadSessions/{uid}",
            put(write).get(status).delete(cancel).post(commit),
        )
        .route("/v1.0/{*rest}", post(create))
        .with_state(state)
}

/// Graph's error body, `{"error":{"code","message"}}`, with Graph's codes.
pub struct GraphError(StatusCode, &'static str, String);

impl From<EngineError> for GraphError {
    fn from(e: EngineError) -> Self {
        let status = ferry_http::status_of(&e);
        let code = match &e {
            EngineError::Unauthenticated(_) => "unauthenticated",
            EngineError::Forbidden(_) => "accessDenied",
            EngineError::NotFound(_) => "itemNotFound",
            // Graph answers 404 for a session that is gone (expired,
            // cancelled, or completed): start over, or look at the file.
            EngineError::Gone(_) => {
                return GraphError(StatusCode::NOT_FOUND, "itemNotFound", e.to_string());
            }
            EngineError::AlreadyExists { .. } => "nameAlreadyExists",
            EngineError::RangeNotSatisfiable(_) | EngineError::OffsetMismatch { .. } => {
                "invalidRange"
            }
            EngineError::TooManySessions { .. } => "activityLimitReached",
            EngineError::InsufficientStorage(_) => "quotaLimitReached",
            EngineError::Meta(_) | EngineError::Store(_) => {
                tracing::error!(error = %e, "graph request failed");
                "generalException"
            }
            _ => "invalidRequest",
        };
        GraphError(status, code, e.to_string())
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}});
        (self.0, axum::Json(body)).into_response()
    }
}

fn bad(message: impl Into<String>) -> GraphError {
    GraphError(StatusCode::BAD_REQUEST, "invalidRequest", message.into())
}

type GraphResult = Result<Response, GraphError>;

/// `{ "item": {…}, "deferCommit": … }`, every field optional.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    item: Item,
    #[serde(default)]
    defer_commit: bool,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(rename = "@microsoft.graph.conflictBehavior")]
    conflict_behavior: Option<String>,
    file_size: Option<u64>,
    name: Option<String>,
}

/// What the upload keeps between requests.
#[derive(Default, serde::Serialize, Deserialize)]
struct Stored {
    defer_commit: bool,
}

/// Where a `createUploadSession` path points: a space (`None`: the
/// caller's home) and a path in it.
fn target(rest: &str) -> Result<(Option<String>, String), GraphError> {
    let not_found = |m: String| GraphError(StatusCode::NOT_FOUND, "itemNotFound", m);
    let rest = rest.trim_start_matches('/');
    let (space, item) = if let Some(r) = rest.strip_prefix("me/drive/") {
        (None, r)
    } else if let Some(r) = rest.strip_prefix("drives/") {
        let (drive, r) = r
            .split_once('/')
            .ok_or_else(|| not_found(format!("no such resource: /v1.0/{rest}")))?;
        (Some(drive.to_owned()), r)
    } else {
        return Err(not_found(format!(
            "no such resource: /v1.0/{rest} (drives are /me/drive and /drives/{{space}})"
        )));
    };
    let item = item
        .strip_suffix("/createUploadSession")
        .ok_or_else(|| not_found(format!("no such resource: /v1.0/{rest}")))?;
    let item = item.strip_prefix("items/").unwrap_or(item);
    // `root:/{path}:` (also percent-encoded as one item id by the SDK), or
    // `{parent-id}:/{name}:` with parent `root`.
    let path = match item.split_once(":/") {
        Some(("root", p)) => p.strip_suffix(':').unwrap_or(p),
        Some((parent, _)) => {
            return Err(not_found(format!(
                "no item {parent:?}: items are addressed by path here (root:/path:)"
            )));
        }
        None => {
            return Err(not_found(format!(
                "no item {item:?}: new versions of existing items by id are not supported yet; use root:/path:"
            )));
        }
    };
    Ok((space, path.to_owned()))
}

async fn create(
    State(st): State<GraphState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> GraphResult {
    let caller = ferry_http::authenticate(&st.engine, &headers).await?;
    let (space, path) = target(&rest)?;
    let req: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body does not fit: {e}")))?
    };
    if let Some(name) = &req.item.name
        && path.rsplit('/').next() != Some(name.as_str())
    {
        return Err(bad(format!(
            "item.name {name:?} differs from the name in the path {path:?}"
        )));
    }
    let conflict = match req.item.conflict_behavior.as_deref() {
        None | Some("fail") => ConflictPolicy::Fail,
        Some("replace") => ConflictPolicy::Replace,
        Some("rename") => ConflictPolicy::Rename,
        Some(other) => {
            return Err(bad(format!(
                "@microsoft.graph.conflictBehavior must be fail, replace or rename; got {other:?}"
            )));
        }
    };
    let stored = Stored {
        defer_commit: req.defer_commit,
    };
    let view = st
        .engine
        .create_session(
            &caller,
            NewSession {
                space,
                conflict,
                expires_in_secs: None,
                auto_commit: false,
                uploads: vec![NewUpload {
                    path,
                    size: req.item.file_size,
                    metadata: Some(serde_json::to_string(&stored).expect("serializable")),
                    // driveItem.file.hashes.sha1Hash
                    whole_digests: vec![DigestAlgo::Sha1],
                    ..Default::default()
                }],
                dialect: "graph".into(),
                // As with Graph, each fragment extends the session.
                extend_secs: Some(st.engine.limits().default_expiry_secs),
            },
        )
        .await?;
    let upload = &view.uploads[0].upload;
    let url = format!(
        "{}/v1.0/uploadSessions/{}?sig={}",
        st.public_url,
        upload.id,
        st.engine.sign_upload(&upload.id)
    );
    let mut answer = session_json(&view.session, upload);
    answer["uploadUrl"] = json!(url);
    // As Graph does: a new session expects everything, written open-ended.
    answer["nextExpectedRanges"] = json!(["0-"]);
    Ok(axum::Json(answer).into_response())
}

#[derive(Deserialize)]
struct Sig {
    sig: Option<String>,
}

/// The `uploadUrl`'s own signature, or a bearer token.
async fn upload_caller(
    st: &GraphState,
    uid: &str,
    sig: Option<String>,
    headers: &HeaderMap,
) -> Result<Caller, GraphError> {
    Ok(match sig {
        // A URL whose signature does not match names no session of yours.
        Some(sig) => st.engine.verify_upload_sig(uid, &sig).map_err(|_| {
            GraphError(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                format!("no upload session {uid:?} for this URL"),
            )
        })?,
        None => ferry_http::authenticate(&st.engine, headers).await?,
    })
}

/// `{"expirationDateTime","nextExpectedRanges"}`: the missing ranges,
/// inclusive (`start-end`, as the SDKs parse them); open-ended (`start-`)
/// only while the size is not known yet.
fn session_json(session: &Session, upload: &Upload) -> Value {
    let ranges: Vec<String> = upload
        .missing()
        .iter()
        .map(|r| match upload.length {
            Length::Deferred if r.end == u64::MAX => format!("{}-", r.start),
            _ => format!("{}-{}", r.start, r.end - 1),
        })
        .collect();
    json!({
        "expirationDateTime": ferry_http::rfc3339(session.expires_at),
        "nextExpectedRanges": ranges,
    })
}

/// A committed file as a `driveItem`.
fn drive_item(f: &FileRecord) -> Value {
    let path = f.path.as_str();
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let when = ferry_http::rfc3339(f.created_at);
    json!({
        "id": f.id,
        "name": name,
        "size": f.size,
        "createdDateTime": when,
        "lastModifiedDateTime": when,
        "file": {
            "mimeType": f.content_type.as_deref().unwrap_or("application/octet-stream"),
            "hashes": hashes(f),
        },
        "parentReference": {
            "driveId": f.space.as_str(),
            "path": if dir.is_empty() { "/drive/root:".to_owned() } else { format!("/drive/root:/{dir}") },
        },
    })
}

/// `file.hashes`: SHA-256 always, SHA-1 when it was kept (uppercase hex,
/// as Graph writes them).
fn hashes(f: &FileRecord) -> Value {
    let mut h = json!({"sha256Hash": f.sha256.to_ascii_uppercase()});
    if let Some(sha1) = &f.sha1 {
        h["sha1Hash"] = json!(sha1.to_ascii_uppercase());
    }
    h
}

fn created(f: &FileRecord) -> Response {
    (StatusCode::CREATED, axum::Json(drive_item(f))).into_response()
}

/// Everything a fragment must pass before its bytes are read: a sound
/// `Content-Range` that matches `Content-Length`, an open session, and no
/// byte that was already received (Graph refuses those; the engine would
/// replace them). Returns the range and the session.
async fn check_fragment(
    st: &GraphState,
    caller: &Caller,
    uid: &str,
    headers: &HeaderMap,
) -> Result<(ferry_http::ContentRange, Session), GraphError> {
    let cr = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("a fragment needs a Content-Range header: bytes first-last/total"))?;
    let cr = ferry_http::parse_content_range(cr).map_err(bad)?;
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = length
        && n != cr.range.len()
    {
        return Err(bad(format!(
            "Content-Length {n} does not match the {} bytes of the Content-Range",
            cr.range.len()
        )));
    }
    let (before, session) = st.engine.upload_and_session(caller, uid).await?;
    session.state.check_writable().map_err(EngineError::Gone)?;
    before
        .upload
        .state
        .check_writable()
        .map_err(EngineError::Gone)?;
    if before.upload.received.intersects(&cr.range) {
        return Err(GraphError(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            format!(
                "bytes {}-{} were already received; send what nextExpectedRanges lists",
                cr.range.start,
                cr.range.end - 1
            ),
        ));
    }
    Ok((cr, session))
}

/// Most bytes read and dropped from a refused fragment (Graph's limit per
/// request is 60 MiB).
const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads a refused request's body to its end (up to `DRAIN_LIMIT`), so the
/// client, still sending, reads the error instead of a reset connection.
async fn drain(body: Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

async fn write(
    State(st): State<GraphState>,
    Path(uid): Path<String>,
    Query(q): Query<Sig>,
    headers: HeaderMap,
    body: Body,
) -> GraphResult {
    let checked = async {
        let caller = upload_caller(&st, &uid, q.sig, &headers).await?;
        let (cr, session) = check_fragment(&st, &caller, &uid, &headers).await?;
        Ok::<_, GraphError>((caller, cr, session))
    }
    .await;
    let (caller, cr, session) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    let w = st
        .engine
        .write(
            &caller,
            &uid,
            WriteAt::Range {
                range: cr.range,
                total: cr.total,
            },
            ferry_http::body_stream(body),
            PartChecks::default(),
        )
        .await?;
    let defer = serde_json::from_str::<Stored>(w.upload.metadata.as_deref().unwrap_or("{}"))
        .unwrap_or_default()
        .defer_commit;
    if w.upload.is_complete() && !defer {
        let view = st.engine.commit_upload(&caller, &uid, None).await?;
        if let Some(f) = &view.file {
            return Ok(created(f));
        }
    }
    let session = Session {
        expires_at: w.expires_at,
        ..session
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(session_json(&session, &w.upload)),
    )
        .into_response())
}

async fn status(
    State(st): State<GraphState>,
    Path(uid): Path<String>,
    Query(q): Query<Sig>,
    headers: HeaderMap,
) -> GraphResult {
    let caller = upload_caller(&st, &uid, q.sig, &headers).await?;
    let (view, session) = st.engine.upload_and_session(&caller, &uid).await?;
    if let Some(e) = session.state.check_writable().err() {
        return Err(EngineError::Gone(e).into());
    }
    Ok(axum::Json(session_json(&session, &view.upload)).into_response())
}

async fn cancel(
    State(st): State<GraphState>,
    Path(uid): Path<String>,
    Query(q): Query<Sig>,
    headers: HeaderMap,
) -> GraphResult {
    let caller = upload_caller(&st, &uid, q.sig, &headers).await?;
    st.engine.abort_upload(&caller, &uid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The commit of a `deferCommit` session.
async fn commit(
    State(st): State<GraphState>,
    Path(uid): Path<String>,
    Query(q): Query<Sig>,
    headers: HeaderMap,
) -> GraphResult {
    let caller = upload_caller(&st, &uid, q.sig, &headers).await?;
    let view = st.engine.commit_upload(&caller, &uid, None).await?;
    match &view.file {
        Some(f) => Ok(created(f)),
        None => Err(bad("the upload was skipped: a file is already at its path")),
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn create_paths_name_a_space_and_a_path() {
        let t = |p: &str| target(p).ok();
        assert_eq!(
            t("me/drive/root:/a/b.bin:/createUploadSession"),
            Some((None, "a/b.bin".into()))
        );
        assert_eq!(
            t("drives/team/root:/b.bin:/createUploadSession"),
            Some((Some("team".into()), "b.bin".into()))
        );
        assert_eq!(
            t("me/drive/items/root:/x.txt:/createUploadSession"),
            Some((None, "x.txt".into()))
        );
        assert_eq!(
            t("drives/alice/items/root:/dir/x.txt:/createUploadSession"),
            Some((Some("alice".into()), "dir/x.txt".into()))
        );
        assert_eq!(t("me/drive/items/0123:/x.txt:/createUploadSession"), None);
        assert_eq!(t("me/drive/items/0123/createUploadSession"), None);
        assert_eq!(t("sites/x/drive/root:/a:/createUploadSession"), None);
    }
}
