//! The operation table checked row by row, and against the request shapes attacks used.

use super::*;
use Operation as O;

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
