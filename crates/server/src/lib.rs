//! Wiring only: configuration → stores → engine → routers → a listening
//! server with its background tasks. Nothing here makes a decision about
//! uploads; it connects the pieces and handles process concerns (keys,
//! the bootstrap token, logs, metrics, graceful shutdown).

pub mod config;
pub mod hooks;
mod web;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ferry_dialects::boxapi::{self, BoxState};
use ferry_dialects::deepset::{self, DeepsetState};
use ferry_dialects::graph::{self, GraphState};
use ferry_dialects::native::{self, NativeState};
use ferry_dialects::tus::{self, TusState};
use ferry_dialects::ucloud::{self, UcloudState};
use ferry_dialects::veeva::{self, VeevaState};
use ferry_engine::Engine;
use ferry_meta::Sqlite;
use ferry_store::{LocalStore, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

pub use config::{
    Config, HooksConfig, LimitsConfig, S3StoreConfig, StoreConfig, StoreKind, TusConfig,
};

/// The metadata database: PostgreSQL at `database_url` (which several
/// nodes may share: `true`), else SQLite in the data directory.
async fn open_meta(config: &Config) -> anyhow::Result<(Arc<dyn ferry_meta::MetaStore>, bool)> {
    let Some(url) = config.database_url.as_deref().filter(|u| !u.is_empty()) else {
        let path = config.data_dir.join("ferry.db");
        let meta = Sqlite::open(path).context("cannot open the SQLite database")?;
        return Ok((Arc::new(meta), false));
    };
    let Some(at) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        anyhow::bail!(
            "the database URL must be postgres://user:password@host:port/database (or unset for SQLite in the data directory)"
        );
    };
    // Where, without the credentials.
    let at = at.rsplit_once('@').map_or(at, |(_, host)| host);
    let at = at.split_once('?').map_or(at, |(host, _)| host);
    if config.database_pool == 0 {
        anyhow::bail!("database_pool must be at least 1 (connections to PostgreSQL per node)");
    }
    let meta = ferry_meta::Postgres::connect_pooled(url, config.database_pool)
        .await
        .with_context(|| format!("cannot use the PostgreSQL database at {at}"))?;
    tracing::info!(database = %at, "metadata in PostgreSQL");
    Ok((Arc::new(meta), true))
}

/// Builds the engine: metadata in SQLite (or PostgreSQL), bytes on the local disk
/// under it or in the configured bucket. Creates the directory and the
/// signing key if missing. An S3 bucket must take a write and a delete
/// now, or this fails with what went wrong.
pub async fn open_engine(config: &Config) -> anyhow::Result<Engine> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let store: Arc<dyn Store> = match config.store.kind {
        StoreKind::Local => {
            check_root_room(dir)?;
            Arc::new(LocalStore::open(dir).context("cannot open local storage")?)
        }
        StoreKind::S3 => open_s3(&config.store.s3, config.limits.max_file_size).await?,
    };
    let (meta, shared) = open_meta(config).await?;
    let mut key = signing_key(dir)?;
    if shared {
        // Every node signs and checks URLs with one key: the first node's.
        key = meta
            .shared_secret("signing_key", &key)
            .await
            .context("cannot read the shared signing key")?;
    }
    let engine = Engine::new(meta, store, config.limits.to_limits(), key);
    if let Some(hooks) = hooks::HttpHooks::from_config(&config.hooks)? {
        tracing::info!(url = %config.hooks.url.as_deref().unwrap_or_default(), "hooks on");
        engine.set_hooks(Arc::new(hooks));
    }
    // Shared metadata and shared bytes: other nodes may serve any upload.
    if shared && config.store.kind == StoreKind::S3 {
        engine.join_cluster();
    }
    Ok(engine)
}

