//! The operation table: every S3 request shape shardcache knows, by method, target (service,
//! bucket or object), sub-resources and the copy-source header, with the operation AWS names
//! and the IAM action that AWS's service authorization reference gives it.
//!
//! A request whose sub-resources, or other parameters, match no row is
//! [`Operation::Unknown`]: it is forwarded as is with authentication off, and with it on only a
//! statement allowing every action (`*`) lets it through.

use std::sync::LazyLock;

use http::{HeaderMap, Method};

use crate::s3::Query;

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

/// Parameters that never change what a request does: the AWS SDKs add `x-id=<Operation>`.
const NEUTRAL: &[&str] = &["x-id"];

const GET_PARAMS: &[&str] = &[
    "versionId",
    "partNumber",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];
const VERSION: &[&str] = &["versionId"];
const LIST_V1: &[&str] = &["delimiter", "encoding-type", "marker", "max-keys", "prefix"];
const LIST_V2: &[&str] = &[
    "continuation-token",
    "delimiter",
    "encoding-type",
    "fetch-owner",
    "max-keys",
    "prefix",
    "start-after",
];
const LIST_VERSIONS: &[&str] = &[
    "delimiter",
    "encoding-type",
    "key-marker",
    "max-keys",
    "prefix",
    "version-id-marker",
];
const LIST_UPLOADS: &[&str] = &[
    "delimiter",
    "encoding-type",
    "key-marker",
    "max-uploads",
    "prefix",
    "upload-id-marker",
];
const LIST_BUCKETS: &[&str] = &["max-buckets", "continuation-token", "prefix", "bucket-region"];
const TOKEN: &[&str] = &["continuation-token"];

fn row(
    method: Method,
    target: Target,
    subs: &'static [&'static str],
    op: Operation,
    action: &'static str,
    resource: ResourceKind,
    params: &'static [&'static str],
) -> Row {
    Row {
        method,
        target,
        subs,
        copy: false,
        op,
        action,
        version_action: None,
        resource,
        params,
    }
}

/// A bucket call with no parameters but its sub-resource.
fn bucket(method: Method, sub: &'static [&'static str], op: Operation, action: &'static str) -> Row {
    row(method, Target::Bucket, sub, op, action, ResourceKind::Bucket, &[])
}

/// An object call, with the action AWS names when a `versionId` is given.
fn object(
    method: Method,
    subs: &'static [&'static str],
    op: Operation,
    action: &'static str,
    version_action: Option<&'static str>,
    params: &'static [&'static str],
) -> Row {
    let mut r = row(method, Target::Object, subs, op, action, ResourceKind::Object, params);
    r.version_action = version_action;
    r
}

fn copying(mut r: Row, op: Operation) -> Row {
    r.copy = true;
    r.op = op;
    r
}

use Method as M;
use Operation as O;

/// Four bucket configurations that are each listed, read, written and deleted by id.
macro_rules! by_id {
    ($sub:literal, $get:ident, $list:ident, $put:ident, $delete:ident, $read:literal, $write:literal) => {
        [
            bucket(M::GET, &[$sub, "id"], O::$get, $read),
            row(
                M::GET,
                Target::Bucket,
                &[$sub],
                O::$list,
                $read,
                ResourceKind::Bucket,
                TOKEN,
            ),
            bucket(M::PUT, &[$sub, "id"], O::$put, $write),
            bucket(M::DELETE, &[$sub, "id"], O::$delete, $write),
        ]
    };
}

/// Every row.
pub fn table() -> &'static [Row] {
    static TABLE: LazyLock<Vec<Row>> = LazyLock::new(rows);
    &TABLE
}

