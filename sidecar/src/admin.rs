//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `POST /rotate/<name>` (force a make-before-break rotation) and
//! `POST /release/<name>` (the app is done with a `releasable` database
//! secret: revoke it, remove its file, issue it no more); the two POSTs only
//! on a loopback listener.
//!
//! The listener is on loopback, which every web page the machine's browser
//! opens can also reach. So (issue 16, 5):
//! - `Host` must be an IP literal or `localhost`: a page that reaches the
//!   port through DNS rebinding arrives under its own name and may not read
//!   `/status`;
//! - an `Origin`, when a browser sends one, must be this listener's own;
//! - the POSTs need the header [`ADMIN_HEADER`]: a page cannot
//!   add a custom header without a CORS preflight, which is never granted,
//!   so a plain form post or `fetch` from another origin cannot trigger it;
//! - forced rotations of one secret are at least
//!   [`FORCED_ROTATION_INTERVAL`] apart (429 with `Retry-After` otherwise).

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::status::{ReleaseRequest, RotationRequest, State, FORCED_ROTATION_INTERVAL};

/// The header the POSTs require (any value; send `1`).
pub(crate) const ADMIN_HEADER: &str = "x-zt-admin";

/// Whether `host` (a `Host` value) is an IP literal or `localhost`, with an
/// optional port.
pub(crate) fn is_local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, "")) => return ip.parse::<std::net::Ipv6Addr>().is_ok(),
            Some((ip, port)) => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok()
                    && port.strip_prefix(':').is_some_and(is_port)
            }
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

/// Why a request from a browser context is refused, if it is: a `Host`
/// that is not an IP literal or `localhost` (a DNS-rebinding page reaches a
/// loopback port under its own name), or an `Origin` other than the host's.
/// The admin listener and the OpenBao proxy's TCP listeners use it.
pub(crate) fn foreign(headers: &HeaderMap) -> Option<&'static str> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let Some(host) = host.filter(|h| is_local_host(h)) else {
        return Some("the Host header must be an IP address or localhost (DNS rebinding)");
    };
    match headers.get(header::ORIGIN) {
        None => None,
        Some(o) if o.to_str().is_ok_and(|o| o == format!("http://{host}")) => None,
        Some(_) => Some("requests from another origin are refused"),
    }
}

fn answer(
    status: StatusCode,
    ctype: &'static str,
    body: String,
) -> (StatusCode, &'static str, String, Option<u64>) {
    (status, ctype, body, None)
}

/// Why a POST (rotate, release) is refused, if it is: they change what the
/// app holds, so only on a loopback listener and only with [`ADMIN_HEADER`].
fn post_refused(state: &State, headers: &HeaderMap) -> Option<String> {
    if !state.admin_is_loopback() {
        Some("is only available when admin.listen is a loopback address".into())
    } else if !headers.contains_key(ADMIN_HEADER) {
        Some(format!(
            "needs the header `{ADMIN_HEADER}: 1` (a web page cannot send it)"
        ))
    } else {
        None
    }
}

fn unknown_secret(name: &str) -> (StatusCode, &'static str, String, Option<u64>) {
    answer(
        StatusCode::NOT_FOUND,
        "application/json",
        json!({"error": format!("no database secret named {name:?}")}).to_string(),
    )
}

