//! How an S3 upstream's failures are absorbed: retries, hedged chunk reads, a circuit breaker.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Retries of idempotent upstream reads (chunk GETs, HEADs, the GET that opens a cold object).
/// A chunk whose body breaks mid-stream is resumed from the byte where it stopped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries of one call, the first included; `1` turns retries off. A broken body is resumed
    /// up to `attempts - 1` times. Default: `3`.
    #[serde(default = "attempts")]
    pub attempts: u32,
    /// Backoff before the first retry, in milliseconds; it doubles per retry, and each wait is
    /// drawn at random below it (full jitter). Default: `50`.
    #[serde(default = "base_delay_ms")]
    pub base_delay_ms: u64,
    /// Longest backoff, in milliseconds. Default: `2000`.
    #[serde(default = "max_delay_ms")]
    pub max_delay_ms: u64,
    /// Seconds after a call's first failure past which it is not retried again. Default: `30`.
    #[serde(default = "deadline_seconds")]
    pub deadline_seconds: u64,
    /// The least a body must deliver, in bytes per second over `floor_window_seconds`: a body
    /// that drips below it (every read arriving within `read_timeout_seconds`, so no timeout
    /// cuts it) is dropped and resumed from the byte it reached, like a cut; `0` turns the floor
    /// off. A resume counts as an attempt, so set it below the slowest rate the upstream really
    /// serves one connection at. Default: `65536` (64 KiB/s).
    #[serde(default = "floor_bytes_per_second")]
    pub floor_bytes_per_second: u64,
    /// Seconds over which a body's rate is measured against the floor. Default: `10`.
    #[serde(default = "floor_window_seconds")]
    pub floor_window_seconds: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: attempts(),
            base_delay_ms: base_delay_ms(),
            max_delay_ms: max_delay_ms(),
            deadline_seconds: deadline_seconds(),
            floor_bytes_per_second: floor_bytes_per_second(),
            floor_window_seconds: floor_window_seconds(),
        }
    }
}

fn attempts() -> u32 {
    3
}

fn base_delay_ms() -> u64 {
    50
}

fn max_delay_ms() -> u64 {
    2000
}

fn deadline_seconds() -> u64 {
    30
}

fn floor_bytes_per_second() -> u64 {
    64 << 10
}

fn floor_window_seconds() -> u64 {
    10
}

/// The upstream's circuit breaker: after `failures` failed calls in a row, or when `error_rate`
/// of the last 50 calls failed, misses fail fast (503 SlowDown) for `open_seconds`; then one
/// probe call is let through, and its outcome closes or reopens the breaker. Cache hits are
/// served throughout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failed calls in a row (each after its retries) that open the breaker; `0` turns it off.
    /// Default: `5`.
    #[serde(default = "failures")]
    pub failures: u32,
    /// Share of the last 50 calls (once 20 are known) that, failed, opens the breaker; `null`
    /// for none. Default: `0.5`.
    #[serde(default = "error_rate")]
    pub error_rate: Option<f64>,
    /// Seconds the breaker stays open before a probe. Default: `10`.
    #[serde(default = "open_seconds")]
    pub open_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: failures(),
            error_rate: error_rate(),
            open_seconds: open_seconds(),
        }
    }
}

impl BreakerConfig {
    /// Checks the values of the breaker at `field`; the error names the field.
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.error_rate.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return Err(invalid(format!("{field}.error_rate"), "must be above 0 and at most 1"));
        }
        if !(1..=3600).contains(&self.open_seconds) {
            return Err(invalid(format!("{field}.open_seconds"), "must be between 1 and 3600"));
        }
        Ok(())
    }
}

fn failures() -> u32 {
    5
}

fn error_rate() -> Option<f64> {
    Some(0.5)
}

fn open_seconds() -> u64 {
    10
}

/// Hedged chunk reads: a chunk GET that has not answered after a delay is sent again, and the
/// first answer wins. The delay is `after_ms`, or with `quantile` that quantile of the
/// upstream's recent answer times, never less than `after_ms`. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// Milliseconds to wait for an answer before sending the second request (with `quantile`,
    /// the least wait). Required.
    pub after_ms: u64,
    /// Hedge after this quantile (for example `0.95`) of the last 512 answer times instead.
    /// Default: none (the fixed delay).
    #[serde(default)]
    pub quantile: Option<f64>,
    /// Most hedges as a share of chunk GETs, so a slow upstream does not get twice the load.
    /// Default: `0.05`.
    #[serde(default = "max_share")]
    pub max_share: f64,
}

fn max_share() -> f64 {
    0.05
}

/// Checks the values of upstream `name`; the error names the field.
pub(super) fn validate(
    name: &str,
    retry: &RetryConfig,
    breaker: &BreakerConfig,
    hedge: Option<&HedgeConfig>,
) -> Result<(), ConfigError> {
    let field = |f: &str| format!("upstreams.{name}.{f}");
    if !(1..=10).contains(&retry.attempts) {
        return Err(invalid(field("retry.attempts"), "must be between 1 and 10"));
    }
    if !(1..=60_000).contains(&retry.base_delay_ms) {
        return Err(invalid(field("retry.base_delay_ms"), "must be between 1 and 60000"));
    }
    if !(retry.base_delay_ms..=300_000).contains(&retry.max_delay_ms) {
        return Err(invalid(
            field("retry.max_delay_ms"),
            "must be at least base_delay_ms and at most 300000",
        ));
    }
    if !(1..=3600).contains(&retry.deadline_seconds) {
        return Err(invalid(field("retry.deadline_seconds"), "must be between 1 and 3600"));
    }
    if !(1..=3600).contains(&retry.floor_window_seconds) {
        return Err(invalid(
            field("retry.floor_window_seconds"),
            "must be between 1 and 3600",
        ));
    }
    breaker.validate(&field("breaker"))?;
    if let Some(h) = hedge {
        if !(1..=60_000).contains(&h.after_ms) {
            return Err(invalid(field("hedge.after_ms"), "must be between 1 and 60000"));
        }
        if h.quantile.is_some_and(|q| !(q > 0.0 && q < 1.0)) {
            return Err(invalid(field("hedge.quantile"), "must be above 0 and below 1"));
        }
        if !(h.max_share > 0.0 && h.max_share <= 1.0) {
            return Err(invalid(field("hedge.max_share"), "must be above 0 and at most 1"));
        }
    }
    Ok(())
}
