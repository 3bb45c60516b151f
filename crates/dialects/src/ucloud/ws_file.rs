//! The single-file WebSocket (UCloud's `WEBSOCKET`, V1 in the Go
//! provider): a first text frame `"<startOffset> <totalSize>"`, then binary
//! frames of the file's bytes from `startOffset`; the server answers text
//! frames with the number of bytes durable so far (from the start of the
//! file). Resume is a new connection at the last acknowledged offset.
//!
//! Frames are fed to the engine as the body of an append, in batches: a
//! batch ends after [`BATCH`] bytes, or when no frame came for
//! [`IDLE`], and each batch is acknowledged once the engine has made it
//! durable. A client that re-sends bytes the server already has (its last
//! acknowledgement was lost with the connection) has them dropped: the
//! server keeps what it acknowledged and takes the rest.
//!
//! Errors close the socket with code `4000 + status` and the reason
//! `"<errorCode>: <why>"` (cut to the 123 bytes a close frame holds);
//! before the upgrade they are the usual `{"why","errorCode"}` answer.

use super::{
    Grant, UcloudError, UcloudResult, UcloudState, check_cap, check_lifetime, grant, queue,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use ferry_engine::{Caller, PartChecks, WriteAt};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bytes per durable batch (and acknowledgement).
const BATCH: u64 = 8 << 20;
/// A batch also ends when the client pauses this long.
const IDLE: Duration = Duration::from_millis(200);
/// Largest WebSocket message taken.
pub(super) const MAX_MESSAGE: usize = 64 << 20;

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// The token from `?token=` (as the Go provider reads it) or the
/// `Chunked-Upload-Token` header.
pub(super) fn token_of(q: TokenQuery, headers: &HeaderMap) -> Result<String, UcloudError> {
    q.token
        .or_else(|| super::header(headers, "chunked-upload-token").map(str::to_owned))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            UcloudError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TOKEN",
                "the WebSocket endpoint needs its ?token=",
            )
        })
}

pub(super) async fn upgrade(
    State(st): State<UcloudState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> UcloudResult {
    let token = token_of(q, &headers)?;
    let Grant::File { upload, caller } = grant(&st.engine, &token)? else {
        return Err(UcloudError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_TOKEN",
            "this token is for a folder upload: use its folder endpoint",
        ));
    };
    let (_, session) = st.engine.upload_and_session(&caller, &upload).await?;
    check_lifetime(&st, &session)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run(st, caller, upload, socket)))
}

