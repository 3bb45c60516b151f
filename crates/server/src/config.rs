//! Configuration: defaults, an optional TOML file, then `FERRY_*`
//! environment variables and flags (applied by the CLI on top).

use ferry_core::Limits;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Staged bytes, files, the SQLite database and keys live here.
    pub data_dir: PathBuf,
    /// `host:port` to bind; port 0 picks a free port.
    pub listen: String,
    /// Base of the absolute URLs Ferry hands out; default `http://<bound address>`.
    pub public_url: Option<String>,
    /// Metadata database URL: `postgres://…` (several nodes share it);
    /// none: embedded SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Connections a node keeps to PostgreSQL for its statements (about
    /// twice the database server's cores serve best; more cost it CPU).
    pub database_pool: u32,
    /// Bootstrap admin token (else one is generated on first start).
    pub admin_token: Option<String>,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Seconds between sweeps for expired sessions.
    pub reap_interval_secs: u64,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Seconds a request body may send nothing before it is ended as a
    /// failed body (what arrived is kept).
    pub body_idle_timeout_secs: u64,
    /// Seconds a connection gets to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Connections open at a time; beyond it new ones wait to be accepted.
    pub max_connections: usize,
    /// Origins allowed to call the API from a browser on another origin
    /// (`["*"]` for any); empty: no CORS headers (the page at `/` is
    /// same-origin and needs none).
    pub cors_origins: Vec<String>,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub tus: TusConfig,
    #[serde(rename = "box")]
    pub box_api: BoxConfig,
    pub ucloud: UcloudConfig,
    pub hooks: HooksConfig,
}

/// Where the bytes go: `[store]` in the TOML file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub s3: S3StoreConfig,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The local disk, under `data_dir` (the default).
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(StoreKind::Local),
            "s3" => Ok(StoreKind::S3),
            other => Err(format!("unknown store {other:?}: use local or s3")),
        }
    }
}

/// `[store.s3]` in the TOML file. Credentials come from the standard AWS
/// chain (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, roles).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct S3StoreConfig {
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// Required with `kind = "s3"`.
    pub bucket: Option<String>,
    pub region: String,
    /// Prepended to every key Ferry writes (`team/ferry/`).
    pub prefix: String,
    /// Path-style addressing; `None`: on when an endpoint is given.
    pub path_style: Option<bool>,
    /// Bytes per S3 part of a staged upload (at least 5 MiB).
    pub part_size: u64,
    /// Seconds a replaced or deleted object stays readable, so that a
    /// download streaming it can finish; also how old an object nothing
    /// owns must be before the orphan sweep deletes it.
    pub retire_after_secs: u64,
    /// Seconds between orphan sweeps (the first runs at start-up).
    pub sweep_interval_secs: u64,
}

impl Default for S3StoreConfig {
    fn default() -> Self {
        S3StoreConfig {
            endpoint: None,
            bucket: None,
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: None,
            part_size: 16 << 20,
            retire_after_secs: 15 * 60,
            sweep_interval_secs: 3600,
        }
    }
}

/// `[hooks]` in the TOML file: where events go (docs/HOOKS.md).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The receiver's URL; none: no hooks.
    pub url: Option<String>,
    /// Key of the `Ferry-Signature` HMAC; none: events are not signed.
    pub secret: Option<String>,
    /// Event names to send (`pre-create`, `post-finish`, …); none: all.
    pub events: Option<Vec<String>>,
    /// Seconds a blocking hook may take to answer.
    pub timeout_secs: u64,
    /// A blocking hook that gives no usable answer lets the request go on
    /// instead of refusing it with 503.
    pub fail_open: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            url: None,
            secret: None,
            events: None,
            timeout_secs: 5,
            fail_open: false,
        }
    }
}

/// `[ucloud]` in the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UcloudConfig {
    /// A UCloud session lives at least this long after its last write
    /// (UCloud: at least 30 minutes), seconds; never past the engine's
    /// `max_expiry_secs`.
    pub idle_secs: u64,
    /// ... and takes no bytes later than this after its creation
    /// (UCloud: at most 48 hours), seconds.
    pub max_lifetime_secs: u64,
}

impl Default for UcloudConfig {
    fn default() -> Self {
        UcloudConfig {
            idle_secs: 30 * 60,
            max_lifetime_secs: 48 * 3600,
        }
    }
}

/// `[box]` in the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BoxConfig {
    /// How long a Box commit may run before the answer is `202` with
    /// `Retry-After` (the commit goes on), seconds.
    pub commit_wait_secs: u64,
}

impl Default for BoxConfig {
    fn default() -> Self {
        BoxConfig {
            commit_wait_secs: 30,
        }
    }
}

/// `[tus]` in the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TusConfig {
    /// Mount point of tus and the IETF draft (`/tus`).
    pub path: String,
    /// Conflict policy of uploads whose metadata names none:
    /// `fail`, `replace`, `rename` or `skip`.
    pub conflict: String,
}

impl Default for TusConfig {
    fn default() -> Self {
        TusConfig {
            path: "/tus".into(),
            conflict: "rename".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ferry-data"),
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: None,
            database_pool: ferry_meta::postgres::DEFAULT_POOL,
            admin_token: None,
            log_format: "text".into(),
            reap_interval_secs: 60,
            shutdown_grace_secs: 30,
            body_idle_timeout_secs: 60,
            header_read_timeout_secs: 30,
            max_connections: 10_000,
            cors_origins: Vec::new(),
            limits: LimitsConfig::default(),
            store: StoreConfig::default(),
            tus: TusConfig::default(),
            box_api: BoxConfig::default(),
            ucloud: UcloudConfig::default(),
            hooks: HooksConfig::default(),
        }
    }
}

/// `[limits]` in the TOML file; every key optional.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_file_size: u64,
    pub min_part_size: u64,
    pub max_part_size: u64,
    pub default_part_size: u64,
    pub max_uploads_per_session: usize,
    pub max_open_sessions: u32,
    pub default_quota: Option<u64>,
    pub default_expiry_secs: u64,
    pub max_expiry_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_file_size: l.max_file_size,
            min_part_size: l.min_part_size,
            max_part_size: l.max_part_size,
            default_part_size: l.default_part_size,
            max_uploads_per_session: l.max_uploads_per_session,
            max_open_sessions: l.max_open_sessions,
            default_quota: l.default_quota,
            default_expiry_secs: l.default_expiry_secs,
            max_expiry_secs: l.max_expiry_secs,
        }
    }
}

impl LimitsConfig {
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_file_size: self.max_file_size,
            min_part_size: self.min_part_size,
            max_part_size: self.max_part_size,
            default_part_size: self.default_part_size,
            max_parts: Limits::default().max_parts,
            max_uploads_per_session: self.max_uploads_per_session,
            max_open_sessions: self.max_open_sessions,
            default_quota: self.default_quota,
            default_expiry_secs: self.default_expiry_secs,
            max_expiry_secs: self.max_expiry_secs,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are an error, so typos show.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_typos() {
        let c: Config =
            toml::from_str("listen = \"127.0.0.1:0\"\n[limits]\nmax_open_sessions = 3\n").unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.limits.max_open_sessions, 3);
        assert_eq!(c.data_dir, PathBuf::from("./ferry-data"));
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
    }
}
