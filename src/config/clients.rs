//! The `clients` section: limits on the clients of the S3 listener.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Limits that keep slow, idle or too many clients from wedging the S3 listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// Open connections at most on the S3 listener; past it a new connection is answered 503
    /// SlowDown and closed. Lowered at start-up to fit the open-file limit. The admin listener
    /// is not counted. Default: `4096`.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Seconds a request's header may take to arrive whole, from its first byte (from the
    /// connection's opening, for its first request). Default: `10`.
    #[serde(default = "header_timeout_seconds")]
    pub header_timeout_seconds: u64,
    /// Longest wait, in seconds, between two reads of a request body. Default: `60`.
    #[serde(default = "body_timeout_seconds")]
    pub body_timeout_seconds: u64,
    /// Longest wait, in seconds, for the client to take one piece of a response (at most 1 MiB,
    /// 256 KiB for a client that reads slowly): a client that stops reading is disconnected
    /// after it, and what it held is freed. Default: `60`.
    #[serde(default = "send_timeout_seconds")]
    pub send_timeout_seconds: u64,
    /// Seconds a keep-alive connection may wait for its next request. Default: `60`.
    #[serde(default = "idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            max_connections: max_connections(),
            header_timeout_seconds: header_timeout_seconds(),
            body_timeout_seconds: body_timeout_seconds(),
            send_timeout_seconds: send_timeout_seconds(),
            idle_timeout_seconds: idle_timeout_seconds(),
        }
    }
}

fn max_connections() -> usize {
    4096
}

fn header_timeout_seconds() -> u64 {
    10
}

fn body_timeout_seconds() -> u64 {
    60
}

fn send_timeout_seconds() -> u64 {
    60
}

fn idle_timeout_seconds() -> u64 {
    60
}

impl ClientsConfig {
    /// Checks the values; the error names the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(invalid("clients.max_connections", "must be between 1 and 1000000"));
        }
        for (field, value) in [
            ("clients.header_timeout_seconds", self.header_timeout_seconds),
            ("clients.body_timeout_seconds", self.body_timeout_seconds),
            ("clients.send_timeout_seconds", self.send_timeout_seconds),
            ("clients.idle_timeout_seconds", self.idle_timeout_seconds),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(field, "must be between 1 and 3600"));
            }
        }
        Ok(())
    }
}
