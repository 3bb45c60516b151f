//! `ferry serve`: flags and `FERRY_*` variables over an optional TOML file.

use clap::Args;
use ferry_server::Config;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (flags and FERRY_* variables win over it).
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Where staged bytes, files, the SQLite database and keys live [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// host:port to bind; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<String>,
    /// Base of the absolute URLs Ferry hands out [default: http://<listen>].
    #[arg(long, env = "FERRY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "FERRY_LOG_FORMAT")]
    log_format: Option<String>,
    /// Seconds between sweeps for expired sessions [default: 60].
    #[arg(long, env = "FERRY_REAP_INTERVAL")]
    reap_interval: Option<u64>,
    /// Seconds a request body may send nothing before it fails [default: 60].
    #[arg(long, env = "FERRY_BODY_IDLE_TIMEOUT")]
    body_idle_timeout: Option<u64>,
    /// Seconds a connection gets to send a request's headers [default: 30].
    #[arg(long, env = "FERRY_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Connections open at a time; more wait to be accepted [default: 10000].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Largest accepted file, bytes [default: 5 TiB].
    #[arg(long, env = "FERRY_MAX_FILE_SIZE")]
    max_file_size: Option<u64>,
    /// Open sessions allowed per user (unless the user has their own) [default: 100].
    #[arg(long, env = "FERRY_MAX_OPEN_SESSIONS")]
    max_open_sessions: Option<u32>,
    /// Uploads (files) one session may hold [default: 10000].
    #[arg(long, env = "FERRY_MAX_UPLOADS_PER_SESSION")]
    max_uploads_per_session: Option<usize>,
    /// Quota per user in bytes (unless the user has their own) [default: none].
    #[arg(long, env = "FERRY_DEFAULT_QUOTA")]
    default_quota: Option<u64>,
    /// Session lifetime when the client asks for none, seconds [default: 86400].
    #[arg(long, env = "FERRY_DEFAULT_EXPIRY")]
    default_expiry: Option<u64>,
    /// Longest session lifetime a client may ask for, seconds [default: 604800].
    #[arg(long, env = "FERRY_MAX_EXPIRY")]
    max_expiry: Option<u64>,
    /// Mount point of tus and the IETF resumable-upload draft (default /tus).
    #[arg(long, env = "FERRY_TUS_PATH")]
    tus_path: Option<String>,
    /// Conflict policy of tus uploads whose metadata names none
    /// (fail, replace, rename, skip; default rename).
    #[arg(long, env = "FERRY_TUS_CONFLICT")]
    tus_conflict: Option<String>,
    /// Seconds a Box commit may run before it answers 202 + Retry-After
    /// (default 30).
    #[arg(long, env = "FERRY_BOX_COMMIT_WAIT")]
    box_commit_wait: Option<u64>,
    /// Seconds a UCloud session lives past its last write (default 1800).
    #[arg(long, env = "FERRY_UCLOUD_IDLE")]
    ucloud_idle: Option<u64>,
    /// Seconds after creation a UCloud session stops taking bytes
    /// (default 172800, 48 hours).
    #[arg(long, env = "FERRY_UCLOUD_MAX_LIFETIME")]
    ucloud_max_lifetime: Option<u64>,
    /// Browser origins allowed to call the API (CORS), comma-separated; `*` for any.
    #[arg(long, env = "FERRY_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Option<Vec<String>>,
    /// Metadata database: a `postgres://user:password@host:port/db` URL
    /// (shared by every node of a cluster) [default: SQLite in the data directory].
    #[arg(
        long,
        env = "FERRY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Connections each node keeps to PostgreSQL for its statements (about
    /// twice the database server's cores serve best) [default: 8].
    #[arg(long, env = "FERRY_DATABASE_POOL", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    database_pool: Option<u32>,
    /// Where the bytes go: `local` (the data directory, default) or `s3`.
    #[arg(long, env = "FERRY_STORE", value_name = "local|s3")]
    store: Option<ferry_server::StoreKind>,
    /// S3 endpoint URL (default: AWS's for the region).
    #[arg(long, env = "FERRY_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 bucket (required with `--store s3`).
    #[arg(long, env = "FERRY_S3_BUCKET", value_name = "NAME")]
    s3_bucket: Option<String>,
    /// S3 region (default us-east-1).
    #[arg(long, env = "FERRY_S3_REGION", value_name = "R")]
    s3_region: Option<String>,
    /// Prefix of every key Ferry writes in the bucket (default empty).
    #[arg(long, env = "FERRY_S3_PREFIX", value_name = "P")]
    s3_prefix: Option<String>,
    /// Path-style S3 addressing (default: on when an endpoint is given).
    #[arg(long, env = "FERRY_S3_PATH_STYLE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    s3_path_style: Option<bool>,
    /// Where hook events are POSTed (docs/HOOKS.md) [default: no hooks].
    #[arg(long, env = "FERRY_HOOKS_URL", value_name = "URL")]
    hooks_url: Option<String>,
    /// Key of the events' Ferry-Signature (HMAC-SHA256) [default: unsigned].
    #[arg(
        long,
        env = "FERRY_HOOKS_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    hooks_secret: Option<String>,
    /// Events to send, comma-separated (pre-create, post-create,
    /// post-receive, pre-finish, post-finish, post-terminate, post-expire)
    /// [default: all].
    #[arg(
        long,
        env = "FERRY_HOOKS_EVENTS",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    hooks_events: Option<Vec<String>>,
    /// Seconds a blocking hook (pre-create, pre-finish) may take [default: 5].
    #[arg(long, env = "FERRY_HOOKS_TIMEOUT", value_name = "SECS")]
    hooks_timeout: Option<u64>,
    /// A blocking hook that gives no usable answer lets the request go on
    /// [default: false: it is refused with 503].
    #[arg(long, env = "FERRY_HOOKS_FAIL_OPEN", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    hooks_fail_open: Option<bool>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! over {
            ($($field:expr => $value:expr),* $(,)?) => { $(if let Some(v) = $value { $field = v; })* };
        }
        over!(
            c.data_dir => self.data_dir,
            c.listen => self.listen,
            c.log_format => self.log_format,
            c.reap_interval_secs => self.reap_interval,
            c.body_idle_timeout_secs => self.body_idle_timeout,
            c.header_read_timeout_secs => self.header_read_timeout,
            c.max_connections => self.max_connections,
            c.database_pool => self.database_pool,
            c.limits.max_file_size => self.max_file_size,
            c.limits.max_open_sessions => self.max_open_sessions,
            c.limits.max_uploads_per_session => self.max_uploads_per_session,
            c.limits.default_expiry_secs => self.default_expiry,
            c.limits.max_expiry_secs => self.max_expiry,
            c.tus.path => self.tus_path,
            c.tus.conflict => self.tus_conflict,
            c.cors_origins => self.cors_origin,
            c.box_api.commit_wait_secs => self.box_commit_wait,
            c.ucloud.idle_secs => self.ucloud_idle,
            c.ucloud.max_lifetime_secs => self.ucloud_max_lifetime,
            c.store.kind => self.store,
            c.store.s3.region => self.s3_region,
            c.store.s3.prefix => self.s3_prefix,
            c.hooks.timeout_secs => self.hooks_timeout,
            c.hooks.fail_open => self.hooks_fail_open,
        );
        if self.hooks_url.is_some() {
            c.hooks.url = self.hooks_url;
        }
        if self.hooks_secret.is_some() {
            c.hooks.secret = self.hooks_secret;
        }
        if self.hooks_events.is_some() {
            c.hooks.events = self.hooks_events;
        }
        if self.database_url.is_some() {
            c.database_url = self.database_url;
        }
        if self.s3_endpoint.is_some() {
            c.store.s3.endpoint = self.s3_endpoint;
        }
        if self.s3_bucket.is_some() {
            c.store.s3.bucket = self.s3_bucket;
        }
        if self.s3_path_style.is_some() {
            c.store.s3.path_style = self.s3_path_style;
        }
        if self.public_url.is_some() {
            c.public_url = self.public_url;
        }
        if self.default_quota.is_some() {
            c.limits.default_quota = self.default_quota;
        }
        if let Ok(t) = std::env::var("FERRY_ADMIN_TOKEN")
            && !t.is_empty()
        {
            c.admin_token = Some(t);
        }
        if c.log_format != "text" && c.log_format != "json" {
            anyhow::bail!("log format must be text or json, not {:?}", c.log_format);
        }
        Ok(c)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    ferry_server::init_tracing(&config.log_format);
    let data_dir = config.data_dir.clone();
    let bound = ferry_server::bind(config).await?;
    tracing::info!(addr = %bound.addr, public_url = %bound.public_url, data_dir = %data_dir.display(), "listening");
    println!("Ferry listening on http://{}", bound.addr);
    if let Some(t) = &bound.new_admin_token {
        println!(
            "admin token: {t}\n  (shown once; also saved to {})",
            data_dir.join("admin.token").display()
        );
    }
    bound.serve(ferry_server::shutdown_signal()).await
}
