//! `/v1/sessions/…` and `/v1/uploads/…`.

use super::model::*;
use super::{ApiError, ApiResult, Auth, NativeState, UploadAuth, json_body};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use ferry_core::{ConflictPolicy, Digest, DigestAlgo, SessionState};
use ferry_engine::{NewSession, NewUpload, PartChecks, WriteAt};
use ferry_http::{ContentRange, decode_digest, parse_content_digest, parse_content_range};
use serde::Deserialize;
use std::collections::HashMap;

fn sha256_hex(hex: &str, what: &str) -> ApiResult<Digest> {
    Digest::from_hex(DigestAlgo::Sha256, hex).ok_or_else(|| {
        ApiError::invalid(
            "invalid_body",
            format!("{what}: {hex:?} is not 64 hex digits of SHA-256"),
        )
    })
}

fn new_upload(b: NewUploadBody) -> ApiResult<NewUpload> {
    Ok(NewUpload {
        sha256: b
            .sha256
            .as_deref()
            .map(|h| sha256_hex(h, &b.path))
            .transpose()?,
        path: b.path,
        size: b.size,
        part_size: b.part_size,
        content_type: b.content_type,
        metadata: b.metadata.map(|m| m.to_string()),
        whole_digests: Vec::new(),
        replaces: None,
        dialect_state: None,
    })
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSessionBody,
    responses((status = 201, body = SessionJson), (status = 400, body = ErrorJson),
        (status = 413, body = ErrorJson), (status = 429, body = ErrorJson), (status = 507, body = ErrorJson)))]
pub async fn create(
    State(st): State<NativeState>,
    Auth(c): Auth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SessionJson>)> {
    let b: CreateSessionBody = json_body(&body)?;
    let uploads = match (b.uploads, b.path) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "give either \"uploads\" or a top-level \"path\", not both",
            ));
        }
        (Some(list), None) => list,
        (None, Some(path)) => vec![NewUploadBody {
            path,
            size: b.size,
            sha256: b.sha256,
            part_size: b.part_size,
            content_type: b.content_type,
            metadata: b.metadata,
        }],
        (None, None) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "the body needs \"uploads\" (a list) or a top-level \"path\"",
            ));
        }
    };
    let conflict = match b.conflict.as_deref() {
        None => ConflictPolicy::Fail,
        Some(s) => s
            .parse()
            .map_err(|e: String| ApiError::invalid("invalid_body", e))?,
    };
    let new = NewSession {
        space: b.space,
        conflict,
        expires_in_secs: b.expires_in,
        commit: if b.auto_commit.unwrap_or(false) {
            ferry_core::CommitMode::OnLastByte
        } else {
            ferry_core::CommitMode::Manual
        },
        uploads: uploads
            .into_iter()
            .map(new_upload)
            .collect::<ApiResult<_>>()?,
        dialect: "native".into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        precondition: ferry_engine::Precondition::None,
        whole_in_request: false,
    };
    let v = st.engine.create_session(&c, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(session_view_json(&st.engine, &st.public_url, &v)),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    all: Option<bool>,
    uploads: Option<bool>,
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(("state" = Option<String>, Query, description = "open, committed, aborted, expired…"),
        ("all" = Option<bool>, Query, description = "admins: every user's sessions"),
        ("uploads" = Option<bool>, Query, description = "each session with its uploads (progress, missing ranges)")),
    responses((status = 200, body = SessionsJson)))]
pub async fn list(
    State(st): State<NativeState>,
    Auth(c): Auth,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SessionsJson>> {
    let Query(q) = q.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<SessionState>()
                .map_err(|e| ApiError::invalid("invalid_query", e))?,
        ),
    };
    let sessions = st
        .engine
        .list_sessions(&c, state, q.all.unwrap_or(false))
        .await?;
    if !q.uploads.unwrap_or(false) {
        return Ok(Json(SessionsJson {
            sessions: sessions.iter().map(|s| session_json(s, None)).collect(),
        }));
    }
    let mut out = Vec::with_capacity(sessions.len());
    for s in &sessions {
        match st.engine.get_session(&c, &s.id).await {
            Ok(v) => out.push(session_view_json(&st.engine, &st.public_url, &v)),
            // Gone between the listing and now.
            Err(ferry_engine::EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(SessionsJson { sessions: out }))
}

#[utoipa::path(get, path = "/v1/sessions/{sid}", tag = "sessions", params(("sid" = String, Path)),
    responses((status = 200, body = SessionJson), (status = 404, body = ErrorJson)))]
