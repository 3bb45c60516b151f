//! Users, tokens, spaces and access rules.

use crate::auth::{self, Caller, Principal};
use crate::{Engine, EngineError, Result, now_ms};
use ferry_core::{Access, SpaceName, User};
use ferry_meta::{MetaError, SpaceRecord, TokenRecord, Usage};

/// What `GET /v1/me` shows.
#[derive(Clone, Debug)]
pub struct Me {
    pub user: User,
    pub usage: Usage,
    pub quota_bytes: Option<u64>,
    pub max_open_sessions: u64,
}

/// A user as admins see them.
#[derive(Clone, Debug)]
pub struct UserView {
    pub user: User,
    pub usage: Usage,
    pub open_sessions: u64,
}

#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub name: String,
    pub admin: bool,
    pub quota_bytes: Option<u64>,
    pub max_open_sessions: Option<u32>,
}

pub(crate) fn principal(caller: &Caller) -> Result<&Principal> {
    match caller {
        Caller::User(p) => Ok(p),
        Caller::Upload(_) => Err(EngineError::Unauthenticated(
            "a signed upload URL only grants writes, status, commit and abort of its own upload"
                .into(),
        )),
        Caller::Session(_) => Err(EngineError::Unauthenticated(
            "a session token only grants access to its own session".into(),
        )),
    }
}

pub(crate) fn require_admin(caller: &Caller) -> Result<&Principal> {
    let p = principal(caller)?;
    if !p.admin {
        return Err(EngineError::Forbidden("this needs an admin token".into()));
    }
    Ok(p)
}

impl Engine {
    /// Turns a bearer token into a caller.
    pub async fn authenticate(&self, token: &str) -> Result<Caller> {
        let bad = || EngineError::Unauthenticated("the token is not valid".into());
        let id = auth::token_id(token);
        let hash = auth::token_hash(token);
        let (cached, epoch) = {
            let t = self.inner.tokens.lock().unwrap();
            (t.0.get(&id).cloned(), t.1)
        };
        if let Some((known, p)) = cached {
            return if auth::hashes_match(&known, &hash) {
                Ok(Caller::User(p))
            } else {
                Err(bad())
            };
        }
        let rec = self.inner.meta.get_token(&id).await?.ok_or_else(bad)?;
        if rec.revoked || !auth::hashes_match(&rec.secret_hash, &hash) {
            return Err(bad());
        }
        let user = self.inner.meta.get_user(&rec.user).await?.ok_or_else(bad)?;
        let p = Principal {
            user: user.name,
            admin: user.admin,
        };
        let mut cache = self.inner.tokens.lock().unwrap();
        if cache.1 == epoch {
            if cache.0.len() >= 10_000 {
                cache.0.clear();
            }
            cache.0.insert(id, (rec.secret_hash, p.clone()));
        }
        Ok(Caller::User(p))
    }

    /// On an empty metadata store, creates the `admin` user. Its token is
    /// `preset` when given, else a fresh one, which is returned (once).
    /// With a preset token on a store that has users, makes sure that token
    /// belongs to `admin`.
    pub async fn bootstrap(&self, preset: Option<&str>) -> Result<Option<String>> {
        let meta = &self.inner.meta;
        let created = if meta.user_count().await? == 0 {
            // Several nodes starting on one empty database race here: one
            // creates the admin, the others find it made.
            match meta
                .create_user(&User {
                    name: "admin".into(),
                    admin: true,
                    quota_bytes: None,
                    max_open_sessions: None,
                    home_space: SpaceName::parse("admin").expect("valid"),
                    created_at: now_ms(),
                })
                .await
            {
                Ok(()) => true,
                Err(ferry_meta::MetaError::AlreadyExists(_)) => false,
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        if created {
            let token = match preset {
                Some(t) => t.to_owned(),
                None => auth::new_token().1,
            };
            let record = token_record("admin", &token);
            if let Err(e) = meta.insert_token(&record).await
                // A preset token another node stored first.
                && meta.get_token(&record.id).await?.is_none()
            {
                return Err(e.into());
            }
            return Ok(preset.is_none().then_some(token));
        }
        if let Some(t) = preset
            && meta.get_token(&auth::token_id(t)).await?.is_none()
        {
            let record = token_record("admin", t);
            if let Err(e) = meta.insert_token(&record).await
                // Unless another node stored it first.
                && meta.get_token(&record.id).await?.is_none()
            {
                return Err(e.into());
            }
        }
        Ok(None)
    }

    async fn store_token(&self, user: &str, token: &str) -> Result<String> {
        let record = token_record(user, token);
        self.inner.meta.insert_token(&record).await?;
        Ok(record.id)
    }

    /// The caller's home space (a cached read; no usage is computed).
    pub async fn home_space(&self, caller: &Caller) -> Result<ferry_core::SpaceName> {
        let p = principal(caller)?;
        Ok(self
            .user(&p.user)
            .await?
            .ok_or_else(|| EngineError::Unauthenticated("the user no longer exists".into()))?
            .home_space)
    }

    pub async fn me(&self, caller: &Caller) -> Result<Me> {
        let p = principal(caller)?;
        let user = self
            .user(&p.user)
            .await?
            .ok_or_else(|| EngineError::Unauthenticated("the user no longer exists".into()))?;
        let usage = self.inner.meta.usage(&p.user).await?;
        Ok(Me {
            quota_bytes: user.quota_bytes.or(self.inner.limits.default_quota),
            max_open_sessions: user
                .max_open_sessions
                .unwrap_or(self.inner.limits.max_open_sessions)
                .into(),
            user,
            usage,
        })
    }

    /// Creates a user with a home space of the same name; returns a token.
    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> Result<(User, String)> {
        require_admin(caller)?;
        let home = SpaceName::parse(&new.name).map_err(|_| {
            EngineError::invalid(
                "invalid_body",
                format!(
                    "{:?} is not a valid user name: use 1 to 64 characters from a-z, 0-9, '.', '_' and '-'",
                    new.name
                ),
            )
        })?;
        let user = User {
            name: new.name,
            admin: new.admin,
            quota_bytes: new.quota_bytes,
            max_open_sessions: new.max_open_sessions,
            home_space: home,
            created_at: now_ms(),
        };
        self.inner
            .meta
            .create_user(&user)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => EngineError::AlreadyExists {
                    path: format!("user or space {:?}", user.name),
                },
                e => e.into(),
            })?;
        let token = auth::new_token().1;
        self.store_token(&user.name, &token).await?;
        Ok((user, token))
    }

