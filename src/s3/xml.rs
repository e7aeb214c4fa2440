//! The few S3 XML documents shardcache writes itself (listings of a local-directory origin) or
//! reads (the keys of a DeleteObjects request, to drop their cached metadata).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::s3::{encode_path, escape};

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, quotes included.
    pub etag: String,
    /// Modification time.
    pub last_modified: SystemTime,
}

/// Which ListObjects a page answers, with the request fields it echoes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListVersion {
    /// ListObjects (v1): resumes after `marker`.
    V1 {
        /// `marker` parameter echoed back.
        marker: Option<String>,
    },
    /// ListObjectsV2: resumes after a continuation token or `start-after`.
    V2 {
        /// `continuation-token` parameter echoed back.
        continuation_token: Option<String>,
        /// `start-after` parameter echoed back.
        start_after: Option<String>,
    },
}

impl Default for ListVersion {
    fn default() -> Self {
        Self::V2 {
            continuation_token: None,
            start_after: None,
        }
    }
}

/// A page of ListObjects (v1 or v2).
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Bucket name as the client addressed it.
    pub bucket: String,
    /// `prefix` parameter.
    pub prefix: String,
    /// `delimiter` parameter.
    pub delimiter: Option<String>,
    /// `max-keys` parameter.
    pub max_keys: usize,
    /// Which listing, and its echoed fields.
    pub version: ListVersion,
    /// `encoding-type=url`: keys, prefixes, delimiter and markers are URL-encoded.
    pub url_encoded: bool,
    /// Objects of this page.
    pub contents: Vec<ListedObject>,
    /// Common prefixes of this page.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (`NextMarker` or `NextContinuationToken`), when truncated.
    pub next: Option<String>,
}

/// ISO 8601 with milliseconds, as S3 writes `LastModified` in listings.
pub fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date; Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl ListPage {
    /// The `ListBucketResult` document.
    pub fn to_xml(&self) -> String {
        // What a client sent or will send back is text; with `encoding-type=url` it is encoded.
        let text = |s: &str| match self.url_encoded {
            true => escape(&encode_path(s)),
            false => escape(s),
        };
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        let _ = write!(
            x,
            "<Name>{}</Name><Prefix>{}</Prefix>",
            escape(&self.bucket),
            text(&self.prefix)
        );
        if let Some(d) = &self.delimiter {
            let _ = write!(x, "<Delimiter>{}</Delimiter>", text(d));
        }
        let _ = write!(x, "<MaxKeys>{}</MaxKeys>", self.max_keys);
        if self.url_encoded {
            x.push_str("<EncodingType>url</EncodingType>");
        }
        let _ = write!(x, "<IsTruncated>{}</IsTruncated>", self.next.is_some());
        let fields = match &self.version {
            ListVersion::V1 { marker } => {
                let _ = write!(x, "<Marker>{}</Marker>", text(marker.as_deref().unwrap_or_default()));
                vec![("NextMarker", self.next.as_ref())]
            }
            ListVersion::V2 {
                continuation_token,
                start_after,
            } => {
                let count = self.contents.len() + self.common_prefixes.len();
                let _ = write!(x, "<KeyCount>{count}</KeyCount>");
                vec![
                    ("ContinuationToken", continuation_token.as_ref()),
                    ("StartAfter", start_after.as_ref()),
                    ("NextContinuationToken", self.next.as_ref()),
                ]
            }
        };
        for (tag, value) in fields {
            if let Some(v) = value {
                let _ = write!(x, "<{tag}>{}</{tag}>", text(v));
            }
        }
        for o in &self.contents {
            let _ = write!(
                x,
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag>\
                 <Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                text(&o.key),
                iso8601(o.last_modified),
                escape(&o.etag),
                o.size
            );
        }
        for p in &self.common_prefixes {
            let _ = write!(x, "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", text(p));
        }
        x.push_str("</ListBucketResult>");
        x
    }
}

/// The `LocationConstraint` document of GetBucketLocation; `us-east-1` is the empty constraint.
pub fn location_xml(region: &str) -> String {
    let region = if region == "us-east-1" { "" } else { region };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{}</LocationConstraint>",
        escape(region)
    )
}

/// The `ListAllMyBucketsResult` document.
pub fn list_buckets_xml(buckets: &[(String, SystemTime)]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    x.push_str("<Owner><ID>shardcache</ID><DisplayName>shardcache</DisplayName></Owner><Buckets>");
    for (name, created) in buckets {
        let _ = write!(
            x,
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            escape(name),
            iso8601(*created)
        );
    }
    x.push_str("</Buckets></ListAllMyBucketsResult>");
    x
}

/// The `<Key>` values of a DeleteObjects request body, unescaped.
pub fn delete_request_keys(body: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    elements(text, "Key").map(unescape).collect()
}

