//! The `auth` section: the access keys clients sign with and the policy over them.
//!
//! Keys and statements may also come from `auth.file` (a YAML file with the same `keys` and
//! `policy` lists, such as a mounted Kubernetes Secret), and a key's secret from its own file.
//! [`AuthConfig::load`] reads them all; it runs at start-up and at each reload.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{expand, expand_path, invalid, ConfigError};
use crate::auth::{self, AccessKey, Statement};

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
    /// A YAML file with more `keys` and `policy` statements (a mounted Kubernetes Secret, say),
    /// added to those above; `${ENV}` expanded in the path. Default: none.
    #[serde(default)]
    pub file: Option<PathBuf>,
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
    /// Its secret (`${ENV}` expanded). Exactly one of this and `secret_access_key_file`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// A file holding its secret (surrounding whitespace ignored), read at start-up and at
    /// each reload. Exactly one of this and `secret_access_key`.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
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

/// The keys and statements of `auth.file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    keys: Vec<KeyConfig>,
    #[serde(default)]
    policy: Vec<Statement>,
}

/// The keys and statements in force, secrets read: what the verifier and the policy are built
/// from.
#[derive(Debug, Clone)]
pub struct AuthRules {
    /// Access keys with their secrets.
    pub keys: Vec<AccessKey>,
    /// Policy statements, those of the config first.
    pub policy: Vec<Statement>,
    /// Every file read to build them (`file`, secret files): a reload watches them.
    pub files: Vec<PathBuf>,
}

impl AuthConfig {
    /// Expands `${ENV}` in secrets and paths.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (i, key) in self.keys.iter_mut().enumerate() {
            if let Some(secret) = &mut key.secret_access_key {
                *secret = expand(secret, &format!("auth.keys[{i}].secret_access_key"), env)?;
            }
            if let Some(file) = &mut key.secret_access_key_file {
                *file = expand_path(file, &format!("auth.keys[{i}].secret_access_key_file"), env)?;
            }
        }
        for (field, path) in [
            ("auth.admin_token_file", &mut self.admin_token_file),
            ("auth.file", &mut self.file),
        ] {
            if let Some(p) = path {
                *p = expand_path(p, field, env)?;
            }
        }
        Ok(())
    }

    /// Reads `file` and every secret file, and checks the keys and statements together; the
    /// error names the field (`auth.file: keys[0]...` for the file's own).
    pub fn load(&self) -> Result<AuthRules, ConfigError> {
        let mut keys: Vec<(String, &KeyConfig)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("auth.keys[{i}]"), k))
            .collect();
        let mut statements: Vec<(String, &Statement)> = self
            .policy
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("auth.policy[{i}]"), s))
            .collect();
        let included = match &self.file {
            None => None,
            Some(path) => Some(read_auth_file(path)?),
        };
        if let Some(f) = &included {
            keys.extend(
                f.keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (format!("auth.file: keys[{i}]"), k)),
            );
            statements.extend(
                f.policy
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("auth.file: policy[{i}]"), s)),
            );
        }
        let mut ids = std::collections::HashSet::new();
        let mut rules = AuthRules {
            keys: Vec::with_capacity(keys.len()),
            policy: statements.iter().map(|(_, s)| (*s).clone()).collect(),
            files: self.file.iter().cloned().collect(),
        };
        for (at, key) in &keys {
            let field = |f: &str| format!("{at}.{f}");
            if key.access_key_id.is_empty() || !key.access_key_id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
                return Err(invalid(field("access_key_id"), "must be printable ASCII without `/`"));
            }
            if !ids.insert(&key.access_key_id) {
                return Err(invalid(field("access_key_id"), "is listed twice"));
            }
            if matches!(key.principal(), "*" | "anonymous" | "") {
                return Err(invalid(field("principal"), "`*`, `anonymous` and empty are reserved"));
            }
            let secret = match (&key.secret_access_key, &key.secret_access_key_file) {
                (Some(s), None) => s.clone(),
                (None, Some(path)) => {
                    rules.files.push(path.clone());
                    std::fs::read_to_string(path)
                        .map_err(|e| invalid(field("secret_access_key_file"), format!("{}: {e}", path.display())))?
                        .trim()
                        .to_owned()
                }
                _ => {
                    return Err(invalid(
                        field("secret_access_key"),
                        "exactly one of secret_access_key and secret_access_key_file is required",
                    ))
                }
            };
            if secret.is_empty() {
                return Err(invalid(field("secret_access_key"), "must not be empty"));
            }
            rules.keys.push(AccessKey {
                id: key.access_key_id.clone(),
                secret,
                principal: key.principal().to_owned(),
            });
        }
        let known = |p: &str| p == "*" || p == "anonymous" || rules.keys.iter().any(|k| k.principal == p);
        let actions = || crate::s3::operation::actions().chain([auth::WARM, auth::GET_LINEAGE]);
        for (at, s) in &statements {
            let field = |f: &str| format!("{at}.{f}");
            if s.principals.is_empty() || s.actions.is_empty() || s.resources.is_empty() {
                return Err(invalid(
                    field("principals"),
                    "principals, actions and resources must not be empty",
                ));
            }
            // A statement may outlive its principal's key: revoking a key by deleting it must
            // take effect, not fail the reload and leave the key working.
            for p in s.principals.iter().filter(|p| !known(p)) {
                tracing::warn!(field = %field("principals"), principal = %p, "no key's principal has this name");
            }
            if let Some(a) = s.actions.iter().find(|a| !a.names_any(actions())) {
                return Err(invalid(
                    field("actions"),
                    format!("`{}` names no action (SECURITY.md lists them)", a.pattern()),
                ));
            }
            let lists_buckets = s
                .actions
                .iter()
                .any(|a| a.pattern().eq_ignore_ascii_case("ListAllMyBuckets"));
            if lists_buckets && !s.resources.iter().any(|r| r.0 == "*") {
                return Err(invalid(
                    field("resources"),
                    "ListAllMyBuckets applies to resource `*` only",
                ));
            }
        }
        Ok(rules)
    }

    /// Checks the section's own settings and loads the keys and statements; the error names
    /// the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.region.is_empty() {
            return Err(invalid("auth.region", "must not be empty"));
        }
        if !(1..=7 * 24 * 3600).contains(&self.max_skew_seconds) {
            return Err(invalid("auth.max_skew_seconds", "must be between 1 and 604800"));
        }
        self.load().map(drop)
    }
}