/// The close frame for an outcome.
pub(super) fn close_frame(result: Result<(), UcloudError>) -> Message {
    let (code, reason) = match result {
        Ok(()) => (1000, String::new()),
        Err(e) => {
            let mut reason = format!("{}: {}", e.code, e.why);
            if reason.len() > 123 {
                let mut cut = 123;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
            }
            (e.close_code(), reason)
        }
    };
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn run(st: UcloudState, caller: Caller, upload: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(16);
    let sender = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // The reader: the first text frame, then data into a bounded queue;
    // "ping" is answered at once.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<String, UcloudError>>();
    let (data_tx, data_rx) = mpsc::channel::<Bytes>(16);
    let reader_done = Arc::new(AtomicBool::new(false));
    // A protocol error the reader met: it ends the upload with an error.
    let broken = Arc::new(std::sync::Mutex::new(None::<UcloudError>));
    let reader = {
        let broken = broken.clone();
        let out = out.clone();
        let done = reader_done.clone();
        tokio::spawn(async move {
            let mut first_tx = Some(first_tx);
            while let Some(m) = stream.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        *broken.lock().unwrap() = Some(UcloudError::violation(e));
                        break;
                    }
                };
                match m {
                    Message::Text(t) if t.as_str() == "ping" => {
                        let _ = out.send(Message::Text("pong".into())).await;
                    }
                    Message::Text(t) => match first_tx.take() {
                        Some(tx) => {
                            let _ = tx.send(Ok(t.as_str().to_owned()));
                        }
                        None => {
                            *broken.lock().unwrap() = Some(UcloudError::bad(
                                "after the first frame, only \"ping\" and binary data may be sent",
                            ));
                            break;
                        }
                    },
                    Message::Binary(b) => {
                        if let Some(tx) = first_tx.take() {
                            let _ = tx.send(Err(UcloudError::bad(
                                "the first frame must be the text \"<startOffset> <totalSize>\"",
                            )));
                            break;
                        }
                        if data_tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let result = match first_rx.await {
        // The client left before it said anything.
        Err(_) => Ok(()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(first)) => {
            receive(
                &st,
                &caller,
                &upload,
                &first,
                queue::shared(data_rx),
                &out,
                &reader_done,
            )
            .await
        }
    };
    let result = match broken.lock().unwrap().take() {
        Some(e) => Err(e),
        None => result,
    };
    if let Err(e) = &result {
        tracing::debug!(upload = %upload, error = %e.why, "ucloud websocket upload ended with an error");
    }
    let _ = out.send(close_frame(result)).await;
    drop(out);
    let _ = sender.await;
    reader.abort();
}

fn parse_first(first: &str) -> Result<(u64, u64), UcloudError> {
    let mut it = first.split_ascii_whitespace();
    match (
        it.next().and_then(|s| s.parse::<u64>().ok()),
        it.next().and_then(|s| s.parse::<u64>().ok()),
        it.next(),
    ) {
        (Some(start), Some(total), None) if start <= total => Ok((start, total)),
        _ => Err(UcloudError::new(
            StatusCode::BAD_REQUEST,
            "BAD_OFFSET",
            format!("the first frame must be \"<startOffset> <totalSize>\", got {first:?}"),
        )),
    }
}

async fn receive(
    st: &UcloudState,
    caller: &Caller,
    upload: &str,
    first: &str,
    data: queue::Shared<Bytes>,
    out: &mpsc::Sender<Message>,
    reader_done: &AtomicBool,
) -> Result<(), UcloudError> {
    let (start, total) = parse_first(first)?;
    // A connection that replaces a dropped one stops the dead one's write
    // (keeping its durable bytes) and learns the true offset.
    let (view, session) = st.engine.take_over(caller, upload).await?;
    check_lifetime(st, &session)?;
    if let Some(k) = view.upload.length.known()
        && k != total
    {
        return Err(UcloudError::new(
            StatusCode::CONFLICT,
            "BAD_SIZE",
            format!("totalSize {total} differs from the size given before, {k}"),
        ));
    }
    let mut offset = view.upload.received.prefix_len();
    if start > offset {
        return Err(UcloudError::new(
            StatusCode::CONFLICT,
            "BAD_OFFSET",
            format!(
                "startOffset {start} is past the {offset} bytes received; resume from {offset}"
            ),
        ));
    }
    // Bytes the client re-sends that are already durable are dropped.
    let mut skip = offset - start;
    loop {
        if reader_done.load(Ordering::SeqCst) {
            // The client is gone (or closed early): what is queued was
            // never acknowledged, and a new connection may be taking over;
            // starting another write here would stop its write.
            return Ok(());
        }
        if offset < total || view.upload.length.known().is_none() {
            check_cap(st, session.created_at)?;
            let cap = (total - offset)
                .min(BATCH)
                .min(st.engine.limits().max_part_size);
            let body = queue::body(data.clone(), std::mem::take(&mut skip), cap, Some(IDLE));
            let w = st
                .engine
                .write(
                    caller,
                    upload,
                    WriteAt::Append {
                        offset,
                        total: Some(total),
                        len: None,
                    },
                    body,
                    PartChecks::default(),
                )
                .await?;
            // A committed upload's record no longer lists received ranges.
            let now = if w.upload.state.is_done() {
                total
            } else {
                w.upload.received.prefix_len()
            };
            let progressed = now > offset;
            offset = now;
            if progressed {
                let _ = out.send(Message::Text(offset.to_string().into())).await;
            }
            if offset >= total {
                break; // the engine committed it with the last byte
            }
        } else {
            // Everything was here already (a resume after the last ack
            // was lost): confirm and make sure it is committed.
            st.engine.resume(caller, upload).await?;
            let _ = out.send(Message::Text(offset.to_string().into())).await;
            break;
        }
    }
    // Done: the client closes once it read the last acknowledgement.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while !reader_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_first;

    #[test]
    fn the_first_frame_is_an_offset_and_a_size() {
        assert_eq!(parse_first("0 10").unwrap(), (0, 10));
        assert_eq!(parse_first(" 5  10 ").unwrap(), (5, 10));
        assert!(parse_first("11 10").is_err());
        assert!(parse_first("-1 10").is_err());
        assert!(parse_first("0").is_err());
        assert!(parse_first("0 10 x").is_err());
    }
}
