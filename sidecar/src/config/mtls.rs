//! `[[mtls.inbound]]`, `[[mtls.outbound]]`: SPIFFE mTLS listeners and who
//! may be on the other end.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::invalid;
use super::values::{duration_str, opt_duration, required, socket_addr};
use super::ConfigError;

/// Default header carrying the verified peer SPIFFE ID to the app.
pub const DEFAULT_PEER_ID_HEADER: &str = "x-spiffe-peer-id";

/// Default TLS handshake timeout (slowloris protection).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtls {
    #[serde(default)]
    inbound: Vec<RawInbound>,
    #[serde(default)]
    outbound: Vec<RawOutbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    listen: Option<String>,
    forward_to: Option<String>,
    allow: Option<Vec<String>>,
    peer_id_header: Option<String>,
    handshake_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    listen: Option<String>,
    upstream: Option<String>,
    server_id: Option<String>,
    handshake_timeout: Option<String>,
}

/// `[mtls]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct MtlsConfig {
    /// `[[mtls.inbound]]`
    pub inbound: Vec<InboundConfig>,
    /// `[[mtls.outbound]]`
    pub outbound: Vec<OutboundConfig>,
}

/// A peer SPIFFE ID pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum PeerPattern {
    /// Exactly this ID.
    Exact(String),
    /// Any ID of this trust domain whose path starts with this prefix
    /// (written `spiffe://td/prefix/*`; stored with the trailing `/`).
    Prefix(String),
}

impl From<PeerPattern> for String {
    fn from(p: PeerPattern) -> String {
        match p {
            PeerPattern::Exact(s) => s,
            PeerPattern::Prefix(s) => format!("{s}*"),
        }
    }
}

impl PeerPattern {
    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            PeerPattern::Exact(e) => e == id,
            PeerPattern::Prefix(p) => id.starts_with(p.as_str()) && id.len() > p.len(),
        }
    }
}

/// `[[mtls.inbound]]`
#[derive(Debug, Clone, Serialize)]
pub struct InboundConfig {
    /// TLS listen address.
    pub listen: SocketAddr,
    /// The app's plain-HTTP address (loopback).
    pub forward_to: SocketAddr,
    /// Who may connect.
    pub allow: Vec<PeerPattern>,
    /// Header that carries the verified peer ID to the app.
    pub peer_id_header: String,
    /// Handshake (and first request) deadline.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

/// `[[mtls.outbound]]`
#[derive(Debug, Clone, Serialize)]
pub struct OutboundConfig {
    /// Plain-HTTP listen address (loopback).
    pub listen: SocketAddr,
    /// `host:port` of the peer's inbound listener.
    pub upstream: String,
    /// The SPIFFE ID the upstream must present.
    pub server_id: String,
    /// Handshake deadline.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

/// `[mtls]`.
pub(super) fn validate(m: RawMtls) -> Result<MtlsConfig, ConfigError> {
    let mut inbound = Vec::new();
    for (i, r) in m.inbound.into_iter().enumerate() {
        let k = |f: &str| format!("mtls.inbound[{i}].{f}");
        let allow = r
            .allow
            .ok_or_else(|| invalid(k("allow"), "is required: the SPIFFE IDs that may connect"))?;
        if allow.is_empty() {
            return Err(invalid(k("allow"), "must list at least one SPIFFE ID"));
        }
        let allow = allow
            .iter()
            .map(|a| peer_pattern(&k("allow"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let header = r
            .peer_id_header
            .unwrap_or_else(|| DEFAULT_PEER_ID_HEADER.into())
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(
                k("peer_id_header"),
                format!("`{header}` is not a valid header name"),
            ));
        }
        let forward_to = socket_addr(&k("forward_to"), &required(&k("forward_to"), r.forward_to)?)?;
        inbound.push(InboundConfig {
            listen: socket_addr(&k("listen"), &required(&k("listen"), r.listen)?)?,
            forward_to,
            allow,
            peer_id_header: header,
            handshake_timeout: opt_duration(
                &k("handshake_timeout"),
                r.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
        });
    }
    let mut outbound = Vec::new();
    for (i, r) in m.outbound.into_iter().enumerate() {
        let k = |f: &str| format!("mtls.outbound[{i}].{f}");
        let listen = socket_addr(&k("listen"), &required(&k("listen"), r.listen)?)?;
        if !listen.ip().is_loopback() {
            return Err(invalid(
                k("listen"),
                format!("{listen} is not loopback: the outbound listener accepts plain HTTP and must stay on 127.0.0.1"),
            ));
        }
        let upstream = required(&k("upstream"), r.upstream)?;
        match upstream.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(invalid(
                    k("upstream"),
                    format!("`{upstream}` must be host:port"),
                ))
            }
        }
        let server_id = required(&k("server_id"), r.server_id)?;
        match peer_pattern(&k("server_id"), &server_id)? {
            PeerPattern::Exact(_) => {}
            PeerPattern::Prefix(_) => {
                return Err(invalid(k("server_id"), "must be one exact SPIFFE ID"))
            }
        }
        outbound.push(OutboundConfig {
            listen,
            upstream,
            server_id,
            handshake_timeout: opt_duration(
                &k("handshake_timeout"),
                r.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
        });
    }
    Ok(MtlsConfig { inbound, outbound })
}

fn peer_pattern(key: &str, s: &str) -> Result<PeerPattern, ConfigError> {
    let (id, prefix) = match s.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (s, false),
    };
    let parsed = spiffe::SpiffeId::new(id).map_err(|e| {
        invalid(
            key,
            format!("`{s}` is not a SPIFFE ID ({e}); write spiffe://<trust-domain>/<path>"),
        )
    })?;
    if prefix {
        if parsed.path().is_empty() {
            return Err(invalid(
                key,
                format!("`{s}`: a prefix needs a path, e.g. spiffe://demo.local/ns/99-apps/*"),
            ));
        }
        Ok(PeerPattern::Prefix(format!("{id}/")))
    } else {
        if id.contains('*') {
            return Err(invalid(
                key,
                format!("`{s}`: `*` is only allowed as a final `/*`"),
            ));
        }
        Ok(PeerPattern::Exact(id.to_string()))
    }
}
