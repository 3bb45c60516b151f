//! Request ids, and what a client may read of an internal error.
//!
//! Every request gets an id (`x-request-id` on every response). An
//! internal error (metadata, storage, a task that died) is logged with the
//! id and its whole source chain; the client reads only a generic message
//! naming the id, never a path or an OS error.

use axum::http::HeaderValue;
use ferry_engine::EngineError;
use std::sync::atomic::{AtomicU64, Ordering};

/// The response header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// A new request id: 16 hex digits, unique in this process and, by a
/// random start, across restarts.
fn next_id() -> String {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let seed = ferry_engine::auth::random_hex(8);
        AtomicU64::new(u64::from_str_radix(&seed, 16).unwrap_or(0))
    });
    format!("{:016x}", next.fetch_add(1, Ordering::Relaxed))
}

/// The id of the request being handled; outside a request (a task spawned
/// for a WebSocket), a fresh id, which the log line then carries.
pub fn request_id() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_else(|_| next_id())
}

/// Middleware: gives the request an id, runs it inside a span and scope
/// carrying the id, and answers the id in `x-request-id`.
pub async fn with_request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let id = next_id();
    let span = tracing::info_span!("request", id = %id);
    let mut resp = CURRENT
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// An error and its sources, `outer: inner: …`, for the log.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let m = inner.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = inner.source();
    }
    s
}

/// Logs an internal error with the request id and its whole source chain,
/// and returns what the client may read: a generic message naming the id.
pub fn internal_message(e: &(dyn std::error::Error + 'static)) -> String {
    let id = request_id();
    tracing::error!(request_id = %id, error = %chain(e), "internal error");
    format!("internal error; request id {id}")
}

/// Whether an engine error is internal (metadata, storage): its text is
/// for the log, not for the client.
pub fn is_internal(e: &EngineError) -> bool {
    e.code() == "internal"
}

/// What a client may read of an engine error: its message, or for an
/// internal error a generic message naming the request id (the error is
/// logged with its source chain). Every dialect renders messages with this.
pub fn public_message(e: &EngineError) -> String {
    if is_internal(e) {
        internal_message(e)
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_answer_the_request_id_and_no_detail() {
        let e = EngineError::Store(ferry_store::StoreError::Io {
            path: "/data/staging/x".into(),
            source: std::io::Error::other("Permission denied (os error 13)"),
        });
        let m = CURRENT.sync_scope("00000000000000ab".into(), || public_message(&e));
        assert_eq!(m, "internal error; request id 00000000000000ab");
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(next_id(), next_id());
    }
}
