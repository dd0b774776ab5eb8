//! The OpenAPI document, served at `/api/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::errors::{ErrorBody, ErrorDetail};
use crate::models::*;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = api.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "zt-platform backend",
        description = "Users (argon2id, HS256 JWTs) on PostgreSQL with rotating credentials; per-user GitHub tokens in OpenBao through the zt-sidecar. Every error is {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        crate::handlers::auth::register,
        crate::handlers::auth::login,
        crate::handlers::auth::logout,
        crate::handlers::auth::me,
        crate::handlers::github::configure,
        crate::handlers::github::status,
        crate::handlers::github::delete_token,
        crate::handlers::github::repos,
        crate::handlers::github::user,
        crate::handlers::zt::status,
        crate::handlers::health::healthz,
        crate::handlers::health::readyz,
        crate::handlers::health::metrics,
        document,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, User, RegisterRequest, RegisterResponse, LoginRequest, LoginResponse,
        ConfigureRequest, ConfigureResponse, GithubUser, GithubStatus, Repo, ReposResponse,
        ZtStatus, DatabaseInfo, BackendInfo,
    )),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
