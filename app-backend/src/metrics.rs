//! Prometheus text metrics (`GET /metrics`), prefixed `backend_`.
//!
//! Labels have bounded cardinality: routes are the matched patterns
//! (`/api/auth/me`) or `unmatched`, methods are the standard ones or `other`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use zt_contracts::{MetricType, PrometheusText};

/// Upper bounds (seconds) of the request duration histogram buckets.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pool numbers sampled when metrics are rendered.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolSample {
    /// Connections open.
    pub size: usize,
    /// Connections idle.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Largest allowed size.
    pub max_size: usize,
}

/// Every metric of the backend.
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Database credential swaps (new pool in use).
    pub db_pool_swaps: Counter,
    /// Queries retried once after a lost session.
    pub db_query_retries: Counter,
    /// Version of the credentials the current pool uses.
    pub db_credentials_version: Gauge,
    /// KV version of the signing key in use.
    pub jwt_key_version: Gauge,
    /// 1 when ready.
    pub ready: Gauge,
}

fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Records one answered HTTP request.
    pub fn observe_http(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let route = route.unwrap_or("unmatched").to_string();
        *self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((method_label(method), route.clone(), status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut d = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let h = d.entry(route).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts an outcome of a kind of event, e.g. `("login", "success")`.
    pub fn outcome(&self, event: &'static str, outcome: &'static str) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((event, outcome))
            .or_default() += 1;
    }

    /// How often `(event, outcome)` was counted.
    pub fn outcome_count(&self, event: &str, outcome: &str) -> u64 {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|((e, o), _)| *e == event && *o == outcome)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, pool: PoolSample) -> String {
        let mut out = PrometheusText::new();
        let requests = "backend_http_requests_total";
        out.family(requests, MetricType::Counter, "HTTP requests answered.");
        for ((m, route, status), v) in self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let status = status.to_string();
            let labels = [
                ("method", *m),
                ("route", route.as_str()),
                ("status", &status),
            ];
            out.sample(requests, &labels, *v);
        }
        let duration = "backend_http_request_duration_seconds";
        out.family(duration, MetricType::Histogram, "Time to answer.");
        for (route, h) in self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(h.counts).collect();
            out.histogram(duration, &[("route", route)], &buckets, h.count, h.sum);
        }
        let events = "backend_events_total";
        out.family(
            events,
            MetricType::Counter,
            "Outcomes of logins, registrations, GitHub and OpenBao calls.",
        );
        for ((e, o), v) in self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            out.sample(events, &[("event", e), ("outcome", o)], *v);
        }
        let counters = [
            (
                "backend_db_pool_swaps_total",
                "Database pools replaced after a credential rotation.",
                self.db_pool_swaps.get(),
            ),
            (
                "backend_db_query_retries_total",
                "Queries retried once after their session was lost.",
                self.db_query_retries.get(),
            ),
        ];
        for (name, help, v) in counters {
            out.single(name, MetricType::Counter, help, v);
        }
        let gauges = [
            (
                "backend_db_credentials_version",
                "Version of the database credentials in use.",
                self.db_credentials_version.get(),
            ),
            (
                "backend_jwt_key_version",
                "KV version of the JWT signing key in use.",
                self.jwt_key_version.get(),
            ),
            (
                "backend_ready",
                "1 when /readyz answers 200.",
                self.ready.get(),
            ),
            (
                "backend_db_pool_connections",
                "Open connections in the current pool.",
                pool.size as u64,
            ),
            (
                "backend_db_pool_idle_connections",
                "Idle connections in the current pool.",
                pool.available as u64,
            ),
            (
                "backend_db_pool_waiting",
                "Requests waiting for a connection.",
                pool.waiting as u64,
            ),
            (
                "backend_db_pool_max_connections",
                "Largest pool size.",
                pool.max_size as u64,
            ),
        ];
        for (name, help, v) in gauges {
            out.single(name, MetricType::Gauge, help, v);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe_http("GET", Some("/api/auth/me"), 200, Duration::from_millis(3));
        m.observe_http("BREW", None, 404, Duration::from_millis(30));
        m.outcome("login", "success");
        m.db_credentials_version.set(4);
        let text = m.render(PoolSample::default());
        assert!(text.contains(
            "backend_http_requests_total{method=\"GET\",route=\"/api/auth/me\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "backend_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "backend_http_request_duration_seconds_bucket{route=\"/api/auth/me\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "backend_http_request_duration_seconds_bucket{route=\"/api/auth/me\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains("backend_events_total{event=\"login\",outcome=\"success\"} 1"));
        assert!(text.contains("backend_db_credentials_version 4"));
        assert_eq!(m.outcome_count("login", "success"), 1);
    }

    #[test]
    fn an_idle_page_is_byte_for_byte_what_it_always_was() {
        let want = [
            "# HELP backend_http_requests_total HTTP requests answered.",
            "# TYPE backend_http_requests_total counter",
            "# HELP backend_http_request_duration_seconds Time to answer.",
            "# TYPE backend_http_request_duration_seconds histogram",
            "# HELP backend_events_total Outcomes of logins, registrations, GitHub and OpenBao calls.",
            "# TYPE backend_events_total counter",
            "# HELP backend_db_pool_swaps_total Database pools replaced after a credential rotation.",
            "# TYPE backend_db_pool_swaps_total counter",
            "backend_db_pool_swaps_total 0",
            "# HELP backend_db_query_retries_total Queries retried once after their session was lost.",
            "# TYPE backend_db_query_retries_total counter",
            "backend_db_query_retries_total 0",
            "# HELP backend_db_credentials_version Version of the database credentials in use.",
            "# TYPE backend_db_credentials_version gauge",
            "backend_db_credentials_version 0",
            "# HELP backend_jwt_key_version KV version of the JWT signing key in use.",
            "# TYPE backend_jwt_key_version gauge",
            "backend_jwt_key_version 0",
            "# HELP backend_ready 1 when /readyz answers 200.",
            "# TYPE backend_ready gauge",
            "backend_ready 0",
            "# HELP backend_db_pool_connections Open connections in the current pool.",
            "# TYPE backend_db_pool_connections gauge",
            "backend_db_pool_connections 3",
            "# HELP backend_db_pool_idle_connections Idle connections in the current pool.",
            "# TYPE backend_db_pool_idle_connections gauge",
            "backend_db_pool_idle_connections 1",
            "# HELP backend_db_pool_waiting Requests waiting for a connection.",
            "# TYPE backend_db_pool_waiting gauge",
            "backend_db_pool_waiting 2",
            "# HELP backend_db_pool_max_connections Largest pool size.",
            "# TYPE backend_db_pool_max_connections gauge",
            "backend_db_pool_max_connections 16",
        ];
        let pool = PoolSample {
            size: 3,
            available: 1,
            waiting: 2,
            max_size: 16,
        };
        let text = Metrics::default().render(pool);
        assert_eq!(text, want.map(|l| format!("{l}\n")).concat());
    }

    #[test]
    fn route_labels_are_escaped() {
        let m = Metrics::default();
        m.observe_http("GET", Some("/a\"b\\c\nd"), 200, Duration::from_millis(3));
        let text = m.render(PoolSample::default());
        assert!(
            text.contains("route=\"/a\\\"b\\\\c\\nd\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text
            .contains("backend_http_request_duration_seconds_count{route=\"/a\\\"b\\\\c\\nd\"} 1"));
    }
}