#[cfg(feature = "s3")]
async fn open_s3(c: &config::S3StoreConfig, max_size: u64) -> anyhow::Result<Arc<dyn Store>> {
    let bucket = c
        .bucket
        .clone()
        .context("--store s3 needs a bucket: --s3-bucket, FERRY_S3_BUCKET or store.s3.bucket")?;
    let mut s3 = ferry_store::s3::S3Config::new(&bucket);
    s3.endpoint = c.endpoint.clone();
    s3.region = c.region.clone();
    s3.prefix = c.prefix.clone();
    s3.path_style = c.path_style.unwrap_or(c.endpoint.is_some());
    s3.cell_size = c.part_size;
    s3.max_size = max_size;
    let store = ferry_store::S3Store::connect(&s3)
        .await
        .map_err(|e| anyhow::anyhow!("S3 store: {e}"))?
        .with_retire_after(Duration::from_secs(c.retire_after_secs));
    let at = c.endpoint.as_deref().unwrap_or("AWS");
    store.ready().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot use the bucket {bucket:?} at {at} (it must take a write and a delete; check the endpoint, the bucket and the AWS credentials): {e}"
        )
    })?;
    tracing::info!(%bucket, endpoint = %at, prefix = %c.prefix, "bytes in S3");
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(_: &config::S3StoreConfig, _: u64) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!("this ferry was built without S3 support (the `s3` feature of ferry-cli)")
}

/// Refuses a data directory so long that a file at an accepted path could
/// not be created under it: `<dir>/spaces/<space>/<path>` must fit Linux's
/// 4,096-byte `PATH_MAX` for every space name and path Ferry accepts.
fn check_root_room(dir: &Path) -> anyhow::Result<()> {
    let abs = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the data directory {}", dir.display()))?;
    let len = abs.as_os_str().len();
    let limit = ferry_core::path::MAX_ROOT_BYTES;
    if len > limit {
        anyhow::bail!(
            "the data directory {} is {len} bytes long; with paths of up to {} bytes inside a space it must be at most {limit} bytes",
            abs.display(),
            ferry_core::path::MAX_PATH_BYTES
        );
    }
    Ok(())
}

/// Reads `<data>/signing.key`, creating 32 random bytes (mode 0600) once.
fn signing_key(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("signing.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => anyhow::bail!("{} is shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key = hex::decode(ferry_engine::auth::random_hex(32)).expect("hex");
    write_private(&path, &key)?;
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
                ])
                .expect("valid buckets")
                .build_recorder();
            let h = handle.handle();
            let _ = metrics::set_global_recorder(handle);
            h
        })
        .clone()
}

#[derive(Clone)]
struct OpsState {
    engine: Engine,
    metrics: PrometheusHandle,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<OpsState>) -> impl IntoResponse {
    match st.engine.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", ferry_http::public_message(&e)),
        ),
    }
}

