//! The operation table: every S3 request shape shardcache knows, by method, target (service,
//! bucket or object), sub-resources and the copy-source header, with the operation AWS names
//! and the IAM action that AWS's service authorization reference gives it.
//!
//! A request whose sub-resources, or other parameters, match no row is
//! [`Operation::Unknown`]: it is forwarded as is with authentication off, and with it on only a
//! statement allowing every action (`*`) lets it through.

use std::sync::LazyLock;

use http::{HeaderMap, Method};

use crate::Query;

macro_rules! operations {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// An S3 operation, as AWS names it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($(#[$doc])* $name,)*
            /// A request shape the table does not know.
            Unknown,
        }

        impl Operation {
            /// AWS's name for it (also the `operation` metric label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                    Self::Unknown => "Unknown",
                }
            }
        }
    };
}

operations! {
    ListBuckets,
    ListObjects, ListObjectsV2, ListObjectVersions, ListMultipartUploads,
    HeadBucket, CreateBucket, DeleteBucket, GetBucketLocation, DeleteObjects,
    GetBucketAcl, PutBucketAcl,
    GetBucketPolicy, PutBucketPolicy, DeleteBucketPolicy, GetBucketPolicyStatus,
    GetBucketTagging, PutBucketTagging, DeleteBucketTagging,
    GetBucketVersioning, PutBucketVersioning,
    GetBucketCors, PutBucketCors, DeleteBucketCors,
    GetBucketEncryption, PutBucketEncryption, DeleteBucketEncryption,
    GetBucketLifecycleConfiguration, PutBucketLifecycleConfiguration, DeleteBucketLifecycle,
    GetBucketLogging, PutBucketLogging,
    GetBucketNotificationConfiguration, PutBucketNotificationConfiguration,
    GetObjectLockConfiguration, PutObjectLockConfiguration,
    GetPublicAccessBlock, PutPublicAccessBlock, DeletePublicAccessBlock,
    GetBucketReplication, PutBucketReplication, DeleteBucketReplication,
    GetBucketWebsite, PutBucketWebsite, DeleteBucketWebsite,
    GetBucketRequestPayment, PutBucketRequestPayment,
    GetBucketAccelerateConfiguration, PutBucketAccelerateConfiguration,
    GetBucketOwnershipControls, PutBucketOwnershipControls, DeleteBucketOwnershipControls,
    GetBucketAnalyticsConfiguration, ListBucketAnalyticsConfigurations,
    PutBucketAnalyticsConfiguration, DeleteBucketAnalyticsConfiguration,
    GetBucketInventoryConfiguration, ListBucketInventoryConfigurations,
    PutBucketInventoryConfiguration, DeleteBucketInventoryConfiguration,
    GetBucketMetricsConfiguration, ListBucketMetricsConfigurations,
    PutBucketMetricsConfiguration, DeleteBucketMetricsConfiguration,
    GetBucketIntelligentTieringConfiguration, ListBucketIntelligentTieringConfigurations,
    PutBucketIntelligentTieringConfiguration, DeleteBucketIntelligentTieringConfiguration,
    GetObject, HeadObject, GetObjectAttributes, GetObjectTorrent, SelectObjectContent,
    PutObject, CopyObject, DeleteObject, RestoreObject,
    GetObjectAcl, PutObjectAcl,
    GetObjectTagging, PutObjectTagging, DeleteObjectTagging,
    GetObjectLegalHold, PutObjectLegalHold, GetObjectRetention, PutObjectRetention,
    CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
    AbortMultipartUpload, ListParts,
}

/// What a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `GET /`: no bucket.
    Service,
    /// A bucket, no key.
    Bucket,
    /// A key in a bucket.
    Object,
}

