//! tus 1.0: core protocol and the creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, checksum-trailer,
//! termination and concatenation extensions.

use super::meta::{Concat, Stored, parse_upload_metadata};
use super::{Destination, TusState, create, header, int_header, known_length, offset, set};
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header as h};
use axum::response::{IntoResponse, Response};
use ferry_core::{CommitMode, ConflictPolicy, Digest, DigestAlgo, Upload, UploadState};
use ferry_engine::{Caller, EngineError, PartChecks, Want, WriteAt};
use std::sync::Arc;

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,checksum-trailer,termination,concatenation";
/// Without concatenation: a store that cannot copy staged bytes (S3).
const OCTETS: &str = "application/offset+octet-stream";

/// A tus error: status, `text/plain` message, `Tus-Resumable`.
pub(crate) struct TusError(StatusCode, String);

impl From<EngineError> for TusError {
    fn from(e: EngineError) -> Self {
        use ferry_core::StateError;
        let status = match &e {
            EngineError::DigestMismatch { .. } => StatusCode::from_u16(460).expect("valid"),
            EngineError::RangeNotSatisfiable(_) => StatusCode::BAD_REQUEST,
            EngineError::Gone(StateError::Committed | StateError::Committing) => {
                StatusCode::FORBIDDEN
            }
            EngineError::Invalid {
                code: "upload_complete",
                ..
            } => StatusCode::FORBIDDEN,
            e => ferry_http::status_of(e),
        };
        TusError(status, ferry_http::public_message(&e))
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let mut r = (self.0, format!("{}\n", self.1)).into_response();
        set(r.headers_mut(), "tus-resumable", VERSION);
        if self.0 == StatusCode::PRECONDITION_FAILED {
            set(r.headers_mut(), "tus-version", VERSION);
        }
        ferry_http::rendered(r)
    }
}

/// tus's text for an answer the framework made.
pub fn framework_error(status: StatusCode, message: String) -> Response {
    TusError(status, message).into_response()
}

