//! What the sidecar knows about itself: the source of `/status`, `/readyz`
//! and `/metrics`. Holds no secret values (usernames and lease ids only).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use zt_contracts::status::{self as contract, ListenerCounters};
use zt_contracts::{whole_seconds, SidecarStatus};

use crate::clock::secs_until;
use crate::config::{AllowRule, Config};

/// The current X.509-SVID.
#[derive(Debug, Clone)]
pub(crate) struct SvidInfo {
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Leaf `notAfter`.
    pub expires_at: SystemTime,
    /// Leaf serial number, hex.
    pub serial: String,
}

/// The current OpenBao token (never the token itself).
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    /// When it expires unless renewed.
    pub expires_at: SystemTime,
    /// Its policies.
    pub policies: Vec<String>,
}

/// Kind of a managed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    /// Dynamic database credentials.
    Database,
    /// KV v2 secret.
    Kv,
}

/// One managed secret's public facts.
#[derive(Debug, Clone)]
pub(crate) struct SecretStatus {
    /// Kind.
    pub kind: SecretKind,
    /// Database role or KV path.
    pub source: String,
    /// The file apps read.
    pub file: PathBuf,
    /// Readiness depends on it.
    pub required: bool,
    /// A file has been written.
    pub written: bool,
    /// Current PostgreSQL user (database only).
    pub username: Option<String>,
    /// Current lease id (database only).
    pub lease_id: Option<String>,
    /// When the current credentials expire (database only).
    pub expires_at: Option<SystemTime>,
    /// File version (database) or KV version.
    pub version: u64,
    /// Rotations so far.
    pub rotations: u64,
    /// Lease renewals so far.
    pub renewals: u64,
    /// Old leases revoked so far.
    pub revocations: u64,
    /// The app released it (database only): no lease, no file, none again.
    pub released: bool,
}

impl SecretStatus {
    /// A secret not written yet.
    pub(crate) fn declared(
        kind: SecretKind,
        source: String,
        file: PathBuf,
        required: bool,
    ) -> Self {
        Self {
            kind,
            source,
            file,
            required,
            written: false,
            username: None,
            lease_id: None,
            expires_at: None,
            version: 0,
            rotations: 0,
            renewals: 0,
            revocations: 0,
            released: false,
        }
    }
}

/// Live counters of one mTLS listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted (handshake done, peer authorised).
    pub accepted: AtomicU64,
    /// Peers refused (no cert, untrusted, ID not allowed).
    pub refused: AtomicU64,
    /// Handshakes that failed for other reasons (garbage, timeouts).
    pub handshake_failures: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// HTTP requests forwarded.
    pub requests: AtomicU64,
}

impl ListenerStats {
    /// The counters now, as `/status` shows them.
    pub(crate) fn counters(&self) -> ListenerCounters {
        ListenerCounters {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            active_connections: self.active.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) svid: Option<SvidInfo>,
    pub(super) svid_rotations: u64,
    pub(super) token: Option<TokenInfo>,
    pub(super) token_renewals: u64,
    pub(super) logins: u64,
    pub(super) secrets: BTreeMap<String, SecretStatus>,
    pub(super) proxy_requests: BTreeMap<u16, u64>,
    pub(super) failures: BTreeMap<&'static str, u64>,
}

/// Shortest time between two forced rotations of one secret. Each forced
/// rotation creates a PostgreSQL user that lives until `revoke_grace` after
/// the next one; without a limit, a loop of `POST /rotate` piles them up.
pub(crate) const FORCED_ROTATION_INTERVAL: Duration = Duration::from_secs(10);

/// What became of a forced-rotation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RotationRequest {
    /// The rotator was asked to rotate now.
    Accepted,
    /// No database secret has that name.
    Unknown,
    /// The app released it: there is nothing to rotate.
    Released,
    /// The last forced rotation was too recent; retry after this many seconds.
    TooSoon(u64),
}

/// What became of a release request (`POST /release/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReleaseRequest {
    /// The marker is written (nothing in this pod issues it again) and the
    /// rotator was asked to revoke it and remove its file now.
    Accepted,
    /// The marker could not be written: nothing was released (the error).
    NotRecorded(String),
    /// Released before.
    AlreadyReleased,
    /// No database secret has that name.
    Unknown,
    /// Its configuration does not say `releasable = true`.
    NotReleasable,
}

/// Per-secret wake-ups, created by whichever side asks first.
type Triggers = Arc<Mutex<BTreeMap<String, Arc<tokio::sync::Notify>>>>;

fn trigger(map: &Triggers, name: &str) -> Arc<tokio::sync::Notify> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Shared state, cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    inner: Arc<Mutex<Inner>>,
    rotate: Triggers,
    release: Triggers,
    /// When each secret's last forced rotation was accepted.
    forced: Arc<Mutex<BTreeMap<String, Instant>>>,
    config: Arc<Config>,
    pub(super) inbound: Arc<Vec<Arc<ListenerStats>>>,
    pub(super) outbound: Arc<Vec<Arc<ListenerStats>>>,
}

