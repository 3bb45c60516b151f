//! Microsoft Graph upload sessions (`driveItem: createUploadSession`) under
//! `/v1.0`. A drive is a Ferry space (`me/drive` is the caller's home);
//! the `uploadUrl` handed out is a signed Ferry URL, so the byte requests
//! need no `Authorization` header, as with Graph.

use crate::folder_id;
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
    let routes = Router::new()
        .route(
            "/v1.0/uploadSessions/{uid}",
            put(write).get(status).delete(cancel).post(commit),
        )
        .route("/v1.0/{*rest}", post(create))
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// Graph's format for an answer the framework made.
fn render_error(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::METHOD_NOT_ALLOWED => "notSupported",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        s if s.is_server_error() => "generalException",
        _ => "invalidRequest",
    };
    GraphError(status, code, message).into_response()
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
                return GraphError(
                    StatusCode::NOT_FOUND,
                    "itemNotFound",
                    ferry_http::public_message(&e),
                );
            }
            EngineError::AlreadyExists { .. } => "nameAlreadyExists",
            EngineError::RangeNotSatisfiable(_) | EngineError::OffsetMismatch { .. } => {
                "invalidRange"
            }
            EngineError::TooManySessions { .. } => "activityLimitReached",
            EngineError::InsufficientStorage(_) => "quotaLimitReached",
            EngineError::Unavailable(_) => "serviceNotAvailable",
            EngineError::Rejected { status: 403, .. } => "accessDenied",
            e if ferry_http::is_internal(e) => "generalException",
            _ => "invalidRequest",
        };
        GraphError(status, code, ferry_http::public_message(&e))
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}});
        ferry_http::rendered((self.0, axum::Json(body)).into_response())
    }
}

fn bad(message: impl Into<String>) -> GraphError {
    GraphError(StatusCode::BAD_REQUEST, "invalidRequest", message.into())
}

type GraphResult = Result<Response, GraphError>;

/// `{ "item": {…}, "deferCommit": … }`, every field optional.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
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

/// Where a `createUploadSession` path points, in a drive (`None`: the
/// caller's home).
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `root:/{path}:` (also percent-encoded as one item id by the SDKs).
    Path(Option<String>, String),
    /// `items/{parent-id}:/{name}:`: a new file in a folder by id.
    Child(Option<String>, String, String),
    /// `items/{item-id}`: new content for an existing file.
    Item(Option<String>, String),
}

fn target(rest: &str) -> Result<Target, GraphError> {
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
    let by_id = item.strip_prefix("items/");
    let item = by_id.unwrap_or(item);
    Ok(match item.split_once(":/") {
        Some(("root", p)) => Target::Path(space, p.strip_suffix(':').unwrap_or(p).to_owned()),
        Some((parent, name)) if by_id.is_some() => Target::Child(
            space,
            parent.to_owned(),
            name.strip_suffix(':').unwrap_or(name).to_owned(),
        ),
        None if by_id.is_some() && !item.is_empty() && !item.contains('/') => {
            Target::Item(space, item.to_owned())
        }
        _ => return Err(not_found(format!("no such resource: /v1.0/{rest}"))),
    })
}

/// The space, path and conflict behaviour a target comes to; `conflict`
/// is the body's (a new version of an item by id always replaces it).
async fn resolve(
    st: &GraphState,
    caller: &Caller,
    target: Target,
    conflict: ConflictPolicy,
) -> Result<(Option<String>, String, ConflictPolicy), GraphError> {
    let not_found = |m: String| GraphError(StatusCode::NOT_FOUND, "itemNotFound", m);
    let same_drive =
        |drive: &Option<String>, space: &str| drive.as_deref().is_none_or(|d| d == space);
    Ok(match target {
        Target::Path(space, path) => (space, path, conflict),
        Target::Child(space, parent, name) if parent == "root" => (space, name, conflict),
        Target::Child(space, parent, name) => {
            let (fspace, dir) = folder_id::decode(&parent)
                .filter(|(fs, _)| same_drive(&space, fs))
                .ok_or_else(|| not_found(format!("no folder with id {parent:?} in this drive")))?;
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            (Some(fspace), path, conflict)
        }
        Target::Item(space, id) => {
            let f = st
                .engine
                .file_by_id(caller, &id)
                .await
                .map_err(|_| not_found(format!("no item with id {id:?}")))?;
            if !same_drive(&space, f.space.as_str()) {
                return Err(not_found(format!("no item with id {id:?} in this drive")));
            }
            (
                Some(f.space.to_string()),
                f.path.to_string(),
                ConflictPolicy::Replace,
            )
        }
    })
}