/// Whether the body is `application/offset+octet-stream`: that media type
/// exactly (any case), with or without parameters (RFC 9110 §8.3.1).
fn is_octets(headers: &HeaderMap) -> bool {
    header(headers, "content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(OCTETS))
}

fn bad(message: impl Into<String>) -> TusError {
    TusError(StatusCode::BAD_REQUEST, message.into())
}

type TusResult = Result<Response, TusError>;

fn respond(status: StatusCode, headers: HeaderMap) -> Response {
    let mut r = (status, headers).into_response();
    set(r.headers_mut(), "tus-resumable", VERSION);
    r
}

pub async fn collection(
    st: &TusState,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let result = match method {
        Method::OPTIONS => Ok(discovery(st)),
        Method::POST => post(st, headers, body).await,
        m => Err(TusError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{m} is not allowed here: POST creates an upload, OPTIONS describes the server"
            ),
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
        Method::OPTIONS => Ok(discovery(st)),
        Method::HEAD => head(st, id, headers).await,
        Method::PATCH => patch(st, id, headers, body).await,
        Method::DELETE => delete(st, id, headers).await,
        m => Err(TusError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed on an upload: use HEAD, PATCH or DELETE"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn discovery(st: &TusState) -> Response {
    let mut hs = HeaderMap::new();
    set(&mut hs, "tus-version", VERSION);
    set(&mut hs, "tus-extension", EXTENSIONS);
    set(&mut hs, "tus-max-size", st.engine.limits().max_file_size);
    set(&mut hs, "tus-checksum-algorithm", "sha1,sha256,md5");
    respond(StatusCode::NO_CONTENT, hs)
}

/// `Tus-Resumable` must name the version we speak, then the bearer token
/// must be good.
async fn caller(st: &TusState, headers: &HeaderMap) -> Result<Caller, TusError> {
    match header(headers, "tus-resumable") {
        Some(VERSION) => {}
        Some(v) => {
            return Err(TusError(
                StatusCode::PRECONDITION_FAILED,
                format!("Tus-Resumable {v:?} is not supported; this server speaks {VERSION}"),
            ));
        }
        None => {
            return Err(TusError(
                StatusCode::PRECONDITION_FAILED,
                format!("the Tus-Resumable header is missing; this server speaks {VERSION}"),
            ));
        }
    }
    Ok(ferry_http::authenticate(&st.engine, headers).await?)
}

fn expires_header(hs: &mut HeaderMap, expires_at: i64) {
    set(hs, "upload-expires", ferry_http::http_date(expires_at));
}

async fn post(st: &TusState, headers: &HeaderMap, body: Body) -> TusResult {
    let caller = caller(st, headers).await?;
    let concat = parse_concat(header(headers, "upload-concat"))?;
    let raw_meta = header(headers, "upload-metadata").map(str::to_owned);
    let meta = parse_upload_metadata(raw_meta.as_deref().unwrap_or_default())?;
    let text = |k: &str| meta.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let conflict = match text("conflict") {
        Some(c) => c
            .parse()
            .map_err(|e: String| bad(format!("Upload-Metadata conflict: {e}")))?,
        None => st.conflict,
    };
    // With neither path nor file name, the file is named after a random id.
    let dest = || Destination {
        space: text("space"),
        path: text("path")
            .or_else(|| text("filename"))
            .or_else(|| text("name"))
            .unwrap_or_else(|| format!("upload-{}", ferry_engine::auth::random_hex(8))),
        conflict,
        content_type: text("filetype").or_else(|| text("type")),
        sha256: None,
        metadata: (!meta.is_empty()).then(|| serde_json::to_string(&meta).expect("serializable")),
    };
    let stored = Stored {
        upload_metadata: raw_meta,
        concat: concat.clone(),
    };

    if let Concat::Final(urls) = &concat {
        let ids = urls
            .split_whitespace()
            .map(|u| {
                u.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>();
        let new = super::new_session(
            dest(),
            None,
            Some(stored.to_json()),
            "tus",
            CommitMode::OnLastByte,
        );
        let view = st.engine.concat(&caller, &ids, new).await?;
        let up = &view.uploads[0].upload;
        let mut hs = HeaderMap::new();
        set(&mut hs, "location", st.upload_url(&up.id));
        expires_header(&mut hs, view.session.expires_at);
        return Ok(respond(StatusCode::CREATED, hs));
    }

    let size = match (
        int_header(headers, "upload-length")?,
        header(headers, "upload-defer-length"),
    ) {
        (Some(n), None) => Some(n),
        (None, Some("1")) => None,
        (Some(_), Some(_)) => {
            return Err(bad("send Upload-Length or Upload-Defer-Length, not both"));
        }
        (None, Some(v)) => return Err(bad(format!("Upload-Defer-Length must be 1; got {v:?}"))),
        (None, None) => {
            return Err(bad(
                "a creation needs Upload-Length, or Upload-Defer-Length: 1",
            ));
        }
    };
    // A partial upload never becomes a file by itself: it gets a
    // placeholder path that is never claimed.
    let d = match concat {
        Concat::Partial => Destination {
            space: None,
            path: format!(".tus-partial/{}", ferry_engine::auth::random_hex(8)),
            conflict: ConflictPolicy::Replace,
            content_type: None,
            sha256: None,
            metadata: None,
        },
        _ => dest(),
    };
    // A partial upload is committed only as part of a final one.
    let commit = match stored.concat {
        Concat::Partial => CommitMode::Manual,
        _ => CommitMode::OnLastByte,
    };
    let with_body = is_octets(headers);
    // The whole file in the creation (the common small upload): made,
    // written and committed as one, or not at all — a client that gets no
    // 201 never learnt the address to resume.
    let whole = with_body
        && commit.is_auto()
        && size.is_some_and(|n| n > 0 && ferry_http::content_length(headers) == Some(n));
    if whole {
        let new = super::new_session(d, size, Some(stored.to_json()), "tus", commit);
        let (stream, trailers) = ferry_http::body_stream_with_trailers(body);
        let checks = checks(headers, trailers)?;
        let w = st.engine.upload_whole(&caller, new, stream, checks).await?;
        let mut hs = HeaderMap::new();
        set(&mut hs, "location", st.upload_url(&w.upload.id));
        expires_header(&mut hs, w.expires_at);
        set(&mut hs, "upload-offset", offset(&w.upload));
        return Ok(respond(StatusCode::CREATED, hs));
    }
    let (view, session) =
        create(st, &caller, d, size, Some(stored.to_json()), "tus", commit).await?;
    let mut upload = view.upload;
    let mut hs = HeaderMap::new();
    set(&mut hs, "location", st.upload_url(&upload.id));
    expires_header(&mut hs, session.expires_at);

    // creation-with-upload: the body carries the first bytes.
    if with_body {
        let (stream, trailers) = ferry_http::body_stream_with_trailers(body);
        let checks = checks(headers, trailers)?;
        match st
            .engine
            .write(
                &caller,
                &upload.id,
                WriteAt::Append {
                    offset: 0,
                    total: None,
                    len: ferry_http::content_length(headers),
                },
                stream,
                checks,
            )
            .await
        {
            Ok(w) => upload = w.upload,
            // The upload exists; the client resumes from the offset it
            // reads here (whatever was made durable is kept).
            Err(e) => {
                upload = st.engine.upload_status(&caller, &upload.id).await?.upload;
                if upload.is_complete() {
                    return Err(e.into()); // every byte arrived: the commit failed
                }
                tracing::info!(upload = %upload.id, error = %e, "creation-with-upload body failed");
            }
        }
        set(&mut hs, "upload-offset", offset(&upload));
    }
    Ok(respond(StatusCode::CREATED, hs))
}

/// `Upload-Checksum: <algo> <base64>` on the request, or announced as a
/// trailer (`Trailer: Upload-Checksum`) and read after the body (whose
/// bytes are then hashed with every algorithm it might name; announced
/// and missing, the write is refused, 400).
fn checks(headers: &HeaderMap, trailers: ferry_http::Trailers) -> Result<PartChecks, TusError> {
    let mut checks = PartChecks::default();
    if let Some(v) = header(headers, "upload-checksum") {
        checks.expected.push(parse_checksum(v)?);
    }
    let announced = header(headers, "trailer").is_some_and(|t| {
        t.split(',')
            .any(|f| f.trim().eq_ignore_ascii_case("upload-checksum"))
    });
    if announced {
        checks.want = Want {
            sha256: true,
            sha1: true,
            md5: true,
        };
        // Announced and never sent is refused, not taken unchecked: a
        // proxy in between may drop trailers (nginx passes the `Trailer`
        // header on and the trailer not), and the client asked for the
        // check.
        checks.late = Some(Arc::new(move || {
            let t = trailers.lock().unwrap();
            match t.as_ref().and_then(|t| t.get("upload-checksum")) {
                None => Err(EngineError::invalid(
                    "checksum_trailer_missing",
                    "the request announced an Upload-Checksum trailer and none came after its body (a proxy on the way may drop trailers); none of its bytes were kept: send the checksum as an Upload-Checksum header",
                )),
                Some(v) => Ok(vec![parse_checksum(v.to_str().unwrap_or_default())?]),
            }
        }));
    }
    Ok(checks)
}

/// `Upload-Concat`: absent, `partial`, or `final;<url> <url> …`.
pub(crate) fn parse_concat(v: Option<&str>) -> Result<Concat, TusError> {
    Ok(match v {
        None => Concat::None,
        Some("partial") => Concat::Partial,
        Some(v) if v.starts_with("final;") => Concat::Final(v["final;".len()..].trim().to_owned()),
        Some(v) => {
            return Err(bad(format!(
                "Upload-Concat must be 'partial' or 'final;<url> <url> …'; got {v:?}"
            )));
        }
    })
}

pub(crate) fn parse_checksum(v: &str) -> Result<Digest, EngineError> {
    let (algo, b64) = v.trim().split_once(' ').ok_or_else(|| {
        EngineError::invalid(
            "invalid_checksum",
            format!("Upload-Checksum must be '<algorithm> <base64>'; got {v:?}"),
        )
    })?;
    let algo = match algo.to_ascii_lowercase().as_str() {
        "sha1" => DigestAlgo::Sha1,
        "sha256" => DigestAlgo::Sha256,
        "md5" => DigestAlgo::Md5,
        other => {
            return Err(EngineError::invalid(
                "invalid_checksum",
                format!("checksum algorithm {other:?} is not supported; use sha1, sha256 or md5"),
            ));
        }
    };
    ferry_http::decode_digest(algo, b64, "Upload-Checksum")
        .map_err(|m| EngineError::invalid("invalid_checksum", m))
}

fn upload_headers(upload: &Upload, expires_at: i64) -> HeaderMap {
    let stored = Stored::of(upload);
    let mut hs = HeaderMap::new();
    set(&mut hs, "upload-offset", offset(upload));
    match known_length(upload) {
        Some(n) => set(&mut hs, "upload-length", n),
        None => set(&mut hs, "upload-defer-length", 1),
    }
    if let Some(m) = &stored.upload_metadata {
        set(&mut hs, "upload-metadata", m);
    }
    match &stored.concat {
        Concat::None => {}
        Concat::Partial => set(&mut hs, "upload-concat", "partial"),
        Concat::Final(list) => set(&mut hs, "upload-concat", format!("final;{list}")),
    }
    if upload.state == UploadState::Open {
        expires_header(&mut hs, expires_at);
    }
    set(&mut hs, h::CACHE_CONTROL.as_str(), "no-store");
    hs
}

async fn head(st: &TusState, id: &str, headers: &HeaderMap) -> TusResult {
    let caller = caller(st, headers).await?;
    // A completed upload whose commit did not happen (or failed) is
    // committed now; its error is this answer.
    st.engine.take_over(&caller, id).await?;
    let (view, session) = st.engine.resume(&caller, id).await?;
    let upload = view.upload;
    match upload.state {
        UploadState::Aborted => {
            return Err(TusError(
                StatusCode::GONE,
                format!("upload {id} was terminated"),
            ));
        }
        UploadState::Open => {
            if let Some(e) = session.state.check_writable().err() {
                return Err(EngineError::Gone(e).into());
            }
        }
        _ => {}
    }
    let hs = upload_headers(&upload, session.expires_at);
    Ok(respond(StatusCode::OK, hs))
}

async fn patch(st: &TusState, id: &str, headers: &HeaderMap, body: Body) -> TusResult {
    let caller = caller(st, headers).await?;
    if !is_octets(headers) {
        return Err(TusError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a PATCH body must be sent as Content-Type: {OCTETS}"),
        ));
    }
    let at = int_header(headers, "upload-offset")?
        .ok_or_else(|| bad("a PATCH needs the Upload-Offset header"))?;
    let total = int_header(headers, "upload-length")?;
    let (stream, trailers) = ferry_http::body_stream_with_trailers(body);
    let checks = checks(headers, trailers)?;
    let w = st
        .engine
        .write(
            &caller,
            id,
            WriteAt::Append {
                offset: at,
                total,
                len: ferry_http::content_length(headers),
            },
            stream,
            checks,
        )
        .await?;
    let mut hs = HeaderMap::new();
    set(&mut hs, "upload-offset", offset(&w.upload));
    expires_header(&mut hs, w.expires_at);
    Ok(respond(StatusCode::NO_CONTENT, hs))
}

async fn delete(st: &TusState, id: &str, headers: &HeaderMap) -> TusResult {
    let caller = caller(st, headers).await?;
    st.engine.take_over(&caller, id).await?;
    st.engine.abort_upload(&caller, id).await?;
    Ok(respond(StatusCode::NO_CONTENT, HeaderMap::new()))
}

/// Fuzzing campaign (issue 11, G): tus request headers never panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn headerish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(sha1|sha256|md5|SHA1|crc32)? ?[A-Za-z0-9+/=]{0,48}",
            "(partial|final;?)?( ?(/tus/)?[a-z0-9]{0,12}){0,3}",
            "[-+ 0-9]{0,24}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn upload_checksum_never_panics_and_has_the_algorithms_length(v in headerish()) {
            if let Ok(d) = parse_checksum(&v) {
                prop_assert_eq!(d.bytes.len(), d.algo.output_len());
            }
        }

        #[test]
        fn upload_offset_concat_and_length_headers_never_panic(v in headerish()) {
            let Ok(value) = axum::http::HeaderValue::from_str(&v) else {
                return Ok(());
            };
            let mut hs = HeaderMap::new();
            for name in ["upload-offset", "upload-length", "upload-concat", "upload-checksum", "upload-defer-length"] {
                hs.insert(name, value.clone());
            }
            let _ = int_header(&hs, "upload-offset");
            let _ = int_header(&hs, "upload-length");
            let _ = checks(&hs, Default::default());
        }
    }
}
