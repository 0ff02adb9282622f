//! Conversion-quality arithmetic: the send-lag histogram, percentiles read from it, and the
//! local match-quality score. Pure: the server keeps the counts, this module interprets them.
//!
//! **Lag** is `sent time − event_time`, counted in fixed log-spaced buckets ([`LAG_BOUNDS`]).
//! A percentile read from the buckets is the upper bound of the bucket it falls in (never
//! more than the exact maximum, which is kept beside the buckets): "p95 ≤ 5 min", not an
//! interpolated guess.
//!
//! **The local score** is built on the user-matching components of Pinterest's Event Quality
//! Score (`quality_components` of `GET /ad_accounts/{id}/conversion_eqs`): `hashed_email`,
//! `click_id_epik`, `ip_address` + `user_agent`, `advertiser_external_id`. Each key's coverage
//! (share of events that carry it, 0..=100) is weighted by [`SCORE_WEIGHTS`] and the weighted
//! mean is the score, 0..=100. The weights are ours (Pinterest publishes none): email is the
//! strongest match key, click id and IP + user agent tie a conversion to the Pin click, and an
//! external id helps repeat buyers. Phone, name and address coverage are reported beside it
//! but are not EQS components, so they do not move the score.

use crate::event::MatchKeys;

/// Upper bounds (seconds, inclusive) of the lag buckets; one more bucket holds everything
/// above the last bound (more than a day).
pub const LAG_BOUNDS: [i64; 11] = [1, 5, 30, 60, 300, 900, 1800, 3600, 7200, 21_600, 86_400];

/// Number of lag buckets: one per bound plus the overflow bucket.
pub const LAG_BUCKETS: usize = LAG_BOUNDS.len() + 1;

/// An event sent more than this many seconds after it happened counts as late: Pinterest
/// counts it as an offline conversion and cannot de-duplicate it with the Tag.
pub const LATE_AFTER_SECS: i64 = 3600;

/// Weights of the score's components, by match-key bit (they sum to 100).
pub const SCORE_WEIGHTS: [(u32, f64); 4] = [
    (MatchKeys::EM, 35.0),
    (MatchKeys::CLICK_ID, 25.0),
    (MatchKeys::IP_UA, 25.0),
    (MatchKeys::EXTERNAL_ID, 15.0),
];

/// The bucket a lag of `secs` falls in (negative lags, from clock skew, count as 0).
pub fn lag_bucket(secs: i64) -> usize {
    LAG_BOUNDS.partition_point(|b| *b < secs.max(0))
}

/// A human label for bucket `i`: `≤ 1 s`, ..., `> 24 h`.
pub fn lag_bucket_label(i: usize) -> String {
    match LAG_BOUNDS.get(i) {
        Some(b) => format!("≤ {}", duration_label(*b)),
        None => format!("> {}", duration_label(LAG_BOUNDS[LAG_BOUNDS.len() - 1])),
    }
}

/// `q` (0..=1) of the lag distribution in `counts` (one count per bucket), as the upper bound
/// of the bucket it falls in, capped at `max` (the exact largest lag). `None` when empty.
pub fn lag_percentile(counts: &[i64], q: f64, max: i64) -> Option<i64> {
    let total: i64 = counts.iter().sum();
    if total <= 0 {
        return None;
    }
    // The rank of the q-th event, 1-based: the smallest rank whose share reaches q.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let bound = LAG_BOUNDS.get(i).copied().unwrap_or(max);
            return Some(bound.min(max));
        }
    }
    Some(max)
}

/// The local match-quality score (0..=100) from the coverage of each key (0..=100), given as
/// a lookup by match-key bit.
pub fn match_score(coverage: impl Fn(u32) -> f64) -> f64 {
    let total: f64 = SCORE_WEIGHTS.iter().map(|(_, w)| w).sum();
    let sum: f64 = SCORE_WEIGHTS
        .iter()
        .map(|(k, w)| w * coverage(*k).clamp(0.0, 100.0))
        .sum();
    sum / total
}

/// The grade of a score, in Pinterest's EQS words: `GOOD` from 75, `FAIR` from 50,
/// `NEEDS_IMPROVEMENT` below. The thresholds are ours.
pub fn grade(score: f64) -> &'static str {
    if score >= 75.0 {
        "GOOD"
    } else if score >= 50.0 {
        "FAIR"
    } else {
        "NEEDS_IMPROVEMENT"
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0), rounded to one decimal.
pub fn percent(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// `90 s`, `5 min`, `2 h`, `1 d` style label for a number of seconds.
pub fn duration_label(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 && s % 60 == 0 => format!("{} min", s / 60),
        s if s < 3600 => format!("{:.1} min", s as f64 / 60.0),
        s if s < 86_400 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s < 86_400 => format!("{:.1} h", s as f64 / 3600.0),
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s => format!("{:.1} d", s as f64 / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(lag_bucket(-3), 0);
        assert_eq!(lag_bucket(0), 0);
        assert_eq!(lag_bucket(1), 0);
        assert_eq!(lag_bucket(2), 1);
        assert_eq!(lag_bucket(3600), 7);
        assert_eq!(lag_bucket(3601), 8);
        assert_eq!(lag_bucket(86_400), 10);
        assert_eq!(lag_bucket(86_401), 11);
        assert_eq!(lag_bucket_label(0), "≤ 1 s");
        assert_eq!(lag_bucket_label(11), "> 1 d");
    }

    #[test]
    fn percentiles_are_bucket_bounds_capped_at_the_maximum() {
        let mut counts = [0i64; LAG_BUCKETS];
        assert_eq!(lag_percentile(&counts, 0.5, 0), None);
        // 90 events within 5 s, 10 between 30 min and an hour.
        counts[1] = 90;
        counts[7] = 10;
        assert_eq!(lag_percentile(&counts, 0.5, 3000), Some(5));
        assert_eq!(lag_percentile(&counts, 0.9, 3000), Some(5));
        assert_eq!(lag_percentile(&counts, 0.95, 3000), Some(3000));
        assert_eq!(lag_percentile(&counts, 1.0, 3000), Some(3000));
        counts[11] = 1;
        assert_eq!(lag_percentile(&counts, 1.0, 200_000), Some(200_000));
    }

    #[test]
    fn the_score_is_the_weighted_mean_of_the_eqs_components() {
        assert_eq!(match_score(|_| 100.0), 100.0);
        assert_eq!(match_score(|_| 0.0), 0.0);
        // Only IP + user agent everywhere (a page visit from the browser): 25.
        let s = match_score(|k| if k == MatchKeys::IP_UA { 100.0 } else { 0.0 });
        assert_eq!(s, 25.0);
        assert_eq!(grade(s), "NEEDS_IMPROVEMENT");
        assert_eq!(grade(80.0), "GOOD");
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(duration_label(300), "5 min");
        assert_eq!(duration_label(21_600), "6 h");
    }
}
