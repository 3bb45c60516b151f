//! WebSocket frames waiting for the engine, and the append bodies made of
//! them. One file's frames feed several appends in turn (acknowledgement
//! batches, or files larger than one write may take), so the queue and the
//! piece of a frame one body did not take are shared between them.

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};

/// A queued frame: its bytes, and whatever it holds until taken.
pub(super) trait Frame: Send + 'static {
    fn into_bytes(self) -> Bytes;
}

impl Frame for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

/// A frame holding permits of its connection's byte budget, released when
/// the engine takes it.
impl Frame for (Bytes, OwnedSemaphorePermit) {
    fn into_bytes(self) -> Bytes {
        self.0
    }
}

pub(super) struct Queue<T> {
    rx: mpsc::Receiver<T>,
    /// The part of a frame past the end of the last body.
    rest: Option<Bytes>,
}

pub(super) type Shared<T> = Arc<Mutex<Queue<T>>>;

pub(super) fn shared<T>(rx: mpsc::Receiver<T>) -> Shared<T> {
    Arc::new(Mutex::new(Queue { rx, rest: None }))
}

/// The next `len` bytes of the queue as a body, after dropping `skip`
/// bytes (ones the client re-sent that the server has). With `idle`, the
/// body also ends when no frame comes for that long after the first.
pub(super) fn body<T: Frame>(
    q: Shared<T>,
    skip: u64,
    len: u64,
    idle: Option<Duration>,
) -> ferry_store::ByteStream {
    struct S<T> {
        q: Shared<T>,
        skip: u64,
        left: u64,
        taken: bool,
        idle: Option<Duration>,
    }
    let s = S {
        q,
        skip,
        left: len,
        taken: false,
        idle,
    };
    futures::stream::unfold(s, |mut s| async move {
        loop {
            if s.left == 0 {
                return None;
            }
            let mut q = s.q.lock().await;
            let mut b = match q.rest.take() {
                Some(b) => b,
                None => match s.idle.filter(|_| s.taken) {
                    None => q.rx.recv().await?.into_bytes(),
                    Some(idle) => tokio::time::timeout(idle, q.rx.recv())
                        .await
                        .ok()??
                        .into_bytes(),
                },
            };
            if s.skip > 0 {
                if b.len() as u64 <= s.skip {
                    s.skip -= b.len() as u64;
                    continue;
                }
                b = b.slice(s.skip as usize..);
                s.skip = 0;
            }
            if b.len() as u64 > s.left {
                q.rest = Some(b.split_off(s.left as usize));
            }
            drop(q);
            s.left -= b.len() as u64;
            s.taken = true;
            return Some((Ok::<_, std::io::Error>(b), s));
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn collect(s: ferry_store::ByteStream) -> Vec<u8> {
        let parts: Vec<Bytes> = s.try_collect().await.unwrap();
        parts.concat()
    }

    #[tokio::test]
    async fn bodies_share_a_queue_skip_and_split_frames() {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        for f in [&b"abcd"[..], b"efgh", b"ij"] {
            tx.send(Bytes::copy_from_slice(f)).await.unwrap();
        }
        drop(tx);
        let q = shared(rx);
        assert_eq!(collect(body(q.clone(), 2, 3, None)).await, b"cde");
        assert_eq!(collect(body(q.clone(), 0, 4, None)).await, b"fghi");
        assert_eq!(collect(body(q.clone(), 0, 10, None)).await, b"j");
        assert_eq!(collect(body(q, 0, 10, None)).await, b"");
    }

    #[tokio::test]
    async fn an_idle_body_ends_when_the_client_pauses() {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        let q = shared(rx);
        let b = body(q, 0, 100, Some(Duration::from_millis(50)));
        assert_eq!(collect(b).await, b"ab");
        drop(tx);
    }
}
