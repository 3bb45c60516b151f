//! `/v1/me` and `/v1/admin/…`.

use super::model::*;
use super::{ApiError, ApiResult, Auth, NativeState, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ferry_core::Access;
use ferry_engine::NewUser;

#[utoipa::path(get, path = "/v1/me", tag = "users",
    responses((status = 200, body = MeJson), (status = 401, body = ErrorJson)))]
pub async fn me(State(st): State<NativeState>, Auth(c): Auth) -> ApiResult<Json<MeJson>> {
    let me = st.engine.me(&c).await?;
    let spaces = st
        .engine
        .my_spaces(&c)
        .await?
        .into_iter()
        .map(|(rec, access)| MySpaceJson {
            access: if me.user.admin || rec.owner.as_deref() == Some(me.user.name.as_str()) {
                "owner".into()
            } else {
                access.to_string()
            },
            name: rec.name.to_string(),
        })
        .collect();
    Ok(Json(MeJson {
        user: me.user.name,
        admin: me.user.admin,
        home_space: me.user.home_space.to_string(),
        quota_bytes: me.quota_bytes,
        used_bytes: me.usage.committed,
        max_open_sessions: me.max_open_sessions,
        spaces,
    }))
}

#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", request_body = NewUserBody,
    responses((status = 201, body = NewUserJson), (status = 403, body = ErrorJson), (status = 409, body = ErrorJson)))]
pub async fn create_user(
    State(st): State<NativeState>,
    Auth(c): Auth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<NewUserJson>)> {
    let b: NewUserBody = json_body(&body)?;
    let (user, token) = st
        .engine
        .create_user(
            &c,
            NewUser {
                name: b.name,
                admin: b.admin.unwrap_or(false),
                quota_bytes: b.quota_bytes,
                max_open_sessions: b.max_open_sessions,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewUserJson {
            name: user.name,
            token,
            home_space: user.home_space.to_string(),
        }),
    ))
}

#[utoipa::path(post, path = "/v1/admin/users/{name}/tokens", tag = "admin",
    params(("name" = String, Path)),
    responses((status = 201, body = TokenJson), (status = 404, body = ErrorJson)))]
pub async fn create_token(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<TokenJson>)> {
    let (id, token) = st.engine.create_token(&c, &name).await?;
    Ok((StatusCode::CREATED, Json(TokenJson { id, token })))
}

#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "admin",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorJson)))]
pub async fn revoke_token(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.engine.revoke_token(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/spaces", tag = "admin", request_body = NewSpaceBody,
    responses((status = 201, body = SpaceJson), (status = 409, body = ErrorJson)))]
pub async fn create_space(
    State(st): State<NativeState>,
    Auth(c): Auth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SpaceJson>)> {
    let b: NewSpaceBody = json_body(&body)?;
    let mut members = Vec::new();
    for (user, access) in &b.members {
        members.push((user.clone(), access_of(user, access)?));
    }
    let rec = st.engine.create_space(&c, &b.name, members).await?;
    Ok((StatusCode::CREATED, Json(rec.into())))
}

fn access_of(user: &str, access: &str) -> ApiResult<Access> {
    access.parse().map_err(|_| {
        ApiError::invalid(
            "invalid_body",
            format!("member {user:?}: access must be \"read\" or \"write\", not {access:?}"),
        )
    })
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    responses((status = 200, body = UsersJson), (status = 403, body = ErrorJson)))]
pub async fn list_users(
    State(st): State<NativeState>,
    Auth(c): Auth,
) -> ApiResult<Json<UsersJson>> {
    let users = st.engine.list_users(&c).await?;
    Ok(Json(UsersJson {
        users: users.into_iter().map(UserJson::from).collect(),
    }))
}

#[utoipa::path(patch, path = "/v1/admin/users/{name}", tag = "admin", request_body = UserLimitsBody,
    params(("name" = String, Path)),
    responses((status = 200, body = UserJson), (status = 404, body = ErrorJson)))]
pub async fn set_user_limits(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<UserJson>> {
    let b: UserLimitsBody = json_body(&body)?;
    let user = st
        .engine
        .set_user_limits(&c, &name, b.quota_bytes, b.max_open_sessions)
        .await?;
    Ok(Json(user.into()))
}

#[utoipa::path(get, path = "/v1/admin/users/{name}/tokens", tag = "admin",
    params(("name" = String, Path)),
    responses((status = 200, body = TokensJson), (status = 404, body = ErrorJson)))]
pub async fn list_tokens(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<TokensJson>> {
    let tokens = st.engine.list_tokens(&c, &name).await?;
    Ok(Json(TokensJson {
        tokens: tokens
            .into_iter()
            .map(|t| TokenInfoJson {
                id: t.id,
                created_at: ferry_http::rfc3339(t.created_at),
                revoked: t.revoked,
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/spaces", tag = "admin",
    responses((status = 200, body = SpacesJson), (status = 403, body = ErrorJson)))]
pub async fn list_spaces(
    State(st): State<NativeState>,
    Auth(c): Auth,
) -> ApiResult<Json<SpacesJson>> {
    let spaces = st.engine.list_spaces(&c).await?;
    Ok(Json(SpacesJson {
        spaces: spaces.into_iter().map(SpaceJson::from).collect(),
    }))
}

#[utoipa::path(put, path = "/v1/admin/spaces/{name}/members/{user}", tag = "admin", request_body = MemberBody,
    params(("name" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = SpaceJson), (status = 404, body = ErrorJson)))]
pub async fn put_member(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path((name, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<SpaceJson>> {
    let b: MemberBody = json_body(&body)?;
    let access = access_of(&user, &b.access)?;
    let rec = st.engine.set_member(&c, &name, &user, Some(access)).await?;
    Ok(Json(rec.into()))
}

#[utoipa::path(delete, path = "/v1/admin/spaces/{name}/members/{user}", tag = "admin",
    params(("name" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = SpaceJson), (status = 404, body = ErrorJson)))]
pub async fn delete_member(
    State(st): State<NativeState>,
    Auth(c): Auth,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult<Json<SpaceJson>> {
    let rec = st.engine.set_member(&c, &name, &user, None).await?;
    Ok(Json(rec.into()))
}

#[utoipa::path(get, path = "/v1/admin/activity", tag = "admin",
    responses((status = 200, body = ActivityJson), (status = 403, body = ErrorJson)))]
pub async fn activity(
    State(st): State<NativeState>,
    Auth(c): Auth,
) -> ApiResult<Json<ActivityJson>> {
    let samples = st.engine.activity(&c)?;
    Ok(Json(ActivityJson {
        interval_ms: 1000,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        samples: samples
            .into_iter()
            .map(|s| SampleJson {
                t: s.at,
                bytes_received: s.bytes_received,
                files_committed: s.files_committed,
                uploads_in_flight: s.writes_in_flight,
            })
            .collect(),
    }))
}
