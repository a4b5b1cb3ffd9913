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