    /// A new token for an existing user: `(token_id, token)`.
    pub async fn create_token(&self, caller: &Caller, user: &str) -> Result<(String, String)> {
        require_admin(caller)?;
        if self.inner.meta.get_user(user).await?.is_none() {
            return Err(EngineError::NotFound(format!("no user {user:?}")));
        }
        let token = auth::new_token().1;
        let id = self.store_token(user, &token).await?;
        Ok((id, token))
    }

    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<()> {
        require_admin(caller)?;
        let revoked = self.inner.meta.revoke_token(id).await?;
        {
            let mut cache = self.inner.tokens.lock().unwrap();
            cache.0.remove(id);
            cache.1 += 1;
        }
        if !revoked {
            return Err(EngineError::NotFound(format!("no token {id:?}")));
        }
        Ok(())
    }

    pub async fn create_space(
        &self,
        caller: &Caller,
        name: &str,
        members: Vec<(String, Access)>,
    ) -> Result<SpaceRecord> {
        require_admin(caller)?;
        let name = SpaceName::parse(name)
            .map_err(|e| EngineError::invalid("invalid_body", e.to_string()))?;
        for (user, _) in &members {
            if self.inner.meta.get_user(user).await?.is_none() {
                return Err(EngineError::NotFound(format!("no user {user:?}")));
            }
        }
        let rec = SpaceRecord {
            name,
            owner: None,
            members,
            created_at: now_ms(),
        };
        self.inner
            .meta
            .create_space(&rec)
            .await
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => EngineError::AlreadyExists {
                    path: format!("space {:?}", rec.name.as_str()),
                },
                e => e.into(),
            })?;
        Ok(rec)
    }

    /// Every user with their usage and open sessions (admins only).
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<UserView>> {
        require_admin(caller)?;
        let meta = &self.inner.meta;
        let mut out = Vec::new();
        for user in meta.list_users().await? {
            out.push(UserView {
                usage: meta.usage(&user.name).await?,
                open_sessions: meta.open_session_count(&user.name).await?,
                user,
            });
        }
        Ok(out)
    }

    /// Changes a user's quota and open-sessions limit: `None` leaves one as
    /// it is, `Some(None)` gives it the server's default; every node sees
    /// the change at once.
    pub async fn set_user_limits(
        &self,
        caller: &Caller,
        name: &str,
        quota_bytes: Option<Option<u64>>,
        max_open_sessions: Option<Option<u32>>,
    ) -> Result<UserView> {
        require_admin(caller)?;
        let meta = &self.inner.meta;
        let not_found = || EngineError::NotFound(format!("no user {name:?}"));
        let now = meta.get_user(name).await?.ok_or_else(not_found)?;
        let user = ferry_core::User {
            quota_bytes: quota_bytes.unwrap_or(now.quota_bytes),
            max_open_sessions: max_open_sessions.unwrap_or(now.max_open_sessions),
            ..now
        };
        let found = meta
            .set_user_limits(name, user.quota_bytes, user.max_open_sessions)
            .await?;
        self.inner.users.lock().unwrap().remove(name);
        if !found {
            return Err(not_found());
        }
        Ok(UserView {
            usage: meta.usage(name).await?,
            open_sessions: meta.open_session_count(name).await?,
            user,
        })
    }

    /// A user's tokens, oldest first (their secrets are never kept).
    pub async fn list_tokens(&self, caller: &Caller, user: &str) -> Result<Vec<TokenRecord>> {
        require_admin(caller)?;
        if self.inner.meta.get_user(user).await?.is_none() {
            return Err(EngineError::NotFound(format!("no user {user:?}")));
        }
        Ok(self.inner.meta.list_tokens(user).await?)
    }

    /// Every space with its members (admins only).
    pub async fn list_spaces(&self, caller: &Caller) -> Result<Vec<SpaceRecord>> {
        require_admin(caller)?;
        Ok(self.inner.meta.list_spaces().await?)
    }

    /// The spaces the caller can reach, with the access it has to each.
    pub async fn my_spaces(&self, caller: &Caller) -> Result<Vec<(SpaceRecord, Access)>> {
        let p = principal(caller)?;
        let mut out = Vec::new();
        for space in self.inner.meta.list_spaces().await? {
            let access = if p.admin || space.owner.as_deref() == Some(p.user.as_str()) {
                Some(Access::Write)
            } else {
                space
                    .members
                    .iter()
                    .find(|(u, _)| *u == p.user)
                    .map(|(_, a)| *a)
            };
            if let Some(a) = access {
                out.push((space, a));
            }
        }
        Ok(out)
    }

    /// Gives `user` `access` to `space`, or takes it away (`None`).
    pub async fn set_member(
        &self,
        caller: &Caller,
        space: &str,
        user: &str,
        access: Option<Access>,
    ) -> Result<SpaceRecord> {
        require_admin(caller)?;
        let name = SpaceName::parse(space)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        let missing = || EngineError::NotFound(format!("no space {space:?}"));
        if access.is_some() && self.inner.meta.get_user(user).await?.is_none() {
            return Err(EngineError::NotFound(format!("no user {user:?}")));
        }
        let found = self.inner.meta.set_member(&name, user, access).await?;
        self.inner.spaces.lock().unwrap().remove(&name);
        if !found {
            return Err(missing());
        }
        self.inner.meta.get_space(&name).await?.ok_or_else(missing)
    }

    /// The access `p` has to `space`: `NotFound` for a space that does not
    /// exist, `Forbidden` when it exists but `p` is not a member.
    /// A user record (cached; a change of limits empties the caches of
    /// every node).
    pub(crate) async fn user(&self, name: &str) -> Result<Option<User>> {
        if let Some(u) = self.inner.users.lock().unwrap().get(name) {
            return Ok(Some(u.clone()));
        }
        let found = self.inner.meta.get_user(name).await?;
        if let Some(u) = &found {
            self.inner
                .users
                .lock()
                .unwrap()
                .insert(name.to_owned(), u.clone());
        }
        Ok(found)
    }

    pub(crate) async fn access(&self, p: &Principal, space: &SpaceName) -> Result<Access> {
        let cached = self.inner.spaces.lock().unwrap().get(space).cloned();
        let rec = match cached {
            Some(r) => r,
            None => {
                let r = self.inner.meta.get_space(space).await?.ok_or_else(|| {
                    EngineError::NotFound(format!("no space {:?}", space.as_str()))
                })?;
                self.inner
                    .spaces
                    .lock()
                    .unwrap()
                    .insert(space.clone(), r.clone());
                r
            }
        };
        if p.admin || rec.owner.as_deref() == Some(p.user.as_str()) {
            return Ok(Access::Write);
        }
        rec.members
            .iter()
            .find(|(u, _)| *u == p.user)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                EngineError::Forbidden(format!(
                    "{} has no access to space {:?}",
                    p.user,
                    space.as_str()
                ))
            })
    }

    pub(crate) async fn require_write(&self, p: &Principal, space: &SpaceName) -> Result<()> {
        match self.access(p, space).await? {
            Access::Write => Ok(()),
            Access::Read => Err(EngineError::Forbidden(format!(
                "{} may read but not write space {:?}",
                p.user,
                space.as_str()
            ))),
        }
    }
}

/// The stored form of `token` for `user`: its id and a hash of its secret.
fn token_record(user: &str, token: &str) -> TokenRecord {
    TokenRecord {
        id: auth::token_id(token),
        user: user.to_owned(),
        secret_hash: auth::token_hash(token),
        created_at: now_ms(),
        revoked: false,
    }
}