pub async fn get_session(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(sid): Path<String>,
) -> ApiResult<Json<SessionJson>> {
    let v = st.engine.get_session(&c, &sid).await?;
    Ok(Json(session_view_json(&st.engine, &st.public_url, &v)))
}

#[utoipa::path(post, path = "/v1/sessions/{sid}/commit", tag = "sessions", params(("sid" = String, Path)),
    request_body(content = Option<CommitSessionBody>),
    responses((status = 200, body = SessionJson), (status = 409, body = ErrorJson),
        (status = 410, body = ErrorJson), (status = 422, body = ErrorJson)))]
pub async fn commit_session(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(sid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SessionJson>> {
    let b: CommitSessionBody = json_body(&body)?;
    let mut expected = HashMap::new();
    for (uid, d) in b.uploads {
        if let Some(h) = d.sha256 {
            expected.insert(uid.clone(), sha256_hex(&h, &uid)?);
        }
    }
    let v = st.engine.commit_session(&c, &sid, expected).await?;
    Ok(Json(session_view_json(&st.engine, &st.public_url, &v)))
}

#[utoipa::path(delete, path = "/v1/sessions/{sid}", tag = "sessions", params(("sid" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorJson)))]
pub async fn abort_session(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(sid): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.abort_session(&c, &sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Digests a client may send with a part or range.
pub(super) fn checks(headers: &HeaderMap) -> ApiResult<PartChecks> {
    let mut out = PartChecks::default();
    let text = |name: &str| -> ApiResult<Option<String>> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::invalid("invalid_header", format!("{name} is not ASCII"))
                })
            })
            .transpose()
    };
    if let Some(v) = text("content-digest")? {
        out.expected =
            parse_content_digest(&v).map_err(|m| ApiError::invalid("invalid_header", m))?;
    }
    if let Some(v) = text("content-md5")? {
        out.expected.push(
            decode_digest(DigestAlgo::Md5, &v, "Content-MD5")
                .map_err(|m| ApiError::invalid("invalid_header", m))?,
        );
        out.want.md5 = true;
    }
    Ok(out)
}

#[utoipa::path(put, path = "/v1/uploads/{uid}/parts/{n}", tag = "uploads",
    params(("uid" = String, Path), ("n" = u32, Path, description = "1-based part number"),
        ("sig" = Option<String>, Query, description = "signature of the upload's signed URL"),
        ("Content-Digest" = Option<String>, Header, description = "sha-256=:<base64>:"),
        ("Content-MD5" = Option<String>, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = PartJson), (status = 409, body = ErrorJson),
        (status = 413, body = ErrorJson), (status = 416, body = ErrorJson), (status = 422, body = ErrorJson)))]
pub async fn write_part(
    State(st): State<NativeState>,
    UploadAuth(c): UploadAuth,
    Path((uid, n)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<PartJson>> {
    let n: u32 = n.parse().map_err(|_| {
        ApiError::invalid(
            "invalid_range",
            format!("part number {n:?} is not a whole number from 1 to 10000"),
        )
    })?;
    let checks = checks(&headers)?;
    let r = st
        .engine
        .write(
            &c,
            &uid,
            WriteAt::Part(n),
            ferry_http::body_stream(body),
            checks,
        )
        .await?;
    let p = r.part.expect("a part write reports its part");
    Ok(Json(PartJson {
        part: p.number,
        offset: p.offset,
        size: p.size,
        sha256: p.sha256,
        md5: p.md5,
    }))
}

#[utoipa::path(post, path = "/v1/uploads/{uid}/parts/{n}/presign", tag = "uploads",
    params(("uid" = String, Path), ("n" = u32, Path, description = "1-based part number"),
        ("sig" = Option<String>, Query, description = "signature of the upload's signed URL")),
    request_body(content = Option<DigestBody>, description = "the part's SHA-256 (hex): the store then refuses other bytes"),
    responses((status = 200, body = PresignJson), (status = 409, body = ErrorJson,
        description = "the server stores bytes on its local disk, or the part is not one of the store's"),
        (status = 416, body = ErrorJson)))]
