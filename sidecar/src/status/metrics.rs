//! `/metrics`: the status board in Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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

    /// The previous writer, kept for one commit to compare against.
    #[cfg(test)]
    pub(crate) fn metrics_text_old(&self) -> String {
        let ready = self.readiness().is_ok();
        let g = self.lock();
        let now = SystemTime::now();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "zt_ready",
            "gauge",
            "1 when every required secret is on disk and unexpired",
            vec![(String::new(), ready as u8 as f64)],
        );
        if let Some(s) = &g.svid {
            metric(
                "zt_svid_expiry_timestamp_seconds",
                "gauge",
                "notAfter of the current X.509-SVID",
                vec![(String::new(), unix(s.expires_at))],
            );
        }
        metric(
            "zt_svid_rotations_total",
            "counter",
            "X.509-SVID rotations seen",
            vec![(String::new(), g.svid_rotations as f64)],
        );
        if let Some(t) = &g.token {
            metric(
                "zt_token_ttl_seconds",
                "gauge",
                "seconds until the OpenBao token expires unless renewed",
                vec![(String::new(), secs_until(t.expires_at, now) as f64)],
            );
        }
        metric(
            "zt_token_renewals_total",
            "counter",
            "OpenBao token renewals",
            vec![(String::new(), g.token_renewals as f64)],
        );
        metric(
            "zt_token_logins_total",
            "counter",
            "OpenBao logins with a JWT-SVID",
            vec![(String::new(), g.logins as f64)],
        );
        let per = |f: &dyn Fn(&SecretStatus) -> Option<f64>| {
            g.secrets
                .iter()
                .filter_map(|(n, s)| f(s).map(|v| (format!("{{secret=\"{n}\"}}"), v)))
                .collect::<Vec<_>>()
        };
        metric(
            "zt_secret_lease_ttl_seconds",
            "gauge",
            "seconds until the current credentials expire",
            per(&|s| s.expires_at.map(|e| secs_until(e, now) as f64)),
        );
        metric(
            "zt_secret_version",
            "gauge",
            "version of the secret file",
            per(&|s| Some(s.version as f64)),
        );
        metric(
            "zt_lease_renewals_total",
            "counter",
            "lease renewals",
            per(&|s| (s.kind == SecretKind::Database).then_some(s.renewals as f64)),
        );
        metric(
            "zt_lease_rotations_total",
            "counter",
            "credential rotations",
            per(&|s| (s.kind == SecretKind::Database).then_some(s.rotations as f64)),
        );
        metric(
            "zt_lease_revocations_total",
            "counter",
            "old leases revoked",
            per(&|s| (s.kind == SecretKind::Database).then_some(s.revocations as f64)),
        );
        metric(
            "zt_failures_total",
            "counter",
            "failed operations by kind",
            g.failures
                .iter()
                .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), *v as f64))
                .collect(),
        );
        metric(
            "zt_proxy_requests_total",
            "counter",
            "OpenBao proxy requests by status",
            g.proxy_requests
                .iter()
                .map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v as f64))
                .collect(),
        );
        let listeners =
            |dir: &str, stats: &[Arc<ListenerStats>], f: &dyn Fn(&ListenerStats) -> u64| {
                stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            format!("{{direction=\"{dir}\",listener=\"{i}\"}}"),
                            f(s) as f64,
                        )
                    })
                    .collect::<Vec<_>>()
            };
        let both = |f: &dyn Fn(&ListenerStats) -> u64| {
            let mut v = listeners("inbound", &self.inbound, f);
            v.extend(listeners("outbound", &self.outbound, f));
            v
        };
        metric(
            "zt_mtls_connections_total",
            "counter",
            "mTLS connections established",
            both(&|s| s.accepted.load(Ordering::Relaxed)),
        );
        metric(
            "zt_mtls_peers_refused_total",
            "counter",
            "peers refused (no cert, untrusted, ID not allowed)",
            both(&|s| s.refused.load(Ordering::Relaxed)),
        );
        metric(
            "zt_mtls_handshake_failures_total",
            "counter",
            "failed TLS handshakes",
            both(&|s| s.handshake_failures.load(Ordering::Relaxed)),
        );
        metric(
            "zt_mtls_active_connections",
            "gauge",
            "open mTLS connections",
            both(&|s| s.active.load(Ordering::Relaxed)),
        );
        metric(
            "zt_mtls_requests_total",
            "counter",
            "HTTP requests carried over mTLS",
            both(&|s| s.requests.load(Ordering::Relaxed)),
        );
        out
    }
}
