//! The idle-body timeout: a request body that sends nothing for the
//! configured time is ended as a failed body (the bytes that arrived are
//! kept, as for any body that breaks), so a stalled client holds no
//! upload, claim or buffer forever. The clock runs only while the reader
//! waits for the next frame.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the last poll returned `Pending`: the wait for the next
    /// frame goes on, and so does its clock.
    waiting: bool,
    timed_out: bool,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if !this.waiting {
            // A new wait for a frame: its clock starts now (time the reader
            // spent elsewhere, e.g. on a slow disk, is not the client's).
            this.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + this.idle);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.timed_out = true;
                    Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the body sent nothing for {} s", this.idle.as_secs()),
                    )))))
                }
                Poll::Pending => {
                    this.waiting = true;
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware (state: the idle time): ends a body silent that long.
pub async fn body_idle_timeout(State(idle): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, inner) = req.into_parts();
    let body = Body::new(IdleBody {
        inner,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
        waiting: false,
        timed_out: false,
    });
    next.run(Request::from_parts(parts, body)).await
}
