//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status`, and
//! `POST /rotate/<name>` (force a make-before-break rotation; loopback only).

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::state::State;

/// Answers one admin request.
pub async fn handle(
    state: State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => match state.readiness() {
            Ok(()) => (StatusCode::OK, "application/json", json!({"ready": true}).to_string()),
            Err(missing) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                json!({"ready": false, "missing": missing}).to_string(),
            ),
        },
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", state.metrics_text()),
        ("GET", "/status") => (StatusCode::OK, "application/json", state.status_json().to_string()),
        ("POST", path) if path.starts_with("/rotate/") => {
            let name = &path["/rotate/".len()..];
            if !state.admin_is_loopback() {
                (
                    StatusCode::FORBIDDEN,
                    "application/json",
                    json!({"error": "forced rotation is only available when admin.listen is a loopback address"}).to_string(),
                )
            } else if state.request_rotation(name) {
                (StatusCode::ACCEPTED, "application/json", json!({"rotating": name}).to_string())
            } else {
                (StatusCode::NOT_FOUND, "application/json", json!({"error": format!("no database secret named {name:?}")}).to_string())
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/status") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            json!({"error": "only GET"}).to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": "not found", "endpoints": ["GET /healthz", "GET /readyz", "GET /metrics", "GET /status", "POST /rotate/<database secret>"]}).to_string(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
