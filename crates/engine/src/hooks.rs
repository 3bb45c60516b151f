//! Hooks: events about uploads, sent to the operator's endpoint.
//!
//! The engine decides when an event happens and what it is about; a
//! [`HookSink`] (the server's: JSON over HTTP, signed) renders, sends and
//! reads the answer. Two kinds block the request they belong to and can
//! refuse it: `pre-create` (may also change the destination or the
//! metadata) and `pre-finish`. The others are notifications: each is
//! written to the metadata's outbox in the transaction of the change it
//! reports, and [`Engine::deliver_hooks`] sends them — at least once, in
//! order per upload, retried with backoff for three days, by whichever node
//! claims them first.

use crate::{Engine, EngineError, Result, now_ms};
use ferry_core::{Millis, Session, Upload};
use ferry_meta::{OutboxEvent, OutboxRow};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// Blocking: an upload is about to be created.
    PreCreate,
    PostCreate,
    /// At most once a second per upload: bytes were recorded.
    PostReceive,
    /// Blocking: an upload's bytes are complete and checked, about to
    /// become a file.
    PreFinish,
    /// The file is committed and visible.
    PostFinish,
    /// An upload was aborted, or a file deleted.
    PostTerminate,
    /// An upload ended with its session's expiry.
    PostExpire,
}

impl HookKind {
    pub const ALL: [HookKind; 7] = [
        HookKind::PreCreate,
        HookKind::PostCreate,
        HookKind::PostReceive,
        HookKind::PreFinish,
        HookKind::PostFinish,
        HookKind::PostTerminate,
        HookKind::PostExpire,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreCreate => "pre-create",
            HookKind::PostCreate => "post-create",
            HookKind::PostReceive => "post-receive",
            HookKind::PreFinish => "pre-finish",
            HookKind::PostFinish => "post-finish",
            HookKind::PostTerminate => "post-terminate",
            HookKind::PostExpire => "post-expire",
        }
    }

    pub fn parse(s: &str) -> Option<HookKind> {
        HookKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an event is about; what does not apply is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookData {
    pub session_id: Option<String>,
    pub upload_id: Option<String>,
    pub space: Option<String>,
    pub path: Option<String>,
    pub size: Option<u64>,
    /// Bytes received in order so far.
    pub offset: Option<u64>,
    pub sha256: Option<String>,
    pub user: Option<String>,
    pub dialect: Option<String>,
    /// The user's metadata (a JSON object, as text).
    pub metadata: Option<String>,
}

impl HookData {
    /// An upload of `session`, as it stands.
    pub fn upload(session: &Session, upload: &Upload) -> HookData {
        HookData {
            session_id: Some(session.id.clone()),
            upload_id: Some(upload.id.clone()),
            space: Some(session.space.to_string()),
            path: Some(upload.path.to_string()),
            size: upload.length.known(),
            offset: Some(upload.received.prefix_len()),
            sha256: None,
            user: Some(session.owner.clone()),
            dialect: Some(session.dialect.clone()),
            metadata: upload.metadata.clone(),
        }
    }
}

/// A blocking hook's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: the client gets this status (400–499) and message.
    Reject {
        status: u16,
        message: String,
    },
    /// (pre-create) Go ahead with this destination and/or metadata.
    Change {
        path: Option<String>,
        metadata: Option<String>,
    },
}

/// Renders, sends and reads hooks (the server's implementation speaks
/// HTTP).
pub trait HookSink: Send + Sync + 'static {
    /// Whether events of this kind are wanted at all.
    fn wants(&self, kind: HookKind) -> bool;
    /// The event's unique id and the body sent for it.
    fn render(&self, kind: HookKind, data: &HookData, at: Millis) -> (String, String);
    /// Sends a blocking event and reads its verdict; `Err` says why no
    /// usable answer came (unreachable, timeout, an error status, a body
    /// that does not parse).
    fn ask<'a>(&'a self, body: &'a str) -> BoxFuture<'a, std::result::Result<Verdict, String>>;
    /// Sends a notification; `Ok` once the receiver took it (2xx).
    fn deliver<'a>(&'a self, body: &'a str) -> BoxFuture<'a, std::result::Result<(), String>>;
    /// A blocking hook that gives no usable answer lets the request go on
    /// (`true`) or refuses it with 503 (`false`, the default).
    fn fail_open(&self) -> bool;
}

