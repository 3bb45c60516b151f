//! The folder WebSocket (UCloud's `WEBSOCKET_V2`): the client lists files
//! (LISTING), the server answers OK (send it) or SKIP (an identical copy
//! is already there), the client streams CHUNKs of the OK'd files, several
//! in flight, and the server reports FILES_COMPLETED as files finish.
//! Several connections may work on one session at once; each file is
//! committed soon after its last byte lands (in batches, see [`committer`]),
//! so a resumed upload (same token or a new `createUpload` with
//! MERGE_RENAME) finds the finished files in place and SKIPs them.
//!
//! One connection is five parts:
//! - the reader (this task): parses frames, hands LISTINGs to the
//!   admitter, feeds each CHUNK to its file's queue;
//! - the admitter: decides OK or SKIP for each listed file, adds the new
//!   ones to the session in one engine call per LISTING, and starts a
//!   writer per OK'd file, at most [`OPEN_FILES`] at a time (a file is not
//!   OK'd until a place is free, so the client sends nothing for it);
//! - a writer per file: one engine append fed by that file's queue;
//! - the committer: commits the files the writers finished, in batches
//!   (`Engine::commit_uploads`);
//! - the sender: OK/SKIP frames, "pong", FILES_COMPLETED every 50 ms when
//!   the count moved.
//!
//! Memory is bounded: chunks waiting for their writer hold permits of a
//! [`QUEUED_BYTES`] budget, and the reader stops reading while none is
//! left.
//!
//! "Identical copy" (SKIP): a committed file at the path, or, under a
//! renaming policy, at one of its renamed alternatives (`name (n).ext`),
//! with the listed size and the client's `modifiedAt` and path recorded
//! in its metadata by an earlier UCloud upload. A file put there any other
//! way is not known to be identical, and is not skipped.

use super::wire::{self, Entry, Incoming};
use super::ws_file::{MAX_MESSAGE, TokenQuery, close_frame, token_of};
use super::{
    Grant, Stored, UcloudError, UcloudResult, UcloudState, check_cap, check_lifetime, grant, queue,
};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use ferry_core::{SpacePath, UploadState};
use ferry_engine::{Caller, EngineError, NewUpload, PartChecks, WriteAt};
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Files in flight per connection.
const OPEN_FILES: usize = 64;
/// Chunk bytes received but not yet taken by their writer, per connection.
const QUEUED_BYTES: usize = 64 << 20;
/// With nothing in flight and nothing said for this long, the server
/// closes the connection.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

pub(super) async fn upgrade(
    State(st): State<UcloudState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> UcloudResult {
    let token = token_of(q, &headers)?;
    let Grant::Folder {
        session,
        folder,
        caller,
    } = grant(&st.engine, &token)?
    else {
        return Err(UcloudError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_TOKEN",
            "this token is for a single file: use its own endpoint",
        ));
    };
    let view = st.engine.get_session(&caller, &session).await?;
    check_lifetime(&st, &view.session)?;
    let existing = view
        .uploads
        .iter()
        .map(|u| (u.upload.path.to_string(), Existing::of(&u.upload)))
        .collect();
    let renames = view.session.conflict.renames();
    let created_at = view.session.created_at;
    Ok(ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| {
        run(
            st,
            Setup {
                caller,
                session,
                folder,
                renames,
                created_at,
                existing,
            },
            socket,
        )
    }))
}

/// An upload the session already has (a resumed session).
#[derive(Clone, Debug)]
struct Existing {
    id: String,
    state: UploadState,
    received: u64,
}

impl Existing {
    fn of(u: &ferry_core::Upload) -> Existing {
        Existing {
            id: u.id.clone(),
            state: u.state,
            received: u.received.prefix_len(),
        }
    }
}

struct Setup {
    caller: Caller,
    session: String,
    folder: String,
    renames: bool,
    /// The session's creation: no new file past its lifetime cap.
    created_at: ferry_core::Millis,
    existing: HashMap<String, Existing>,
}

type Chunk = (Bytes, OwnedSemaphorePermit);

/// A file's queue, and how many of its bytes the client sent on this
/// connection (it sends each file from its start).
#[derive(Clone)]
struct Feed {
    queue: mpsc::Sender<Chunk>,
    arrived: Arc<AtomicU64>,
}

