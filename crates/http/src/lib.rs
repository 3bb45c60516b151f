//! HTTP plumbing shared by every dialect: turning requests into engine
//! inputs (credentials, streamed bodies, parsed headers) and engine errors
//! into status codes. No dialect-specific shapes live here.

mod dialect;
mod drain;
pub mod headers;
mod idle;
mod request_id;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use ferry_core::StateError;
use ferry_engine::{Caller, Engine, EngineError};
use ferry_store::ByteStream;
use futures::{StreamExt, TryStreamExt};

pub use dialect::{Renderer, no_route, rendered, status_code_name, utf8_form, with_errors};
pub use drain::drain_unread;
pub use headers::*;
pub use idle::body_idle_timeout;
pub use request_id::{
    REQUEST_ID, chain, internal_message, is_internal, public_message, request_id, with_request_id,
};

/// The default status of an engine error (dialects may refine it).
pub fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Invalid { .. } => StatusCode::BAD_REQUEST,
        EngineError::AlreadyExists { .. }
        | EngineError::Incomplete { .. }
        | EngineError::Conflict(_)
        | EngineError::Unsupported(_)
        | EngineError::OffsetMismatch { .. } => StatusCode::CONFLICT,
        EngineError::Gone(StateError::Expired | StateError::Aborted | StateError::Failed) => {
            StatusCode::GONE
        }
        EngineError::Gone(StateError::Committed | StateError::Committing) => StatusCode::CONFLICT,
        EngineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        EngineError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        EngineError::DigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
        EngineError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::BodyFailed { .. } => StatusCode::BAD_REQUEST,
        EngineError::Rejected { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The request's `Content-Length`, when it sent a valid one.
pub fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Seconds a client is asked to wait before it retries a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Middleware: a 503 (the storage backend is unavailable) carries
/// `Retry-After`, whatever dialect answered it, unless it has one.
pub async fn retry_after_503(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .entry(axum::http::header::RETRY_AFTER)
            .or_insert(axum::http::HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// Streams a request body without collecting it.
pub fn body_stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

/// Trailer fields of a request body, filled in when the body ends.
pub type Trailers = std::sync::Arc<std::sync::Mutex<Option<HeaderMap>>>;

/// Streams a request body without collecting it, keeping its trailer
/// fields (HTTP/1.1 chunked bodies may end with some) for after the end.
pub fn body_stream_with_trailers(body: Body) -> (ByteStream, Trailers) {
    let trailers = Trailers::default();
    let slot = trailers.clone();
    let stream = http_body_util::BodyStream::new(body)
        .filter_map(move |frame| {
            let item = match frame {
                Err(e) => Some(Err(std::io::Error::other(e))),
                Ok(frame) => match frame.into_data() {
                    Ok(data) => Some(Ok(data)),
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            *slot.lock().unwrap() = Some(t);
                        }
                        None
                    }
                },
            };
            std::future::ready(item)
        })
        .boxed();
    (stream, trailers)
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates a request by its bearer token.
pub async fn authenticate(engine: &Engine, headers: &HeaderMap) -> Result<Caller, EngineError> {
    match bearer(headers) {
        Some(t) => engine.authenticate(t).await,
        None => Err(EngineError::Unauthenticated(
            "this needs an 'Authorization: Bearer <token>' header".into(),
        )),
    }
}

/// Formats milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Formats milliseconds since the epoch as an HTTP date.
pub fn http_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap_or_default()
}

/// Records request count and latency per route, for `/metrics`.
pub async fn track_metrics(
    matched: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let method = req.method().to_string();
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!("ferry_http_requests_total", &labels).increment(1);
    metrics::histogram!("ferry_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            http_date(1_700_000_000_000),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }
}
