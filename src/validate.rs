//! Range checks of numeric settings, called by each settings type's `validate()` where the
//! settings are read (a TOML file, a profile, the command line). A bad value would otherwise
//! divide by zero, train backwards or learn nothing silently; each error names the field, the
//! value and the range allowed.
use anyhow::{ensure, Result};

/// An integer count of at least 1.
pub fn at_least_one<T: Into<i128> + Copy + std::fmt::Display>(field: &str, v: T) -> Result<()> {
    ensure!(
        v.into() >= 1,
        "{field} = {v} is out of range: it must be at least 1"
    );
    Ok(())
}

/// A finite number > 0.
pub fn positive(field: &str, v: f64) -> Result<()> {
    ensure!(
        v.is_finite() && v > 0.0,
        "{field} = {v} is out of range: it must be a finite number > 0"
    );
    Ok(())
}

/// A finite number ≥ 0.
pub fn non_negative(field: &str, v: f64) -> Result<()> {
    ensure!(
        v.is_finite() && v >= 0.0,
        "{field} = {v} is out of range: it must be a finite number ≥ 0"
    );
    Ok(())
}

/// A number in the closed interval [0, 1].
pub fn unit_interval(field: &str, v: f64) -> Result<()> {
    ensure!(
        (0.0..=1.0).contains(&v),
        "{field} = {v} is out of range: it must lie in [0, 1]"
    );
    Ok(())
}

/// A command-line count (`value_parser = count`): a whole number ≥ 1.
pub fn count(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("it must be a whole number ≥ 1".into()),
    }
}

/// A command-line number (`value_parser = positive_number`): finite and > 0.
pub fn positive_number(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("it must be a finite number > 0".into()),
    }
}
