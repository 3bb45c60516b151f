//! The statements' connections, handed from one statement to the next.
//!
//! sqlx's pool tests every connection given back to it: it sends a `Sync`
//! and waits for the database's answer. That is a round trip per
//! statement, which the database, the kernel and this process each pay
//! for: about a tenth of the CPU of a small upload in three statements.
//!
//! A statement that ran to its end leaves its connection ready for the
//! next one. Its end is its answer, or an error the database sent (it
//! ended the statement's implicit transaction). The next statement on the
//! connection reads whatever of the answer was left unread before it
//! sends. [`Warm`] keeps such connections checked out of the pool and
//! hands them to the next statement untested.
//!
//! Everything else goes back to the pool, which tests it as before:
//! - a statement that did not end (its future dropped, or the connection
//!   failed);
//! - a connection out of the pool for longer than [`RECHECK`];
//! - a connection that ends a statement while a caller waits for the
//!   pool itself (below), or once the pool is closed.
//!
//! What the pool checks as a connection comes out of it (`fenced`: opened
//! after the last lost connection, and under the node's current id) holds
//! for a kept one too. It was checked when it left the pool, and it is
//! handed on only if neither event happened since.
//!
//! Kept connections count as checked out of the pool, so none may sit
//! unused while someone waits:
//! - a statement that finds none kept takes one from the pool, or, when
//!   every connection the pool may open runs a statement, is handed the
//!   next one a statement ends with;
//! - a statement that ends while a caller waits for the pool itself (a
//!   transaction, [`Warm::begin`], or a statement while transactions hold
//!   connections) gives its connection back to the pool, which hands it on;
//! - a transaction gives a kept connection back if the pool has no idle
//!   one.

use super::{DISTRUSTED_BEFORE, clock};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, Postgres as Pg};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How long a connection goes from statement to statement before the pool
/// sees it again (and checks its age against its lifetime).
const RECHECK: u64 = 60_000;

/// The pool, and the connections kept out of it between statements.
#[derive(Clone)]
pub(super) struct Warm {
    pool: PgPool,
    shared: Arc<Shared>,
    /// When the node last took a new id (ms of [`clock`]): connections
    /// fenced under the old one are not handed on.
    renamed: Arc<AtomicU64>,
}

#[derive(Default)]
struct Shared {
    /// What is kept, and who waits for it. (No [`Kept`] is dropped while
    /// this is locked: its drop locks it.)
    state: Mutex<State>,
    /// The connections out of the pool for statements (kept, or running
    /// one).
    out: AtomicUsize,
    /// Callers waiting for the pool itself: a statement that ends then
    /// gives its connection back to the pool, which hands it on.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// The connections between two statements.
    kept: Vec<Kept>,
    /// Statements waiting for a connection, first come first served: each
    /// is handed the next connection a statement ends with, or `None` when
    /// one went back to the pool (it may then take one there).
    queue: VecDeque<oneshot::Sender<Option<Kept>>>,
}

/// A connection out of the pool for statements, and when it was taken out
/// (ms of [`clock`], read before the pool checked it). Dropped, it goes
/// back to the pool, which tests it.
struct Kept {
    conn: PoolConnection<Pg>,
    taken: u64,
    shared: Arc<Shared>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.shared.out.fetch_sub(1, Ordering::SeqCst);
        // The first statement waiting may take a connection from the pool.
        let mut state = self.shared.state.lock().unwrap();
        while let Some(next) = state.queue.pop_front() {
            if next.send(None).is_ok() {
                break;
            }
        }
    }
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm").finish_non_exhaustive()
    }
}

/// Where [`Warm::take`] finds its connection.
enum Next {
    Kept(Kept),
    Pool,
    Queued(oneshot::Receiver<Option<Kept>>),
}

impl Warm {
    pub(super) fn new(pool: PgPool, renamed: Arc<AtomicU64>) -> Warm {
        Warm {
            pool,
            shared: Arc::default(),
            renamed,
        }
    }

    /// The pool itself (for what outlives a statement: the listener, the
    /// presence check, options).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction on a connection from the pool (a kept one goes back to
    /// it first when it has no idle one).
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, Pg>, sqlx::Error> {
        let _waiting = Waiting::on(&self.shared);
        if self.pool.num_idle() == 0 {
            let one = self.shared.state.lock().unwrap().kept.pop();
            drop(one);
        }
        self.pool.begin().await
    }

    /// Gives every kept connection back, then closes the pool (which waits
    /// for the connections still in use).
    pub(super) async fn close(&self) {
        // Closed first: a statement that ends after the kept ones went
        // back does not keep its connection ([`Warm::keep`]).
        let closing = self.pool.close();
        self.give_back();
        closing.await;
    }

