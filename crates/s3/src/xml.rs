//! The S3 XML documents shardcache writes itself (listings of a local-directory origin,
//! DeleteObjects answers and the bodies it forwards) or reads (DeleteObjects requests and
//! answers, listings, error documents), the reading done by a real parser (quick-xml).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::{encode_path, escape, S3Error};
use shardcache_types::rfc3339;

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
                rfc3339(o.last_modified),
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
            rfc3339(*created)
        );
    }
    x.push_str("</Buckets></ListAllMyBucketsResult>");
    x
}

/// One object a DeleteObjects request names.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteObject {
    /// The key.
    pub key: String,
    /// The version to delete.
    #[serde(default)]
    pub version_id: Option<String>,
    /// Delete only if the object's ETag is this.
    #[serde(default, rename = "ETag")]
    pub etag: Option<String>,
    /// Delete only if the object was last modified then.
    #[serde(default)]
    pub last_modified_time: Option<String>,
    /// Delete only if the object has this size.
    #[serde(default)]
    pub size: Option<String>,
}

/// A DeleteObjects request body.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteRequest {
    /// The objects, in order.
    #[serde(default, rename = "Object")]
    pub objects: Vec<DeleteObject>,
    /// Answer with the errors only.
    #[serde(default)]
    pub quiet: bool,
}

/// Most keys one DeleteObjects may name (S3's limit).
pub const MAX_DELETE_KEYS: usize = 1000;

impl DeleteRequest {
    /// Parses a body with a real XML parser (character references, CDATA; no custom
    /// entities); a body that does not parse, names no key, or more than S3's 1,000, is
    /// MalformedXML.
    pub fn parse(body: &[u8]) -> Result<Self, S3Error> {
        let parsed: Self = from_xml(body).ok_or(S3Error::MalformedXml)?;
        match parsed.objects.len() {
            1..=MAX_DELETE_KEYS => Ok(parsed),
            _ => Err(S3Error::MalformedXml),
        }
    }

    /// The body to forward: these objects, written out again (never the bytes received, so the
    /// upstream reads exactly what was authorized), answered in full (not quiet) so that the
    /// answer says which were deleted.
    pub fn to_xml(objects: &[DeleteObject]) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for o in objects {
            let _ = write!(x, "<Object><Key>{}</Key>", escape(&o.key));
            for (tag, value) in [
                ("VersionId", &o.version_id),
                ("ETag", &o.etag),
                ("LastModifiedTime", &o.last_modified_time),
                ("Size", &o.size),
            ] {
                if let Some(v) = value {
                    let _ = write!(x, "<{tag}>{}</{tag}>", escape(v));
                }
            }
            x.push_str("</Object>");
        }
        x.push_str("<Quiet>false</Quiet></Delete>");
        x
    }
}

/// An object a DeleteObjects answer reports deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Deleted {
    /// The key.
    pub key: String,
    /// The version deleted.
    #[serde(default)]
    pub version_id: Option<String>,
    /// Whether a delete marker was involved.
    #[serde(default)]
    pub delete_marker: Option<String>,
    /// The delete marker's version.
    #[serde(default)]
    pub delete_marker_version_id: Option<String>,
}

/// An object a DeleteObjects answer reports not deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteError {
    /// The key.
    pub key: String,
    /// The version named.
    #[serde(default)]
    pub version_id: Option<String>,
    /// S3 error code.
    pub code: String,
    /// Its message.
    #[serde(default)]
    pub message: String,
}

/// A DeleteObjects answer (`DeleteResult`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct DeleteResult {
    /// Deleted objects.
    #[serde(default, rename = "Deleted")]
    pub deleted: Vec<Deleted>,
    /// Objects not deleted.
    #[serde(default, rename = "Error")]
    pub errors: Vec<DeleteError>,
}

impl DeleteResult {
    /// Parses an upstream's answer; `None` if it is not one.
    pub fn parse(body: &[u8]) -> Option<Self> {
        from_xml(body)
    }

