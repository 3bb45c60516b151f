//! The OpenAPI document, generated from the handlers' annotations.

use super::model::*;
use super::{files, sessions, users};
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferry native API", version = "1", description = "Resumable upload sessions: create, send parts or ranges, commit atomically."),
    paths(
        users::me, users::create_user, users::create_token, users::revoke_token, users::create_space,
        users::list_users, users::set_user_limits, users::list_tokens, users::list_spaces,
        users::put_member, users::delete_member, users::activity,
        sessions::create, sessions::list, sessions::get_session, sessions::commit_session,
        sessions::abort_session, sessions::write_part, sessions::presign_part, sessions::write_range, sessions::status,
        sessions::list_parts, sessions::commit_upload, sessions::abort_upload,
        files::download, files::put, files::delete, files::list, files::move_path,
    ),
    components(schemas(ErrorJson, ErrorDetail)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
