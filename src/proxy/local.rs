//! Calls answered without forwarding: bucket calls to a local-directory upstream (ListObjects v1
//! and v2, HeadBucket, GetBucketLocation), and ListBuckets when no S3 upstream is the default.

use pingora_error::Result;
use pingora_proxy::Session;

use http::StatusCode;

use super::respond::{base_header, send_xml};
use super::{ProxyState, RequestCtx};
use crate::s3::xml::{list_buckets_xml, location_xml, ListVersion};
use crate::s3::{Operation, Query, S3Error};
use crate::upstream::FsOrigin;
use crate::upstream::ListParams;

/// Answers a non-object call to a local-directory bucket.
pub async fn serve_fs(session: &mut Session, ctx: &mut RequestCtx, fs: &FsOrigin, bucket: &str) -> Result<()> {
    match ctx.op {
        Operation::ListObjectsV2 | Operation::ListObjects => list(session, ctx, fs, bucket).await,
        Operation::HeadBucket | Operation::GetBucketLocation if !fs.has_bucket(bucket).await => {
            ctx.fail(session, S3Error::NoSuchBucket).await
        }
        Operation::HeadBucket => {
            let mut h = base_header(StatusCode::OK, &ctx.request_id)?;
            h.insert_header("x-amz-bucket-region", LOCAL_REGION)?;
            session.write_response_header(Box::new(h), true).await?;
            ctx.status = 200;
            Ok(())
        }
        Operation::GetBucketLocation => {
            ctx.answered(send_xml(session, location_xml(LOCAL_REGION), &ctx.request_id).await)
        }
        _ => {
            let e = S3Error::NotImplemented(
                "A local-directory upstream is read-only: it serves GetObject, HeadObject, ListObjects (v1 and v2), \
                 HeadBucket, GetBucketLocation and ListBuckets."
                    .into(),
            );
            ctx.fail(session, e).await
        }
    }
}

/// The region a local-directory bucket reports.
const LOCAL_REGION: &str = "us-east-1";

async fn list(session: &mut Session, ctx: &mut RequestCtx, fs: &FsOrigin, bucket: &str) -> Result<()> {
    let v1 = ctx.op == Operation::ListObjects;
    let (params, version, url_encoded) = match list_params(&ctx.query, v1) {
        Ok(p) => p,
        Err(e) => return ctx.fail(session, e).await,
    };
    match fs.list_objects(bucket, params).await {
        Ok(mut page) => {
            page.bucket = ctx.bucket_name.clone();
            page.version = version;
            page.url_encoded = url_encoded;
            ctx.answered(send_xml(session, page.to_xml(), &ctx.request_id).await)
        }
        Err(e) => ctx.fail(session, e.answer()).await,
    }
}

/// Answers ListBuckets from a local-directory origin, or from the configured bucket names.
pub async fn list_buckets(
    state: &ProxyState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    fs: Option<&FsOrigin>,
) -> Result<()> {
    let buckets = match fs {
        Some(fs) => match fs.list_buckets().await {
            Ok(b) => b,
            Err(e) => return ctx.fail(session, e.answer()).await,
        },
        None => {
            let mut names: Vec<_> = state
                .router
                .configured_buckets()
                .map(|b| (b.to_owned(), std::time::SystemTime::UNIX_EPOCH))
                .collect();
            names.sort();
            names
        }
    };
    ctx.answered(send_xml(session, list_buckets_xml(&buckets), &ctx.request_id).await)
}

/// ListObjects parameters (`v1`: ListObjects, else ListObjectsV2): what to list, the fields to
/// echo back, and whether to URL-encode the answer.
fn list_params(query: &Query, v1: bool) -> Result<(ListParams, ListVersion, bool), S3Error> {
    let mut params = ListParams {
        max_keys: 1000,
        ..Default::default()
    };
    let (mut marker, mut token, mut start_after, mut url_encoded) = (None, None, None, false);
    for (k, v) in query.pairs() {
        let v = v.to_owned();
        match k {
            "prefix" => params.prefix = v,
            "delimiter" => params.delimiter = Some(v).filter(|d| !d.is_empty()),
            "max-keys" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| S3Error::InvalidRequest("max-keys must be a non-negative integer".into()))?;
                params.max_keys = n.min(1000);
            }
            "encoding-type" if v == "url" => url_encoded = true,
            "encoding-type" => {
                return Err(S3Error::InvalidRequest(
                    "Invalid Encoding Method specified in Request".into(),
                ))
            }
            "marker" if v1 => marker = Some(v),
            "continuation-token" if !v1 => token = Some(v),
            "start-after" if !v1 => start_after = Some(v),
            _ => {}
        }
    }
    let version = match v1 {
        true => {
            params.after = marker.clone();
            ListVersion::V1 { marker }
        }
        false => {
            params.after = token.clone().or_else(|| start_after.clone());
            ListVersion::V2 {
                continuation_token: token,
                start_after,
            }
        }
    };
    Ok((params, version, url_encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_decoded_and_bounded() {
        let query =
            Query::parse("list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5000&continuation-token=k%201").unwrap();
        let (p, version, url) = list_params(&query, false).unwrap();
        assert_eq!(p.prefix, "a/b");
        assert_eq!(p.delimiter.as_deref(), Some("/"));
        assert_eq!(p.max_keys, 1000);
        assert_eq!(p.after.as_deref(), Some("k 1"));
        assert!(!url);
        assert!(matches!(version, ListVersion::V2 { continuation_token: Some(t), .. } if t == "k 1"));
        assert!(list_params(&Query::parse("max-keys=x").unwrap(), false).is_err());
        assert!(list_params(&Query::parse("encoding-type=base64").unwrap(), false).is_err());
    }

    #[test]
    fn v1_listings_resume_after_the_marker() {
        let query = Query::parse("marker=a%2Fz&encoding-type=url&start-after=q").unwrap();
        let (p, version, url) = list_params(&query, true).unwrap();
        assert_eq!(p.after.as_deref(), Some("a/z"));
        assert_eq!(
            version,
            ListVersion::V1 {
                marker: Some("a/z".into())
            }
        );
        assert!(url);
    }
}