async fn create(
    State(st): State<GraphState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> GraphResult {
    let caller = ferry_http::authenticate(&st.engine, &headers).await?;
    let target = target(&rest)?;
    let req: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body does not fit: {e}")))?
    };
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
    let (space, path, conflict) = resolve(&st, &caller, target, conflict).await?;
    if let Some(name) = &req.item.name
        && path.rsplit('/').next() != Some(name.as_str())
    {
        return Err(bad(format!(
            "item.name {name:?} differs from the name in the path {path:?}"
        )));
    }
    let view = st
        .engine
        .create_session(
            &caller,
            NewSession {
                space,
                conflict,
                expires_in_secs: None,
                // Without deferCommit, the last fragment commits the file.
                commit: if req.defer_commit {
                    ferry_core::CommitMode::Manual
                } else {
                    ferry_core::CommitMode::OnLastByte
                },
                uploads: vec![NewUpload {
                    path,
                    size: req.item.file_size,
                    // driveItem.file.hashes.sha1Hash
                    whole_digests: vec![DigestAlgo::Sha1],
                    ..Default::default()
                }],
                dialect: "graph".into(),
                // As with Graph, each fragment extends the session.
                extend_secs: Some(st.engine.limits().default_expiry_secs),
                open_ended: false,
                files_expire: false,
                precondition: ferry_engine::Precondition::None,
                whole_in_request: false,
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
            "id": folder_id::encode(f.space.as_str(), dir),
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
    if before.upload.state.is_done() {
        // A fragment sent again after the commit: the engine's resend
        // policy answers it.
        return Ok((cr, session));
    }
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
    let (caller, cr, session) = checked?;
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
    if let Some(f) = &w.file {
        return Ok(created(f));
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
    // An upload that holds every byte is committed now if its last
    // fragment's commit did not happen; a committed upload answers its
    // driveItem (200 with an id: what the SDKs take as completion).
    let (view, session) = st.engine.resume(&caller, &uid).await?;
    if let Some(f) = &view.file {
        return Ok(axum::Json(drive_item(f)).into_response());
    }
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
    use super::{Target, target};

    #[test]
    fn create_paths_name_a_drive_and_a_target() {
        let t = |p: &str| target(p).ok();
        let path = |s: Option<&str>, p: &str| Some(Target::Path(s.map(Into::into), p.into()));
        assert_eq!(
            t("me/drive/root:/a/b.bin:/createUploadSession"),
            path(None, "a/b.bin")
        );
        assert_eq!(
            t("drives/team/root:/b.bin:/createUploadSession"),
            path(Some("team"), "b.bin")
        );
        assert_eq!(
            t("me/drive/items/root:/x.txt:/createUploadSession"),
            path(None, "x.txt")
        );
        assert_eq!(
            t("drives/alice/items/root:/dir/x.txt:/createUploadSession"),
            path(Some("alice"), "dir/x.txt")
        );
        assert_eq!(
            t("me/drive/items/d0123:/x.txt:/createUploadSession"),
            Some(Target::Child(None, "d0123".into(), "x.txt".into()))
        );
        assert_eq!(
            t("drives/team/items/abc/createUploadSession"),
            Some(Target::Item(Some("team".into()), "abc".into()))
        );
        assert_eq!(t("me/drive/x:/y:/createUploadSession"), None);
        assert_eq!(t("sites/x/drive/root:/a:/createUploadSession"), None);
    }
}