pub async fn presign_part(
    State(st): State<NativeState>,
    UploadAuth(c): UploadAuth,
    Path((uid, n)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<PresignJson>> {
    let n: u32 = n.parse().map_err(|_| {
        ApiError::invalid(
            "invalid_range",
            format!("part number {n:?} is not a whole number from 1 to 10000"),
        )
    })?;
    let b: DigestBody = json_body(&body)?;
    let sha256 = b
        .sha256
        .as_deref()
        .map(|h| sha256_hex(h, "sha256"))
        .transpose()?;
    let p = st.engine.presign_part(&c, &uid, n, sha256).await?;
    Ok(Json(PresignJson {
        part: p.part,
        offset: p.offset,
        size: p.size,
        method: p.method,
        url: p.url,
        headers: p.headers.into_iter().collect(),
        expires_at: ferry_http::rfc3339(p.expires_at),
    }))
}

#[utoipa::path(put, path = "/v1/uploads/{uid}", tag = "uploads",
    params(("uid" = String, Path), ("sig" = Option<String>, Query),
        ("Content-Range" = String, Header, description = "bytes first-last/total (or /*)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadJson), (status = 400, body = ErrorJson),
        (status = 409, body = ErrorJson), (status = 416, body = ErrorJson)))]
pub async fn write_range(
    State(st): State<NativeState>,
    UploadAuth(c): UploadAuth,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadJson>> {
    let cr = headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_header",
                "a range write needs 'Content-Range: bytes first-last/total'",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::invalid("invalid_header", "Content-Range is not ASCII"))?;
    let ContentRange { range, total } =
        parse_content_range(cr).map_err(|m| ApiError::invalid("invalid_range", m))?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len != range.len()
    {
        return Err(ApiError::invalid(
            "invalid_range",
            format!(
                "Content-Length is {len} but Content-Range {cr:?} covers {} bytes",
                range.len()
            ),
        ));
    }
    let checks = checks(&headers)?;
    let r = st
        .engine
        .write(
            &c,
            &uid,
            WriteAt::Range { range, total },
            ferry_http::body_stream(body),
            checks,
        )
        .await?;
    let view = ferry_engine::UploadView {
        upload: r.upload,
        file: r.file,
    };
    Ok(Json(upload_json(&st.engine, &st.public_url, &view)))
}

#[utoipa::path(get, path = "/v1/uploads/{uid}", tag = "uploads",
    params(("uid" = String, Path), ("sig" = Option<String>, Query)),
    responses((status = 200, body = UploadJson), (status = 404, body = ErrorJson)))]
pub async fn status(
    State(st): State<NativeState>,
    UploadAuth(c): UploadAuth,
    Path(uid): Path<String>,
) -> ApiResult<Json<UploadJson>> {
    let v = st.engine.upload_status(&c, &uid).await?;
    Ok(Json(upload_json(&st.engine, &st.public_url, &v)))
}

#[utoipa::path(get, path = "/v1/uploads/{uid}/parts", tag = "uploads",
    params(("uid" = String, Path), ("sig" = Option<String>, Query)),
    responses((status = 200, body = PartsJson), (status = 404, body = ErrorJson)))]
pub async fn list_parts(
    State(st): State<NativeState>,
    UploadAuth(c): UploadAuth,
    Path(uid): Path<String>,
) -> ApiResult<Json<PartsJson>> {
    let v = st.engine.upload_status(&c, &uid).await?;
    Ok(Json(PartsJson {
        parts: v
            .upload
            .parts
            .values()
            .map(|p| PartJson {
                part: p.number,
                offset: p.offset,
                size: p.size,
                sha256: p.sha256.clone(),
                md5: p.md5.clone(),
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/uploads/{uid}/commit", tag = "uploads",
    params(("uid" = String, Path)), request_body(content = Option<DigestBody>),
    responses((status = 200, body = UploadJson), (status = 409, body = ErrorJson), (status = 422, body = ErrorJson)))]
pub async fn commit_upload(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(uid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<UploadJson>> {
    let b: DigestBody = json_body(&body)?;
    let expected = b
        .sha256
        .as_deref()
        .map(|h| sha256_hex(h, "sha256"))
        .transpose()?;
    let v = st.engine.commit_upload(&c, &uid, expected).await?;
    Ok(Json(upload_json(&st.engine, &st.public_url, &v)))
}

#[utoipa::path(delete, path = "/v1/uploads/{uid}", tag = "uploads", params(("uid" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorJson)))]
pub async fn abort_upload(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(uid): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.abort_upload(&c, &uid).await?;
    Ok(StatusCode::NO_CONTENT)
}