/// What the parts of one connection share.
struct Conn {
    st: UcloudState,
    setup: Setup,
    existing: Mutex<HashMap<String, Existing>>,
    out: mpsc::Sender<Message>,
    /// Queues of the files being written, by the client's file id.
    files: Mutex<HashMap<i32, Feed>>,
    open: Arc<Semaphore>,
    queued: Arc<Semaphore>,
    /// Files done (committed, skipped, or given up) on this connection.
    completed: AtomicI32,
    /// Finished files, to the committer.
    commits: mpsc::UnboundedSender<Commit>,
    /// LISTINGs not yet fully answered.
    pending_listings: AtomicUsize,
    closing: AtomicBool,
    /// Cancelled when the connection is gone (dropped, failed, or done):
    /// its writers end with it, so no write of a dead connection starts
    /// or takes an upload over from a newer connection.
    gone: CancellationToken,
    failure: Mutex<Option<UcloudError>>,
    failed: Notify,
}

impl Conn {
    /// Ends the connection with an error (the first one wins).
    fn fail(&self, e: UcloudError) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
        drop(f);
        self.failed.notify_one();
    }

    fn busy(&self) -> bool {
        self.open.available_permits() < OPEN_FILES
            || self.pending_listings.load(Ordering::SeqCst) > 0
    }
}

