//! The Prometheus text exposition format (version 0.0.4), as `GET /metrics`
//! of the zt-sidecar (`zt_` metrics) and app-backend (`backend_`) serve it.
//!
//! Just what the two need: `# HELP`/`# TYPE` headers, samples with escaped
//! label values, and cumulative histograms.

use std::fmt::{self, Write as _};

/// A metric family's type (`# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        })
    }
}

/// A sample value: integers print as integers, floats as Rust prints them
/// (`1`, `0.25`, `1795874910.5`).
pub trait SampleValue: fmt::Display {}
impl SampleValue for u64 {}
impl SampleValue for i64 {}
impl SampleValue for f64 {}

/// A metrics page being written.
///
/// ```
/// use zt_contracts::{MetricType, PrometheusText};
/// let mut m = PrometheusText::new();
/// m.family("zt_failures_total", MetricType::Counter, "failed operations by kind");
/// m.sample("zt_failures_total", &[("kind", "kv")], 2u64);
/// let want = [
///     "# HELP zt_failures_total failed operations by kind",
///     "# TYPE zt_failures_total counter",
///     "zt_failures_total{kind=\"kv\"} 2",
/// ];
/// assert_eq!(m.finish(), want.map(|l| format!("{l}\n")).concat());
/// ```
#[derive(Debug, Default)]
pub struct PrometheusText {
    out: String,
}

impl PrometheusText {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line, `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl SampleValue) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: MetricType, help: &str, value: impl SampleValue) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One histogram's lines: a `_bucket` per `(upper bound, cumulative
    /// count)`, the `+Inf` bucket (= `count`), `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        for (le, n) in buckets {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le.to_string()));
            let _ = writeln!(self.out, " {n}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape(v));
        }
        self.out.push('}');
    }
}

/// A label value escaped as the format requires: `\`, `"` and newline.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_labels() {
        let mut m = PrometheusText::new();
        m.single("zt_ready", MetricType::Gauge, "1 when ready", 1.0);
        m.family(
            "zt_mtls_connections_total",
            MetricType::Counter,
            "mTLS connections",
        );
        m.sample(
            "zt_mtls_connections_total",
            &[("direction", "inbound"), ("listener", "0")],
            3.0,
        );
        m.family("zt_empty", MetricType::Counter, "no samples yet");
        m.single("x_expiry", MetricType::Gauge, "t", 1_795_874_910.5);
        m.single("x_ttl", MetricType::Gauge, "t", -3i64);
        assert_eq!(
            m.finish(),
            "# HELP zt_ready 1 when ready\n# TYPE zt_ready gauge\nzt_ready 1\n\
             # HELP zt_mtls_connections_total mTLS connections\n# TYPE zt_mtls_connections_total counter\n\
             zt_mtls_connections_total{direction=\"inbound\",listener=\"0\"} 3\n\
             # HELP zt_empty no samples yet\n# TYPE zt_empty counter\n\
             # HELP x_expiry t\n# TYPE x_expiry gauge\nx_expiry 1795874910.5\n\
             # HELP x_ttl t\n# TYPE x_ttl gauge\nx_ttl -3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_le_last() {
        let mut m = PrometheusText::new();
        m.histogram(
            "d",
            &[("route", "/a")],
            &[(0.005, 1), (1.0, 2), (10.0, 2)],
            3,
            12.5,
        );
        assert_eq!(
            m.finish(),
            "d_bucket{route=\"/a\",le=\"0.005\"} 1\nd_bucket{route=\"/a\",le=\"1\"} 2\n\
             d_bucket{route=\"/a\",le=\"10\"} 2\nd_bucket{route=\"/a\",le=\"+Inf\"} 3\n\
             d_sum{route=\"/a\"} 12.5\nd_count{route=\"/a\"} 3\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut m = PrometheusText::new();
        m.sample("x", &[("route", "a\"b\\c\nd")], 1u64);
        assert_eq!(m.finish(), "x{route=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