/// How long a notification is retried before it is dropped.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a claimed event is held while it is being delivered.
const HOLD: Duration = Duration::from_secs(60);
/// Events claimed per round, delivered this many at a time.
const BATCH: usize = 64;
const IN_FLIGHT: usize = 8;

/// The wait after `attempts` failed deliveries: 1 s, doubling, at most
/// [`MAX_BACKOFF`], with up to a quarter more at random.
pub fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.min(10)).min(MAX_BACKOFF);
    base + base.mul_f64(rand::random::<f64>() / 4.0)
}

/// Hook state kept by the engine.
#[derive(Default)]
pub(crate) struct HookState {
    pub(crate) sink: std::sync::OnceLock<Arc<dyn HookSink>>,
    /// When each upload last reported `post-receive`.
    last_receive: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Wakes the delivery loop when events were written here.
    pub(crate) written: tokio::sync::Notify,
}

impl Engine {
    /// Sends events to `sink` from now on (once; later calls are ignored).
    pub fn set_hooks(&self, sink: Arc<dyn HookSink>) {
        let _ = self.inner.hooks.sink.set(sink);
    }

    fn sink(&self, kind: HookKind) -> Option<&Arc<dyn HookSink>> {
        self.inner.hooks.sink.get().filter(|s| s.wants(kind))
    }

    /// Whether events of `kind` go anywhere.
    pub(crate) fn wants_hook(&self, kind: HookKind) -> bool {
        self.sink(kind).is_some()
    }

    /// The outbox events of `kind` for `items` (key, data): none when
    /// that kind is not wanted.
    pub(crate) fn hook_events<'a>(
        &self,
        kind: HookKind,
        items: impl IntoIterator<Item = (&'a str, HookData)>,
    ) -> Vec<OutboxEvent> {
        let Some(sink) = self.sink(kind) else {
            return Vec::new();
        };
        let at = now_ms();
        items
            .into_iter()
            .map(|(key, data)| {
                let (id, body) = sink.render(kind, &data, at);
                OutboxEvent {
                    id,
                    key: key.to_owned(),
                    body,
                    created_at: at,
                }
            })
            .collect()
    }

    /// Wakes the delivery loop (events were written by this node).
    pub(crate) fn hooks_written(&self) {
        self.inner.hooks.written.notify_one();
    }

    /// Asks a blocking hook. An unusable answer refuses the request (503)
    /// unless the sink fails open.
    pub(crate) async fn ask_hook(&self, kind: HookKind, data: &HookData) -> Result<Verdict> {
        let Some(sink) = self.sink(kind) else {
            return Ok(Verdict::Allow);
        };
        let (_, body) = sink.render(kind, data, now_ms());
        match sink.ask(&body).await {
            Ok(v) => Ok(v),
            Err(why) if sink.fail_open() => {
                tracing::warn!(hook = %kind, %why, "hook gave no usable answer; going on (fail open)");
                Ok(Verdict::Allow)
            }
            Err(why) => {
                tracing::warn!(hook = %kind, %why, "hook gave no usable answer; refusing");
                metrics::counter!("ferry_hooks_blocking_failures_total").increment(1);
                Err(EngineError::Unavailable(format!(
                    "the {kind} hook did not answer; retry later"
                )))
            }
        }
    }

