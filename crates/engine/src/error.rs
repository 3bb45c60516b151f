//! The engine's one error type. Status codes are chosen at the edge, by
//! each dialect; here every variant carries what a message needs.

use ferry_core::{ByteRange, StateError};
use ferry_meta::MetaError;
use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Malformed input; `code` is `invalid_path`, `invalid_range`, …
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{path} already exists")]
    AlreadyExists { path: String },
    #[error("the upload is missing {} byte range(s); first missing: {}", missing.len(), missing.first().map(|r| r.to_string()).unwrap_or_default())]
    Incomplete { missing: Vec<ByteRange> },
    /// Contention: the upload or path is busy now (another request, a
    /// commit); the same request may succeed in a moment.
    #[error("{0}")]
    Conflict(String),
    /// What this server cannot do as it is set up (its storage backend,
    /// its part grid): sending the same request again changes nothing.
    #[error("{0}")]
    Unsupported(String),
    /// An append did not start where the received bytes end.
    #[error("the upload's offset is {expected}, but the request starts at {provided}")]
    OffsetMismatch { expected: u64, provided: u64 },
    #[error("{0}")]
    Gone(StateError),
    #[error("{message}")]
    TooLarge { message: String, limit: u64 },
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("{algo} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{owner} already has {open} open sessions; the limit is {limit}")]
    TooManySessions {
        owner: String,
        open: u64,
        limit: u64,
    },
    #[error("{0}")]
    InsufficientStorage(String),
    /// The storage backend cannot be reached now (object storage down,
    /// slow or failing): retry later; nothing unacknowledged was kept.
    #[error("{0}")]
    Unavailable(String),
    /// A hook refused the request: the client gets this status (4xx) and
    /// message.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    #[error("the request body failed after {durable} durable bytes: {source}")]
    BodyFailed {
        durable: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(MetaError),
    #[error("storage: {0}")]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSpace => EngineError::InsufficientStorage(
                "the storage device is full; bytes already acknowledged are kept".into(),
            ),
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %e, "storage unavailable");
                EngineError::Unavailable(
                    "the storage backend is unavailable; retry later (bytes already acknowledged are kept)"
                        .into(),
                )
            }
            StoreError::Sealed(what) => EngineError::Conflict(format!(
                "the upload holds all its bytes and is being committed; {what}"
            )),
            StoreError::Unsupported(what) => EngineError::Unsupported(format!(
                "this server's storage backend does not support {what}"
            )),
            other => EngineError::Store(other),
        }
    }
}

impl From<MetaError> for EngineError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSpace => EngineError::InsufficientStorage(
                "the metadata storage is full; nothing was changed, retry once space is freed"
                    .into(),
            ),
            MetaError::Unreachable => EngineError::Unavailable(
                "the metadata database cannot be reached (it may be restarting); retry in a moment (bytes already acknowledged are kept)"
                    .into(),
            ),
            MetaError::Busy => EngineError::Unavailable(
                "the metadata database is busy (a lock or a connection stayed taken too long); nothing was changed, retry"
                    .into(),
            ),
            // This node was presumed gone and another took the upload
            // over while this write's bytes came: the client resumes from
            // what the upload holds.
            MetaError::LeaseLost => EngineError::Conflict(
                "this node lost its hold on the upload while this request wrote it (it was presumed gone, and the upload may be another node's now); none of its bytes were kept: ask for the upload's offset and resume"
                    .into(),
            ),
            // A state change that raced another (the lifecycle refused it).
            MetaError::IllegalTransition(t) => EngineError::Conflict(t.to_string()),
            other => EngineError::Meta(other),
        }
    }
}

impl EngineError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> EngineError {
        EngineError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The snake_case code used in error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Unauthenticated(_) => "unauthenticated",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::NotFound(_) => "not_found",
            EngineError::Invalid { code, .. } => code,
            EngineError::AlreadyExists { .. } => "already_exists",
            EngineError::Incomplete { .. } => "incomplete",
            EngineError::Conflict(_) => "conflict",
            EngineError::Unsupported(_) => "unsupported",
            EngineError::OffsetMismatch { .. } => "offset_mismatch",
            EngineError::Gone(StateError::Aborted) => "aborted",
            EngineError::Gone(StateError::Expired) => "expired",
            EngineError::Gone(StateError::Failed) => "failed",
            EngineError::Gone(StateError::Committed) => "committed",
            EngineError::Gone(StateError::Committing) => "committing",
            EngineError::TooLarge { .. } => "too_large",
            EngineError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            EngineError::DigestMismatch { .. } => "digest_mismatch",
            EngineError::TooManySessions { .. } => "too_many_sessions",
            EngineError::InsufficientStorage(_) => "insufficient_storage",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Rejected { .. } => "rejected",
            EngineError::BodyFailed { .. } => "body_failed",
            EngineError::Meta(_) | EngineError::Store(_) => "internal",
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