async fn metrics_page(State(st): State<OpsState>) -> impl IntoResponse {
    if let Ok(counts) = st.engine.session_counts().await {
        for state in [
            "open",
            "committing",
            "committed",
            "aborted",
            "expired",
            "failed",
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| s.as_str() == state)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("ferry_sessions", "state" => state).set(n as f64);
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

/// The whole HTTP surface.
pub fn app(engine: Engine, public_url: String, config: &Config) -> anyhow::Result<Router> {
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(OpsState {
            engine: engine.clone(),
            metrics: prometheus(),
        });
    let mount = format!("/{}", config.tus.path.trim_matches('/'));
    if mount == "/" || mount.starts_with("/v1") {
        anyhow::bail!(
            "the tus path {:?} would shadow other routes",
            config.tus.path
        );
    }
    let tus = TusState {
        engine: engine.clone(),
        // Without a configured public URL, upload URLs are relative: they
        // then work under whatever host name the page or client used.
        public_url: config
            .public_url
            .as_deref()
            .map_or_else(String::new, |u| u.trim_end_matches('/').to_owned()),
        mount,
        conflict: config
            .tus
            .conflict
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[tus] conflict: {e}"))?,
    };
    let app = Router::new()
        .merge(graph::router(GraphState {
            engine: engine.clone(),
            public_url: public_url.clone(),
        }))
        .merge(boxapi::router(BoxState {
            engine: engine.clone(),
            public_url: public_url.clone(),
            commit_wait: std::time::Duration::from_secs(config.box_api.commit_wait_secs),
        }))
        .merge(veeva::router(VeevaState {
            engine: engine.clone(),
            public_url: public_url.clone(),
        }))
        .merge(ucloud::router(UcloudState {
            engine: engine.clone(),
            public_url: public_url.clone(),
            idle_secs: config.ucloud.idle_secs,
            max_lifetime_secs: config.ucloud.max_lifetime_secs,
        }))
        .merge(deepset::router(DeepsetState {
            engine: engine.clone(),
            public_url: public_url.clone(),
        }))
        .merge(native::router(NativeState { engine, public_url }))
        .merge(tus::router(tus))
        .merge(web::router())
        .merge(ops)
        .fallback(native::not_found)
        // Early answers arrive: what a handler left of a body is drained
        // (bounded) beside the answer.
        .layer(axum::middleware::from_fn(ferry_http::drain_unread))
        // Every dialect's 503 (storage unavailable) says when to retry.
        .layer(axum::middleware::from_fn(ferry_http::retry_after_503))
        // Outside the drain: a silent body stops the drain too.
        .layer(axum::middleware::from_fn_with_state(
            Duration::from_secs(config.body_idle_timeout_secs.max(1)),
            ferry_http::body_idle_timeout,
        ))
        .layer(axum::middleware::from_fn(ferry_http::track_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Outermost: every response, even a framework's, carries the id
        // that the log lines of its request carry.
        .layer(axum::middleware::from_fn(ferry_http::with_request_id))
        // Control bodies (JSON) may list 10,000 uploads; data bodies stream
        // and are bounded by the engine, not by this limit.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
    Ok(match cors(&config.cors_origins)? {
        Some(layer) => app.layer(layer),
        None => app,
    })
}

/// CORS for browser clients on other origins: the tus and draft headers
/// they send and must read (`Location`, `Upload-Offset`, …).
fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad CORS origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    let names = |v: &[&'static str]| {
        v.iter()
            .map(|n| HeaderName::from_static(n))
            .collect::<Vec<_>>()
    };
    let tus_headers = [
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
        "upload-offset",
        "upload-length",
        "upload-defer-length",
        "upload-metadata",
        "upload-concat",
        "upload-expires",
        "upload-checksum",
        "upload-complete",
        "upload-limit",
        "upload-draft-interop-version",
        "repr-digest",
        "content-digest",
    ];
    let mut allowed = names(&tus_headers);
    allowed.extend(names(&[
        "authorization",
        "content-type",
        "content-range",
        "x-http-method-override",
        "x-requested-with",
    ]));
    let mut exposed = names(&tus_headers);
    exposed.extend(names(&["location", "content-range"]));
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(allowed)
            .expose_headers(exposed)
            .max_age(Duration::from_secs(86400)),
    ))
}

/// Sets up logging once per process (`text` or `json`, `RUST_LOG` filter).
/// Colours only on a terminal, and never with `NO_COLOR` set: logs written
/// to files and pipes stay plain text.
pub fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_is_colour_terminal())
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether standard error is a terminal that may get colour codes.
pub fn stderr_is_colour_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A server bound to its address, not yet serving.
pub struct Bound {
    pub engine: Engine,
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub public_url: String,
    /// The generated admin token, on first start without `admin_token`.
    pub new_admin_token: Option<String>,
    config: Config,
    /// This node runs the background work while it holds this.
    background: Option<ferry_meta::Exclusive>,
    /// The background work was taken over at start-up from a node that
    /// may still be at it: [`TAKEOVER_GRACE`] passes before it starts.
    background_grace: bool,
    /// This node alone uses the local store while it holds this.
    local_store: Option<ferry_meta::Exclusive>,
    /// Held shared by every node of a cluster while it runs.
    _presence: Option<ferry_meta::Exclusive>,
}