async fn run(st: UcloudState, mut setup: Setup, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let existing = Mutex::new(std::mem::take(&mut setup.existing));
    let (commits, commits_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        st,
        setup,
        existing,
        out,
        files: Default::default(),
        open: Arc::new(Semaphore::new(OPEN_FILES)),
        queued: Arc::new(Semaphore::new(QUEUED_BYTES)),
        completed: AtomicI32::new(0),
        commits,
        pending_listings: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
        gone: CancellationToken::new(),
        failure: Mutex::new(None),
        failed: Notify::new(),
    });
    // However `run` ends (its future dropped included), the writers end.
    let _gone = conn.gone.clone().drop_guard();

    tokio::spawn(committer(
        Arc::downgrade(&conn),
        conn.st.engine.clone(),
        conn.setup.caller.clone(),
        conn.setup.session.clone(),
        commits_rx,
    ));
    let sender = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reported = 0;
            loop {
                let m = tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = tick.tick() => {
                        let n = conn.completed.load(Ordering::SeqCst);
                        if n == reported {
                            continue;
                        }
                        reported = n;
                        Message::Binary(wire::files_completed(n))
                    }
                };
                if let Message::Close(_) = m {
                    // The last count first, then the close.
                    let n = conn.completed.load(Ordering::SeqCst);
                    if n != reported {
                        let _ = sink.send(Message::Binary(wire::files_completed(n))).await;
                    }
                    let _ = sink.send(m).await;
                    break;
                }
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        })
    };

    let (admit_tx, admit_rx) = mpsc::unbounded_channel::<Vec<Entry>>();
    let admitter = tokio::spawn(admitter(conn.clone(), admit_rx));

    let mut known: HashSet<i32> = HashSet::new();
    let mut closed = false;
    let result: Result<(), UcloudError> = loop {
        let idle = tokio::time::sleep(IDLE_CLOSE);
        let m = tokio::select! {
            m = stream.next() => m,
            _ = conn.failed.notified() => {
                break Err(conn.failure.lock().unwrap().take().unwrap_or_else(|| UcloudError::bad("failed")));
            }
            _ = idle => {
                if conn.busy() {
                    continue;
                }
                break Ok(());
            }
        };
        let frame = match m {
            None | Some(Ok(Message::Close(_))) => break Ok(()),
            Some(Err(e)) => break Err(UcloudError::violation(e)),
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "ping" {
                    let _ = conn.out.send(Message::Text("pong".into())).await;
                }
                continue;
            }
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(_)) => continue,
        };
        let messages = match wire::parse(frame) {
            Ok(m) => m,
            Err(e) => break Err(UcloudError::bad(e)),
        };
        let mut error = None;
        for m in messages {
            match m {
                Incoming::Listing(entries) => {
                    if let Some(dup) = entries.iter().find(|e| !known.insert(e.id)) {
                        error = Some(UcloudError::bad(format!(
                            "file id {} was listed twice on this connection",
                            dup.id
                        )));
                        break;
                    }
                    conn.pending_listings.fetch_add(1, Ordering::SeqCst);
                    let _ = admit_tx.send(entries);
                }
                Incoming::Chunk(id, data) => {
                    if data.is_empty() {
                        continue;
                    }
                    let feed = conn.files.lock().unwrap().get(&id).cloned();
                    let Some(feed) = feed else {
                        if !known.contains(&id) {
                            error = Some(UcloudError::bad(format!(
                                "a CHUNK for file id {id}, which was never listed"
                            )));
                            break;
                        }
                        // Skipped or finished: the bytes are not needed.
                        continue;
                    };
                    let weight = data.len().min(QUEUED_BYTES) as u32;
                    let Ok(permit) = conn.queued.clone().acquire_many_owned(weight).await else {
                        continue;
                    };
                    let len = data.len() as u64;
                    // A writer that is done no longer listens: drop.
                    if feed.queue.send((data, permit)).await.is_ok() {
                        feed.arrived.fetch_add(len, Ordering::SeqCst);
                    }
                }
                Incoming::Skip(id) => {
                    // The client cannot read the file: its writer ends,
                    // keeping what arrived.
                    conn.files.lock().unwrap().remove(&id);
                }
                Incoming::Close => {
                    closed = true;
                    break;
                }
            }
        }
        if let Some(e) = error {
            break Err(e);
        }
        if closed {
            break Ok(());
        }
    };

    // Wind down: no new files; writers finish with the bytes they have.
    conn.closing.store(true, Ordering::SeqCst);
    drop(admit_tx);
    conn.files.lock().unwrap().clear();
    if closed && result.is_ok() {
        // A clean CLOSE: let the last files commit, so the final count
        // (sent before the close frame) is true.
        let _ = admitter.await;
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            conn.open.acquire_many(OPEN_FILES as u32),
        )
        .await;
        let (flushed, done) = oneshot::channel();
        if conn.commits.send(Commit::Flush(flushed)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
        }
    } else {
        // Dropped or failed: the writers stop now; each in-flight write
        // keeps its durable prefix, so the files resume on a new
        // connection.
        conn.gone.cancel();
        admitter.abort();
    }
    // A file that failed while the connection wound down ends it with
    // its error, not a clean close.
    let result = match conn.failure.lock().unwrap().take() {
        Some(e) => Err(e),
        None => result,
    };
    if let Err(e) = &result {
        tracing::debug!(session = %conn.setup.session, error = %e.why, "ucloud folder connection ended with an error");
    }
    let _ = conn.out.send(close_frame(result)).await;
    let _ = sender.await;
}

async fn admitter(conn: Arc<Conn>, mut rx: mpsc::UnboundedReceiver<Vec<Entry>>) {
    while let Some(entries) = rx.recv().await {
        if conn.closing.load(Ordering::SeqCst) {
            break;
        }
        let result = admit(&conn, entries).await;
        conn.pending_listings.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = result {
            conn.fail(e);
            break;
        }
    }
}

/// Errors that end the connection (the session is gone, the space is
/// full); others are the one file's (a REJECT conflict), logged.
fn fatal(e: &EngineError) -> bool {
    !matches!(
        e,
        EngineError::AlreadyExists { .. }
            | EngineError::Gone(
                ferry_core::StateError::Committed | ferry_core::StateError::Committing
            )
            | EngineError::Conflict(_)
            | EngineError::Unsupported(_)
            | EngineError::BodyFailed { .. }
            | EngineError::OffsetMismatch { .. }
            | EngineError::DigestMismatch { .. }
            | EngineError::Incomplete { .. }
            // A file listed again with another size than its upload had.
            | EngineError::RangeNotSatisfiable(_)
    )
}