impl State {
    /// Empty state for this configuration.
    pub fn new(config: Arc<Config>) -> Self {
        let mk = |n: usize| {
            Arc::new(
                (0..n)
                    .map(|_| Arc::new(ListenerStats::default()))
                    .collect::<Vec<_>>(),
            )
        };
        Self {
            inbound: mk(config.mtls.inbound.len()),
            outbound: mk(config.mtls.outbound.len()),
            inner: Arc::default(),
            rotate: Arc::default(),
            release: Arc::default(),
            forced: Arc::default(),
            config,
        }
    }

    /// The trigger a database rotator waits on for forced rotations.
    pub(crate) fn rotation_trigger(&self, name: &str) -> Arc<tokio::sync::Notify> {
        trigger(&self.rotate, name)
    }

    /// The trigger a releasable database secret's rotator waits on.
    pub(crate) fn release_trigger(&self, name: &str) -> Arc<tokio::sync::Notify> {
        trigger(&self.release, name)
    }

    /// Releases database secret `name`: leaves its marker (naming the
    /// current lease), then asks its rotator to revoke the lease, remove
    /// the file and issue it no more.
    ///
    /// The configuration decides what is releasable, not the board: a
    /// sidecar still waiting for its identity has not declared its secrets
    /// yet, and a release sent then must not be lost (the rotator finds the
    /// marker when it starts).
    pub(crate) fn request_release(&self, name: &str) -> ReleaseRequest {
        let Some(cfg) = self.config.secrets.database.iter().find(|d| d.name == name) else {
            return ReleaseRequest::Unknown;
        };
        let (released, lease_id) = match self.lock().secrets.get(name) {
            Some(s) => (s.released, s.lease_id.clone()),
            None => (false, None),
        };
        if !cfg.releasable {
            ReleaseRequest::NotReleasable
        } else if released {
            ReleaseRequest::AlreadyReleased
        } else {
            match crate::secrets::release::acknowledge(&self.config, name, lease_id) {
                Ok(()) => {
                    self.release_trigger(name).notify_one();
                    ReleaseRequest::Accepted
                }
                Err(e) => {
                    self.failure("file");
                    ReleaseRequest::NotRecorded(e.to_string())
                }
            }
        }
    }

