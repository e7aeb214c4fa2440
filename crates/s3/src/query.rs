//! A request's query string, parsed once: names and values percent-decoded, each name at most
//! once. The policy reads this form and the upstream is sent [`Query::encode`] of it, so what is
//! authorized is what is forwarded, whichever duplicate or spelling (`%70refix`) another server
//! would have picked.
//!
//! `+` is a literal plus, as RFC 3986 and SigV4's canonical query have it (a signature over
//! `a%2Bb` also covers `a+b`, so reading `+` as a space would let a presigned URL be altered).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::S3Error;

/// Characters left unencoded in a forwarded query name or value: RFC 3986's unreserved set,
/// SigV4's canonical form.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Decoded query parameters in the order sent; no name twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query (without `?`). A name or value that is not UTF-8 once decoded, or a name
    /// sent twice, is refused with 400 InvalidArgument.
    pub fn parse(raw: &str) -> Result<Self, S3Error> {
        Self::parse_skipping(raw, &[])
    }

    /// [`Query::parse`], leaving out the parameters named exactly `skip` as sent, undecoded and
    /// unchecked: a presigned URL's own parameters, which its verifier reads (and refuses twice)
    /// and which are never forwarded. Decoding and copying them cost each presigned request a
    /// dozen small allocations.
    pub fn parse_skipping(raw: &str, skip: &[&str]) -> Result<Self, S3Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            if skip.contains(&name) {
                continue;
            }
            let (name, value) = (decode(name)?, decode(value)?);
            if name.is_empty() {
                // `=v` names nothing: it selects nothing here and is not forwarded.
                continue;
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(S3Error::InvalidArgument(format!(
                    "The query parameter `{name}` is given more than once."
                )));
            }
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, value)` pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Removes every parameter whose name `drop` selects.
    pub fn remove_if(&mut self, drop: impl Fn(&str) -> bool) {
        self.0.retain(|(n, _)| !drop(n));
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The query to forward: every name and value encoded as SigV4 canonicalises them, in the
    /// order received; a parameter without a value is written as its bare name (`?uploads`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.0 {
            if !out.is_empty() {
                out.push('&');
            }
            out.extend(utf8_percent_encode(name, UNRESERVED));
            if !value.is_empty() {
                out.push('=');
                out.extend(utf8_percent_encode(value, UNRESERVED));
            }
        }
        out
    }
}

fn decode(s: &str) -> Result<String, S3Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::InvalidArgument("A query parameter is not valid UTF-8.".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_decoded_once() {
        let q = Query::parse("list-type=2&%70refix=a%2Fb+c&uploads&x=").unwrap();
        assert_eq!(q.get("prefix"), Some("a/b+c"), "`+` is a plus, `%70` a `p`");
        assert_eq!(q.get("uploads"), Some(""));
        assert!(q.has("x") && !q.has("y"));
        assert_eq!(q.names().collect::<Vec<_>>(), ["list-type", "prefix", "uploads", "x"]);
    }

    #[test]
    fn skipped_names_are_left_out_unread() {
        let raw = "X-Amz-Signature=a&X-Amz-Signature=%ff&prefix=p";
        let q = Query::parse_skipping(raw, &["X-Amz-Signature"]).unwrap();
        assert_eq!(q.encode(), "prefix=p");
        assert!(Query::parse_skipping("prefix=a&prefix=b", &["X-Amz-Signature"]).is_err());
    }

    #[test]
    fn a_name_given_twice_is_refused_however_it_is_spelled() {
        for raw in ["prefix=a&prefix=b", "prefix=a&%70refix=b", "acl&acl=", "a=1&b=2&a=1"] {
            assert!(matches!(Query::parse(raw), Err(S3Error::InvalidArgument(_))), "{raw}");
        }
        assert!(matches!(Query::parse("k=%ff"), Err(S3Error::InvalidArgument(_))));
    }

    #[test]
    fn the_forwarded_form_is_canonical_and_reads_back_the_same() {
        let q = Query::parse("%70refix=a%2fb+c~&uploads&delimiter=%2F&k=%C3%A9").unwrap();
        let encoded = q.encode();
        assert_eq!(encoded, "prefix=a%2Fb%2Bc~&uploads&delimiter=%2F&k=%C3%A9");
        assert_eq!(Query::parse(&encoded).unwrap(), q);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_encoding_round_trips(raw in "\\PC{0,80}") {
            if let Ok(q) = Query::parse(&raw) {
                proptest::prop_assert_eq!(Query::parse(&q.encode()).unwrap(), q);
            }
        }
    }
}
