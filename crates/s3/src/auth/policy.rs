//! Who may do what: statements of effect, principals, actions and resources, evaluated as IAM
//! does. An explicit deny wins; without an allow, a request is denied.
//!
//! Resources name what clients name, before routing renames buckets: `bucket/key` for object
//! actions, `bucket/prefix` for the listings (allowed only by a grant that covers every key the
//! prefix can reach, refused by a deny that matches the prefix), `bucket` for bucket calls, `*` for
//! ListAllMyBuckets. `*` in a resource or a principal matches anything (including `/`).

use shardcache_types::Identity;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants the actions.
    Allow,
    /// Refuses them, whatever else allows them.
    Deny,
}

/// The admin listener's `POST /warm`, on `bucket/key`: bring an object into the cache.
pub const WARM: &str = "shardcache:Warm";
/// The admin listener's `GET /lineage`, on the job's name: what a job read.
pub const GET_LINEAGE: &str = "shardcache:GetLineage";

/// An action as a statement names it: an IAM action of S3 with or without its `s3:` prefix
/// (`GetObject`, `s3:ListBucket`; case does not matter), a glob over those (`Get*`),
/// shardcache's own (`shardcache:Warm`, `shardcache:GetLineage`), or `*` (every action, also
/// requests the operation table does not know). The config checks that each names some action
/// ([`Action::names_any`]), so that a typo is an error, not a grant that never applies.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Action {
    /// `*` or `s3:*`: every action.
    any: bool,
    /// The pattern, without `s3:`.
    pattern: String,
}

impl TryFrom<String> for Action {
    type Error = String;

    fn try_from(spelled: String) -> Result<Self, String> {
        if spelled == "Other" {
            return Err("`Other` is gone: name the actions (`GetObjectAcl`, `PutBucketPolicy`, ...; SECURITY.md lists them) or `*`".into());
        }
        let any = spelled == "*" || spelled.eq_ignore_ascii_case("s3:*");
        let pattern = match spelled.get(..3) {
            Some(p) if p.eq_ignore_ascii_case("s3:") => spelled[3..].to_owned(),
            _ => spelled,
        };
        Ok(Self { any, pattern })
    }
}

impl Action {
    /// Whether it covers `action` (`None`: a request the operation table does not know).
    pub fn covers(&self, action: Option<&str>) -> bool {
        self.any || action.is_some_and(|a| glob_by(&self.pattern, a, u8::eq_ignore_ascii_case))
    }