/// Opens the stores, recovers interrupted commits, bootstraps the admin,
/// and binds the listener.
pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    let engine = open_engine(&config).await?;
    // A local store is one node's: a second node on the same database
    // would find none of the first one's bytes.
    let local_store = match config.store.kind {
        StoreKind::Local => Some(hold_soon(&engine, "local-store").await?.context(
            "another Ferry node on this database keeps its bytes on its local disk: nodes sharing a database must share their storage too (--store s3)",
        )?),
        StoreKind::S3 => None,
    };
    // The recorder first, so that what recovery counts reaches /metrics.
    prometheus();
    // Background work (recovery, the reaper, the orphan sweep) is one
    // node's at a time; another takes it over when that one dies.
    // Recovery assumes no other node is at work: in a cluster it runs only
    // on a node that starts alone (it would abort multipart uploads of
    // sessions another node is creating, and roll forward its commits).
    let cluster = engine.is_in_cluster();
    let alone = if cluster {
        hold_soon(&engine, "node").await?
    } else {
        None
    };
    // Nobody holds `node` a moment after a restart of the database ended
    // every node's holds: nodes still at work are seen taking theirs again.
    let alone = match alone {
        Some(hold) if engine.others_at_work().await? => {
            tracing::info!(
                "other nodes are at work (taking their holds again after the database restarted)"
            );
            drop(hold);
            None
        }
        alone => alone,
    };
    let background = if !cluster || alone.is_some() {
        hold_soon(&engine, "background").await?
    } else {
        engine.try_exclusive("background").await?
    };
    // Taken over from a node that may still be at it (its hold ended
    // with a restart of the database): waited for before the work starts.
    let background_grace = background.is_some() && cluster && alone.is_none();
    if background.is_some() && (!cluster || alone.is_some()) {
        recover(&engine).await?;
    } else if background.is_some() {
        tracing::info!("other nodes are at work: start-up recovery skipped");
    } else {
        tracing::info!("another node runs recovery, the reaper and the orphan sweep");
    }
    drop(alone);
    // This node's presence, which keeps later starters from thinking they
    // are alone.
    let presence = if cluster {
        Some(engine.hold_shared("node").await?)
    } else {
        None
    };
    let new_admin_token = engine.bootstrap(config.admin_token.as_deref()).await?;
    if let Some(t) = &new_admin_token {
        write_private(
            &config.data_dir.join("admin.token"),
            format!("{t}\n").as_bytes(),
        )?;
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    Ok(Bound {
        engine,
        listener,
        addr,
        public_url,
        new_admin_token,
        config,
        background,
        background_grace,
        local_store,
        _presence: presence,
    })
}

/// How long a node that took the background work over waits before it
/// starts it: the node that held it before, if alive, has seen its hold
/// end by then (its check every second, a ping of at most a second, the
/// reaper's check every second), with time to spare.
const TAKEOVER_GRACE: Duration = Duration::from_secs(5);

/// Whether this node still holds the background work: a hold the
/// database ended (a restart) may be another node's now, so it is let go
/// (and `ask_again` set: it is asked for again every second until the
/// database answers). `ferry_cluster_background` says which node holds it.
fn still_held(background: &mut Option<ferry_meta::Exclusive>, ask_again: &mut bool) -> bool {
    if background.as_ref().is_some_and(|b| b.is_lost()) {
        tracing::warn!(
            "this node's hold on the background work ended with its database connection; it stops that work until it holds it again"
        );
        *background = None;
        *ask_again = true;
    }
    metrics::gauge!("ferry_cluster_background").set(f64::from(background.is_some()));
    background.is_some()
}

/// Takes the hold on the local store again when the database ended it (a
/// restart), checking every second: without it, a second node started
/// later on this database would find the local store free. Another node
/// that took it meanwhile is told in the log (after 5 s: the database
/// may not have ended this node's former connection yet).
async fn keep_local_store(
    engine: Engine,
    hold: Arc<tokio::sync::Mutex<Option<ferry_meta::Exclusive>>>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        every.tick().await;
        let mut hold = hold.lock().await;
        if !hold.as_ref().is_some_and(|h| h.is_lost()) {
            continue;
        }
        let since = *lost_since.get_or_insert_with(std::time::Instant::now);
        match engine.try_exclusive("local-store").await {
            Ok(Some(again)) => {
                tracing::info!("this node holds the local store again");
                *hold = Some(again);
                lost_since = None;
            }
            Ok(None) if since.elapsed() >= Duration::from_secs(5) => tracing::error!(
                "another Ferry node on this database took the local store while the database restarted: nodes sharing a database must share their storage (--store s3); stop that node"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the hold on the local store again; retrying")
            }
        }
    }
}