/// One page of a ListObjectsV2 answer, as a client reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListAnswer {
    /// `(key, size)` of each object listed.
    pub objects: Vec<(String, u64)>,
    /// The token for the next page, when the listing is truncated.
    pub next_token: Option<String>,
}

/// Reads a ListObjectsV2 answer (keys not URL-encoded). `None` if it is not one.
pub fn parse_list_answer(text: &str) -> Option<ListAnswer> {
    if !text.contains("<ListBucketResult") {
        return None;
    }
    let objects = elements(text, "Contents")
        .map(|c| {
            let key = elements(c, "Key").next().map(unescape)?;
            let size = elements(c, "Size").next()?.trim().parse().ok()?;
            Some((key, size))
        })
        .collect::<Option<Vec<_>>>()?;
    let truncated = elements(text, "IsTruncated").next() == Some("true");
    let next_token = elements(text, "NextContinuationToken").next().map(unescape);
    Some(ListAnswer {
        objects,
        next_token: if truncated { next_token } else { None },
    })
}

/// The text inside each `<tag>...</tag>` of `text`, in order (no nesting of the same tag).
fn elements<'a>(text: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let inner = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(inner)
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_render_as_s3_does() {
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year
        assert_eq!(iso8601(t), "2024-02-29T23:59:59.000Z");
    }

    #[test]
    fn list_answers_parse_keys_sizes_and_the_next_token() {
        let page = ListAnswer {
            objects: vec![("a&b.tar".into(), 10), ("c.tar".into(), 0)],
            next_token: None,
        };
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated>\
            <Contents><Key>a&amp;b.tar</Key><Size>10</Size></Contents>\
            <Contents><Key>c.tar</Key><Size>0</Size></Contents>\
            <NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let parsed = parse_list_answer(xml).unwrap();
        assert_eq!(parsed.objects, page.objects);
        assert_eq!(parsed.next_token.as_deref(), Some("t1"));
        let last = xml.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_list_answer(&last).unwrap().next_token, None);
        assert_eq!(parse_list_answer("<Error><Code>NoSuchBucket</Code></Error>"), None);
    }

    #[test]
    fn delete_bodies_yield_their_keys() {
        let body = b"<Delete><Object><Key>a&amp;b</Key></Object><Object><Key>c/d</Key>\
                     <VersionId>1</VersionId></Object><Quiet>true</Quiet></Delete>";
        assert_eq!(delete_request_keys(body), vec!["a&b".to_owned(), "c/d".to_owned()]);
    }

    #[test]
    fn listings_escape_keys_and_mark_truncation() {
        let page = ListPage {
            bucket: "b".into(),
            max_keys: 1,
            contents: vec![ListedObject {
                key: "a<b".into(),
                size: 3,
                etag: "\"e\"".into(),
                last_modified: SystemTime::UNIX_EPOCH,
            }],
            next: Some("a<b".into()),
            ..Default::default()
        };
        let xml = page.to_xml();
        assert!(xml.contains("<Key>a&lt;b</Key>"));
        assert!(xml.contains("<IsTruncated>true</IsTruncated>"));
        assert!(xml.contains("<KeyCount>1</KeyCount>"));
        assert!(xml.contains("<NextContinuationToken>a&lt;b</NextContinuationToken>"));
    }

    #[test]
    fn v1_listings_use_markers_and_url_encoding_when_asked() {
        let page = ListPage {
            bucket: "b".into(),
            prefix: "dir one/".into(),
            max_keys: 1,
            version: ListVersion::V1 {
                marker: Some("a+b".into()),
            },
            url_encoded: true,
            contents: vec![ListedObject {
                key: "dir one/é&.bin".into(),
                size: 3,
                etag: "\"e\"".into(),
                last_modified: SystemTime::UNIX_EPOCH,
            }],
            next: Some("dir one/é&.bin".into()),
            ..Default::default()
        };
        let xml = page.to_xml();
        assert!(xml.contains("<Prefix>dir%20one/</Prefix>"), "{xml}");
        assert!(xml.contains("<EncodingType>url</EncodingType>"));
        assert!(xml.contains("<Marker>a%2Bb</Marker>"));
        assert!(xml.contains("<NextMarker>dir%20one/%C3%A9%26.bin</NextMarker>"));
        assert!(xml.contains("<Key>dir%20one/%C3%A9%26.bin</Key>"));
        assert!(!xml.contains("KeyCount"), "v1 has no KeyCount");
    }

    #[test]
    fn bucket_locations_follow_s3() {
        assert!(location_xml("us-east-1").contains("2006-03-01/\"></LocationConstraint>"));
        assert!(location_xml("eu-west-1").contains(">eu-west-1</LocationConstraint>"));
    }
}