    /// Whether it covers any of `known` (or is `*`).
    pub fn names_any<'a>(&self, mut known: impl Iterator<Item = &'a str>) -> bool {
        self.any || known.any(|a| self.covers(Some(a)))
    }

    /// As the statement wrote it, without `s3:`.
    pub fn pattern(&self) -> &str {
        &self.pattern
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

/// What an action is asked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// One resource: `bucket/key`, `bucket`, `*`.
    Exact(&'a str),
    /// Every resource that starts with this (a listing's `bucket/prefix`): an allow must cover
    /// all of them; a deny applies where it matches the prefix itself. A listing of a parent
    /// prefix still shows the names of denied keys, as with IAM, where denying objects does not
    /// deny ListBucket: denying a file must not break the listing of its directory.
    Under(&'a str),
}

impl Policy {
    /// Whether `who` may do `action` (`None`: an operation the table does not know) on `target`.
    pub fn allows(&self, who: &Identity, action: Option<&str>, target: Target<'_>) -> bool {
        let mut allowed = false;
        for s in &self.statements {
            if !(s.principals.iter().any(|p| names(p, who)) && s.actions.iter().any(|a| a.covers(action))) {
                continue;
            }
            let applies = |r: &Resource| match (s.effect, target) {
                (_, Target::Exact(name)) => glob(&r.0, name),
                (Effect::Allow, Target::Under(prefix)) => r.0.ends_with('*') && glob(&r.0, prefix),
                (Effect::Deny, Target::Under(prefix)) => glob(&r.0, prefix),
            };
            if s.resources.iter().any(applies) {
                match s.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed
    }
}

impl Policy {
    /// Whether some statement allows `who` one of `actions` on some resource under `prefix`
    /// (denies aside): DeleteObjects asks this before it reads a body whose keys it would check
    /// one by one.
    pub fn may_allow_under(&self, who: &Identity, actions: &[&str], prefix: &str) -> bool {
        self.statements.iter().any(|s| {
            s.effect == Effect::Allow
                && s.principals.iter().any(|p| names(p, who))
                && s.actions.iter().any(|a| actions.iter().any(|x| a.covers(Some(x))))
                && s.resources.iter().any(|r| may_extend(&r.0, prefix))
        })
    }
}

/// Whether some text that starts with `prefix` matches `pattern`: before the pattern's first
/// `*`, the two agree as far as both go; after it, anything can follow.
fn may_extend(pattern: &str, prefix: &str) -> bool {
    match pattern.split_once('*') {
        Some((literal, _)) => literal.starts_with(prefix) || prefix.starts_with(literal),
        None => pattern.starts_with(prefix),
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
    glob_by(pattern, text, |a, b| a == b)
}

/// [`glob`] with `eq` comparing bytes (e.g. without regard to ASCII case).
fn glob_by(pattern: &str, text: &str, eq: fn(&u8, &u8) -> bool) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let starts = |t: &[u8], p: &[u8]| t.len() >= p.len() && t.iter().zip(p).all(|(a, b)| eq(a, b));
    let (Some(first_star), Some(last_star)) = (
        pattern.iter().position(|&b| b == b'*'),
        pattern.iter().rposition(|&b| b == b'*'),
    ) else {
        return text.len() == pattern.len() && starts(text, pattern);
    };
    // The text must start with what comes before the first `*` and end with what follows the
    // last; the parts between are found in order, each as early as it can be, in what is left.
    let (first, last) = (&pattern[..first_star], &pattern[last_star + 1..]);
    if text.len() < first.len() + last.len() || !starts(text, first) || !starts(&text[text.len() - last.len()..], last)
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    let middle = pattern.get(first_star + 1..last_star).unwrap_or_default();
    for part in middle.split(|&b| b == b'*').filter(|p| !p.is_empty()) {
        match (0..=rest.len()).find(|&i| starts(&rest[i..], part)) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(effect: Effect, principals: &[&str], actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            effect,
            principals: principals.iter().map(|s| (*s).to_owned()).collect(),
            actions: actions
                .iter()
                .map(|a| Action::try_from(a.to_string()).unwrap())
                .collect(),
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
        assert!(glob("a**b*", "ab") && glob("*b*b", "abab") && !glob("*b*b", "aba"));
    }

    /// `*`-glob by the definition: `*` takes any number of characters, anything else itself.
    fn glob_by_definition(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| glob_by_definition(rest, &text[i..])),
            Some((c, rest)) => text.first() == Some(c) && glob_by_definition(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn globs_match_by_the_definition(pattern in "[ab*/]{0,8}", text in "[ab/]{0,10}") {
            proptest::prop_assert_eq!(glob(&pattern, &text), glob_by_definition(pattern.as_bytes(), text.as_bytes()));
        }
    }

    #[test]
    fn actions_match_iam_names_without_regard_to_case() {
        let action = |s: &str| Action::try_from(s.to_owned()).unwrap();
        let get = action("s3:getobject");
        assert!(get.covers(Some("GetObject")) && !get.covers(Some("GetObjectVersion")));
        let gets = action("Get*");
        assert!(gets.covers(Some("GetObjectAcl")) && gets.covers(Some("GetBucketPolicy")));
        assert!(
            !gets.covers(Some("PutObject")) && !gets.covers(None),
            "a glob is not `*`"
        );
        assert!(action("*").covers(None) && action("s3:*").covers(Some(WARM)));
        assert!(action("shardcache:Warm").covers(Some(WARM)));
        let known = ["GetObject", "PutObject"];
        assert!(action("put*").names_any(known.into_iter()));
        assert!(!action("GetObjekt").names_any(known.into_iter()));
        assert!(Action::try_from("Other".to_owned()).is_err());
    }

    #[test]
    fn explicit_deny_wins_and_default_is_deny() {
        let trainer = Identity::Principal("trainer".into());
        let policy = Policy {
            statements: vec![
                statement(Effect::Allow, &["trainer"], &["GetObject", "ListBucket"], &["data/*"]),
                statement(Effect::Deny, &["*"], &["*"], &["data/secret/*"]),
                statement(Effect::Allow, &["anonymous"], &["GetObject"], &["demo/*"]),
            ],
        };
        let get = |who: &Identity, resource: &str| policy.allows(who, Some("GetObject"), Target::Exact(resource));
        assert!(get(&trainer, "data/train/1.tar"));
        assert!(!get(&trainer, "data/secret/key"));
        assert!(!policy.allows(&trainer, Some("PutObject"), Target::Exact("data/train/1.tar")));
        assert!(!policy.allows(&trainer, None, Target::Exact("data/train/1.tar")));
        assert!(!get(&trainer, "demo/hello.txt"), "anonymous is not any principal");
        assert!(get(&Identity::Anonymous, "demo/hello.txt"));
        assert!(!get(&Identity::Anonymous, "data/train/1.tar"));
        assert!(!Policy::default().allows(&trainer, Some("GetObject"), Target::Exact("data/x")));
    }

    impl Policy {
        fn allows_under_some(&self, prefix: &str) -> bool {
            self.may_allow_under(&Identity::Principal("r".into()), &["ListBucket"], prefix)
        }
    }

    #[test]
    fn a_listing_is_allowed_only_where_a_grant_covers_every_key_under_its_prefix() {
        let reader = Identity::Principal("r".into());
        let policy = Policy {
            statements: vec![
                statement(Effect::Allow, &["r"], &["ListBucket"], &["d/a.bin", "d/pub/*", "e/*"]),
                statement(Effect::Deny, &["r"], &["ListBucket"], &["e/secret/*", "e/x.bin"]),
            ],
        };
        let list = |prefix: &str| policy.allows(&reader, Some("ListBucket"), Target::Under(prefix));
        assert!(!list("d/a.bin"), "an exact key does not cover a.bin.bak");
        assert!(list("d/pub/") && list("d/pub/x") && !list("d/pu") && !list("d/"));
        assert!(list("e/pub/") && list("e/"), "a parent of denied keys lists");
        let some = |prefix: &str| policy.allows_under_some(prefix);
        assert!(some("d/") && some("e/") && !some("f/") && !some("dd/"));
        for denied in ["e/secret/", "e/secret/deep/", "e/x.bin"] {
            assert!(!list(denied), "{denied} is denied");
        }
    }
}