/// What the IAM action applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// `*` (ListAllMyBuckets).
    Service,
    /// `bucket`.
    Bucket,
    /// `bucket/prefix` and every key under it (the listings).
    Listing,
    /// `bucket/key`.
    Object,
    /// Each key the body names (DeleteObjects): checked one by one once the body is read.
    BodyKeys,
}

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    method: Method,
    target: Target,
    /// The sub-resources that select this row, all present, no other: `name` or `name=value`.
    subs: &'static [&'static str],
    /// Whether `x-amz-copy-source` is present.
    copy: bool,
    /// The operation.
    pub op: Operation,
    /// The IAM action (without `s3:`).
    pub action: &'static str,
    /// The IAM action when a `versionId` is given, where AWS names another.
    pub version_action: Option<&'static str>,
    /// What the action applies to.
    pub resource: ResourceKind,
    /// Other parameters the operation takes.
    params: &'static [&'static str],
}

mod table;

pub use table::table;
use table::NEUTRAL;

impl Row {
    /// The IAM action a request of this row with `query` needs.
    pub fn action_for(&self, query: &Query) -> &'static str {
        match self.version_action {
            Some(versioned) if query.has("versionId") => versioned,
            _ => self.action,
        }
    }

    fn matches(&self, method: &Method, target: Target, query: &Query, copy: bool) -> bool {
        let sub_name = |s: &'static str| s.split_once('=').map_or(s, |(n, _)| n);
        self.method == method
            && self.target == target
            && self.copy == copy
            && self.subs.iter().all(|s| match s.split_once('=') {
                Some((name, value)) => query.get(name) == Some(value),
                None => query.has(s),
            })
            && query
                .names()
                .all(|n| NEUTRAL.contains(&n) || self.params.contains(&n) || self.subs.iter().any(|s| sub_name(s) == n))
    }
}

/// The row a request matches: `copy` says whether it carries `x-amz-copy-source`. `None`: an
/// unknown shape.
pub fn classify(method: &Method, target: Target, query: &Query, copy: bool) -> Option<&'static Row> {
    table().iter().find(|r| r.matches(method, target, query, copy))
}

/// The actions a request's headers ask for besides its operation's, as AWS authorizes them: an
/// ACL, tags, an object lock or a legal hold set with the object, a governance lock bypassed.
pub fn header_actions(op: Operation, headers: &HeaderMap) -> Vec<&'static str> {
    use Operation as O;
    let has = |name: &str| headers.contains_key(name);
    let grants = || has("x-amz-acl") || headers.keys().any(|k| k.as_str().starts_with("x-amz-grant-"));
    let mut out = Vec::new();
    match op {
        O::PutObject | O::CopyObject | O::CreateMultipartUpload => {
            let asked = [
                (grants(), "PutObjectAcl"),
                (has("x-amz-tagging"), "PutObjectTagging"),
                (
                    has("x-amz-object-lock-mode") || has("x-amz-object-lock-retain-until-date"),
                    "PutObjectRetention",
                ),
                (has("x-amz-object-lock-legal-hold"), "PutObjectLegalHold"),
            ];
            out.extend(asked.into_iter().filter(|(on, _)| *on).map(|(_, a)| a));
        }
        O::CreateBucket => {
            if grants() {
                out.push("PutBucketAcl");
            }
            if has("x-amz-bucket-object-lock-enabled") {
                out.extend(["PutBucketObjectLockConfiguration", "PutBucketVersioning"]);
            }
        }
        O::DeleteObject | O::DeleteObjects | O::PutObjectRetention if has("x-amz-bypass-governance-retention") => {
            out.push(BYPASS_GOVERNANCE);
        }
        _ => {}
    }
    out
}

/// Bypassing an object's governance-mode lock: asked for by a header, never a request of its own.
const BYPASS_GOVERNANCE: &str = "BypassGovernanceRetention";

/// Every IAM action the table names (each once), for checking the names a policy uses.
pub fn actions() -> impl Iterator<Item = &'static str> {
    static ACTIONS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut all: Vec<&str> = table()
            .iter()
            .flat_map(|r| std::iter::once(r.action).chain(r.version_action))
            .chain([BYPASS_GOVERNANCE])
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    });
    ACTIONS.iter().copied()
}

#[cfg(test)]
mod tests;
