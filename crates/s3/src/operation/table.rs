//! The rows of the operation table: each request shape, with the operation AWS names, its IAM
//! action (and the one AWS names when a `versionId` is given), what the action applies to, and
//! the other parameters the operation takes. Written as a table, one row a line.

use std::sync::LazyLock;

use http::Method;

use super::{Operation, ResourceKind, Row, Target};

/// Parameters that never change what a request does: the AWS SDKs add `x-id=<Operation>`.
pub(super) const NEUTRAL: &[&str] = &["x-id"];

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

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let mut rows = vec![
        row(M::GET, Target::Service, &[], O::ListBuckets, "ListAllMyBuckets", ResourceKind::Service, LIST_BUCKETS),
        // Listings.
        row(M::GET, Target::Bucket, &[], O::ListObjects, "ListBucket", ResourceKind::Listing, LIST_V1),
        row(M::GET, Target::Bucket, &["list-type=2"], O::ListObjectsV2, "ListBucket", ResourceKind::Listing, LIST_V2),
        row(M::GET, Target::Bucket, &["versions"], O::ListObjectVersions, "ListBucketVersions", ResourceKind::Listing, LIST_VERSIONS),
        row(M::GET, Target::Bucket, &["uploads"], O::ListMultipartUploads, "ListBucketMultipartUploads", ResourceKind::Listing, LIST_UPLOADS),
        // Buckets.
        bucket(M::HEAD, &[], O::HeadBucket, "ListBucket"),
        bucket(M::PUT, &[], O::CreateBucket, "CreateBucket"),
        bucket(M::DELETE, &[], O::DeleteBucket, "DeleteBucket"),
        bucket(M::GET, &["location"], O::GetBucketLocation, "GetBucketLocation"),
        row(M::POST, Target::Bucket, &["delete"], O::DeleteObjects, "DeleteObject", ResourceKind::BodyKeys, &[]),
        bucket(M::GET, &["acl"], O::GetBucketAcl, "GetBucketAcl"),
        bucket(M::PUT, &["acl"], O::PutBucketAcl, "PutBucketAcl"),
        bucket(M::GET, &["policy"], O::GetBucketPolicy, "GetBucketPolicy"),
        bucket(M::PUT, &["policy"], O::PutBucketPolicy, "PutBucketPolicy"),
        bucket(M::DELETE, &["policy"], O::DeleteBucketPolicy, "DeleteBucketPolicy"),
        bucket(M::GET, &["policyStatus"], O::GetBucketPolicyStatus, "GetBucketPolicyStatus"),
        bucket(M::GET, &["tagging"], O::GetBucketTagging, "GetBucketTagging"),
        bucket(M::PUT, &["tagging"], O::PutBucketTagging, "PutBucketTagging"),
        bucket(M::DELETE, &["tagging"], O::DeleteBucketTagging, "PutBucketTagging"),
        bucket(M::GET, &["versioning"], O::GetBucketVersioning, "GetBucketVersioning"),
        bucket(M::PUT, &["versioning"], O::PutBucketVersioning, "PutBucketVersioning"),
        bucket(M::GET, &["cors"], O::GetBucketCors, "GetBucketCORS"),
        bucket(M::PUT, &["cors"], O::PutBucketCors, "PutBucketCORS"),
        bucket(M::DELETE, &["cors"], O::DeleteBucketCors, "PutBucketCORS"),
        bucket(M::GET, &["encryption"], O::GetBucketEncryption, "GetEncryptionConfiguration"),
        bucket(M::PUT, &["encryption"], O::PutBucketEncryption, "PutEncryptionConfiguration"),
        bucket(M::DELETE, &["encryption"], O::DeleteBucketEncryption, "PutEncryptionConfiguration"),
        bucket(M::GET, &["lifecycle"], O::GetBucketLifecycleConfiguration, "GetLifecycleConfiguration"),
        bucket(M::PUT, &["lifecycle"], O::PutBucketLifecycleConfiguration, "PutLifecycleConfiguration"),
        bucket(M::DELETE, &["lifecycle"], O::DeleteBucketLifecycle, "PutLifecycleConfiguration"),
        bucket(M::GET, &["logging"], O::GetBucketLogging, "GetBucketLogging"),
        bucket(M::PUT, &["logging"], O::PutBucketLogging, "PutBucketLogging"),
        bucket(M::GET, &["notification"], O::GetBucketNotificationConfiguration, "GetBucketNotification"),
        bucket(M::PUT, &["notification"], O::PutBucketNotificationConfiguration, "PutBucketNotification"),
        bucket(M::GET, &["object-lock"], O::GetObjectLockConfiguration, "GetBucketObjectLockConfiguration"),
        bucket(M::PUT, &["object-lock"], O::PutObjectLockConfiguration, "PutBucketObjectLockConfiguration"),
        bucket(M::GET, &["publicAccessBlock"], O::GetPublicAccessBlock, "GetBucketPublicAccessBlock"),
        bucket(M::PUT, &["publicAccessBlock"], O::PutPublicAccessBlock, "PutBucketPublicAccessBlock"),
        bucket(M::DELETE, &["publicAccessBlock"], O::DeletePublicAccessBlock, "PutBucketPublicAccessBlock"),
        bucket(M::GET, &["replication"], O::GetBucketReplication, "GetReplicationConfiguration"),
        bucket(M::PUT, &["replication"], O::PutBucketReplication, "PutReplicationConfiguration"),
        bucket(M::DELETE, &["replication"], O::DeleteBucketReplication, "PutReplicationConfiguration"),
        bucket(M::GET, &["website"], O::GetBucketWebsite, "GetBucketWebsite"),
        bucket(M::PUT, &["website"], O::PutBucketWebsite, "PutBucketWebsite"),
        bucket(M::DELETE, &["website"], O::DeleteBucketWebsite, "DeleteBucketWebsite"),
        bucket(M::GET, &["requestPayment"], O::GetBucketRequestPayment, "GetBucketRequestPayment"),
        bucket(M::PUT, &["requestPayment"], O::PutBucketRequestPayment, "PutBucketRequestPayment"),
        bucket(M::GET, &["accelerate"], O::GetBucketAccelerateConfiguration, "GetAccelerateConfiguration"),
        bucket(M::PUT, &["accelerate"], O::PutBucketAccelerateConfiguration, "PutAccelerateConfiguration"),
        bucket(M::GET, &["ownershipControls"], O::GetBucketOwnershipControls, "GetBucketOwnershipControls"),
        bucket(M::PUT, &["ownershipControls"], O::PutBucketOwnershipControls, "PutBucketOwnershipControls"),
        bucket(M::DELETE, &["ownershipControls"], O::DeleteBucketOwnershipControls, "PutBucketOwnershipControls"),
        // Objects.
        object(M::GET, &[], O::GetObject, "GetObject", Some("GetObjectVersion"), GET_PARAMS),
        object(M::HEAD, &[], O::HeadObject, "GetObject", Some("GetObjectVersion"), GET_PARAMS),
        object(M::GET, &["attributes"], O::GetObjectAttributes, "GetObjectAttributes", Some("GetObjectVersionAttributes"), VERSION),
        object(M::GET, &["torrent"], O::GetObjectTorrent, "GetObjectTorrent", Some("GetObjectVersionTorrent"), VERSION),
        object(M::POST, &["select", "select-type=2"], O::SelectObjectContent, "GetObject", None, &[]),
        object(M::PUT, &[], O::PutObject, "PutObject", None, &[]),
        copying(object(M::PUT, &[], O::PutObject, "PutObject", None, &[]), O::CopyObject),
        object(M::DELETE, &[], O::DeleteObject, "DeleteObject", Some("DeleteObjectVersion"), VERSION),
        object(M::POST, &["restore"], O::RestoreObject, "RestoreObject", None, VERSION),
        object(M::GET, &["acl"], O::GetObjectAcl, "GetObjectAcl", Some("GetObjectVersionAcl"), VERSION),
        object(M::PUT, &["acl"], O::PutObjectAcl, "PutObjectAcl", Some("PutObjectVersionAcl"), VERSION),
        object(M::GET, &["tagging"], O::GetObjectTagging, "GetObjectTagging", Some("GetObjectVersionTagging"), VERSION),
        object(M::PUT, &["tagging"], O::PutObjectTagging, "PutObjectTagging", Some("PutObjectVersionTagging"), VERSION),
        object(M::DELETE, &["tagging"], O::DeleteObjectTagging, "DeleteObjectTagging", Some("DeleteObjectVersionTagging"), VERSION),
        object(M::GET, &["legal-hold"], O::GetObjectLegalHold, "GetObjectLegalHold", None, VERSION),
        object(M::PUT, &["legal-hold"], O::PutObjectLegalHold, "PutObjectLegalHold", None, VERSION),
        object(M::GET, &["retention"], O::GetObjectRetention, "GetObjectRetention", None, VERSION),
        object(M::PUT, &["retention"], O::PutObjectRetention, "PutObjectRetention", None, VERSION),
        // Multipart uploads.
        object(M::POST, &["uploads"], O::CreateMultipartUpload, "PutObject", None, &[]),
        object(M::PUT, &["uploadId"], O::UploadPart, "PutObject", None, &["partNumber"]),
        copying(object(M::PUT, &["uploadId"], O::UploadPart, "PutObject", None, &["partNumber"]), O::UploadPartCopy),
        object(M::POST, &["uploadId"], O::CompleteMultipartUpload, "PutObject", None, &[]),
        object(M::DELETE, &["uploadId"], O::AbortMultipartUpload, "AbortMultipartUpload", None, &[]),
        object(M::GET, &["uploadId"], O::ListParts, "ListMultipartUploadParts", None, &["max-parts", "part-number-marker"]),
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
