//! Summaries of repeated measurements (benchmark repetitions, measured stage rates).

/// Median of `times` (mean of the middle two for an even count); `None` when empty.
pub fn median(times: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // Non-finite times (a failed clock read) are ignored rather than sorted anywhere.
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }
}
