//! Percentiles of measured durations.

use std::time::Duration;

/// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method: the
/// smallest sample such that at least p% of the samples are ≤ it. No
/// interpolation, so every reported value is one that was measured.
/// `None` for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    // Nearest rank: ceil(p/100 · n), 1-based. The float product is exact
    // enough for the sample counts a benchmark takes (≤ millions).
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

/// p50, p95 and p99 of `samples`.
pub fn summary(samples: &[Duration]) -> Option<[Duration; 3]> {
    Some([
        percentile(samples, 50.0)?,
        percentile(samples, 95.0)?,
        percentile(samples, 99.0)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_on_one_to_a_hundred() {
        // Shuffled on purpose: the input order must not matter.
        let mut values: Vec<u64> = (1..=100).rev().collect();
        values.swap(3, 70);
        let samples = ms(&values);
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 95.0), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(1)));
    }

    #[test]
    fn small_samples_take_a_measured_value() {
        let samples = ms(&[30, 10, 20]);
        // ceil(0.5·3) = 2nd smallest; ceil(0.95·3) = 3rd.
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&samples, 95.0), Some(Duration::from_millis(30)));
        let two = ms(&[7, 3]);
        assert_eq!(percentile(&two, 50.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&two, 99.0), Some(Duration::from_millis(7)));
        let one = ms(&[42]);
        assert_eq!(
            summary(&one),
            Some([Duration::from_millis(42); 3]),
            "one sample is every percentile"
        );
    }

    #[test]
    fn no_samples_or_a_bad_rank_give_nothing() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(summary(&[]), None);
        let samples = ms(&[1, 2, 3]);
        assert_eq!(percentile(&samples, 0.0), None);
        assert_eq!(percentile(&samples, 101.0), None);
        assert_eq!(percentile(&samples, f64::NAN), None);
    }

    #[test]
    fn fifty_samples_p95_and_p99_are_distinct_ranks() {
        let values: Vec<u64> = (1..=50).collect();
        let samples = ms(&values);
        // ceil(0.95·50) = 48, ceil(0.99·50) = 50.
        assert_eq!(percentile(&samples, 95.0), Some(Duration::from_millis(48)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(50)));
    }
}
