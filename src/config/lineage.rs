//! The `lineage` section: which object versions each job read, kept on local disk.

use std::path::PathBuf;

use serde::Deserialize;

use super::{expand_path, invalid, ConfigError};

/// Per-job lineage. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageConfig {
    /// The database file (created if missing; `${ENV}` expanded). Required.
    pub path: PathBuf,
    /// Days after its last read that a job is forgotten. Default: `90`.
    #[serde(default = "retention_days")]
    pub retention_days: u64,
    /// File size past which the jobs read longest ago are forgotten. Default: `1073741824`.
    #[serde(default = "max_bytes")]
    pub max_bytes: u64,
    /// Reads waiting for the writer before new ones are dropped (and counted). Default: `65536`.
    #[serde(default = "queue_records")]
    pub queue_records: usize,
}

fn retention_days() -> u64 {
    90
}

fn max_bytes() -> u64 {
    1 << 30
}

fn queue_records() -> usize {
    65536
}

impl LineageConfig {
    /// Expands `${ENV}` in the path.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.path = expand_path(&self.path, "lineage.path", env)?;
        Ok(())
    }

    /// Checks the values; the error names the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=36_500).contains(&self.retention_days) {
            return Err(invalid("lineage.retention_days", "must be between 1 and 36500"));
        }
        if self.max_bytes < 1 << 20 {
            return Err(invalid("lineage.max_bytes", "must be at least 1 MiB"));
        }
        if !(1..=1 << 24).contains(&self.queue_records) {
            return Err(invalid("lineage.queue_records", "must be between 1 and 16777216"));
        }
        Ok(())
    }
}
