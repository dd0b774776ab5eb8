//! Capped exponential backoff with jitter, for every retry loop.

use std::time::Duration;

use rand::Rng;

use crate::config::BackoffConfig;

/// Delays 1×, 2×, 4×… `initial`, capped at `max`, each scaled by a random
/// factor in [0.5, 1.0] so many sidecars do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub(crate) fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, attempt: 0 }
    }

    /// The next delay (and count the attempt).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self
            .cfg
            .initial
            .saturating_mul(1u32 << self.attempt.min(20));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(self.cfg.max);
        capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// Start over after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_caps_and_resets() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(
            d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100),
            "{d:?}"
        );
        assert!(
            d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800),
            "{d:?}"
        );
        assert!(d.iter().all(|x| *x <= Duration::from_secs(1)), "{d:?}");
        assert!(
            d[7] >= Duration::from_millis(500),
            "capped delays stay near max: {d:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
