//! The `audit` section: the per-request audit log.

use std::path::PathBuf;

use serde::Deserialize;

use super::{expand_path, invalid, ConfigError};
use crate::audit::AuditLevel;

/// The audit log. Absent: no audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `all`, `writes` (and denials) or `denials`; denials are always logged. Default:
    /// `writes`.
    #[serde(default)]
    pub requests: AuditLevel,
    /// A file to append to (`${ENV}` expanded). Default: none (standard output).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Size at which the file is rotated to `file.1`. Default: `104857600` (100 MiB).
    #[serde(default = "max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`file.1` ... `file.N`). Default: `5`.
    #[serde(default = "max_files")]
    pub max_files: u32,
    /// Records waiting for the writer before new ones are dropped (and counted). Default:
    /// `65536`.
    #[serde(default = "queue_records")]
    pub queue_records: usize,
}

fn max_file_bytes() -> u64 {
    100 << 20
}

fn max_files() -> u32 {
    5
}

fn queue_records() -> usize {
    65536
}

impl AuditConfig {
    /// Expands `${ENV}` in the file path.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(f) = &mut self.file {
            *f = expand_path(f, "audit.file", env)?;
        }
        Ok(())
    }

    /// Checks the values; the error names the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_file_bytes < 4096 {
            return Err(invalid("audit.max_file_bytes", "must be at least 4096"));
        }
        if !(1..=1 << 24).contains(&self.queue_records) {
            return Err(invalid("audit.queue_records", "must be between 1 and 16777216"));
        }
        Ok(())
    }
}
