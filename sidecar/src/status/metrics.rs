//! `/metrics`: the status board in Prometheus text exposition format.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use zt_contracts::{MetricType, PrometheusText};

use super::{ListenerStats, SecretKind, SecretStatus, State};
use crate::clock::{secs_until, unix};

impl State {
    /// Prometheus text exposition.
    pub(crate) fn metrics_text(&self) -> String {
        let ready = self.readiness().is_ok();
        let g = self.lock();
        let now = SystemTime::now();
        let mut m = PrometheusText::new();
        m.single(
            "zt_ready",
            MetricType::Gauge,
            "1 when every required secret is on disk and unexpired",
            u64::from(ready),
        );
        if let Some(s) = &g.svid {
            m.single(
                "zt_svid_expiry_timestamp_seconds",
                MetricType::Gauge,
                "notAfter of the current X.509-SVID",
                unix(s.expires_at),
            );
        }
        m.single(
            "zt_svid_rotations_total",
            MetricType::Counter,
            "X.509-SVID rotations seen",
            g.svid_rotations,
        );
        if let Some(t) = &g.token {
            m.single(
                "zt_token_ttl_seconds",
                MetricType::Gauge,
                "seconds until the OpenBao token expires unless renewed",
                secs_until(t.expires_at, now),
            );
        }
        m.single(
            "zt_token_renewals_total",
            MetricType::Counter,
            "OpenBao token renewals",
            g.token_renewals,
        );
        m.single(
            "zt_token_logins_total",
            MetricType::Counter,
            "OpenBao logins with a JWT-SVID",
            g.logins,
        );
        let mut per_secret =
            |name: &str, kind: MetricType, help: &str, f: &dyn Fn(&SecretStatus) -> Option<i64>| {
                m.family(name, kind, help);
                for (secret, s) in &g.secrets {
                    if let Some(v) = f(s) {
                        m.sample(name, &[("secret", secret)], v);
                    }
                }
            };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        per_secret(
            "zt_secret_lease_ttl_seconds",
            MetricType::Gauge,
            "seconds until the current credentials expire",
            &|s| s.expires_at.map(|e| secs_until(e, now)),
        );
        per_secret(
            "zt_secret_version",
            MetricType::Gauge,
            "version of the secret file",
            &|s| Some(count(s.version)),
        );
        let database = |f: fn(&SecretStatus) -> u64| {
            move |s: &SecretStatus| (s.kind == SecretKind::Database).then(|| count(f(s)))
        };
        per_secret(
            "zt_secret_released",
            MetricType::Gauge,
            "1 once the app released the secret (its lease revoked, its file removed)",
            &|s| (s.kind == SecretKind::Database).then_some(i64::from(s.released)),
        );
        per_secret(
            "zt_lease_renewals_total",
            MetricType::Counter,
            "lease renewals",
            &database(|s| s.renewals),
        );
        per_secret(
            "zt_lease_rotations_total",
            MetricType::Counter,
            "credential rotations",
            &database(|s| s.rotations),
        );
        per_secret(
            "zt_lease_revocations_total",
            MetricType::Counter,
            "old leases revoked",
            &database(|s| s.revocations),
        );
        m.family(
            "zt_failures_total",
            MetricType::Counter,
            "failed operations by kind",
        );
        for (kind, n) in &g.failures {
            m.sample("zt_failures_total", &[("kind", kind)], *n);
        }
        m.family(
            "zt_proxy_requests_total",
            MetricType::Counter,
            "OpenBao proxy requests by status",
        );
        for (status, n) in &g.proxy_requests {
            m.sample(
                "zt_proxy_requests_total",
                &[("status", &status.to_string())],
                *n,
            );
        }
        let mut listeners =
            |name: &str, kind: MetricType, help: &str, f: &dyn Fn(&ListenerStats) -> u64| {
                m.family(name, kind, help);
                for (dir, stats) in [("inbound", &self.inbound), ("outbound", &self.outbound)] {
                    for (i, s) in stats.iter().enumerate() {
                        m.sample(
                            name,
                            &[("direction", dir), ("listener", &i.to_string())],
                            f(s),
                        );
                    }
                }
            };
        listeners(
            "zt_mtls_connections_total",
            MetricType::Counter,
            "mTLS connections established",
            &|s| s.accepted.load(Ordering::Relaxed),
        );
        listeners(
            "zt_mtls_peers_refused_total",
            MetricType::Counter,
            "peers refused (no cert, untrusted, ID not allowed)",
            &|s| s.refused.load(Ordering::Relaxed),
        );
        listeners(
            "zt_mtls_handshake_failures_total",
            MetricType::Counter,
            "failed TLS handshakes",
            &|s| s.handshake_failures.load(Ordering::Relaxed),
        );
        listeners(
            "zt_mtls_active_connections",
            MetricType::Gauge,
            "open mTLS connections",
            &|s| s.active.load(Ordering::Relaxed),
        );
        listeners(
            "zt_mtls_requests_total",
            MetricType::Counter,
            "HTTP requests carried over mTLS",
            &|s| s.requests.load(Ordering::Relaxed),
        );
        m.finish()
    }
}
