//! Percentiles of latency samples, and how sure a difference of two
//! percentiles is: a bootstrap confidence interval, so a result file says
//! "p99 +4.1 ms (95 % CI +3.2 … +5.6 ms)" instead of a single draw that
//! the next run contradicts.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The `p` quantile (0 ≤ p ≤ 1) of `sorted` (ascending), by the nearest
/// rank; NaN when there are no samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `samples` sorted ascending.
pub fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The difference of the `p` quantiles of `a` and `b` (a − b), with the
/// 2.5 % and 97.5 % points of its bootstrap distribution (`resamples`
/// draws of each series, with replacement, at its own size; seeded, so the
/// same samples give the same interval).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// The difference of the two series' quantiles.
    pub point: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end of the 95 % interval.
    pub high: f64,
}

/// The `p` quantile of one bootstrap draw of `s` (with replacement, at its
/// own size), sorted in `buf`.
fn draw(rng: &mut StdRng, s: &[f64], p: f64, buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    buf.extend((0..s.len()).map(|_| s[rng.gen_range(0..s.len())]));
    buf.sort_by(|x, y| x.total_cmp(y));
    percentile(buf, p)
}

/// The 2.5 % and 97.5 % points of `resamples` bootstrap statistics
/// (seeded, so the same samples give the same interval).
fn interval(resamples: usize, mut statistic: impl FnMut(&mut StdRng) -> f64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut v: Vec<f64> = (0..resamples.max(1)).map(|_| statistic(&mut rng)).collect();
    v.sort_by(|x, y| x.total_cmp(y));
    (percentile(&v, 0.025), percentile(&v, 0.975))
}

impl Difference {
    /// `a − b` at quantile `p`.
    pub fn of(a: &[f64], b: &[f64], p: f64, resamples: usize) -> Self {
        let point = percentile(&sorted(a), p) - percentile(&sorted(b), p);
        let (mut ba, mut bb) = (Vec::new(), Vec::new());
        let (low, high) = interval(resamples, |rng| {
            draw(rng, a, p, &mut ba) - draw(rng, b, p, &mut bb)
        });
        Self { point, low, high }
    }
}

/// The `p` quantile of one series with its 95 % bootstrap interval (the
/// same point, low and high as [`Difference`], for a single series: the
/// median of paired ratios, say).
pub fn quantile_interval(samples: &[f64], p: f64, resamples: usize) -> Difference {
    let point = percentile(&sorted(samples), p);
    let mut buf = Vec::new();
    let (low, high) = interval(resamples, |rng| draw(rng, samples, p, &mut buf));
    Difference { point, low, high }
}

impl std::fmt::Display for Difference {
    /// `+4.10 ms (95 % CI +3.20 … +5.60)`, in the samples' unit (ms).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:+.2} ms (95 % CI {:+.2} … {:+.2})",
            self.point, self.low, self.high
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_interval_holds_the_true_shift_and_is_wide_for_a_rare_tail() {
        // b is a shifted by exactly 2: the point is 2 and the interval holds it.
        let a: Vec<f64> = (0..2000)
            .map(|i| ((i * 7919) % 1000) as f64 / 100.0)
            .collect();
        let b: Vec<f64> = a.iter().map(|x| x - 2.0).collect();
        let d = Difference::of(&a, &b, 0.99, 500);
        assert!((d.point - 2.0).abs() < 1e-9, "{d}");
        assert!(d.low <= 2.0 && 2.0 <= d.high, "{d}");
        // A heavy tail seen in few samples gives a wide interval.
        let few: Vec<f64> = (0..100)
            .map(|i| if i % 50 == 0 { 30.0 } else { 5.0 })
            .collect();
        let base = vec![5.0; 100];
        let wide = Difference::of(&few, &base, 0.99, 500);
        assert!(wide.high - wide.low > 10.0, "{wide}");
        assert_eq!(
            format!(
                "{}",
                Difference {
                    point: 4.1,
                    low: 3.2,
                    high: 5.6
                }
            ),
            "+4.10 ms (95 % CI +3.20 … +5.60)"
        );
    }

    #[test]
    fn a_single_series_gets_an_interval_around_its_median() {
        // Ratios from 1.15 to 1.25 with one outlier: the median is the
        // nearest-rank middle (the 11th of 20, the upper of the two middle
        // values) and the interval holds it, narrow next to the outlier's
        // distance, and not a single point.
        let mut v: Vec<f64> = (0..19).map(|i| 1.15 + 0.1 * f64::from(i) / 18.0).collect();
        v.push(3.0);
        let m = quantile_interval(&v, 0.5, 1000);
        assert_eq!(m.point, v[10]);
        assert!(m.low < m.point && m.point < m.high, "{m:?}");
        assert!(m.high < 1.3 && m.low > 1.1, "{m:?}");
        // Empty: no point, no interval.
        assert!(quantile_interval(&[], 0.5, 10).point.is_nan());
    }

    #[test]
    fn the_bootstrap_is_seeded_and_its_draws_are_pinned() {
        // The same samples give the same interval on every run and every
        // machine; these figures pin the draw order (a then b in each
        // resample, one seeded generator), so a change to it shows here.
        let a: Vec<f64> = (0..50).map(|i| f64::from((i * 37) % 50)).collect();
        let b: Vec<f64> = (0..50).map(|i| f64::from((i * 11) % 40)).collect();
        let d = Difference::of(&a, &b, 0.9, 200);
        assert_eq!(d, Difference::of(&a, &b, 0.9, 200));
        assert_eq!((d.point, d.low, d.high), (9.0, 3.0, 15.0));
        let q = quantile_interval(&a, 0.5, 200);
        assert_eq!((q.point, q.low, q.high), (25.0, 18.0, 32.0));
    }
}
