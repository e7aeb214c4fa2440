//! The `auth` section: the access keys clients sign with and the policy over them.

use std::path::PathBuf;

use serde::Deserialize;

use super::{expand, expand_path, invalid, ConfigError};
use crate::auth::{Action, Statement};

/// Client authentication and authorization. Absent: every request is accepted, unsigned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The region clients sign for; requests signed for another are refused. Default:
    /// `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Largest difference, in seconds, between a request's signing time and shardcache's clock
    /// (presigned URLs: how early they may be used). Default: `900` (15 minutes, as S3).
    #[serde(default = "default_skew")]
    pub max_skew_seconds: u64,
    /// Access keys. Default: `[]`.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Policy statements; a request no statement allows is denied. Default: `[]`.
    #[serde(default)]
    pub policy: Vec<Statement>,
    /// A file holding the bearer token that the admin listener's `POST /warm` requires (read at
    /// each call, so it can be rotated in place; `${ENV}` expanded). Default: none, and then
    /// `POST /warm` is refused while `auth` is on.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
}

/// One access key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The access key id clients send. Required.
    pub access_key_id: String,
    /// Its secret (`${ENV}` expanded). Required.
    pub secret_access_key: String,
    /// The principal it authenticates, as policy statements name it. Default: the key id.
    #[serde(default)]
    pub principal: Option<String>,
}

impl KeyConfig {
    /// The principal's name.
    pub fn principal(&self) -> &str {
        self.principal.as_deref().unwrap_or(&self.access_key_id)
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_skew() -> u64 {
    900
}

impl AuthConfig {
    /// Expands `${ENV}` in secrets.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (i, key) in self.keys.iter_mut().enumerate() {
            key.secret_access_key = expand(
                &key.secret_access_key,
                &format!("auth.keys[{i}].secret_access_key"),
                env,
            )?;
        }
        if let Some(file) = &mut self.admin_token_file {
            *file = expand_path(file, "auth.admin_token_file", env)?;
        }
        Ok(())
    }

    /// Checks keys and statements; the error names the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.region.is_empty() {
            return Err(invalid("auth.region", "must not be empty"));
        }
        if !(1..=7 * 24 * 3600).contains(&self.max_skew_seconds) {
            return Err(invalid("auth.max_skew_seconds", "must be between 1 and 604800"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            let field = |f: &str| format!("auth.keys[{i}].{f}");
            if key.access_key_id.is_empty() || !key.access_key_id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
                return Err(invalid(field("access_key_id"), "must be printable ASCII without `/`"));
            }
            if !ids.insert(&key.access_key_id) {
                return Err(invalid(field("access_key_id"), "is listed twice"));
            }
            if key.secret_access_key.is_empty() {
                return Err(invalid(field("secret_access_key"), "must not be empty"));
            }
            if matches!(key.principal(), "*" | "anonymous" | "") {
                return Err(invalid(field("principal"), "`*`, `anonymous` and empty are reserved"));
            }
        }
        let known = |p: &str| p == "*" || p == "anonymous" || self.keys.iter().any(|k| k.principal() == p);
        for (i, s) in self.policy.iter().enumerate() {
            let field = |f: &str| format!("auth.policy[{i}].{f}");
            if let Some(p) = s.principals.iter().find(|p| !known(p)) {
                return Err(invalid(
                    field("principals"),
                    format!("no key's principal is named `{p}`"),
                ));
            }
            if s.principals.is_empty() || s.actions.is_empty() || s.resources.is_empty() {
                return Err(invalid(
                    field("principals"),
                    "principals, actions and resources must not be empty",
                ));
            }
            if s.actions.contains(&Action::ListAllMyBuckets) && !s.resources.iter().any(|r| r.0 == "*") {
                return Err(invalid(
                    field("resources"),
                    "ListAllMyBuckets applies to resource `*` only",
                ));
            }
        }
        Ok(())
    }
}
