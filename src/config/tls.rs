//! The `tls` section: HTTPS on the listeners.

use std::path::PathBuf;

use serde::Deserialize;

use super::{expand_path, ConfigError};

/// HTTPS on the S3 listener (and the admin listener unless `admin` is off). Absent: plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (`${ENV}` expanded). Required.
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`${ENV}` expanded). Required.
    pub key_file: PathBuf,
    /// Serve the admin listener over HTTPS too. Default: `true`.
    #[serde(default = "enabled")]
    pub admin: bool,
}

fn enabled() -> bool {
    true
}

impl TlsConfig {
    /// Expands `${ENV}` in the paths.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.cert_file = expand_path(&self.cert_file, "tls.cert_file", env)?;
        self.key_file = expand_path(&self.key_file, "tls.key_file", env)?;
        Ok(())
    }
}