/// [`Engine::try_exclusive`], retried for 2 s: a node killed a moment ago
/// holds what it held until the database sees its connection close.
async fn hold_soon(engine: &Engine, what: &str) -> anyhow::Result<Option<ferry_meta::Exclusive>> {
    for _ in 0..20 {
        if let Some(hold) = engine.try_exclusive(what).await? {
            return Ok(Some(hold));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Rolls interrupted commits forward (start-up, or a node taking over the
/// background work of one that died).
async fn recover(engine: &Engine) -> anyhow::Result<()> {
    let report = engine.recover().await.context("recovery failed")?;
    if report != Default::default() {
        tracing::info!(?report, "recovered after an unclean stop");
    }
    Ok(())
}

impl Bound {
    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// (for at most `shutdown_grace_secs`).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        // Built before any task starts: nothing is left running when it fails.
        let shutdown_grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let app = app(self.engine.clone(), self.public_url, &self.config)?;
        let limits = ConnectionLimits {
            header_read: Duration::from_secs(self.config.header_read_timeout_secs.max(1)),
            max_connections: self.config.max_connections.max(1),
        };
        let every = Duration::from_secs(self.config.reap_interval_secs.max(1));
        let s3 = &self.config.store.s3;
        let (sweep_every, retired_for) = (
            Duration::from_secs(s3.sweep_interval_secs.max(1)),
            Duration::from_secs(s3.retire_after_secs),
        );
        // Owned here, for the node's whole life; the task only takes it
        // again when the database ended it.
        let local_store = Arc::new(tokio::sync::Mutex::new(self.local_store));
        let local_keeper = tokio::spawn(keep_local_store(engine.clone(), local_store.clone()));
        let mut background = self.background;
        let grace = self.background_grace;
        let reaper = tokio::spawn(async move {
            if grace {
                tokio::time::sleep(TAKEOVER_GRACE).await;
            }
            let mut tick = tokio::time::interval(every);
            // The first sweep runs at start-up: what a crash left goes.
            let mut sweep = tokio::time::interval(sweep_every);
            // How often a hold the database ended is noticed.
            let mut watch = tokio::time::interval(Duration::from_secs(1));
            watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // A hold this node lost is asked for again every second until
            // the database answers (the other nodes ask at their ticks).
            let mut ask_again = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = watch.tick() => {
                        if !still_held(&mut background, &mut ask_again) && ask_again {
                            tick.reset_immediately();
                        }
                        continue;
                    }
                    _ = sweep.tick() => {
                        if still_held(&mut background, &mut ask_again)
                            && let Err(e) = engine.sweep_orphans(retired_for).await
                        {
                            tracing::warn!(error = %e, "orphan sweep failed");
                        }
                        continue;
                    }
                }
                if !still_held(&mut background, &mut ask_again) {
                    // The node that ran it is gone (or this one's hold
                    // ended): this one takes over.
                    match engine.try_exclusive("background").await {
                        Ok(Some(hold)) => {
                            ask_again = false;
                            // A node whose hold the database ended may
                            // not know it yet: it stops within about a
                            // second (`still_held`), before this starts.
                            tokio::time::sleep(TAKEOVER_GRACE).await;
                            // Other nodes are at work: no recovery (see
                            // `bind`); a dead node's interrupted commit
                            // waits for a start-up alone.
                            tracing::info!("this node now runs the background work");
                            background = Some(hold);
                            if !still_held(&mut background, &mut ask_again) {
                                continue;
                            }
                            sweep.reset_immediately();
                        }
                        Ok(None) => {
                            ask_again = false;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check who runs the background work");
                            continue;
                        }
                    }
                }
                match engine.reap_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired sessions reaped"),
                    Err(e) => tracing::warn!(error = %e, "reaper failed"),
                }
            }
        });
        // Every node delivers the hooks' outbox (claims keep each event to
        // one node at a time).
        let stop_hooks = tokio_util::sync::CancellationToken::new();
        let hooks = tokio::spawn({
            let (engine, stop) = (self.engine.clone(), stop_hooks.clone());
            async move { engine.deliver_hooks(stop).await }
        });
        // The live figures the console draws.
        tokio::spawn({
            let (engine, stop) = (self.engine.clone(), stop_hooks.clone());
            async move { engine.sample_activity(stop).await }
        });
        serve_connections(self.listener, app, shutdown, shutdown_grace, limits).await;
        reaper.abort();
        local_keeper.abort();
        drop(local_store);
        stop_hooks.cancel();
        let _ = hooks.await;
        Ok(())
    }
}

