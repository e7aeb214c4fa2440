//! A bucket as an S3 client addresses it through an endpoint: path-style (`/bucket/key`, what
//! shardcache and most S3-compatible stores take) or virtual-hosted style (the endpoint's host
//! names the bucket, `/key`: AWS's own addressing).

use std::time::Duration;

use http::Method;

use super::{query_value, Endpoint};
use crate::s3::encode_path;
use crate::s3::xml::parse_list_answer;

/// A bucket behind an endpoint.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The endpoint its requests go to.
    pub endpoint: Endpoint,
    /// Its name.
    pub name: String,
    /// `/bucket` for path-style addressing, empty for virtual-hosted style.
    root: String,
}

/// A listing: `(key, size)` of each object, and whether it stopped at its limit.
pub struct Listed {
    /// The objects, in key order.
    pub objects: Vec<(String, u64)>,
    /// More objects follow the last one listed.
    pub truncated: bool,
}

impl Bucket {
    /// `name`, addressed path-style at `endpoint`.
    pub fn path_style(endpoint: Endpoint, name: &str) -> Self {
        Self {
            endpoint,
            name: name.to_owned(),
            root: format!("/{}", encode_path(name)),
        }
    }

    /// `name`, addressed virtual-hosted style: `endpoint`'s host already names the bucket.
    pub fn virtual_hosted(endpoint: Endpoint, name: &str) -> Self {
        Self {
            endpoint,
            name: name.to_owned(),
            root: String::new(),
        }
    }

    /// The path of `key`.
    pub fn object_path(&self, key: &str) -> String {
        format!("{}/{}", self.root, encode_path(key))
    }

    /// The objects under `prefix` (ListObjectsV2, page by page; folder markers left out), at most
    /// `limit` of them, each page within `deadline`. Returns the listing and the requests it took.
    pub async fn list(&self, prefix: &str, limit: usize, deadline: Duration) -> Result<(Listed, u64), String> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut requests = 0;
        loop {
            let mut path = format!("{}/?list-type=2&prefix={}", self.root, query_value(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", query_value(t)));
            }
            let reply = self.endpoint.call_within(Method::GET, &path, deadline).await?;
            requests += 1;
            let what = || format!("listing s3://{}/{prefix}", self.name);
            if reply.status != 200 {
                return Err(format!("{}: HTTP {}: {}", what(), reply.status, reply.text()));
            }
            let page =
                parse_list_answer(&reply.text()).ok_or_else(|| format!("{}: not a ListObjectsV2 answer", what()))?;
            objects.extend(page.objects.into_iter().filter(|(key, _)| !key.ends_with('/')));
            if objects.len() >= limit {
                let truncated = objects.len() > limit || page.next_token.is_some();
                objects.truncate(limit);
                return Ok((Listed { objects, truncated }, requests));
            }
            match page.next_token {
                Some(t) => token = Some(t),
                None => {
                    return Ok((
                        Listed {
                            objects,
                            truncated: false,
                        },
                        requests,
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_addressed_by_style() {
        let e: Endpoint = "http://127.0.0.1:8080".parse().unwrap();
        let path = Bucket::path_style(e.clone(), "data");
        assert_eq!(path.object_path("a b/c.tar"), "/data/a%20b/c.tar");
        let vhost = Bucket::virtual_hosted(e, "data");
        assert_eq!(vhost.object_path("a b/c.tar"), "/a%20b/c.tar");
    }
}