/// Answers one admin request.
pub(crate) async fn handle(
    state: State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json_ct = "application/json";
    let (status, ctype, body, retry_after) = if let Some(why) = foreign(req.headers()) {
        answer(
            StatusCode::FORBIDDEN,
            json_ct,
            json!({ "error": why }).to_string(),
        )
    } else {
        match (req.method().as_str(), req.uri().path()) {
            ("GET", "/healthz") => answer(StatusCode::OK, "text/plain", "ok\n".to_string()),
            ("GET", "/readyz") => match state.readiness() {
                Ok(()) => answer(StatusCode::OK, json_ct, json!({"ready": true}).to_string()),
                Err(missing) => answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json_ct,
                    json!({"ready": false, "missing": missing}).to_string(),
                ),
            },
            ("GET", "/metrics") => answer(StatusCode::OK, "text/plain; version=0.0.4", state.metrics_text()),
            ("GET", "/status") => match state.status().to_json() {
                Ok(doc) => answer(StatusCode::OK, json_ct, doc),
                // Unreachable with the sidecar's own timestamps (whole
                // seconds, years 1970-9999); the document holds no secret.
                Err(e) => answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json_ct,
                    json!({"error": format!("cannot render the status: {e}")}).to_string(),
                ),
            },
            ("POST", path) if path.starts_with("/rotate/") || path.starts_with("/release/") => {
                let (action, name) = path[1..].split_once('/').unwrap_or_default();
                if let Some(why) = post_refused(&state, req.headers()) {
                    answer(StatusCode::FORBIDDEN, json_ct, json!({"error": format!("POST /{action}/<name> {why}")}).to_string())
                } else if action == "rotate" {
                    match state.request_rotation(name, Instant::now()) {
                        RotationRequest::Accepted => answer(StatusCode::ACCEPTED, json_ct, json!({"rotating": name}).to_string()),
                        RotationRequest::Unknown => unknown_secret(name),
                        RotationRequest::Released => answer(
                            StatusCode::CONFLICT,
                            json_ct,
                            json!({"error": format!("{name:?} was released by the app: there is nothing to rotate")}).to_string(),
                        ),
                        RotationRequest::TooSoon(secs) => (
                            StatusCode::TOO_MANY_REQUESTS,
                            json_ct,
                            json!({"error": format!("{name:?} was rotated on request less than {} s ago; retry in {secs} s", FORCED_ROTATION_INTERVAL.as_secs())}).to_string(),
                            Some(secs),
                        ),
                    }
                } else {
                    match state.request_release(name) {
                        ReleaseRequest::Accepted => answer(StatusCode::ACCEPTED, json_ct, json!({"releasing": name}).to_string()),
                        ReleaseRequest::AlreadyReleased => answer(StatusCode::OK, json_ct, json!({"released": name}).to_string()),
                        ReleaseRequest::Unknown => unknown_secret(name),
                        ReleaseRequest::NotRecorded(e) => answer(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            json_ct,
                            json!({"error": format!("cannot write {name}.released in the secrets folder ({e}): nothing was released; retry")}).to_string(),
                        ),
                        ReleaseRequest::NotReleasable => answer(
                            StatusCode::CONFLICT,
                            json_ct,
                            json!({"error": format!("{name:?} is not releasable: its [[secrets.database]] entry needs `releasable = true`")}).to_string(),
                        ),
                    }
                }
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/status") => answer(
                StatusCode::METHOD_NOT_ALLOWED,
                json_ct,
                json!({"error": "only GET"}).to_string(),
            ),
            _ => answer(
                StatusCode::NOT_FOUND,
                json_ct,
                json!({"error": "not found", "endpoints": ["GET /healthz", "GET /readyz", "GET /metrics", "GET /status", format!("POST /rotate/<database secret> (with {ADMIN_HEADER}: 1)"), format!("POST /release/<releasable database secret> (with {ADMIN_HEADER}: 1)")]}).to_string(),
            ),
        }
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype);
    if let Some(secs) = retry_after {
        resp = resp.header(header::RETRY_AFTER, secs);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp = resp.header(header::ALLOW, "GET");
    }
    Ok(resp
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_ip_literals_and_localhost() {
        for h in [
            "127.0.0.1:15000",
            "127.0.0.1",
            "[::1]:15000",
            "[::1]",
            "localhost:15000",
            "LocalHost",
            "10.0.0.7:15000",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:15000",
            "127.0.0.1.nip.io:15000",
            "localhost.evil:15000",
            "127.0.0.1:",
            "[::1]x",
            "127.0.0.1:70000",
        ] {
            assert!(!is_local_host(h), "{h}");
        }
    }

    #[test]
    fn foreign_origins_and_hosts_are_named() {
        let mut h = HeaderMap::new();
        assert!(foreign(&h).is_some(), "no Host");
        h.insert(header::HOST, "127.0.0.1:15000".parse().unwrap());
        assert_eq!(foreign(&h), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:15000".parse().unwrap());
        assert_eq!(foreign(&h), None, "same origin");
        for o in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:3000",
            "https://127.0.0.1:15000",
        ] {
            h.insert(header::ORIGIN, o.parse().unwrap());
            assert!(foreign(&h).is_some(), "{o}");
        }
    }
}