/// Read buffers per HTTP/1 connection. A large buffer makes one stream
/// much faster (a 1 GiB tus upload in 64 MiB PATCHes: ~400 MiB/s with
/// 64 KiB, ~650 with 512 KiB — fewer reads, wake-ups and hand-offs per
/// byte), but hyper grows every busy connection's buffer to its maximum,
/// and with 100 concurrent uploads 512 KiB buffers cost ~250 MiB more RSS.
/// So the first `LARGE_BUFFER_CONNECTIONS` connections open at a time get
/// the large buffer and the rest the small one: memory stays bounded by
/// `LARGE × 512 KiB + n × 64 KiB`, and a few fast streams stay fast.
const SMALL_CONNECTION_BUFFER: usize = 64 * 1024;
const LARGE_CONNECTION_BUFFER: usize = 512 * 1024;
const LARGE_BUFFER_CONNECTIONS: usize = 8;

/// What the accept loop allows a connection.
struct ConnectionLimits {
    /// Time to send a request's headers; then the connection is closed.
    header_read: Duration,
    /// Connections open at a time; the next waits to be accepted (it sits
    /// in the kernel's backlog, or is refused by the kernel when that is
    /// full) until one closes.
    max_connections: usize,
}

/// Longest pause after a failed `accept` (descriptors exhausted: EMFILE,
/// ENFILE); the pause doubles from 10 ms while failures repeat.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The accept loop: hyper with a bounded read buffer per connection (see
/// `LARGE_BUFFER_CONNECTIONS`), a header-read timeout, a cap on open
/// connections, a backoff when `accept` fails (descriptors exhausted), and
/// a graceful shutdown that stops accepting, lets requests in flight
/// finish, and gives up after `grace`.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ConnectionLimits,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    let builder = |buffer| {
        let mut b = Builder::new(TokioExecutor::new());
        b.http1()
            .max_buf_size(buffer)
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read);
        b.http2().timer(TokioTimer::new());
        b
    };
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(10);
    let (small, large) = (
        builder(SMALL_CONNECTION_BUFFER),
        builder(LARGE_CONNECTION_BUFFER),
    );
    let large_open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let graceful = GracefulShutdown::new();
    let service = hyper_util::service::TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        // A connection slot first: past the cap, connections wait in the
        // backlog instead of being accepted.
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => {
                    backoff = Duration::from_millis(10);
                    conn
                }
                Err(e) => {
                    // EMFILE/ENFILE and the like: pause, then retry;
                    // never spin, never stop accepting.
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        use std::sync::atomic::Ordering::SeqCst;
        let is_large = large_open
            .fetch_update(SeqCst, SeqCst, |n| {
                (n < LARGE_BUFFER_CONNECTIONS).then_some(n + 1)
            })
            .is_ok();
        let builder = if is_large { &large } else { &small };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
            .into_owned();
        let conn = graceful.watch(conn);
        let large_open = large_open.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            if is_large {
                large_open.fetch_sub(1, SeqCst);
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down; letting in-flight requests finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; stopping with requests still open");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