fn rows() -> Vec<Row> {
    let mut rows = vec![
        row(
            M::GET,
            Target::Service,
            &[],
            O::ListBuckets,
            "ListAllMyBuckets",
            ResourceKind::Service,
            LIST_BUCKETS,
        ),
        // Listings.
        row(
            M::GET,
            Target::Bucket,
            &[],
            O::ListObjects,
            "ListBucket",
            ResourceKind::Listing,
            LIST_V1,
        ),
        row(
            M::GET,
            Target::Bucket,
            &["list-type=2"],
            O::ListObjectsV2,
            "ListBucket",
            ResourceKind::Listing,
            LIST_V2,
        ),
        row(
            M::GET,
            Target::Bucket,
            &["versions"],
            O::ListObjectVersions,
            "ListBucketVersions",
            ResourceKind::Listing,
            LIST_VERSIONS,
        ),
        row(
            M::GET,
            Target::Bucket,
            &["uploads"],
            O::ListMultipartUploads,
            "ListBucketMultipartUploads",
            ResourceKind::Listing,
            LIST_UPLOADS,
        ),
        // Buckets.
        bucket(M::HEAD, &[], O::HeadBucket, "ListBucket"),
        bucket(M::PUT, &[], O::CreateBucket, "CreateBucket"),
        bucket(M::DELETE, &[], O::DeleteBucket, "DeleteBucket"),
        bucket(M::GET, &["location"], O::GetBucketLocation, "GetBucketLocation"),
        row(
            M::POST,
            Target::Bucket,
            &["delete"],
            O::DeleteObjects,
            "DeleteObject",
            ResourceKind::BodyKeys,
            &[],
        ),
        bucket(M::GET, &["acl"], O::GetBucketAcl, "GetBucketAcl"),
        bucket(M::PUT, &["acl"], O::PutBucketAcl, "PutBucketAcl"),
        bucket(M::GET, &["policy"], O::GetBucketPolicy, "GetBucketPolicy"),
        bucket(M::PUT, &["policy"], O::PutBucketPolicy, "PutBucketPolicy"),
        bucket(M::DELETE, &["policy"], O::DeleteBucketPolicy, "DeleteBucketPolicy"),
        bucket(
            M::GET,
            &["policyStatus"],
            O::GetBucketPolicyStatus,
            "GetBucketPolicyStatus",
        ),
        bucket(M::GET, &["tagging"], O::GetBucketTagging, "GetBucketTagging"),
        bucket(M::PUT, &["tagging"], O::PutBucketTagging, "PutBucketTagging"),
        bucket(M::DELETE, &["tagging"], O::DeleteBucketTagging, "PutBucketTagging"),
        bucket(M::GET, &["versioning"], O::GetBucketVersioning, "GetBucketVersioning"),
        bucket(M::PUT, &["versioning"], O::PutBucketVersioning, "PutBucketVersioning"),
        bucket(M::GET, &["cors"], O::GetBucketCors, "GetBucketCORS"),
        bucket(M::PUT, &["cors"], O::PutBucketCors, "PutBucketCORS"),
        bucket(M::DELETE, &["cors"], O::DeleteBucketCors, "PutBucketCORS"),
        bucket(
            M::GET,
            &["encryption"],
            O::GetBucketEncryption,
            "GetEncryptionConfiguration",
        ),
        bucket(
            M::PUT,
            &["encryption"],
            O::PutBucketEncryption,
            "PutEncryptionConfiguration",
        ),
        bucket(
            M::DELETE,
            &["encryption"],
            O::DeleteBucketEncryption,
            "PutEncryptionConfiguration",
        ),
        bucket(
            M::GET,
            &["lifecycle"],
            O::GetBucketLifecycleConfiguration,
            "GetLifecycleConfiguration",
        ),
        bucket(
            M::PUT,
            &["lifecycle"],
            O::PutBucketLifecycleConfiguration,
            "PutLifecycleConfiguration",
        ),
        bucket(
            M::DELETE,
            &["lifecycle"],
            O::DeleteBucketLifecycle,
            "PutLifecycleConfiguration",
        ),
        bucket(M::GET, &["logging"], O::GetBucketLogging, "GetBucketLogging"),
        bucket(M::PUT, &["logging"], O::PutBucketLogging, "PutBucketLogging"),
        bucket(
            M::GET,
            &["notification"],
            O::GetBucketNotificationConfiguration,
            "GetBucketNotification",
        ),
        bucket(
            M::PUT,
            &["notification"],
            O::PutBucketNotificationConfiguration,
            "PutBucketNotification",
        ),
        bucket(
            M::GET,
            &["object-lock"],
            O::GetObjectLockConfiguration,
            "GetBucketObjectLockConfiguration",
        ),
        bucket(
            M::PUT,
            &["object-lock"],
            O::PutObjectLockConfiguration,
            "PutBucketObjectLockConfiguration",
        ),
        bucket(
            M::GET,
            &["publicAccessBlock"],
            O::GetPublicAccessBlock,
            "GetBucketPublicAccessBlock",
        ),
        bucket(
            M::PUT,
            &["publicAccessBlock"],
            O::PutPublicAccessBlock,
            "PutBucketPublicAccessBlock",
        ),
        bucket(
            M::DELETE,
            &["publicAccessBlock"],
            O::DeletePublicAccessBlock,
            "PutBucketPublicAccessBlock",
        ),
        bucket(
            M::GET,
            &["replication"],
            O::GetBucketReplication,
            "GetReplicationConfiguration",
        ),
        bucket(
            M::PUT,
            &["replication"],
            O::PutBucketReplication,
            "PutReplicationConfiguration",
        ),
        bucket(
            M::DELETE,
            &["replication"],
            O::DeleteBucketReplication,
            "PutReplicationConfiguration",
        ),
        bucket(M::GET, &["website"], O::GetBucketWebsite, "GetBucketWebsite"),
        bucket(M::PUT, &["website"], O::PutBucketWebsite, "PutBucketWebsite"),
        bucket(M::DELETE, &["website"], O::DeleteBucketWebsite, "DeleteBucketWebsite"),
        bucket(
            M::GET,
            &["requestPayment"],
            O::GetBucketRequestPayment,
            "GetBucketRequestPayment",
        ),
        bucket(
            M::PUT,
            &["requestPayment"],
            O::PutBucketRequestPayment,
            "PutBucketRequestPayment",
        ),
        bucket(
            M::GET,
            &["accelerate"],
            O::GetBucketAccelerateConfiguration,
            "GetAccelerateConfiguration",
        ),
        bucket(
            M::PUT,
            &["accelerate"],
            O::PutBucketAccelerateConfiguration,
            "PutAccelerateConfiguration",
        ),
        bucket(
            M::GET,
            &["ownershipControls"],
            O::GetBucketOwnershipControls,
            "GetBucketOwnershipControls",
        ),
        bucket(
            M::PUT,
            &["ownershipControls"],
            O::PutBucketOwnershipControls,
            "PutBucketOwnershipControls",
        ),
        bucket(
            M::DELETE,
            &["ownershipControls"],
            O::DeleteBucketOwnershipControls,
            "PutBucketOwnershipControls",
        ),
        // Objects.
        object(
            M::GET,
            &[],
            O::GetObject,
            "GetObject",
            Some("GetObjectVersion"),
            GET_PARAMS,
        ),
        object(
            M::HEAD,
            &[],
            O::HeadObject,
            "GetObject",
            Some("GetObjectVersion"),
            GET_PARAMS,
        ),
        object(
            M::GET,
            &["attributes"],
            O::GetObjectAttributes,
            "GetObjectAttributes",
            Some("GetObjectVersionAttributes"),
            VERSION,
        ),
        object(
            M::GET,
            &["torrent"],
            O::GetObjectTorrent,
            "GetObjectTorrent",
            Some("GetObjectVersionTorrent"),
            VERSION,
        ),
        object(
            M::POST,
            &["select", "select-type=2"],
            O::SelectObjectContent,
            "GetObject",
            None,
            &[],
        ),
        object(M::PUT, &[], O::PutObject, "PutObject", None, &[]),
        copying(object(M::PUT, &[], O::PutObject, "PutObject", None, &[]), O::CopyObject),
        object(
            M::DELETE,
            &[],
            O::DeleteObject,
            "DeleteObject",
            Some("DeleteObjectVersion"),
            VERSION,
        ),
        object(M::POST, &["restore"], O::RestoreObject, "RestoreObject", None, VERSION),
        object(
            M::GET,
            &["acl"],
            O::GetObjectAcl,
            "GetObjectAcl",
            Some("GetObjectVersionAcl"),
            VERSION,
        ),
        object(
            M::PUT,
            &["acl"],
            O::PutObjectAcl,
            "PutObjectAcl",
            Some("PutObjectVersionAcl"),
            VERSION,
        ),
        object(
            M::GET,
            &["tagging"],
            O::GetObjectTagging,
            "GetObjectTagging",
            Some("GetObjectVersionTagging"),
            VERSION,
        ),
        object(
            M::PUT,
            &["tagging"],
            O::PutObjectTagging,
            "PutObjectTagging",
            Some("PutObjectVersionTagging"),
            VERSION,
        ),
        object(
            M::DELETE,
            &["tagging"],
            O::DeleteObjectTagging,
            "DeleteObjectTagging",
            Some("DeleteObjectVersionTagging"),
            VERSION,
        ),
        object(
            M::GET,
            &["legal-hold"],
            O::GetObjectLegalHold,
            "GetObjectLegalHold",
            None,
            VERSION,
        ),
        object(
            M::PUT,
            &["legal-hold"],
            O::PutObjectLegalHold,
            "PutObjectLegalHold",
            None,
            VERSION,
        ),
        object(
            M::GET,
            &["retention"],
            O::GetObjectRetention,
            "GetObjectRetention",
            None,
            VERSION,
        ),
        object(
            M::PUT,
            &["retention"],
            O::PutObjectRetention,
            "PutObjectRetention",
            None,
            VERSION,
        ),
        // Multipart uploads.
        object(M::POST, &["uploads"], O::CreateMultipartUpload, "PutObject", None, &[]),
        object(M::PUT, &["uploadId"], O::UploadPart, "PutObject", None, &["partNumber"]),
        copying(
            object(M::PUT, &["uploadId"], O::UploadPart, "PutObject", None, &["partNumber"]),
            O::UploadPartCopy,
        ),
        object(
            M::POST,
            &["uploadId"],
            O::CompleteMultipartUpload,
            "PutObject",
            None,
            &[],
        ),
        object(
            M::DELETE,
            &["uploadId"],
            O::AbortMultipartUpload,
            "AbortMultipartUpload",
            None,
            &[],
        ),
        object(
            M::GET,
            &["uploadId"],
            O::ListParts,
            "ListMultipartUploadParts",
            None,
            &["max-parts", "part-number-marker"],
        ),
    ];
    for by_id in [
        by_id!(
            "analytics",
            GetBucketAnalyticsConfiguration,
            ListBucketAnalyticsConfigurations,
            PutBucketAnalyticsConfiguration,
            DeleteBucketAnalyticsConfiguration,
            "GetAnalyticsConfiguration",
            "PutAnalyticsConfiguration"
        ),
        by_id!(
            "inventory",
            GetBucketInventoryConfiguration,
            ListBucketInventoryConfigurations,
            PutBucketInventoryConfiguration,
            DeleteBucketInventoryConfiguration,
            "GetInventoryConfiguration",
            "PutInventoryConfiguration"
        ),
        by_id!(
            "metrics",
            GetBucketMetricsConfiguration,
            ListBucketMetricsConfigurations,
            PutBucketMetricsConfiguration,
            DeleteBucketMetricsConfiguration,
            "GetMetricsConfiguration",
            "PutMetricsConfiguration"
        ),
        by_id!(
            "intelligent-tiering",
            GetBucketIntelligentTieringConfiguration,
            ListBucketIntelligentTieringConfigurations,
            PutBucketIntelligentTieringConfiguration,
            DeleteBucketIntelligentTieringConfiguration,
            "GetIntelligentTieringConfiguration",
            "PutIntelligentTieringConfiguration"
        ),
    ] {
        rows.extend(by_id);
    }
    rows
}

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
mod tests {
    use super::*;

