//! `/v1/spaces/{space}/files/…` and `/v1/spaces/{space}/list/…`.

use super::model::*;
use super::{ApiError, ApiResult, Auth, NativeState};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::{CommitMode, ConflictPolicy, DigestAlgo};
use ferry_engine::{EngineError, NewSession, NewUpload, Precondition};
use ferry_http::{RangeRequest, b64, http_date, parse_content_digest, parse_range};
use ferry_meta::Entry;

#[utoipa::path(get, path = "/v1/spaces/{space}/files/{path}", tag = "files",
    params(("space" = String, Path), ("path" = String, Path),
        ("Range" = Option<String>, Header, description = "bytes=first-last")),
    responses((status = 200, description = "the bytes"), (status = 206, description = "the requested range"),
        (status = 304), (status = 404, body = ErrorJson), (status = 416, body = ErrorJson)))]
pub async fn download(
    State(st): State<NativeState>,
    Auth(c): Auth,
    method: Method,
    Path((space, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // The record and the bytes of one version: headers and body agree.
    let opened = st.engine.open_file(&c, &space, &path).await?;
    let f = opened.file.clone();
    let etag = format!("\"{}\"", f.sha256);
    let sha_b64 = b64(&hex_bytes(&f.sha256));
    let mut out = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(&mut out, header::ETAG, etag.clone());
    set(&mut out, header::ACCEPT_RANGES, "bytes".into());
    set(&mut out, header::LAST_MODIFIED, http_date(f.created_at));
    set(
        &mut out,
        header::CONTENT_TYPE,
        f.content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
    );
    set(
        &mut out,
        header::HeaderName::from_static("repr-digest"),
        format!("sha-256=:{sha_b64}:"),
    );
    set(
        &mut out,
        header::HeaderName::from_static("digest"),
        format!("sha-256={sha_b64}"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        f.size,
    );
    let (status, offset, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, f.size),
        RangeRequest::Partial(r) => {
            set(
                &mut out,
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.last(), f.size),
            );
            (StatusCode::PARTIAL_CONTENT, r.start, r.len())
        }
        RangeRequest::Unsatisfiable => {
            let mut resp = ApiError(EngineError::RangeNotSatisfiable(format!(
                "the requested range is outside the file's {} bytes",
                f.size
            )))
            .into_response();
            set(
                resp.headers_mut(),
                header::CONTENT_RANGE,
                format!("bytes */{}", f.size),
            );
            return Ok(resp);
        }
    };
    set(&mut out, header::CONTENT_LENGTH, len.to_string());
    if method == Method::HEAD {
        return Ok((status, out).into_response());
    }
    let body = opened.read(offset, len);
    Ok((status, out, Body::from_stream(body)).into_response())
}

#[derive(serde::Deserialize)]
pub struct PutQuery {
    conflict: Option<String>,
}

#[utoipa::path(put, path = "/v1/spaces/{space}/files/{path}", tag = "files",
    params(("space" = String, Path), ("path" = String, Path),
        ("conflict" = Option<String>, Query, description = "replace (the default), rename, fail, …"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if nothing is at the path (else 412)"),
        ("Content-Digest" = Option<String>, Header, description = "sha-256=:<base64>: of the body"),
        ("Repr-Digest" = Option<String>, Header, description = "sha-256=:<base64>: of the file"),
        ("Content-MD5" = Option<String>, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileJson), (status = 409, body = ErrorJson),
        (status = 412, body = ErrorJson), (status = 413, body = ErrorJson), (status = 422, body = ErrorJson)))]