    /// Reports bytes received, at most once a second per upload (not
    /// written with the bytes' record: a crash may lose one report, never
    /// a byte).
    pub(crate) async fn note_received(&self, session: &Session, upload: &Upload) {
        if self.sink(HookKind::PostReceive).is_none() {
            return;
        }
        {
            let mut last = self.inner.hooks.last_receive.lock().unwrap();
            let now = Instant::now();
            if last
                .get(&upload.id)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1))
            {
                return;
            }
            if last.len() > 100_000 {
                last.retain(|_, t| now.duration_since(*t) < Duration::from_secs(1));
            }
            last.insert(upload.id.clone(), now);
        }
        let events = self.hook_events(
            HookKind::PostReceive,
            [(upload.id.as_str(), HookData::upload(session, upload))],
        );
        match self.inner.meta.outbox_add(&events).await {
            Ok(()) => self.hooks_written(),
            Err(e) => tracing::warn!(upload = %upload.id, error = %e, "post-receive not recorded"),
        }
    }

    /// Delivers the outbox until `stop`: claims due events (the oldest of
    /// each upload), sends them, removes the delivered ones and schedules
    /// the rest again with backoff; an event still failing after three
    /// days is dropped, logged and counted.
    pub async fn deliver_hooks(&self, stop: tokio_util::sync::CancellationToken) {
        let Some(sink) = self.inner.hooks.sink.get().cloned() else {
            return;
        };
        let meta = self.inner.meta.clone();
        let mut depth_at = Instant::now() - Duration::from_secs(10);
        while !stop.is_cancelled() {
            if depth_at.elapsed() >= Duration::from_secs(1) {
                if let Ok(n) = meta.outbox_depth().await {
                    metrics::gauge!("ferry_hooks_outbox_depth").set(n as f64);
                }
                depth_at = Instant::now();
            }
            let now = now_ms();
            let claimed = match meta
                .outbox_claim(now, now + HOLD.as_millis() as i64, BATCH)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the hooks' outbox");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.inner.hooks.written.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            futures::stream::iter(claimed)
                .for_each_concurrent(IN_FLIGHT, |row| {
                    let (sink, meta) = (sink.clone(), meta.clone());
                    async move { deliver_one(sink.as_ref(), meta.as_ref(), row).await }
                })
                .await;
        }
    }
}

async fn deliver_one(sink: &dyn HookSink, meta: &dyn ferry_meta::MetaStore, row: OutboxRow) {
    let outcome = sink.deliver(&row.body).await;
    let recorded = match outcome {
        Ok(()) => {
            metrics::counter!("ferry_hooks_delivered_total").increment(1);
            meta.outbox_done(row.seq).await
        }
        Err(why) => {
            metrics::counter!("ferry_hooks_failed_total").increment(1);
            let age = Duration::from_millis((now_ms() - row.created_at).max(0) as u64);
            if age > GIVE_UP_AFTER {
                metrics::counter!("ferry_hooks_dropped_total").increment(1);
                tracing::error!(event = %row.id, key = %row.key, attempts = row.attempts + 1, %why,
                    "hook event dropped after three days of failed deliveries");
                meta.outbox_done(row.seq).await
            } else {
                let wait = backoff(row.attempts);
                tracing::info!(event = %row.id, attempts = row.attempts + 1, %why, retry_in = ?wait,
                    "hook delivery failed");
                meta.outbox_retry(row.seq, now_ms() + wait.as_millis() as i64)
                    .await
            }
        }
    };
    if let Err(e) = recorded {
        // Delivered again once its hold ends: at least once.
        tracing::warn!(event = %row.id, error = %e, "hook outcome not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in HookKind::ALL {
            assert_eq!(HookKind::parse(k.name()), Some(k));
        }
        assert_eq!(HookKind::parse("post-nothing"), None);
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten_minutes() {
        let secs = |a| backoff(a).as_secs_f64();
        assert!((1.0..=1.25).contains(&secs(0)));
        assert!((8.0..=10.0).contains(&secs(3)));
        assert!((600.0..=750.0).contains(&secs(20)));
    }
}
