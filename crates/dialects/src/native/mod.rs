//! Ferry's own API, `/v1/…` (see NATIVE-API.md for the contract).

mod files;
pub(crate) mod model;
pub mod openapi;
mod sessions;
mod users;

use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use ferry_engine::{Caller, Engine, EngineError};
use serde::Deserialize;
use serde_json::json;

/// What the native handlers share.
#[derive(Clone)]
pub struct NativeState {
    pub engine: Engine,
    /// Base of absolute URLs handed out (no trailing slash).
    pub public_url: String,
}

/// The `/v1` routes.
pub fn router(state: NativeState) -> Router {
    let routes = Router::new()
        .route("/v1/me", get(users::me))
        .route(
            "/v1/admin/users",
            post(users::create_user).get(users::list_users),
        )
        .route("/v1/admin/users/{name}", patch(users::set_user_limits))
        .route(
            "/v1/admin/users/{name}/tokens",
            post(users::create_token).get(users::list_tokens),
        )
        .route("/v1/admin/tokens/{id}", delete(users::revoke_token))
        .route(
            "/v1/admin/spaces",
            post(users::create_space).get(users::list_spaces),
        )
        .route(
            "/v1/admin/spaces/{name}/members/{user}",
            put(users::put_member).delete(users::delete_member),
        )
        .route("/v1/admin/activity", get(users::activity))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{sid}",
            get(sessions::get_session).delete(sessions::abort_session),
        )
        .route("/v1/sessions/{sid}/commit", post(sessions::commit_session))
        .route(
            "/v1/uploads/{uid}",
            put(sessions::write_range)
                .get(sessions::status)
                .delete(sessions::abort_upload),
        )
        .route("/v1/uploads/{uid}/parts", get(sessions::list_parts))
        .route("/v1/uploads/{uid}/parts/{n}", put(sessions::write_part))
        .route(
            "/v1/uploads/{uid}/parts/{n}/presign",
            post(sessions::presign_part),
        )
        .route("/v1/uploads/{uid}/commit", post(sessions::commit_upload))
        .route(
            "/v1/spaces/{space}/files/{*path}",
            get(files::download).put(files::put).delete(files::delete),
        )
        .route("/v1/spaces/{space}/move", post(files::move_path))
        .route("/v1/spaces/{space}/list", get(files::list_root))
        .route("/v1/spaces/{space}/list/", get(files::list_root))
        .route("/v1/spaces/{space}/list/{*prefix}", get(files::list))
        .route("/v1/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    ferry_http::with_errors(routes, render_error)
}

/// The native format for an answer the framework made (a bad path
/// segment or query, a body over the limit, …).
fn render_error(
    _: &axum::http::HeaderMap,
    status: axum::http::StatusCode,
    message: String,
) -> Response {
    let body = json!({"error": {"code": ferry_http::status_code_name(status), "message": message}});
    ferry_http::rendered((status, axum::Json(body)).into_response())
}

/// Unknown routes answer in the native error format too.
pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(EngineError::NotFound(format!(
        "no route for {method} {}",
        uri.path()
    )))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = json!({"error": {"code": "method_not_allowed",
        "message": format!("{method} is not allowed on {}", uri.path())}});
    ferry_http::rendered(
        (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response(),
    )
}

/// An engine error rendered as `{"error":{"code","message",…details}}`.
pub struct ApiError(pub EngineError);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError(EngineError::invalid(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = ferry_http::status_of(&e);
        let mut body = json!({"code": e.code(), "message": ferry_http::public_message(&e)});
        match &e {
            EngineError::AlreadyExists { path } => body["path"] = json!(path),
            EngineError::Incomplete { missing } => {
                body["missing"] = json!(model::inclusive(missing))
            }
            EngineError::DigestMismatch {
                algo,
                expected,
                actual,
            } => {
                body["algorithm"] = json!(algo);
                body["expected"] = json!(expected);
                body["actual"] = json!(actual);
            }
            EngineError::TooLarge { limit, .. } => body["limit"] = json!(limit),
            EngineError::TooManySessions { limit, .. } => body["limit"] = json!(limit),
            EngineError::BodyFailed { durable, .. } => body["durable_bytes"] = json!(durable),
            _ => {}
        }
        ferry_http::rendered((status, axum::Json(json!({ "error": body }))).into_response())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A caller authenticated by bearer token.
pub struct Auth(pub Caller);

impl FromRequestParts<NativeState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &NativeState) -> Result<Self, ApiError> {
        Ok(Auth(
            ferry_http::authenticate(&state.engine, &parts.headers).await?,
        ))
    }
}

#[derive(Deserialize)]
struct SigQuery {
    sig: Option<String>,
}

/// A caller for an upload route: a bearer token, or the upload's signed
/// URL (`?sig=`) with no `Authorization` header at all.
pub struct UploadAuth(pub Caller);

impl FromRequestParts<NativeState> for UploadAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &NativeState) -> Result<Self, ApiError> {
        let Query(q) = Query::<SigQuery>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
        if let Some(sig) = q.sig {
            let uid = parts
                .uri
                .path()
                .strip_prefix("/v1/uploads/")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            return Ok(UploadAuth(state.engine.verify_upload_sig(uid, &sig)?));
        }
        Ok(UploadAuth(
            ferry_http::authenticate(&state.engine, &parts.headers).await?,
        ))
    }
}

/// Parses a JSON control body, answering 400 `invalid_body` with serde's
/// explanation when it does not fit. An empty body parses as `T::default()`.
pub(crate) fn json_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("invalid_body", format!("the JSON body does not fit: {e}")))
}