    fn op(method: Method, target: Target, query: &str, copy: bool) -> (Operation, &'static str) {
        let query = Query::parse(query).unwrap();
        match classify(&method, target, &query, copy) {
            Some(row) => (row.op, row.action_for(&query)),
            None => (Operation::Unknown, "*"),
        }
    }

    #[test]
    fn every_row_is_reached_by_its_own_shape_and_by_no_other_row() {
        for row in table() {
            let mut query: Vec<String> = row.subs.iter().map(|s| s.to_string()).collect();
            query.extend(row.params.iter().map(|p| format!("{p}=1")));
            let query = Query::parse(&query.join("&")).unwrap();
            let matching: Vec<_> = table()
                .iter()
                .filter(|r| r.matches(&row.method, row.target, &query, row.copy))
                .map(|r| r.op)
                .collect();
            assert_eq!(matching, [row.op], "{row:?}");
        }
    }

    /// The shapes of the attacks this table closes, and their neighbours.
    #[test]
    fn sub_resources_choose_the_operation_and_its_action() {
        use Method as M;
        use Target::{Bucket, Object, Service};
        let cases = [
            (M::GET, Object, "", false, O::GetObject, "GetObject"),
            (
                M::GET,
                Object,
                "x-id=GetObject&response-content-type=a",
                false,
                O::GetObject,
                "GetObject",
            ),
            (M::HEAD, Object, "versionId=3", false, O::HeadObject, "GetObjectVersion"),
            (M::GET, Object, "partNumber=2", false, O::GetObject, "GetObject"),
            (
                M::POST,
                Object,
                "select&select-type=2",
                false,
                O::SelectObjectContent,
                "GetObject",
            ),
            (M::POST, Object, "select", false, O::Unknown, "*"),
            (M::PUT, Object, "", true, O::CopyObject, "PutObject"),
            (
                M::PUT,
                Object,
                "partNumber=1&uploadId=u",
                true,
                O::UploadPartCopy,
                "PutObject",
            ),
            (
                M::PUT,
                Object,
                "partNumber=1&uploadId=u",
                false,
                O::UploadPart,
                "PutObject",
            ),
            (M::PUT, Object, "acl", false, O::PutObjectAcl, "PutObjectAcl"),
            (
                M::PUT,
                Object,
                "acl&versionId=1",
                false,
                O::PutObjectAcl,
                "PutObjectVersionAcl",
            ),
            (
                M::PUT,
                Object,
                "tagging",
                false,
                O::PutObjectTagging,
                "PutObjectTagging",
            ),
            (
                M::DELETE,
                Object,
                "tagging",
                false,
                O::DeleteObjectTagging,
                "DeleteObjectTagging",
            ),
            (M::DELETE, Object, "", false, O::DeleteObject, "DeleteObject"),
            (
                M::DELETE,
                Object,
                "versionId=1",
                false,
                O::DeleteObject,
                "DeleteObjectVersion",
            ),
            (
                M::DELETE,
                Object,
                "uploadId=1",
                false,
                O::AbortMultipartUpload,
                "AbortMultipartUpload",
            ),
            (M::POST, Object, "uploads", false, O::CreateMultipartUpload, "PutObject"),
            (M::POST, Object, "", false, O::Unknown, "*"),
            (M::GET, Object, "acl&foo", false, O::Unknown, "*"),
            (M::GET, Object, "", true, O::Unknown, "*"),
            (
                M::GET,
                Bucket,
                "list-type=2&prefix=a",
                false,
                O::ListObjectsV2,
                "ListBucket",
            ),
            (M::GET, Bucket, "list-type=2&policy", false, O::Unknown, "*"),
            (M::GET, Bucket, "list-type=2&acl", false, O::Unknown, "*"),
            (M::GET, Bucket, "list-type=2&versioning", false, O::Unknown, "*"),
            (M::GET, Bucket, "list-type=2&location", false, O::Unknown, "*"),
            (M::GET, Bucket, "list-type=2&tagging", false, O::Unknown, "*"),
            (M::GET, Bucket, "list-type=1", false, O::Unknown, "*"),
            (M::GET, Bucket, "prefix=a&marker=b", false, O::ListObjects, "ListBucket"),
            (
                M::GET,
                Bucket,
                "versions&prefix=a",
                false,
                O::ListObjectVersions,
                "ListBucketVersions",
            ),
            (
                M::GET,
                Bucket,
                "uploads",
                false,
                O::ListMultipartUploads,
                "ListBucketMultipartUploads",
            ),
            (M::GET, Bucket, "policy", false, O::GetBucketPolicy, "GetBucketPolicy"),
            (
                M::GET,
                Bucket,
                "location",
                false,
                O::GetBucketLocation,
                "GetBucketLocation",
            ),
            (M::PUT, Bucket, "acl", false, O::PutBucketAcl, "PutBucketAcl"),
            (M::DELETE, Bucket, "cors", false, O::DeleteBucketCors, "PutBucketCORS"),
            (
                M::GET,
                Bucket,
                "metrics&id=a",
                false,
                O::GetBucketMetricsConfiguration,
                "GetMetricsConfiguration",
            ),
            (
                M::GET,
                Bucket,
                "metrics",
                false,
                O::ListBucketMetricsConfigurations,
                "GetMetricsConfiguration",
            ),
            (M::HEAD, Bucket, "", false, O::HeadBucket, "ListBucket"),
            (M::POST, Bucket, "delete", false, O::DeleteObjects, "DeleteObject"),
            (M::POST, Bucket, "", false, O::Unknown, "*"),
            (M::GET, Service, "", false, O::ListBuckets, "ListAllMyBuckets"),
            (M::GET, Service, "Action=GetCallerIdentity", false, O::Unknown, "*"),
            (M::POST, Service, "", false, O::Unknown, "*"),
        ];
        for (method, target, query, copy, want, action) in cases {
            assert_eq!(
                op(method.clone(), target, query, copy),
                (want, action),
                "{method} {target:?} ?{query}"
            );
        }
    }