fn read_auth_file(path: &Path) -> Result<AuthFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid("auth.file", format!("{}: {e}", path.display())))?;
    serde_yaml::from_str(&text).map_err(|e| invalid("auth.file", format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const UPSTREAM: &str = "upstreams:\n  u: {kind: fs, root: /srv}\ndefault_upstream: u\n";

    fn config(auth: &str) -> Result<Config, String> {
        Config::from_yaml(&format!("{UPSTREAM}auth:\n{auth}"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_and_statements_may_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let file = dir.path().join("auth.yaml");
        std::fs::write(
            &file,
            "keys:\n  - {access_key_id: AKFILE, secret_access_key: s2, principal: q}\n\
             policy:\n  - {effect: allow, principals: [p, q], actions: [GetObject], resources: ['b/*']}\n",
        )
        .unwrap();
        let c = config(&format!(
            "  file: {}\n  keys:\n    - {{access_key_id: AK, secret_access_key_file: {}, principal: p}}\n",
            file.display(),
            secret.display()
        ))
        .unwrap();
        let rules = c.auth.unwrap().load().unwrap();
        let keys: Vec<_> = rules.keys.iter().map(|k| (&*k.id, &*k.secret, &*k.principal)).collect();
        assert_eq!(keys, [("AK", "from-a-file", "p"), ("AKFILE", "s2", "q")]);
        assert_eq!(rules.policy.len(), 1);
        assert_eq!(rules.files, [file.clone(), secret.clone()]);

        // Errors name the field, in the file too; a missing file is an error, not an empty set.
        std::fs::write(&file, "keys:\n  - {access_key_id: AK, secret_access_key: s3}\n").unwrap();
        let twice = config(&format!(
            "  file: {}\n  keys:\n    - {{access_key_id: AK, secret_access_key: x}}\n",
            file.display()
        ));
        assert!(twice.unwrap_err().starts_with("auth.file: keys[0].access_key_id:"));
        let missing = config(&format!("  file: {}\n", dir.path().join("nope").display()));
        assert!(missing.unwrap_err().starts_with("auth.file:"));
        let both = config("  keys:\n    - {access_key_id: AK, secret_access_key: x, secret_access_key_file: /x}\n");
        assert!(both.unwrap_err().starts_with("auth.keys[0].secret_access_key:"));
        let neither = config("  keys:\n    - {access_key_id: AK}\n");
        assert!(neither.unwrap_err().starts_with("auth.keys[0].secret_access_key:"));
    }
}