/// A whole file in one request: a one-upload session created, written and
/// committed. All or nothing: a body that fails leaves no session behind.
pub async fn put(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path((space, path)): Path<(String, String)>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let absent_only = match headers.get(header::IF_NONE_MATCH).map(|v| v.to_str()) {
        None => false,
        Some(Ok("*")) => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_header",
                "If-None-Match: only `*` is understood here (create, never replace)",
            ));
        }
    };
    let conflict = match (q.conflict.as_deref(), absent_only) {
        (_, true) => ConflictPolicy::Fail,
        (None, false) => ConflictPolicy::Replace,
        (Some(s), false) => s
            .parse()
            .map_err(|e: String| ApiError::invalid("invalid_query", e))?,
    };
    let sha256 = match headers.get("repr-digest") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::invalid("invalid_header", "Repr-Digest is not ASCII"))?;
            let digests =
                parse_content_digest(v).map_err(|m| ApiError::invalid("invalid_header", m))?;
            Some(
                digests
                    .into_iter()
                    .find(|d| d.algo == DigestAlgo::Sha256)
                    .ok_or_else(|| {
                        ApiError::invalid("invalid_header", "Repr-Digest needs sha-256=:<base64>:")
                    })?,
            )
        }
    };
    let checks = super::sessions::checks(&headers)?;
    let size = ferry_http::content_length(&headers);
    let new = NewSession {
        space: Some(space),
        conflict,
        expires_in_secs: None,
        commit: CommitMode::OnLastByte,
        uploads: vec![NewUpload {
            path,
            size,
            sha256,
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ..Default::default()
        }],
        dialect: "native".into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        precondition: if conflict == ConflictPolicy::Fail {
            Precondition::Absent
        } else {
            Precondition::None
        },
        // All or nothing: a body that fails aborts the session.
        whole_in_request: true,
    };
    let written = st
        .engine
        .upload_whole(&c, new, ferry_http::body_stream(body), checks)
        .await;
    match written {
        Ok(w) => {
            let f = w.file;
            let mut out = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", f.sha256)) {
                out.insert(header::ETAG, v);
            }
            Ok((StatusCode::CREATED, out, Json(FileJson::from(&f))).into_response())
        }
        Err(e @ EngineError::AlreadyExists { .. }) if absent_only => Ok(precondition_failed(e)),
        Err(e) => Err(ApiError(e)),
    }
}

/// `If-None-Match: *` and something is at the path.
fn precondition_failed(e: EngineError) -> Response {
    let path = match &e {
        EngineError::AlreadyExists { path } => path.clone(),
        _ => String::new(),
    };
    let body = serde_json::json!({"error": {"code": "precondition_failed",
        "message": format!("If-None-Match: * and {path:?} exists"), "path": path}});
    ferry_http::rendered((StatusCode::PRECONDITION_FAILED, Json(body)).into_response())
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[utoipa::path(delete, path = "/v1/spaces/{space}/files/{path}", tag = "files",
    params(("space" = String, Path), ("path" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn delete(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path((space, path)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    st.engine.delete_file(&c, &space, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/spaces/{space}/move", tag = "files", request_body = MoveBody,
    params(("space" = String, Path)),
    responses((status = 200, body = MovedJson), (status = 404, body = ErrorJson), (status = 409, body = ErrorJson)))]
pub async fn move_path(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(space): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<MovedJson>> {
    let b: MoveBody = super::json_body(&body)?;
    let moved = st.engine.move_path(&c, &space, &b.from, &b.to).await?;
    Ok(Json(MovedJson { moved }))
}

pub async fn list_root(
    st: State<NativeState>,
    auth: Auth,
    Path(space): Path<String>,
) -> ApiResult<Json<ListJson>> {
    list(st, auth, Path((space, String::new()))).await
}

#[utoipa::path(get, path = "/v1/spaces/{space}/list/{prefix}", tag = "files",
    params(("space" = String, Path), ("prefix" = String, Path, description = "folder path; may be empty")),
    responses((status = 200, body = ListJson), (status = 403, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn list(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path((space, prefix)): Path<(String, String)>,
) -> ApiResult<Json<ListJson>> {
    let entries = st.engine.list(&c, &space, &prefix).await?;
    Ok(Json(ListJson {
        entries: entries
            .into_iter()
            .map(|e| match e {
                Entry::Folder(name) => EntryJson {
                    name,
                    kind: "folder".into(),
                    size: None,
                    sha256: None,
                    created_at: None,
                },
                Entry::File(f) => EntryJson {
                    name: f.path.name().to_owned(),
                    kind: "file".into(),
                    size: Some(f.size),
                    sha256: Some(f.sha256),
                    created_at: Some(ferry_http::rfc3339(f.created_at)),
                },
            })
            .collect(),
    }))
}