    #[test]
    fn headers_that_set_acls_tags_and_locks_need_their_own_actions() {
        let headers = |names: &[&'static str]| -> HeaderMap {
            names
                .iter()
                .map(|n| (http::HeaderName::from_static(n), "x".parse().unwrap()))
                .collect()
        };
        let all = headers(&[
            "x-amz-acl",
            "x-amz-tagging",
            "x-amz-object-lock-mode",
            "x-amz-object-lock-legal-hold",
        ]);
        for op in [O::PutObject, O::CopyObject, O::CreateMultipartUpload] {
            assert_eq!(
                header_actions(op, &all),
                [
                    "PutObjectAcl",
                    "PutObjectTagging",
                    "PutObjectRetention",
                    "PutObjectLegalHold"
                ]
            );
        }
        assert_eq!(
            header_actions(O::PutObject, &headers(&["x-amz-grant-read"])),
            ["PutObjectAcl"]
        );
        assert_eq!(
            header_actions(O::PutObject, &headers(&["content-type"])),
            Vec::<&str>::new()
        );
        let lock = headers(&["x-amz-acl", "x-amz-bucket-object-lock-enabled"]);
        assert_eq!(
            header_actions(O::CreateBucket, &lock),
            [
                "PutBucketAcl",
                "PutBucketObjectLockConfiguration",
                "PutBucketVersioning"
            ]
        );
        let bypass = headers(&["x-amz-bypass-governance-retention"]);
        for op in [O::DeleteObject, O::DeleteObjects, O::PutObjectRetention] {
            assert_eq!(header_actions(op, &bypass), [BYPASS_GOVERNANCE]);
        }
        assert!(actions().any(|a| a == BYPASS_GOVERNANCE));
    }

    #[test]
    fn the_action_list_holds_each_name_once() {
        let all: Vec<_> = actions().collect();
        assert!(all.contains(&"GetObjectVersion") && all.contains(&"ListAllMyBuckets"));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }
}
