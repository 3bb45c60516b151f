//! What this node is doing now, for the console's live view: bytes
//! received, writes in flight and files committed, sampled once a second
//! into the last ten minutes.

use crate::auth::Caller;
use crate::{Engine, Result, now_ms};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Samples kept: ten minutes at one a second.
const KEPT: usize = 600;

/// One second of this node's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the second ended (ms since the epoch).
    pub at: i64,
    pub bytes_received: u64,
    pub files_committed: u64,
    /// Writes streaming when the second ended.
    pub writes_in_flight: u64,
}

#[derive(Default)]
pub(crate) struct Activity {
    bytes: AtomicU64,
    committed: AtomicU64,
    in_flight: AtomicU64,
    /// The totals at the last sample, and the samples.
    samples: Mutex<(u64, u64, VecDeque<Sample>)>,
}

/// Counts a write as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub(crate) fn received(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, n: u64) {
        self.committed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn writing(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    fn sample(&self, at: i64) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let committed = self.committed.load(Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        let sample = Sample {
            at,
            bytes_received: bytes - s.0,
            files_committed: committed - s.1,
            writes_in_flight: self.in_flight.load(Ordering::Relaxed),
        };
        s.0 = bytes;
        s.1 = committed;
        if s.2.len() == KEPT {
            s.2.pop_front();
        }
        s.2.push_back(sample);
    }
}

impl Engine {
    /// Takes one sample a second until `stop` (the server runs this).
    pub async fn sample_activity(&self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.inner.activity.sample(now_ms()),
            }
        }
    }

    /// The last ten minutes of this node, oldest first (admins only).
    pub fn activity(&self, caller: &Caller) -> Result<Vec<Sample>> {
        crate::admin::require_admin(caller)?;
        Ok(self
            .inner
            .activity
            .samples
            .lock()
            .unwrap()
            .2
            .iter()
            .copied()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_what_happened_in_their_second_and_only_the_last_ten_minutes_stay() {
        let a = Activity::default();
        a.received(100);
        let w = a.writing();
        a.sample(1_000);
        a.received(50);
        a.committed(2);
        drop(w);
        a.sample(2_000);
        let s = a.samples.lock().unwrap().2.clone();
        assert_eq!(
            s,
            [
                Sample {
                    at: 1_000,
                    bytes_received: 100,
                    files_committed: 0,
                    writes_in_flight: 1
                },
                Sample {
                    at: 2_000,
                    bytes_received: 50,
                    files_committed: 2,
                    writes_in_flight: 0
                },
            ]
        );
        for k in 0..KEPT as i64 {
            a.sample(3_000 + k);
        }
        let s = a.samples.lock().unwrap().2.clone();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s.front().unwrap().at, 3_000);
    }
}