/// Where a listed file goes in the session's space.
fn destination(folder: &str, rel: &str) -> Result<String, UcloudError> {
    let rel = rel.trim_start_matches('/');
    // `.`, `..` or an empty segment would name the folder itself or
    // something outside it once normalized: refused, never rewritten.
    if rel.is_empty() || rel.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return Err(UcloudError::bad(format!(
            "listed path {rel:?} names no file in the folder"
        )));
    }
    let full = if folder.is_empty() {
        rel.to_owned()
    } else {
        format!("{folder}/{rel}")
    };
    SpacePath::parse(&full)
        .map(|p| p.to_string())
        .map_err(|e| UcloudError::bad(format!("listed path {rel:?}: {e}")))
}

/// What becomes of one listed file.
enum Plan {
    Skip,
    /// Write the file to this upload, which has `received` bytes already.
    Write {
        upload: String,
        received: u64,
    },
    New(String),
}

/// Answers one LISTING: SKIP or OK for every entry, starting a writer for
/// each OK.
async fn admit(conn: &Arc<Conn>, entries: Vec<Entry>) -> Result<(), UcloudError> {
    let engine = &conn.st.engine;
    let s = &conn.setup;
    check_cap(&conn.st, s.created_at)?;
    let mut plans = Vec::with_capacity(entries.len());
    for e in &entries {
        let full = destination(&s.folder, &e.path)?;
        plans.push(plan(conn, e, full).await?);
    }
    // The new files join the session in one transaction.
    let mut fresh: Vec<NewUpload> = plans
        .iter()
        .zip(&entries)
        .filter_map(|(p, e)| match p {
            Plan::New(full) => Some(new_upload(full, e)),
            _ => None,
        })
        .collect();
    let mut added = if fresh.is_empty() {
        Vec::new()
    } else {
        match engine
            .add_uploads(&s.caller, &s.session, std::mem::take(&mut fresh))
            .await
        {
            Ok(added) => added,
            Err(EngineError::Invalid { .. }) => {
                // Another connection added one of these paths meanwhile:
                // look again, one by one.
                refresh(conn).await?;
                let mut added = Vec::new();
                for (p, e) in plans.iter_mut().zip(&entries) {
                    if let Plan::New(full) = p {
                        let full = full.clone();
                        *p = plan(conn, e, full.clone()).await?;
                        if let Plan::New(_) = p {
                            added.extend(
                                engine
                                    .add_uploads(&s.caller, &s.session, vec![new_upload(&full, e)])
                                    .await?,
                            );
                        }
                    }
                }
                added
            }
            Err(e) => return Err(e.into()),
        }
    }
    .into_iter();

    let mut answers = BytesMut::new();
    for (p, e) in plans.into_iter().zip(&entries) {
        let (upload, received) = match p {
            Plan::Skip => {
                wire::put_answer(&mut answers, wire::SKIP, e.id);
                conn.completed.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Plan::Write { upload, received } => (upload, received),
            Plan::New(_) => (added.next().expect("one upload per new file").id, 0),
        };
        let permit = match conn.open.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Let the client get on with the files already OK'd.
                flush(conn, &mut answers).await;
                conn.open
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| UcloudError::bad("closing"))?
            }
        };
        if conn.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (queue, rx) = mpsc::channel::<Chunk>(16);
        let arrived = Arc::new(AtomicU64::new(0));
        conn.files.lock().unwrap().insert(
            e.id,
            Feed {
                queue,
                arrived: arrived.clone(),
            },
        );
        tokio::spawn(writer(
            conn.clone(),
            e.clone(),
            upload,
            received,
            (rx, arrived),
            permit,
        ));
        wire::put_answer(&mut answers, wire::OK, e.id);
    }
    flush(conn, &mut answers).await;
    Ok(())
}

async fn flush(conn: &Conn, answers: &mut BytesMut) {
    if !answers.is_empty() {
        let frame = answers.split().freeze();
        let _ = conn.out.send(Message::Binary(frame)).await;
    }
}

fn new_upload(full: &str, e: &Entry) -> NewUpload {
    NewUpload {
        path: full.to_owned(),
        size: Some(e.size),
        dialect_state: Some(
            Stored {
                modified_at: Some(e.modified_at),
                path: full.to_owned(),
            }
            .json(),
        ),
        ..Default::default()
    }
}

