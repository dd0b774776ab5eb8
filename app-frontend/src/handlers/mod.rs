//! Request handlers, one file per area, and the route table.

pub mod auth;
pub mod github;
pub mod zero_trust;

use actix_web::{web, HttpResponse};

use crate::errors::AppError;

/// `GET /healthz`: the process serves requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Anything without a route: the friendly 404 page.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// Every route of the site.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/static/{name}", web::get().to(crate::assets::serve))
        .service(
            web::resource("/login")
                .get(auth::login_form)
                .post(auth::login),
        )
        .service(
            web::resource("/register")
                .get(auth::register_form)
                .post(auth::register),
        )
        .service(
            web::resource("/logout")
                .get(auth::logout_form)
                .post(auth::logout),
        )
        .route("/", web::get().to(github::dashboard))
        .service(
            web::resource("/github")
                .get(github::github)
                .post(github::github_post),
        )
        .route("/github/repos", web::get().to(github::repos))
        .route("/github/profile", web::get().to(github::profile))
        .route("/zero-trust", web::get().to(zero_trust::page))
        .route("/zero-trust/panel", web::get().to(zero_trust::panel))
        .default_service(web::to(not_found));
}