    /// The answer's document; `quiet` leaves the deleted objects out, as S3 does.
    pub fn to_xml(&self, quiet: bool) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        let field = |x: &mut String, tag: &str, value: &Option<String>| {
            if let Some(v) = value {
                let _ = write!(x, "<{tag}>{}</{tag}>", escape(v));
            }
        };
        for d in self.deleted.iter().filter(|_| !quiet) {
            let _ = write!(x, "<Deleted><Key>{}</Key>", escape(&d.key));
            field(&mut x, "VersionId", &d.version_id);
            field(&mut x, "DeleteMarker", &d.delete_marker);
            field(&mut x, "DeleteMarkerVersionId", &d.delete_marker_version_id);
            x.push_str("</Deleted>");
        }
        for e in &self.errors {
            let _ = write!(x, "<Error><Key>{}</Key>", escape(&e.key));
            field(&mut x, "VersionId", &e.version_id);
            let _ = write!(
                x,
                "<Code>{}</Code><Message>{}</Message></Error>",
                escape(&e.code),
                escape(&e.message)
            );
        }
        x.push_str("</DeleteResult>");
        x
    }
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
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Contents {
        key: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Page {
        #[serde(default)]
        contents: Vec<Contents>,
        #[serde(default)]
        is_truncated: bool,
        next_continuation_token: Option<String>,
    }
    if !text.contains("<ListBucketResult") {
        return None;
    }
    let page: Page = from_xml(text.as_bytes())?;
    Some(ListAnswer {
        objects: page.contents.into_iter().map(|c| (c.key, c.size)).collect(),
        next_token: page.next_continuation_token.filter(|_| page.is_truncated),
    })
}

/// Reads an XML document into `T`, text kept as written (a key may begin or end with spaces),
/// character references and CDATA resolved; custom entities are an error. `None` if it does
/// not parse.
pub(crate) fn from_xml<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(body).ok()?;
    let mut de = quick_xml::de::Deserializer::borrowing(quick_xml::NsReader::from_str(text));
    T::deserialize(&mut de).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_render_as_s3_does() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000Z");
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
    fn delete_bodies_are_read_as_xml_is_written() {
        let body = "<?xml version=\"1.0\"?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  \
                    <Object><Key>a&amp;b</Key></Object>\n  <Object><Key>x&#46;bin</Key><VersionId>1</VersionId></Object>\n\
                    <!-- a comment --><Object><Key><![CDATA[<c>]]></Key></Object><Object><Key>&#x41; </Key></Object>\n\
                    <Quiet>true</Quiet></Delete>";
        let parsed = DeleteRequest::parse(body.as_bytes()).unwrap();
        let keys: Vec<_> = parsed.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a&b", "x.bin", "<c>", "A "]);
        assert_eq!(parsed.objects[1].version_id.as_deref(), Some("1"));
        assert!(parsed.quiet);
        let again = DeleteRequest::parse(DeleteRequest::to_xml(&parsed.objects).as_bytes()).unwrap();
        assert_eq!((again.objects, again.quiet), (parsed.objects, false));
    }

    #[test]
    fn delete_bodies_that_do_not_parse_or_break_limits_are_malformed() {
        let many: String = (0..1001).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
        for bad in [
            "<Delete><Object><Key>a</Key></Object>".to_owned(),
            "<Delete></Delete>".to_owned(),
            "<!DOCTYPE d [<!ENTITY e \"x\">]><Delete><Object><Key>&e;</Key></Object></Delete>".to_owned(),
            "<Delete><Object><Key>a</Key></Object><Quiet>maybe</Quiet></Delete>".to_owned(),
            format!("<Delete>{many}</Delete>"),
            "not xml".to_owned(),
        ] {
            assert!(
                matches!(DeleteRequest::parse(bad.as_bytes()), Err(S3Error::MalformedXml)),
                "{bad}"
            );
        }
    }

    #[test]
    fn delete_results_round_trip_and_quiet_leaves_out_the_deleted() {
        let upstream = "<DeleteResult><Deleted><Key>a&#13;</Key><VersionId>v</VersionId></Deleted>\
                        <Error><Key>b</Key><Code>InternalError</Code><Message>m</Message></Error></DeleteResult>";
        let r = DeleteResult::parse(upstream.as_bytes()).unwrap();
        assert_eq!(r.deleted[0].key, "a\r");
        assert_eq!(r.errors[0].code, "InternalError");
        assert_eq!(DeleteResult::parse(r.to_xml(false).as_bytes()).unwrap(), r);
        let quiet = r.to_xml(true);
        assert!(!quiet.contains("<Deleted>") && quiet.contains("<Key>b</Key><Code>InternalError</Code>"));
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
