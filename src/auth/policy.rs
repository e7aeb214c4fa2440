//! Who may do what: statements of effect, principals, actions and resources, evaluated as IAM
//! does. An explicit deny wins; without an allow, a request is denied.
//!
//! Resources name what clients name, before routing renames buckets: `bucket/key` for object
//! actions, `bucket/prefix` for ListBucket (a listing is allowed only within the prefixes a
//! statement grants), `bucket` for bucket calls, `*` for ListAllMyBuckets. `*` in a resource or
//! a principal matches anything (including `/`).

use crate::types::Identity;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants the actions.
    Allow,
    /// Refuses them, whatever else allows them.
    Deny,
}

/// What a request does, in IAM's vocabulary (without the `s3:` prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum Action {
    /// GetObject and HeadObject (cache hits included), with or without `versionId`.
    GetObject,
    /// ListObjects (v1 and v2) and HeadBucket.
    ListBucket,
    /// PutObject, CopyObject (at the destination), and the multipart calls.
    PutObject,
    /// DeleteObject and DeleteObjects.
    DeleteObject,
    /// ListBuckets.
    ListAllMyBuckets,
    /// GetBucketLocation.
    GetBucketLocation,
    /// Any other S3 call (ACLs, tagging, bucket configuration, ...).
    Other,
    /// The admin listener's `POST /warm`, on `bucket/key`: bring an object into the cache.
    #[serde(rename = "shardcache:Warm")]
    Warm,
    /// The admin listener's `GET /lineage`, on the job's name: what a job read.
    #[serde(rename = "shardcache:GetLineage")]
    GetLineage,
    /// Every action.
    #[serde(rename = "*")]
    All,
}

impl Action {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetObject => "GetObject",
            Self::ListBucket => "ListBucket",
            Self::PutObject => "PutObject",
            Self::DeleteObject => "DeleteObject",
            Self::ListAllMyBuckets => "ListAllMyBuckets",
            Self::GetBucketLocation => "GetBucketLocation",
            Self::Other => "Other",
            Self::Warm => "shardcache:Warm",
            Self::GetLineage => "shardcache:GetLineage",
            Self::All => "*",
        }
    }
}

/// A resource glob: `datasets/train/*`, `datasets`, `*`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Resource(pub String);

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Allow or deny.
    pub effect: Effect,
    /// Principal names (from `auth.keys`), `*` for any signed principal, or `anonymous`.
    pub principals: Vec<String>,
    /// Actions.
    pub actions: Vec<Action>,
    /// Resource globs.
    pub resources: Vec<Resource>,
}

/// Every statement, in no particular order (the outcome does not depend on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The statements.
    pub statements: Vec<Statement>,
}

impl Policy {
    /// Whether `who` may do `action` on `resource`.
    pub fn allows(&self, who: &Identity, action: Action, resource: &str) -> bool {
        let applies = |s: &&Statement| {
            s.principals.iter().any(|p| names(p, who))
                && s.actions.iter().any(|a| *a == action || *a == Action::All)
                && s.resources.iter().any(|r| glob(&r.0, resource))
        };
        let mut matching = self.statements.iter().filter(applies);
        let mut allowed = false;
        for s in matching.by_ref() {
            match s.effect {
                Effect::Deny => return false,
                Effect::Allow => allowed = true,
            }
        }
        allowed
    }
}

/// Whether a statement's principal entry names `who`.
fn names(entry: &str, who: &Identity) -> bool {
    match who {
        Identity::Anonymous => entry == "anonymous",
        Identity::Principal(name) => entry == "*" || entry == &**name,
    }
}

/// `*`-only glob matching, `*` spanning any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(effect: Effect, principals: &[&str], actions: &[Action], resources: &[&str]) -> Statement {
        Statement {
            effect,
            principals: principals.iter().map(|s| (*s).to_owned()).collect(),
            actions: actions.to_vec(),
            resources: resources.iter().map(|s| Resource((*s).to_owned())).collect(),
        }
    }

    #[test]
    fn globs_match_like_iam() {
        assert!(glob("*", ""));
        assert!(glob("datasets/*", "datasets/a/b"));
        assert!(glob("datasets/*", "datasets/"));
        assert!(!glob("datasets/*", "datasets"));
        assert!(glob("datasets", "datasets"));
        assert!(glob("d*/train/*.tar", "datasets/train/x/1.tar"));
        assert!(!glob("d*/train/*.tar", "datasets/val/1.tar"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn explicit_deny_wins_and_default_is_deny() {
        let trainer = Identity::Principal("trainer".into());
        let policy = Policy {
            statements: vec![
                statement(
                    Effect::Allow,
                    &["trainer"],
                    &[Action::GetObject, Action::ListBucket],
                    &["data/*"],
                ),
                statement(Effect::Deny, &["*"], &[Action::All], &["data/secret/*"]),
                statement(Effect::Allow, &["anonymous"], &[Action::GetObject], &["demo/*"]),
            ],
        };
        assert!(policy.allows(&trainer, Action::GetObject, "data/train/1.tar"));
        assert!(!policy.allows(&trainer, Action::GetObject, "data/secret/key"));
        assert!(!policy.allows(&trainer, Action::PutObject, "data/train/1.tar"));
        assert!(
            !policy.allows(&trainer, Action::GetObject, "demo/hello.txt"),
            "anonymous is not any principal"
        );
        assert!(policy.allows(&Identity::Anonymous, Action::GetObject, "demo/hello.txt"));
        assert!(!policy.allows(&Identity::Anonymous, Action::GetObject, "data/train/1.tar"));
        assert!(!Policy::default().allows(&trainer, Action::GetObject, "data/x"));
    }
}
