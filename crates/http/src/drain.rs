//! Early answers that arrive. A request answered before its body was read
//! (401, 403, 404, 413, 422…) would otherwise end with the connection
//! closed while the client is still sending: it reads a broken pipe, not
//! the answer. [`drain_unread`] wraps every request body; when the handler
//! dropped the body unread, the answer goes out at once and the rest of
//! the body is read and dropped beside it — at most `DRAIN_BYTES` and
//! `DRAIN_TIME`, so a hostile client cannot hold the server; past either,
//! the connection closes. The answer never waits for the drain: a client
//! whose body stalled (a write taken over by a newer request) reads its
//! 409 at once.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes read and dropped from a body the handler left unread.
const DRAIN_BYTES: u64 = 64 << 20;
/// Longest time spent reading them.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where an unfinished body goes back when its handler drops it.
#[derive(Clone, Default)]
struct Leftover {
    body: Arc<Mutex<Option<Body>>>,
    polled: Arc<AtomicBool>,
}

/// A request body that hands itself back to [`drain_unread`] if it is
/// dropped before its end.
struct Tracked {
    inner: Option<Body>,
    ended: bool,
    leftover: Leftover,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.leftover.polled.store(true, Ordering::Relaxed);
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && !self.ended
            && !inner.is_end_stream()
        {
            *self.leftover.body.lock().unwrap() = Some(inner);
        }
    }
}

/// Middleware: drains what the handler left of the request body (bounded)
/// before the answer goes out. A client that asked `Expect: 100-continue`
/// and was never told to continue has sent nothing: nothing is drained.
pub async fn drain_unread(req: Request, next: Next) -> Response {
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let leftover = Leftover::default();
    let (parts, body) = req.into_parts();
    let body = Body::new(Tracked {
        inner: Some(body),
        ended: false,
        leftover: leftover.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    let left = leftover.body.lock().unwrap().take();
    if let Some(body) = left
        && (!expects_continue || leftover.polled.load(Ordering::Relaxed))
    {
        // The connection keeps feeding the body while it writes the
        // answer; it closes once the drain drops the body.
        tokio::spawn(tokio::time::timeout(DRAIN_TIME, drain(body)));
    }
    resp
}

/// Reads a body to its end, or `DRAIN_BYTES` of it.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > DRAIN_BYTES {
            break;
        }
    }
}
