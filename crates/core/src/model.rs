//! The records of the domain model and their state machines.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller.

use crate::conflict::ConflictPolicy;
use crate::digest::{Digest, DigestAlgo};
use crate::limits::PartPlan;
use crate::path::{SpaceName, SpacePath};
use crate::range::{ByteRange, RangeSet};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The declared length of an upload; `Deferred` until the client says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    Known(u64),
    Deferred,
}

impl Length {
    pub fn known(self) -> Option<u64> {
        match self {
            Length::Known(n) => Some(n),
            Length::Deferred => None,
        }
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),* }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$variant),)*
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

string_enum! {
    /// `open → committing → committed`, or `aborted`, `expired`, `failed`.
    SessionState {
        Open = "open",
        Committing = "committing",
        Committed = "committed",
        Aborted = "aborted",
        Expired = "expired",
        Failed = "failed",
    }
}

string_enum! {
    /// An upload inside a session. `Skipped` is a finished upload whose
    /// bytes were dropped because the `skip` policy kept the existing file.
    UploadState {
        Open = "open",
        Committing = "committing",
        Committed = "committed",
        Skipped = "skipped",
        Aborted = "aborted",
    }
}

string_enum! {
    /// Access granted to a member of a shared space.
    Access { Read = "read", Write = "write" }
}

/// Why a session or upload refuses an operation because of its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the session has expired")]
    Expired,
    #[error("the session was aborted")]
    Aborted,
    #[error("the upload is already committed")]
    Committed,
    #[error("the upload is being committed")]
    Committing,
    #[error("the session failed")]
    Failed,
}

impl SessionState {
    pub fn is_final(self) -> bool {
        !matches!(self, SessionState::Open | SessionState::Committing)
    }

    /// Whether bytes may still be written to the session's open uploads.
    pub fn check_writable(self) -> Result<(), StateError> {
        match self {
            SessionState::Open => Ok(()),
            SessionState::Committing => Err(StateError::Committing),
            SessionState::Committed => Err(StateError::Committed),
            SessionState::Aborted => Err(StateError::Aborted),
            SessionState::Expired => Err(StateError::Expired),
            SessionState::Failed => Err(StateError::Failed),
        }
    }
}

/// A state change the lifecycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a session cannot go from {from} to {to}")]
    Session {
        from: SessionState,
        to: SessionState,
    },
    #[error("an upload cannot go from {from} to {to}")]
    Upload { from: UploadState, to: UploadState },
}

// The lifecycle. Every state change is checked against these two tables
// (by the metadata store, inside the transaction that makes it); a state
// "changing" to itself is an idempotent repeat and always allowed.
//
// Session: open → committing (a whole-session commit records its intent)
//          open → committed | aborted (its last upload finished or was
//                 aborted) | expired | failed (recovery)
//          committing → committed | open (an upload was reopened) | failed
// Upload:  open → committing (intent) | skipped (the `skip` policy keeps
//                 the existing file) | aborted
//          committing → committed | skipped | open (promotion impossible:
//                 reopened) | aborted (recovery gave up on it)
// Everything else is final.

impl SessionState {
    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: SessionState) -> bool {
        use SessionState::*;
        self == to
            || matches!(
                (self, to),
                (Open, Committing | Committed | Aborted | Expired | Failed)
                    | (Committing, Committed | Open | Failed)
            )
    }

    /// `to`, if the lifecycle allows the change.
    pub fn transition(self, to: SessionState) -> Result<SessionState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError::Session { from: self, to })
        }
    }

    /// The state a session settles in once none of its uploads is open or
    /// being committed: `committed` when one of them became a file (or was
    /// skipped), else `aborted`. `None` while one is still open or
    /// committing, when it has no uploads, or when it is open-ended (only a
    /// whole-session commit, an abort or expiry end that).
    pub fn settled(
        open_ended: bool,
        uploads: impl IntoIterator<Item = UploadState>,
    ) -> Option<SessionState> {
        if open_ended {
            return None;
        }
        let mut any = false;
        let mut done = false;
        for u in uploads {
            match u {
                UploadState::Open | UploadState::Committing => return None,
                UploadState::Committed | UploadState::Skipped => done = true,
                UploadState::Aborted => {}
            }
            any = true;
        }
        any.then_some(if done {
            SessionState::Committed
        } else {
            SessionState::Aborted
        })
    }
}