/// Reloads the session's uploads by path.
async fn refresh(conn: &Conn) -> Result<(), UcloudError> {
    let s = &conn.setup;
    let view = conn.st.engine.get_session(&s.caller, &s.session).await?;
    let map = view
        .uploads
        .iter()
        .map(|u| (u.upload.path.to_string(), Existing::of(&u.upload)))
        .collect();
    *conn.existing.lock().unwrap() = map;
    Ok(())
}

/// OK or SKIP for one file.
async fn plan(conn: &Conn, e: &Entry, full: String) -> Result<Plan, UcloudError> {
    let engine = &conn.st.engine;
    let s = &conn.setup;
    let known = conn.existing.lock().unwrap().get(&full).cloned();
    if let Some(ex) = known {
        // This session has the file already (a resumed connection).
        return Ok(match ex.state {
            UploadState::Open if ex.received < e.size => Plan::Write {
                upload: ex.id,
                received: ex.received,
            },
            UploadState::Open => {
                // Every byte is here; the commit did not happen.
                if let Err(err) = engine.commit_upload(&s.caller, &ex.id, None).await {
                    if fatal(&err) {
                        return Err(err.into());
                    }
                    tracing::warn!(path = %full, error = %err, "ucloud folder upload: file not committed");
                }
                Plan::Skip
            }
            _ => Plan::Skip,
        });
    }
    if identical(conn, &full, e).await? {
        return Ok(Plan::Skip);
    }
    Ok(Plan::New(full))
}

