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
    Ok(Json(MeJson {
        user: me.user.name,
        admin: me.user.admin,
        home_space: me.user.home_space.to_string(),
        quota_bytes: me.quota_bytes,
        used_bytes: me.usage.committed,
        max_open_sessions: me.max_open_sessions,
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
        let a: Access = access.parse().map_err(|_| {
            ApiError::invalid(
                "invalid_body",
                format!("member {user:?}: access must be \"read\" or \"write\", not {access:?}"),
            )
        })?;
        members.push((user.clone(), a));
    }
    let rec = st.engine.create_space(&c, &b.name, members).await?;
    Ok((
        StatusCode::CREATED,
        Json(SpaceJson {
            name: rec.name.to_string(),
            members: rec
                .members
                .into_iter()
                .map(|(u, a)| (u, a.to_string()))
                .collect(),
        }),
    ))
}
