//! Waiting for the real servers in tests: poll until a condition holds or a
//! timeout passes, then fail naming what was awaited.
//!
//! Every timeout is stretched by the patience multiplier in
//! `ZT_TEST_PATIENCE` (default 1), so a slow or busy machine can give every
//! wait more time without editing a test: `ZT_TEST_PATIENCE=3 make test`.
//! A value that is not a positive number stops the test with a message
//! naming the variable, instead of silently waiting the default.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable holding the patience multiplier.
pub const PATIENCE_ENV: &str = "ZT_TEST_PATIENCE";

/// How often a condition is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest timeout a multiplier may produce (a day): beyond it a typo
/// such as `ZT_TEST_PATIENCE=1e9` would hang CI instead of failing.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How much longer than written every test wait may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patience(f64);

impl Patience {
    /// Timeouts as written.
    pub const DEFAULT: Self = Self(1.0);

    /// Parses a `ZT_TEST_PATIENCE` value: `None` (unset) or blank
    /// (`ZT_TEST_PATIENCE=`) is the default, a finite number above 0 (`2`,
    /// `1.5`, `0.5`) is the multiplier; anything else is refused with a
    /// message naming the variable.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let Some(raw) = value.filter(|v| !v.trim().is_empty()) else {
            return Ok(Self::DEFAULT);
        };
        match raw.trim().parse::<f64>() {
            Ok(m) if m.is_finite() && m > 0.0 => Ok(Self(m)),
            _ => Err(format!(
                "{PATIENCE_ENV}={raw:?} is not a patience multiplier: use a number above 0 \
                 (e.g. {PATIENCE_ENV}=3 gives every test wait three times its time), or unset it"
            )),
        }
    }

    /// The process's patience, read from `ZT_TEST_PATIENCE` once.
    ///
    /// # Panics
    /// When the variable holds something other than a positive number (or is
    /// not UTF-8): a test run with a typo there must not pass unnoticed.
    pub fn from_env() -> Self {
        static PATIENCE: OnceLock<Result<Patience, String>> = OnceLock::new();
        let parsed = PATIENCE.get_or_init(|| match std::env::var(PATIENCE_ENV) {
            Ok(v) => Self::parse(Some(&v)),
            Err(std::env::VarError::NotPresent) => Ok(Self::DEFAULT),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                "{PATIENCE_ENV}={v:?} is not a patience multiplier: use a number above 0, or unset it"
            )),
        });
        match parsed {
            Ok(p) => *p,
            Err(e) => panic!("{e}"),
        }
    }

    /// The multiplier.
    pub fn multiplier(self) -> f64 {
        self.0
    }

    /// `timeout` times the multiplier (at most a day).
    pub fn stretch(self, timeout: Duration) -> Duration {
        Duration::try_from_secs_f64(timeout.as_secs_f64() * self.0)
            .unwrap_or(MAX_TIMEOUT)
            .min(MAX_TIMEOUT)
    }
}

/// `timeout` stretched by the process's [`Patience`] (`ZT_TEST_PATIENCE`).
pub fn patient(timeout: Duration) -> Duration {
    Patience::from_env().stretch(timeout)
}

fn timed_out(limit: Duration, what: &str) -> ! {
    let patience = Patience::from_env();
    let hint = if patience == Patience::DEFAULT {
        format!(" (a slow machine? {PATIENCE_ENV}=3 gives every wait three times its time)")
    } else {
        format!(" ({PATIENCE_ENV}={})", patience.multiplier())
    };
    panic!("timed out after {limit:?} waiting for: {what}{hint}")
}

/// Polls `f` every 100 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// After `timeout` (stretched by `ZT_TEST_PATIENCE`), naming `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let limit = patient(timeout);
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            timed_out(limit, what);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`eventually`] for async conditions (a Tokio runtime with the timer).
///
/// # Panics
/// After `timeout` (stretched by `ZT_TEST_PATIENCE`), naming `what`.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let limit = patient(timeout);
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            timed_out(limit, what);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_the_timeouts_as_written() {
        assert_eq!(Patience::parse(None), Ok(Patience::DEFAULT));
        // A blanked variable (`ZT_TEST_PATIENCE=`) means unset.
        assert_eq!(Patience::parse(Some("")), Ok(Patience::DEFAULT));
        assert_eq!(Patience::parse(Some("  ")), Ok(Patience::DEFAULT));
        assert_eq!(
            Patience::DEFAULT.stretch(Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn a_multiplier_stretches_every_timeout() {
        let p = Patience::parse(Some("2.5")).unwrap();
        assert_eq!(p.stretch(Duration::from_secs(4)), Duration::from_secs(10));
        let p = Patience::parse(Some(" 0.5 ")).unwrap();
        assert_eq!(p.stretch(Duration::from_secs(4)), Duration::from_secs(2));
        let p = Patience::parse(Some("1e12")).unwrap();
        assert_eq!(p.stretch(Duration::from_secs(60)), MAX_TIMEOUT);
    }

    #[test]
    fn garbage_patience_is_refused_naming_the_variable() {
        for bad in ["fast", "0", "-1", "NaN", "inf", "2x"] {
            let err = Patience::parse(Some(bad)).unwrap_err();
            assert!(
                err.contains("ZT_TEST_PATIENCE") && err.contains("number above 0"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn eventually_returns_the_first_value() {
        let mut calls = 0;
        let v = eventually(Duration::from_secs(5), "the third call", || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after")]
    fn eventually_names_what_it_waited_for() {
        eventually(Duration::from_millis(10), "nothing", || None::<()>);
    }

    #[test]
    fn eventually_async_returns_the_first_value() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut calls = 0;
        let v = rt.block_on(eventually_async(
            Duration::from_secs(5),
            "the second call",
            || {
                calls += 1;
                let c = calls;
                async move { (c == 2).then_some(c) }
            },
        ));
        assert_eq!(v, 2);
    }
}