impl UploadState {
    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: UploadState) -> bool {
        use UploadState::*;
        self == to
            || matches!(
                (self, to),
                (Open, Committing | Skipped | Aborted)
                    | (Committing, Committed | Skipped | Open | Aborted)
            )
    }

    /// `to`, if the lifecycle allows the change.
    pub fn transition(self, to: UploadState) -> Result<UploadState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError::Upload { from: self, to })
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, UploadState::Committed | UploadState::Skipped)
    }

    pub fn check_writable(self) -> Result<(), StateError> {
        match self {
            UploadState::Open => Ok(()),
            UploadState::Committing => Err(StateError::Committing),
            UploadState::Committed | UploadState::Skipped => Err(StateError::Committed),
            UploadState::Aborted => Err(StateError::Aborted),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub quota_bytes: Option<u64>,
    pub max_open_sessions: Option<u32>,
    pub home_space: SpaceName,
    pub created_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub owner: String,
    pub space: SpaceName,
    pub conflict: ConflictPolicy,
    pub auto_commit: bool,
    pub state: SessionState,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Which wire format created it ("native", "tus", …), for listing and ops.
    pub dialect: String,
    /// Sliding expiry: each write moves `expires_at` to at least this many
    /// seconds from then (never past the engine's maximum lifetime).
    pub extend_secs: Option<u64>,
    /// Takes uploads as they become known (`add_uploads`), so it does not
    /// end when its last upload is committed: only a whole-session commit,
    /// an abort or expiry end it.
    pub open_ended: bool,
    /// The files this session commits expire with it: they are deleted
    /// once `expires_at` passes (deepset's `TEMPORARY` write mode).
    pub files_expire: bool,
    /// Why the session failed, when it did (e.g. start-up recovery could
    /// not finish one of its commits); shown to its owner.
    pub failure: Option<String>,
}

impl Session {
    pub fn is_expired_at(&self, now: Millis) -> bool {
        now >= self.expires_at
    }

    /// When the session's uploads are committed (`auto_commit` as stored).
    pub fn commit_mode(&self) -> CommitMode {
        if self.auto_commit {
            CommitMode::OnLastByte
        } else {
            CommitMode::Manual
        }
    }
}

/// When an upload becomes a file: a dialect chooses it per session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// Only an explicit commit (native, Box, Veeva, Graph's `deferCommit`).
    #[default]
    Manual,
    /// The engine commits an upload as soon as it holds every byte: in
    /// the write that completes it (whose answer carries the commit's
    /// result or error), or, if that commit did not happen, at the next
    /// request that resumes the upload (`Engine::resume`).
    OnLastByte,
}

impl CommitMode {
    pub fn is_auto(self) -> bool {
        self == CommitMode::OnLastByte
    }
}

/// One received part of a part-based upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub offset: u64,
    pub size: u64,
    /// Computed when the client or dialect asked for it.
    pub sha256: Option<String>,
    pub sha1: Option<String>,
    pub md5: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub session_id: String,
    pub path: SpacePath,
    pub length: Length,
    pub part_size: u64,
    pub state: UploadState,
    /// Whole-file SHA-256 the client promised at creation (hex), checked at commit.
    pub expected_sha256: Option<String>,
    /// Whole-file digests to keep besides SHA-256 (computed as the bytes
    /// arrive and recorded with the file), for dialects that report them.
    pub whole_digests: Vec<DigestAlgo>,
    pub content_type: Option<String>,
    /// Free-form JSON text supplied by the client: the user's metadata,
    /// which the file keeps and user-facing APIs show.
    pub metadata: Option<String>,
    /// What the dialect that made the upload keeps between its requests
    /// (JSON text of its own shape, e.g. tus's `Upload-Metadata` verbatim
    /// and concatenation, Vault's path as sent, UCloud's `modifiedAt`):
    /// never shown as metadata; the file keeps it (`FileRecord::dialect_state`).
    pub dialect_state: Option<String>,
    pub received: RangeSet,
    pub parts: BTreeMap<u32, Part>,
    /// Where the commit put (or is putting) the file.
    pub final_path: Option<SpacePath>,
    pub file_id: Option<String>,
    /// The id of a file this upload is a new version of: the commit puts
    /// the new bytes at the upload's path and moves the file there (its
    /// id kept, its old path gone), all in one step (Box's new version
    /// under a new name).
    pub replaces: Option<String>,
    /// Parts of this upload may have gone straight to the store (presigned
    /// URLs), past Ferry: its bytes are verified by reading them back at
    /// commit, never by a hash of what streamed through Ferry.
    pub direct: bool,
    /// The whole file's digests, recorded by the write that stored it
    /// whole as its final object (a small upload on a store whose whole
    /// writes are final: later writes are compared with it, never change
    /// it). A commit on any node takes them instead of reading the file
    /// back. Empty for every other upload; cleared when bytes are forgotten.
    pub sealed: Vec<Digest>,
    /// The object holding that file when its write gave it a name of its
    /// own (a write that claimed nothing: no other write uses the name,
    /// so storing it needs no condition and replaces nothing); `None`: the
    /// upload's id names it, as every other upload's bytes. Recorded and
    /// cleared with `sealed`.
    pub object: Option<String>,
}