/// Whether an identical copy of the listed file is already committed (see
/// the module notes).
async fn identical(conn: &Conn, full: &str, e: &Entry) -> Result<bool, UcloudError> {
    let engine = &conn.st.engine;
    let s = &conn.setup;
    let same = |f: &ferry_core::FileRecord| {
        f.size == e.size
            && Stored::of(f.dialect_state.as_deref())
                .is_some_and(|m| m.modified_at == Some(e.modified_at) && m.path == full)
    };
    match engine.session_file(&s.caller, &s.session, full).await? {
        None => return Ok(false),
        Some(f) if same(&f) => return Ok(true),
        Some(_) => {}
    }
    if !s.renames {
        return Ok(false);
    }
    let base = SpacePath::parse(full).map_err(|e| UcloudError::bad(e.to_string()))?;
    for n in 1..=100 {
        let Some(alt) = ferry_core::conflict::renamed(&base, n) else {
            break;
        };
        match engine
            .session_file(&s.caller, &s.session, alt.as_str())
            .await?
        {
            None => return Ok(false),
            Some(f) if same(&f) => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

/// Writes one file: an append fed by its queue, from `received` (bytes
/// the client re-sends below it are dropped); a complete file goes to the
/// committer.
async fn writer(
    conn: Arc<Conn>,
    e: Entry,
    upload: String,
    received: u64,
    (rx, arrived): (mpsc::Receiver<Chunk>, Arc<AtomicU64>),
    _open: OwnedSemaphorePermit,
) {
    let engine = &conn.st.engine;
    let caller = &conn.setup.caller;
    let work = async {
        if e.size == received {
            // An empty file (or every byte here already): nothing will come.
            drop(rx);
            return Ok(true);
        }
        // One append per `max_part_size` bytes (one, unless the file is
        // larger than that).
        let rx = queue::shared(rx);
        // The client sends the file from its start: the bytes the server
        // has are skipped.
        let (mut offset, mut skip) = (received, received);
        let mut retried = false;
        while offset < e.size {
            let cap = (e.size - offset).min(engine.limits().max_part_size);
            let body = queue::body(rx.clone(), skip, cap, None);
            let at = WriteAt::Append {
                offset,
                total: Some(e.size),
                len: None,
            };
            let w = match engine
                .write(caller, &upload, at, body, PartChecks::default())
                .await
            {
                Ok(w) => w,
                // The write of a connection that just dropped was still
                // settling when this one looked: it kept more. (Nothing was
                // taken from the queue yet.)
                Err(EngineError::OffsetMismatch { expected, provided })
                    if !retried && expected > provided && expected <= e.size =>
                {
                    retried = true;
                    (offset, skip) = (expected, expected);
                    continue;
                }
                Err(e) => return Err(e),
            };
            skip = 0;
            if w.upload.state.is_done() || w.upload.is_complete() {
                return Ok(true);
            }
            let now = w.upload.received.prefix_len();
            if now < offset + cap {
                // The body ended early: the client skipped the file or the
                // connection is winding down. No further append: the file
                // stays resumable as it is.
                return Ok(false);
            }
            offset = now;
        }
        Ok::<_, EngineError>(true)
    };
    // A connection that is gone stops its writer, an append in flight
    // included (dropping it cancels it; it keeps its durable prefix),
    // unless every byte of the file had arrived: that file is written and
    // committed, so the client finds it in place when it resumes.
    let gone = conn.gone.clone();
    let result = {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            r = &mut work => r,
            _ = gone.cancelled() => {
                if arrived.load(Ordering::SeqCst) < e.size {
                    return;
                }
                work.await
            }
        }
    };
    {
        let mut files = conn.files.lock().unwrap();
        if files.get(&e.id).is_some_and(|f| f.queue.is_closed()) {
            files.remove(&e.id);
        }
    }
    match result {
        // Counted once committed.
        Ok(true) => {
            let _ = conn.commits.send(Commit::Upload(upload));
        }
        // The client SKIPped the file: done with it, as far as it is
        // concerned. A file cut short by the connection's end is not done.
        Ok(false) => {
            if !conn.closing.load(Ordering::SeqCst) {
                conn.completed.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Another connection finished the file meanwhile.
        Err(EngineError::Gone(
            ferry_core::StateError::Committed | ferry_core::StateError::Committing,
        )) => {
            conn.completed.fetch_add(1, Ordering::SeqCst);
        }
        // A write that failed or was taken over (a newer connection
        // writes the file) is never counted as done: the protocol has no
        // per-file error, so the connection ends with this one, naming the
        // file; the upload keeps what is durable and resumes.
        Err(err) => {
            tracing::debug!(path = %e.path, error = %err, "ucloud folder upload: file not written");
            let mut err = UcloudError::from(err);
            err.why = format!("{}: {}", e.path, err.why);
            conn.fail(err);
        }
    }
}

/// What the committer is asked.
enum Commit {
    Upload(String),
    /// Answered once everything sent before is committed.
    Flush(oneshot::Sender<()>),
}

/// Commits the connection's finished files in batches: whatever finished
/// while the last batch was committing goes in the next one, so a stream of
/// small files costs a few commits a second instead of one per file. A
/// batch that fails is retried file by file, so that one file's conflict
/// (REJECT) holds back no other.
async fn committer(
    conn: Weak<Conn>,
    engine: ferry_engine::Engine,
    caller: Caller,
    session: String,
    mut rx: mpsc::UnboundedReceiver<Commit>,
) {
    const MOST: usize = 1000;
    let mut batch = Vec::with_capacity(MOST);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Commit::Upload(id) => batch.push(id),
                Commit::Flush(tx) => flushes.push(tx),
            }
            next = if batch.len() < MOST {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            let mut failure = None;
            if let Err(e) = engine.commit_uploads(&caller, &session, &batch).await {
                tracing::debug!(%session, files = batch.len(), error = %e, "ucloud folder upload: batch not committed");
                if fatal(&e) {
                    failure = Some(e);
                } else {
                    for id in &batch {
                        if let Err(e) = engine.commit_upload(&caller, id, None).await {
                            tracing::warn!(upload = %id, error = %e, "ucloud folder upload: file not committed");
                        }
                    }
                }
            }
            if let Some(c) = conn.upgrade() {
                if let Some(e) = failure {
                    c.fail(e.into());
                }
                c.completed.fetch_add(batch.len() as i32, Ordering::SeqCst);
            }
            batch.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn listed_paths_are_relative_to_the_folder() {
        assert_eq!(destination("up", "a/b.txt").unwrap(), "up/a/b.txt");
        assert_eq!(destination("up", "/a.txt").unwrap(), "up/a.txt");
        assert_eq!(destination("", "a.txt").unwrap(), "a.txt");
        assert!(destination("up", "../x").is_err());
        assert!(destination("up", "").is_err());
    }
}
