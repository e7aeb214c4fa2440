//! Conditional request headers (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) evaluated against cached object metadata, in the order RFC 9110
//! section 13.2.2 gives and with S3's documented combinations:
//!
//! - `If-Match` true and `If-Unmodified-Since` false: 200 (the date is not checked);
//! - `If-None-Match` false and `If-Modified-Since` true: 304 (the date is not checked).

use std::time::SystemTime;

use http::HeaderMap;

use shardcache_types::ObjectMeta;

/// What the preconditions decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the object.
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer 412 Precondition Failed; names the header that failed, as S3's `<Condition>`.
    Failed(&'static str),
}

/// Whether the request carries any conditional header.
pub fn any(headers: &HeaderMap) -> bool {
    ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// Evaluates the conditional headers of a GET or HEAD.
pub fn evaluate(headers: &HeaderMap, meta: &ObjectMeta) -> Precondition {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let date = |name: &str| text(name).and_then(|v| httpdate::parse_http_date(v).ok());
    let modified_after = |t: SystemTime| secs(meta.last_modified) > secs(t);

    if let Some(list) = text("if-match") {
        if !meta.etag.matches_list(list) {
            return Precondition::Failed("If-Match");
        }
    } else if let Some(t) = date("if-unmodified-since") {
        if modified_after(t) {
            return Precondition::Failed("If-Unmodified-Since");
        }
    }
    if let Some(list) = text("if-none-match") {
        if meta.etag.matches_list(list) {
            return Precondition::NotModified;
        }
    } else if let Some(t) = date("if-modified-since") {
        if !modified_after(t) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// HTTP dates have whole seconds; compare at that precision.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use shardcache_types::ETag;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            size: 1,
            etag: ETag::parse("\"v1\"").unwrap(),
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            content_type: None,
            version_id: None,
            headers: vec![],
            checksums: None,
        }
    }

    fn check(pairs: &[(&'static str, String)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        evaluate(&h, &meta())
    }

    fn date(offset: i64) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs((1_700_000_000 + offset) as u64);
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn if_match_fails_on_another_etag() {
        assert_eq!(check(&[("if-match", "\"v1\"".into())]), Precondition::Proceed);
        assert_eq!(
            check(&[("if-match", "\"v2\"".into())]),
            Precondition::Failed("If-Match")
        );
    }

    #[test]
    fn if_none_match_gives_304_on_the_same_etag() {
        assert_eq!(check(&[("if-none-match", "\"v1\"".into())]), Precondition::NotModified);
        assert_eq!(check(&[("if-none-match", "\"v2\"".into())]), Precondition::Proceed);
    }

    #[test]
    fn dates_compare_at_second_precision() {
        assert_eq!(check(&[("if-modified-since", date(0))]), Precondition::NotModified);
        assert_eq!(check(&[("if-modified-since", date(-1))]), Precondition::Proceed);
        assert_eq!(check(&[("if-unmodified-since", date(0))]), Precondition::Proceed);
        assert_eq!(
            check(&[("if-unmodified-since", date(-1))]),
            Precondition::Failed("If-Unmodified-Since")
        );
    }

    #[test]
    fn s3_combinations_let_the_etag_win() {
        let matching_but_old = [("if-match", "\"v1\"".into()), ("if-unmodified-since", date(-10))];
        assert_eq!(check(&matching_but_old), Precondition::Proceed);
        let changed_tag_but_old = [("if-none-match", "\"v2\"".into()), ("if-modified-since", date(10))];
        assert_eq!(check(&changed_tag_but_old), Precondition::Proceed);
    }

    #[test]
    fn unparsable_dates_are_ignored() {
        assert_eq!(
            check(&[("if-modified-since", "yesterday".into())]),
            Precondition::Proceed
        );
    }
}