    /// A connection for one statement that the caller runs itself, then
    /// marks [`Lent::ended`]; else it goes back to the pool to be tested.
    pub(super) async fn lend(&self) -> Result<Lent<'_>, sqlx::Error> {
        Ok(Lent {
            warm: self,
            kept: Some(self.take().await?),
        })
    }

    /// A connection for one statement: a kept one, else one from the pool,
    /// else (every connection the pool may open runs a statement) the next
    /// one a statement ends with, in turn. One that may no longer be
    /// trusted goes back to the pool, which checks it again.
    async fn take(&self) -> Result<Kept, sqlx::Error> {
        let max = self.pool.options().get_max_connections() as usize;
        let until = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        loop {
            let next = {
                let mut state = self.shared.state.lock().unwrap();
                match state.kept.pop() {
                    Some(k) => Next::Kept(k),
                    None if self.shared.out.load(Ordering::SeqCst) < max => Next::Pool,
                    None => {
                        let (tx, rx) = oneshot::channel();
                        state.queue.push_back(tx);
                        Next::Queued(rx)
                    }
                }
            };
            let k = match next {
                Next::Kept(k) => k,
                Next::Pool => {
                    // Counted as waiting before a last look: a statement
                    // that ends meanwhile is either seen here or sees this
                    // wait, and gives its connection to the pool.
                    let _waiting = Waiting::on(&self.shared);
                    let last = self.shared.state.lock().unwrap().kept.pop();
                    match last {
                        Some(k) => k,
                        None => {
                            let taken = clock();
                            let conn = self.pool.acquire().await?;
                            self.shared.out.fetch_add(1, Ordering::SeqCst);
                            return Ok(Kept {
                                conn,
                                taken,
                                shared: self.shared.clone(),
                            });
                        }
                    }
                }
                Next::Queued(rx) => match tokio::time::timeout_at(until, rx).await {
                    Ok(Ok(Some(k))) => k,
                    Ok(_) => continue,
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                },
            };
            if self.trusted(&k) {
                return Ok(k);
            }
        }
    }

    /// Neither a lost connection seen nor a new node id taken since `k`
    /// left the pool, and out of it for less than [`RECHECK`].
    fn trusted(&self, k: &Kept) -> bool {
        let since = DISTRUSTED_BEFORE
            .load(Ordering::SeqCst)
            .max(self.renamed.load(Ordering::SeqCst));
        k.taken > since && clock().saturating_sub(k.taken) < RECHECK
    }

    /// After a statement on `k`: kept if it ended (answered, or refused by
    /// the database), else given back to the pool to be tested.
    fn after<T>(&self, k: Kept, outcome: &Result<T, sqlx::Error>) {
        let ended = match outcome {
            Ok(_) => true,
            Err(e) => matches!(e, sqlx::Error::Database(_)),
        };
        if ended {
            self.keep(k);
        }
    }

    /// Hands `k` to the first statement waiting, or keeps it for the next
    /// one; unless a caller waits for the pool itself (it goes back to the
    /// pool, which hands it on) or the pool is closed.
    fn keep(&self, k: Kept) {
        let back = {
            let mut state = self.shared.state.lock().unwrap();
            if self.pool.is_closed() || self.shared.waiting.load(Ordering::SeqCst) > 0 {
                Some(k)
            } else {
                let mut k = Some(k);
                while let Some(next) = state.queue.pop_front() {
                    match next.send(k.take()) {
                        Ok(()) => break,
                        Err(unsent) => k = unsent,
                    }
                }
                if let Some(k) = k {
                    state.kept.push(k);
                }
                None
            }
        };
        drop(back);
    }

    fn give_back(&self) {
        let all = std::mem::take(&mut self.shared.state.lock().unwrap().kept);
        drop(all);
    }
}

/// A caller counted as waiting for the pool itself while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(shared: &'a Shared) -> Waiting<'a> {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&shared.waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection lent for one statement ([`Warm::lend`]).
pub(super) struct Lent<'a> {
    warm: &'a Warm,
    kept: Option<Kept>,
}

impl Lent<'_> {
    /// The statement ran to its end (its answer read, or an error the
    /// database sent): the connection is handed to the next statement.
    pub(super) fn ended(mut self) {
        if let Some(k) = self.kept.take() {
            self.warm.keep(k);
        }
    }
}

impl std::ops::Deref for Lent<'_> {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        &self.kept.as_ref().expect("lent until ended").conn
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        &mut self.kept.as_mut().expect("lent until ended").conn
    }
}

impl<'c> Executor<'c> for &'c Warm {
    type Database = Pg;

    /// Collects the statement's results before it yields them: the
    /// connection is kept or given back once the statement ended, and no
    /// caller streams rows.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Pg>,
    {
        let all = async move {
            let mut k = self.take().await?;
            let outcome: Result<Vec<_>, _> = (&mut *k.conn).fetch_many(query).try_collect().await;
            self.after(k, &outcome);
            outcome
        };
        futures::stream::once(all)
            .map_ok(|results| futures::stream::iter(results.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Pg>,
    {
        Box::pin(async move {
            let mut k = self.take().await?;
            let outcome = (&mut *k.conn).fetch_optional(query).await;
            self.after(k, &outcome);
            outcome
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut k = self.take().await?;
            let outcome = (&mut *k.conn).prepare_with(sql, parameters).await;
            self.after(k, &outcome);
            outcome
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Pg>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut k = self.take().await?;
            let outcome = (&mut *k.conn).describe(sql).await;
            self.after(k, &outcome);
            outcome
        })
    }
}
