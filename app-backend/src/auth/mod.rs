//! Authentication: argon2id passwords, HS256 tokens, the bearer-token
//! extractor and the failed-login rate limiter.

pub mod jwt;
pub mod password;
pub mod ratelimit;

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use crate::config::Config;
use crate::db::queries;
use crate::errors::AppError;
use crate::state::AppState;

/// The authenticated caller of a request: a valid bearer token whose
/// session was not ended by a logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// `users.id`
    pub user_id: i32,
    /// `users.username`
    pub username: String,
    /// The token's ID (what a logout revokes).
    pub jti: String,
    /// The token's expiry (Unix seconds).
    pub exp: i64,
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = authenticate(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let user = checked?;
            let state =
                state.ok_or_else(|| AppError::Internal("application state missing".into()))?;
            // The deny-list is in PostgreSQL so every replica sees a logout;
            // if it cannot be read, fail closed (503), never let a revoked
            // token through.
            if queries::is_revoked(&state.db, &user.jti).await? {
                return Err(AppError::Unauthorized("token revoked by a logout"));
            }
            Ok(user)
        })
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, AppError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Internal("application state missing".into()))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AppError::Unauthorized("no Authorization header"))?
        .to_str()
        .map_err(|_| AppError::Unauthorized("Authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AppError::Unauthorized(
        "Authorization is not `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::Unauthorized("Authorization scheme is not Bearer"));
    }
    let claims = state.keys.verify(token.trim()).map_err(|e| {
        AppError::Unauthorized(match e {
            jwt::JwtError::Expired => "token expired",
            jwt::JwtError::BadSignature => "token signature does not match",
            jwt::JwtError::RetiredKey => "token signed with a retired key",
            jwt::JwtError::Algorithm => "token algorithm not allowed",
            jwt::JwtError::NoKey => "no signing key loaded",
            _ => "token malformed",
        })
    })?;
    Ok(AuthUser {
        user_id: claims.user_id,
        username: claims.username,
        jti: claims.jti,
        exp: claims.exp,
    })
}

/// Header the sidecar sets to the verified SPIFFE ID of the peer (it removes
/// any copy a client sends).
pub const PEER_ID_HEADER: &str = "x-spiffe-peer-id";

/// Who is asking, for rate limiting: the address the frontend saw (last
/// `X-Forwarded-For` entry) when the request came through the sidecar from
/// the frontend — the peer-ID header is exactly `config.frontend_spiffe_id` —
/// else the TCP peer's IP. Any other peer (another workload the sidecar lets
/// in, or a local process that writes the header itself) cannot choose its
/// own client key. IPv6 clients are keyed by their /64 ([`address_key`]).
pub fn client_key(req: &HttpRequest, config: &Config) -> String {
    let from_frontend = req
        .headers()
        .get(PEER_ID_HEADER)
        .is_some_and(|v| v.as_bytes() == config.frontend_spiffe_id.as_bytes());
    if from_frontend {
        if let Some(fwd) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return match fwd.parse::<std::net::IpAddr>() {
                Ok(ip) => format!("fwd:{}", address_key(ip)),
                Err(_) => format!("fwd:{}", fwd.chars().take(64).collect::<String>()),
            };
        }
    }
    match req.peer_addr() {
        Some(a) => format!("ip:{}", address_key(a.ip())),
        None => "unknown".into(),
    }
}

/// The rate-limit key of an address: an IPv4 address (also one written as
/// IPv4-mapped IPv6) as it is; an IPv6 address by its /64, the prefix one
/// subscriber is given, so rotating through its addresses gains nothing.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Whether `host` (a `Host` header value) names this backend: an IP literal
/// or `localhost` (with any port), or one of `allowed` (lower-case names).
/// A DNS-rebinding page reaches the loopback port under its own name, which
/// is none of these.
pub fn is_our_host(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => match rest.split_once(']') {
            Some((ip, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) =>
            {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || allowed.contains(&name)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_ipv4_as_is() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            key("2001:db8:1:2::1"),
            "one /64, one key"
        );
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        let cfg = Config::from_pairs(&[]).unwrap();
        let from_frontend = |fwd: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((PEER_ID_HEADER, cfg.frontend_spiffe_id.as_str()))
                .insert_header(("x-forwarded-for", fwd))
                .to_http_request();
            client_key(&req, &cfg)
        };
        assert_eq!(
            from_frontend("10.0.0.1, 2001:db8:aa:bb:1:2:3:4"),
            from_frontend("2001:db8:aa:bb::99")
        );
        assert_eq!(from_frontend("198.51.100.4"), "fwd:198.51.100.4");
    }

    #[test]
    fn our_hosts_are_ip_literals_localhost_and_configured_names() {
        let allowed = vec!["backend.99-apps.svc".to_string()];
        for h in [
            "127.0.0.1",
            "127.0.0.1:8000",
            "10.1.2.3:443",
            "[::1]",
            "[::1]:8000",
            "localhost",
            "LOCALHOST:8000",
            "localhost.:8000",
            "backend.99-apps.svc:8000",
        ] {
            assert!(is_our_host(h, &allowed), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:8000",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "127.0.0.1:99999",
            "127.0.0.1:",
            "[::1]x",
            "[evil]:80",
            "backend.99-apps.svc.evil:8000",
            "user@127.0.0.1",
        ] {
            assert!(!is_our_host(h, &allowed), "{h}");
        }
    }
}