    /// Asks the rotator of database secret `name` to rotate now, at most
    /// once per [`FORCED_ROTATION_INTERVAL`] per secret.
    pub(crate) fn request_rotation(&self, name: &str, now: Instant) -> RotationRequest {
        match self.lock().secrets.get(name) {
            Some(s) if s.kind == SecretKind::Database && s.released => {
                return RotationRequest::Released
            }
            Some(s) if s.kind == SecretKind::Database => {}
            _ => return RotationRequest::Unknown,
        }
        {
            let mut last = self.forced.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = last.get(name) {
                let since = now.saturating_duration_since(*at);
                if since < FORCED_ROTATION_INTERVAL {
                    let wait = FORCED_ROTATION_INTERVAL - since;
                    return RotationRequest::TooSoon((wait.as_secs_f64().ceil() as u64).max(1));
                }
            }
            last.insert(name.to_string(), now);
        }
        self.rotation_trigger(name).notify_one();
        RotationRequest::Accepted
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave counters inconsistent
        // in a way that matters; keep serving status.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the admin listener is on a loopback address.
    pub(crate) fn admin_is_loopback(&self) -> bool {
        self.config.admin.listen.ip().is_loopback()
    }

    /// Counters of inbound listener `i`.
    pub(crate) fn inbound(&self, i: usize) -> Arc<ListenerStats> {
        self.inbound[i].clone()
    }

    /// Counters of outbound listener `i`.
    pub(crate) fn outbound(&self, i: usize) -> Arc<ListenerStats> {
        self.outbound[i].clone()
    }

    /// A new SVID arrived.
    pub(crate) fn set_svid(&self, svid: SvidInfo) {
        let mut g = self.lock();
        if g.svid.as_ref().is_some_and(|s| s.serial != svid.serial) {
            g.svid_rotations += 1;
        }
        g.svid = Some(svid);
    }

    /// The current SVID, if any.
    pub(crate) fn svid(&self) -> Option<SvidInfo> {
        self.lock().svid.clone()
    }

    /// A login succeeded.
    pub(crate) fn token_login(&self, t: TokenInfo) {
        let mut g = self.lock();
        g.logins += 1;
        g.token = Some(t);
    }

    /// A renewal succeeded.
    pub(crate) fn token_renewed(&self, t: TokenInfo) {
        let mut g = self.lock();
        g.token_renewals += 1;
        g.token = Some(t);
    }

    /// The token is gone (expired or revoked).
    pub(crate) fn token_cleared(&self) {
        self.lock().token = None;
    }

    /// Registers or replaces a secret's status.
    pub(crate) fn update_secret(&self, name: &str, f: impl FnOnce(&mut SecretStatus)) {
        let mut g = self.lock();
        if let Some(s) = g.secrets.get_mut(name) {
            f(s);
        }
    }

    /// Declares a secret (before it is first written).
    pub(crate) fn declare_secret(&self, name: &str, status: SecretStatus) {
        self.lock().secrets.insert(name.to_string(), status);
    }

    /// One failure of `kind` (login, token_renew, creds, lease_renew, revoke, kv, file, jwt_svid).
    pub(crate) fn failure(&self, kind: &'static str) {
        *self.lock().failures.entry(kind).or_default() += 1;
    }

    /// One proxied request finished with `status`.
    pub(crate) fn proxy_request(&self, status: u16) {
        *self.lock().proxy_requests.entry(status).or_default() += 1;
    }

    /// Whether every required secret is on disk and unexpired and an SVID is
    /// present; otherwise the reasons.
    pub(crate) fn readiness(&self) -> Result<(), Vec<String>> {
        let g = self.lock();
        let now = SystemTime::now();
        let mut missing = Vec::new();
        match &g.svid {
            None => missing.push("no X.509-SVID from the Workload API yet".to_string()),
            Some(s) if s.expires_at <= now => missing.push("the X.509-SVID has expired".into()),
            Some(_) => {}
        }
        for (name, s) in &g.secrets {
            // A released secret was used and given back: it stays ready.
            if !s.required || s.released {
                continue;
            }
            if !s.written {
                missing.push(format!("secret {name} not written yet"));
            } else if s.expires_at.is_some_and(|e| e <= now) {
                missing.push(format!("secret {name} has expired"));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// The `/status` document (docs/contracts.md, contract 3).
    pub(crate) fn status(&self) -> SidecarStatus {
        let ready = self.readiness().is_ok();
        let g = self.lock();
        let now = SystemTime::now();
        let secrets = g
            .secrets
            .iter()
            .map(|(name, s)| match s.kind {
                SecretKind::Database => {
                    contract::SecretStatus::Database(contract::DatabaseSecretStatus {
                        name: name.clone(),
                        role: s.source.clone(),
                        username: s.username.clone(),
                        lease_id: s.lease_id.clone(),
                        expires_at: s.expires_at.map(whole_seconds),
                        version: s.version,
                        rotations: s.rotations,
                        renewals: s.renewals,
                        revocations: s.revocations,
                        file: s.file.clone(),
                        ready: s.released || (s.written && s.expires_at.is_some_and(|e| e > now)),
                        released: s.released,
                    })
                }
                SecretKind::Kv => contract::SecretStatus::Kv(contract::KvSecretStatus {
                    name: name.clone(),
                    path: s.source.clone(),
                    version: s.version,
                    file: s.file.clone(),
                    ready: s.written,
                }),
            })
            .collect();
        let c = &self.config;
        SidecarStatus {
            spiffe_id: g.svid.as_ref().map(|s| s.spiffe_id.clone()),
            ready,
            svid: g.svid.as_ref().map(|s| contract::SvidStatus {
                expires_at: Some(whole_seconds(s.expires_at)),
                serial: s.serial.clone(),
                rotations: g.svid_rotations,
            }),
            token: g.token.as_ref().map(|t| contract::TokenStatus {
                expires_at: Some(whole_seconds(t.expires_at)),
                ttl_seconds: secs_until(t.expires_at, now),
                policies: t.policies.clone(),
                renewals: g.token_renewals,
                logins: g.logins,
            }),
            secrets,
            proxy: c.proxy.as_ref().map(|p| contract::ProxyStatus {
                listen: p.listen.iter().map(ToString::to_string).collect(),
                allow: p
                    .allow
                    .iter()
                    .map(
                        |AllowRule {
                             path,
                             methods,
                             query,
                         }| contract::ProxyRuleStatus {
                            path: path.clone(),
                            methods: methods.clone(),
                            query: query.clone(),
                        },
                    )
                    .collect(),
                requests: g.proxy_requests.clone(),
            }),
            mtls: contract::MtlsStatus {
                inbound: c
                    .mtls
                    .inbound
                    .iter()
                    .zip(self.inbound.iter())
                    .map(|(l, s)| contract::InboundStatus {
                        listen: l.listen.to_string(),
                        forward_to: l.forward_to.to_string(),
                        allow: l.allow.iter().cloned().map(String::from).collect(),
                        counters: s.counters(),
                    })
                    .collect(),
                outbound: c
                    .mtls
                    .outbound
                    .iter()
                    .zip(self.outbound.iter())
                    .map(|(l, s)| contract::OutboundStatus {
                        listen: l.listen.to_string(),
                        upstream: l.upstream.clone(),
                        server_id: l.server_id.clone(),
                        counters: s.counters(),
                    })
                    .collect(),
            },
            failures: g
                .failures
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}