impl Upload {
    /// The name under which the store keeps this upload's bytes:
    /// [`Upload::object`] when a write gave them one, else the upload's id.
    pub fn staged_name(&self) -> &str {
        self.object.as_deref().unwrap_or(&self.id)
    }

    pub fn plan(&self) -> PartPlan {
        PartPlan {
            part_size: self.part_size,
        }
    }

    pub fn missing(&self) -> Vec<ByteRange> {
        match self.length {
            Length::Known(n) => self.received.missing(n),
            // Unknown end: everything after the received prefix is wanted.
            Length::Deferred => {
                let mut gaps = self.received.missing(self.received.max_end());
                gaps.push(ByteRange {
                    start: self.received.max_end(),
                    end: u64::MAX,
                });
                gaps
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.length, Length::Known(n) if self.received.is_complete(n))
    }

    /// Parts fully present, whether they came as parts or as ranges.
    pub fn parts_received(&self) -> u64 {
        let Length::Known(size) = self.length else {
            return self.parts.len() as u64;
        };
        let plan = self.plan();
        (1..=plan.total_parts(size))
            .filter(|&n| {
                plan.part_range(n, self.length)
                    .and_then(|(a, b)| ByteRange::new(a, b))
                    .is_some_and(|r| self.received.covers(&r))
            })
            .count() as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub space: SpaceName,
    pub path: SpacePath,
    pub size: u64,
    pub sha256: String,
    pub sha1: Option<String>,
    pub md5: Option<String>,
    pub content_type: Option<String>,
    pub owner: String,
    pub created_at: Millis,
    pub metadata: Option<String>,
    /// The dialect state of the upload that made the file
    /// (`Upload::dialect_state`), e.g. what UCloud needs to recognise an
    /// identical copy; never shown as metadata.
    pub dialect_state: Option<String>,
    /// When the file is deleted (a file of a `files_expire` session);
    /// `None`: kept until deleted.
    pub expires_at: Option<Millis>,
    /// The object holding the bytes, on a store that names files by id
    /// (object storage); `None` where the store keeps files at their paths.
    pub object: Option<String>,
}

impl FileRecord {
    pub fn is_expired_at(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_sessions_take_bytes() {
        assert!(SessionState::Open.check_writable().is_ok());
        assert_eq!(
            SessionState::Expired.check_writable(),
            Err(StateError::Expired)
        );
        assert_eq!(
            SessionState::Aborted.check_writable(),
            Err(StateError::Aborted)
        );
        assert!(UploadState::Skipped.check_writable().is_err());
        assert_eq!("committing".parse(), Ok(SessionState::Committing));
        assert!("closed".parse::<SessionState>().is_err());
    }

    fn upload(length: Length, part_size: u64, ranges: &[(u64, u64)]) -> Upload {
        Upload {
            id: "u".into(),
            session_id: "s".into(),
            path: SpacePath::parse("f").unwrap(),
            length,
            part_size,
            state: UploadState::Open,
            expected_sha256: None,
            whole_digests: Vec::new(),
            content_type: None,
            metadata: None,
            received: RangeSet::from_ranges(
                ranges.iter().map(|&(a, b)| ByteRange::new(a, b).unwrap()),
            ),
            parts: BTreeMap::new(),
            final_path: None,
            file_id: None,
            replaces: None,
            direct: false,
            dialect_state: None,
            sealed: Vec::new(),
            object: None,
        }
    }

    #[test]
    fn parts_received_counts_covered_parts() {
        let u = upload(Length::Known(25), 10, &[(0, 10), (12, 25)]);
        assert_eq!(u.parts_received(), 1 + 1);
        assert!(!u.is_complete());
        let u = upload(Length::Known(25), 10, &[(0, 25)]);
        assert_eq!(u.parts_received(), 3);
        assert!(u.is_complete());
        let u = upload(Length::Known(0), 10, &[]);
        assert!(u.is_complete());
    }

    #[test]
    fn deferred_length_is_never_complete() {
        let u = upload(Length::Deferred, 10, &[(0, 10)]);
        assert!(!u.is_complete());
        assert_eq!(u.missing().last().unwrap().start, 10);
    }

    const SESSION_STATES: [SessionState; 6] = [
        SessionState::Open,
        SessionState::Committing,
        SessionState::Committed,
        SessionState::Aborted,
        SessionState::Expired,
        SessionState::Failed,
    ];
    const UPLOAD_STATES: [UploadState; 5] = [
        UploadState::Open,
        UploadState::Committing,
        UploadState::Committed,
        UploadState::Skipped,
        UploadState::Aborted,
    ];

    #[test]
    fn session_transition_table() {
        use SessionState::*;
        // Each row: from, then every state it may become besides itself.
        let legal: &[(SessionState, &[SessionState])] = &[
            (Open, &[Committing, Committed, Aborted, Expired, Failed]),
            (Committing, &[Committed, Open, Failed]),
            (Committed, &[]),
            (Aborted, &[]),
            (Expired, &[]),
            (Failed, &[]),
        ];
        for &(from, tos) in legal {
            for to in SESSION_STATES {
                let ok = from == to || tos.contains(&to);
                assert_eq!(from.can_become(to), ok, "{from} -> {to}");
                assert_eq!(
                    from.transition(to),
                    if ok {
                        Ok(to)
                    } else {
                        Err(TransitionError::Session { from, to })
                    }
                );
            }
        }
    }

    #[test]
    fn upload_transition_table() {
        use UploadState::*;
        let legal: &[(UploadState, &[UploadState])] = &[
            (Open, &[Committing, Skipped, Aborted]),
            (Committing, &[Committed, Skipped, Open, Aborted]),
            (Committed, &[]),
            (Skipped, &[]),
            (Aborted, &[]),
        ];
        for &(from, tos) in legal {
            for to in UPLOAD_STATES {
                let ok = from == to || tos.contains(&to);
                assert_eq!(from.can_become(to), ok, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), ok);
            }
        }
        assert_eq!(
            Committed.transition(Open),
            Err(TransitionError::Upload {
                from: Committed,
                to: Open
            })
        );
    }

    #[test]
    fn a_session_settles_only_when_nothing_is_open() {
        use UploadState::*;
        assert_eq!(
            SessionState::settled(false, [Committed, Aborted]),
            Some(SessionState::Committed)
        );
        assert_eq!(
            SessionState::settled(false, [Skipped]),
            Some(SessionState::Committed)
        );
        assert_eq!(
            SessionState::settled(false, [Aborted, Aborted]),
            Some(SessionState::Aborted)
        );
        assert_eq!(SessionState::settled(false, [Committed, Open]), None);
        assert_eq!(SessionState::settled(false, [Committing]), None);
        assert_eq!(SessionState::settled(false, []), None);
        assert_eq!(SessionState::settled(true, [Committed]), None);
    }

    proptest::proptest! {
        /// Whatever changes are asked for, following only the legal ones:
        /// a final state is never left, the lifecycle never returns to
        /// `open` from a final state, and the settled state of a session
        /// is always one it may become from `open`.
        #[test]
        fn the_lifecycle_never_leaves_a_final_state(
            asks in proptest::collection::vec((0usize..6, 0usize..5), 0..40)
        ) {
            let mut s = SessionState::Open;
            let mut u = UploadState::Open;
            for (si, ui) in asks {
                let (s_to, u_to) = (SESSION_STATES[si], UPLOAD_STATES[ui]);
                let s_was_final = s.is_final();
                let u_was_final = !matches!(u, UploadState::Open | UploadState::Committing);
                if let Ok(next) = s.transition(s_to) {
                    proptest::prop_assert!(!s_was_final || next == s);
                    s = next;
                }
                if let Ok(next) = u.transition(u_to) {
                    proptest::prop_assert!(!u_was_final || next == u);
                    u = next;
                }
                if let Some(st) = SessionState::settled(false, [u]) {
                    proptest::prop_assert!(SessionState::Open.can_become(st));
                }
            }
        }
    }
}
