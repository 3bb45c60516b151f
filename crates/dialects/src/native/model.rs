//! The native API's JSON shapes, and their conversion from engine records.

use ferry_core::{ByteRange, FileRecord, Session, Upload};
use ferry_engine::{Engine, SessionView, UploadView};
use ferry_http::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Inclusive `[first, last]` pairs; `last` is null for an open end (a
/// deferred length).
pub fn inclusive(ranges: &[ByteRange]) -> Vec<(u64, Option<u64>)> {
    ranges
        .iter()
        .map(|r| (r.start, (r.end != u64::MAX).then(|| r.last())))
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct FileJson {
    pub id: String,
    pub space: String,
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

impl From<&FileRecord> for FileJson {
    fn from(f: &FileRecord) -> Self {
        FileJson {
            id: f.id.clone(),
            space: f.space.to_string(),
            path: f.path.to_string(),
            size: f.size,
            sha256: f.sha256.clone(),
            created_at: rfc3339(f.created_at),
            content_type: f.content_type.clone(),
            metadata: f
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UploadJson {
    pub id: String,
    /// Requested path; after commit, the final path (rename may change it).
    pub path: String,
    /// Null while the length is deferred.
    pub size: Option<u64>,
    pub part_size: u64,
    pub total_parts: Option<u64>,
    pub received_bytes: u64,
    /// Inclusive byte ranges still needed.
    #[schema(value_type = Vec<Vec<Option<u64>>>)]
    pub missing: Vec<(u64, Option<u64>)>,
    pub parts_received: u64,
    /// Signed URL: accepts writes and status reads without a token.
    pub url: String,
    pub state: String,
    pub file: Option<FileJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

pub fn upload_json(engine: &Engine, base: &str, v: &UploadView) -> UploadJson {
    let u: &Upload = &v.upload;
    UploadJson {
        id: u.id.clone(),
        path: u.final_path.as_ref().unwrap_or(&u.path).to_string(),
        size: u.length.known(),
        part_size: u.part_size,
        total_parts: u.length.known().map(|s| u.plan().total_parts(s)),
        received_bytes: if u.state.is_done() {
            u.length.known().unwrap_or(0)
        } else {
            u.received.len()
        },
        missing: if u.state.is_done() {
            Vec::new()
        } else {
            inclusive(&u.missing())
        },
        parts_received: if u.state.is_done() {
            u.length.known().map_or(0, |s| u.plan().total_parts(s))
        } else {
            u.parts_received()
        },
        url: format!(
            "{base}/v1/uploads/{}?sig={}",
            u.id,
            engine.sign_upload(&u.id)
        ),
        state: u.state.to_string(),
        file: v.file.as_ref().map(FileJson::from),
        sha256: u.expected_sha256.clone(),
        content_type: u.content_type.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionJson {
    pub id: String,
    pub state: String,
    pub owner: String,
    pub space: String,
    pub conflict: String,
    pub created_at: String,
    pub expires_at: String,
    pub auto_commit: bool,
    pub dialect: String,
    /// Why the session failed, when its state is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploads: Option<Vec<UploadJson>>,
}

pub fn session_json(s: &Session, uploads: Option<Vec<UploadJson>>) -> SessionJson {
    SessionJson {
        id: s.id.clone(),
        state: s.state.to_string(),
        owner: s.owner.clone(),
        space: s.space.to_string(),
        conflict: s.conflict.to_string(),
        created_at: rfc3339(s.created_at),
        expires_at: rfc3339(s.expires_at),
        auto_commit: s.auto_commit,
        dialect: s.dialect.clone(),
        failure: s.failure.clone(),
        uploads,
    }
}

pub fn session_view_json(engine: &Engine, base: &str, v: &SessionView) -> SessionJson {
    let ups = v
        .uploads
        .iter()
        .map(|u| upload_json(engine, base, u))
        .collect();
    session_json(&v.session, Some(ups))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewUploadBody {
    pub path: String,
    /// Omit to defer the length (announce it later in a Content-Range total).
    pub size: Option<u64>,
    /// Hex SHA-256 of the whole file, checked at commit.
    pub sha256: Option<String>,
    pub part_size: Option<u64>,
    pub content_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct CreateSessionBody {
    /// Default: the caller's home space.
    pub space: Option<String>,
    /// fail | replace | rename | skip (default fail).
    pub conflict: Option<String>,
    /// Seconds until the session expires.
    pub expires_in: Option<u64>,
    pub auto_commit: Option<bool>,
    pub uploads: Option<Vec<NewUploadBody>>,
    /// Shortcut for one upload: `path` and `size` at the top level.
    pub path: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub part_size: Option<u64>,
    pub content_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct DigestBody {
    pub sha256: Option<String>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct CommitSessionBody {
    #[serde(default)]
    pub uploads: HashMap<String, DigestBody>,
}

#[derive(Serialize, ToSchema)]
pub struct PartJson {
    pub part: u32,
    pub offset: u64,
    pub size: u64,
    /// Present when the part was sent with a `Content-Digest: sha-256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// A request that sends one part straight to object storage.
#[derive(Serialize, ToSchema)]
pub struct PresignJson {
    pub part: u32,
    pub offset: u64,
    pub size: u64,
    /// `PUT`.
    pub method: String,
    pub url: String,
    /// Headers to send with the part, as given (a signed checksum among them).
    pub headers: std::collections::BTreeMap<String, String>,
    /// RFC 3339; never after the session's expiry.
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct PartsJson {
    pub parts: Vec<PartJson>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsJson {
    pub sessions: Vec<SessionJson>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryJson {
    pub name: String,
    /// file | folder
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ListJson {
    pub entries: Vec<EntryJson>,
}

#[derive(Serialize, ToSchema)]
pub struct MeJson {
    pub user: String,
    pub admin: bool,
    pub home_space: String,
    pub quota_bytes: Option<u64>,
    pub used_bytes: u64,
    pub max_open_sessions: u64,
    /// Every space the caller can reach, with its access: `owner` (its
    /// own, or any for an admin), `write` or `read`.
    pub spaces: Vec<MySpaceJson>,
}

#[derive(Serialize, ToSchema)]
pub struct MySpaceJson {
    pub name: String,
    pub access: String,
}

/// A user as admins see them.
#[derive(Serialize, ToSchema)]
pub struct UserJson {
    pub name: String,
    pub admin: bool,
    pub home_space: String,
    /// `null`: the server's default.
    pub quota_bytes: Option<u64>,
    /// `null`: the server's default.
    pub max_open_sessions: Option<u32>,
    pub used_bytes: u64,
    pub open_sessions: u64,
    pub created_at: String,
}

impl From<ferry_engine::UserView> for UserJson {
    fn from(v: ferry_engine::UserView) -> UserJson {
        UserJson {
            name: v.user.name,
            admin: v.user.admin,
            home_space: v.user.home_space.to_string(),
            quota_bytes: v.user.quota_bytes,
            max_open_sessions: v.user.max_open_sessions,
            used_bytes: v.usage.committed,
            open_sessions: v.open_sessions,
            created_at: rfc3339(v.user.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UsersJson {
    pub users: Vec<UserJson>,
}

/// A field that may be absent (left as it is) or `null` (back to the
/// default): `None`, `Some(None)`, `Some(Some(v))`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserLimitsBody {
    /// Bytes, or `null` for the server's default; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub quota_bytes: Option<Option<u64>>,
    /// Sessions, or `null` for the server's default; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub max_open_sessions: Option<Option<u32>>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenInfoJson {
    pub id: String,
    pub created_at: String,
    pub revoked: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TokensJson {
    pub tokens: Vec<TokenInfoJson>,
}

#[derive(Serialize, ToSchema)]
pub struct SpacesJson {
    pub spaces: Vec<SpaceJson>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct MemberBody {
    /// "read" | "write"
    pub access: String,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct MoveBody {
    /// A file, or a folder (every file below it moves).
    pub from: String,
    /// Its new path.
    pub to: String,
}

#[derive(Serialize, ToSchema)]
pub struct MovedJson {
    /// How many files moved.
    pub moved: usize,
}

#[derive(Serialize, ToSchema)]
pub struct SampleJson {
    /// When the second ended (ms since the epoch).
    pub t: i64,
    pub bytes_received: u64,
    pub files_committed: u64,
    pub uploads_in_flight: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ActivityJson {
    pub interval_ms: u64,
    /// Now, on this node (ms since the epoch).
    pub now: i64,
    /// The last ten minutes of this node, oldest first.
    pub samples: Vec<SampleJson>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewUserBody {
    pub name: String,
    pub admin: Option<bool>,
    pub quota_bytes: Option<u64>,
    pub max_open_sessions: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct NewUserJson {
    pub name: String,
    pub token: String,
    pub home_space: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenJson {
    pub id: String,
    pub token: String,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewSpaceBody {
    pub name: String,
    /// user → "read" | "write"
    #[serde(default)]
    pub members: HashMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct SpaceJson {
    pub name: String,
    /// user → "read" | "write"
    pub members: HashMap<String, String>,
    /// The user whose home it is, if any.
    pub owner: Option<String>,
    pub created_at: String,
}

impl From<ferry_meta::SpaceRecord> for SpaceJson {
    fn from(rec: ferry_meta::SpaceRecord) -> SpaceJson {
        SpaceJson {
            name: rec.name.to_string(),
            members: rec
                .members
                .into_iter()
                .map(|(u, a)| (u, a.to_string()))
                .collect(),
            owner: rec.owner,
            created_at: rfc3339(rec.created_at),
        }
    }
}

/// The error body of every failed call.
#[derive(Serialize, ToSchema)]
pub struct ErrorJson {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case: invalid_path, unauthenticated, not_found, already_exists, …
    pub code: String,
    /// A sentence naming the problem and the limit involved.
    pub message: String,
}
