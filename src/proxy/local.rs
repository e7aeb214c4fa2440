//! Calls answered without forwarding: listings of a local-directory upstream, and ListBuckets
//! when no S3 upstream is the default.

use pingora_error::Result;
use pingora_proxy::Session;

use super::respond::{send_error, send_failure, send_xml};
use super::{ProxyState, RequestCtx};
use crate::s3::xml::list_buckets_xml;
use crate::s3::{Operation, S3Error};
use crate::upstream::FsOrigin;
use crate::upstream::ListParams;

/// Answers a non-object call to a local-directory bucket.
pub async fn serve_fs(session: &mut Session, ctx: &mut RequestCtx, fs: &FsOrigin, bucket: &str) -> Result<()> {
    if ctx.op != Operation::ListObjectsV2 {
        let e = S3Error::NotImplemented(
            "A local-directory upstream is read-only: it serves GetObject, HeadObject and ListObjectsV2.".into(),
        );
        return ctx.answered(send_error(session, e, &ctx.resource, &ctx.request_id).await);
    }
    let params = match list_params(&ctx.query) {
        Ok(p) => p,
        Err(e) => return ctx.answered(send_error(session, e, &ctx.resource, &ctx.request_id).await),
    };
    let (token, start_after) = (params.1, params.2);
    match fs.list_objects(bucket, params.0).await {
        Ok(mut page) => {
            page.bucket = ctx.bucket_name.clone();
            page.continuation_token = token;
            page.start_after = start_after;
            ctx.answered(send_xml(session, page.to_xml(), &ctx.request_id).await)
        }
        Err(e) => ctx.answered(send_failure(session, (&e).into(), &ctx.resource, &ctx.request_id).await),
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
            Err(e) => return ctx.answered(send_failure(session, (&e).into(), &ctx.resource, &ctx.request_id).await),
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

/// ListObjectsV2 parameters, with the continuation token and start-after to echo back.
fn list_params(query: &str) -> Result<(ListParams, Option<String>, Option<String>), S3Error> {
    let mut params = ListParams {
        max_keys: 1000,
        ..Default::default()
    };
    let (mut token, mut start_after) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map_err(|_| S3Error::InvalidRequest(format!("query parameter `{k}` is not valid UTF-8")))?
            .into_owned();
        match k {
            "prefix" => params.prefix = v,
            "delimiter" => params.delimiter = Some(v).filter(|d| !d.is_empty()),
            "max-keys" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| S3Error::InvalidRequest("max-keys must be a non-negative integer".into()))?;
                params.max_keys = n.min(1000);
            }
            "continuation-token" => token = Some(v),
            "start-after" => start_after = Some(v),
            _ => {}
        }
    }
    params.after = token.clone().or_else(|| start_after.clone());
    Ok((params, token, start_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_decoded_and_bounded() {
        let (p, token, _) =
            list_params("list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5000&continuation-token=k%201").unwrap();
        assert_eq!(p.prefix, "a/b");
        assert_eq!(p.delimiter.as_deref(), Some("/"));
        assert_eq!(p.max_keys, 1000);
        assert_eq!(token.as_deref(), Some("k 1"));
        assert_eq!(p.after.as_deref(), Some("k 1"));
        assert!(list_params("max-keys=x").is_err());
    }
}
