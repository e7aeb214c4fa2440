use super::*;

const MINIMAL: &str = "upstreams:\n  local:\n    kind: fs\n    root: ./data\ndefault_upstream: local\n";

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, &|name| (name == "SECRET").then(|| "s3cr3t".to_owned()))
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.cache.chunk_size, 8 << 20);
    assert_eq!(c.cache.read_ahead_chunks, 2);
    assert_eq!(
        (c.cache.read_ahead_max_chunks, c.cache.read_ahead_per_upstream),
        (16, 64)
    );
    assert_eq!(c.cache.disk.unwrap().io_engine, IoEngineKind::Uring);
    assert_eq!((c.cache.stale_if_error_seconds, c.clients.max_connections), (0, 4096));
    assert_eq!(c.clients.header_timeout_seconds, 10);
    let s3 = load("upstreams:\n  u:\n    kind: s3\n    endpoint: http://x\n").unwrap();
    let UpstreamConfig::S3(u) = &s3.upstreams["u"] else {
        panic!("an s3 upstream")
    };
    assert_eq!((u.retry.attempts, u.breaker.failures, u.hedge.is_none()), (3, 5, true));
}

#[test]
fn a_read_ahead_that_cannot_widen_or_has_no_slot_is_refused_by_name() {
    for (keys, field) in [
        (
            "read_ahead_chunks: 8\n  read_ahead_max_chunks: 4",
            "cache.read_ahead_max_chunks",
        ),
        ("read_ahead_max_chunks: 4096", "cache.read_ahead_max_chunks"),
        ("read_ahead_per_upstream: 0", "cache.read_ahead_per_upstream"),
    ] {
        let err = load(&format!("{MINIMAL}cache:\n  {keys}\n")).unwrap_err().to_string();
        assert!(err.contains(field), "{keys}: {err}");
    }
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = load(&format!("{MINIMAL}cache:\n  chunk_sise: 4096\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunk_sise"), "{err}");
}

#[test]
fn bad_values_name_their_field() {
    let err = load(&format!("{MINIMAL}cache:\n  chunk_size: 1000\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cache.chunk_size:"), "{err}");
    let err = load(&format!("{MINIMAL}buckets:\n  - name: b\n    upstream: nope\n")).unwrap_err();
    assert!(err.to_string().starts_with("buckets[0].upstream:"), "{err}");
    let s3 = "upstreams:\n  u:\n    kind: s3\n    endpoint: ftp://x\n";
    assert!(load(s3).unwrap_err().to_string().starts_with("upstreams.u.endpoint:"));
    let uncached_dir = format!("{MINIMAL}buckets:\n  - {{name: b, upstream: local, cache: none}}\n");
    let err = load(&uncached_dir).unwrap_err().to_string();
    assert!(err.starts_with("buckets[0].cache:"), "{err}");
    for (yaml, field) in [
        ("    retry: {attempts: 0}\n", "upstreams.u.retry.attempts:"),
        (
            "    retry: {base_delay_ms: 100, max_delay_ms: 10}\n",
            "upstreams.u.retry.max_delay_ms:",
        ),
        (
            "    retry: {floor_window_seconds: 0}\n",
            "upstreams.u.retry.floor_window_seconds:",
        ),
        ("    breaker: {open_seconds: 0}\n", "upstreams.u.breaker.open_seconds:"),
        (
            "    hedge: {after_ms: 10, max_share: 2}\n",
            "upstreams.u.hedge.max_share:",
        ),
    ] {
        let err = load(&format!(
            "upstreams:\n  u:\n    kind: s3\n    endpoint: http://x\n{yaml}"
        ))
        .unwrap_err();
        assert!(err.to_string().starts_with(field), "{err}");
    }
    let cluster = "cluster:\n  node: a\n  listen: 127.0.0.1:9400\n  secret_file: s\n";
    let err = load(&format!("{MINIMAL}{cluster}  floor_window_seconds: 0\n")).unwrap_err();
    assert!(err.to_string().starts_with("cluster.floor_window_seconds:"), "{err}");
    assert!(
        load(&format!("{MINIMAL}{cluster}  floor_bytes_per_second: 0\n")).is_ok(),
        "0: no floor"
    );
    let err = load(&format!("{MINIMAL}clients: {{header_timeout_seconds: 0}}\n")).unwrap_err();
    assert!(err.to_string().starts_with("clients.header_timeout_seconds:"), "{err}");
    let stale = format!("{MINIMAL}buckets:\n  - {{name: b, upstream: local, stale_if_error_seconds: 99999999}}\n");
    let err = load(&stale).unwrap_err();
    assert!(
        err.to_string().starts_with("buckets[0].stale_if_error_seconds:"),
        "{err}"
    );
    for (fallback, field) in [
        ("{upstream: nope}", "buckets[0].fallback.upstream:"),
        ("{upstream: local}", "buckets[0].fallback:"),
    ] {
        let yaml = format!("{MINIMAL}buckets:\n  - {{name: b, upstream: local, fallback: {fallback}}}\n");
        let err = load(&yaml).unwrap_err();
        assert!(err.to_string().starts_with(field), "{err}");
    }
    let bad_key = format!("{MINIMAL}cache:\n  disk:\n    path: ./c\n    encryption: rot13\n");
    let err = load(&bad_key).unwrap_err().to_string();
    assert!(err.contains("encryption"), "{err}");
}

#[test]
fn env_references_expand_in_secret_fields() {
    let s3 = "upstreams:\n  u:\n    kind: s3\n    endpoint: http://127.0.0.1:9000\n    credentials:\n      \
              source: static\n      access_key_id: key\n      secret_access_key: ${SECRET}\n";
    let c = load(s3).unwrap();
    let UpstreamConfig::S3(u) = &c.upstreams["u"] else {
        panic!()
    };
    assert_eq!(u.credentials.secret_access_key.as_deref(), Some("s3cr3t"));
    let missing = s3.replace("${SECRET}", "${MISSING}");
    let err = load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("upstreams.u.credentials.secret_access_key") && err.contains("MISSING"),
        "{err}"
    );
}

#[test]
fn auth_keys_and_statements_are_checked_by_field() {
    let auth = |rest: &str| load(&format!("{MINIMAL}auth:\n{rest}"));
    let key = "  keys:\n    - {access_key_id: AK, secret_access_key: '${SECRET}', principal: p}\n";
    let ok = auth(&format!("{key}  policy:\n    - {{effect: allow, principals: [p, anonymous], actions: [GetObject], resources: ['b/*']}}\n")).unwrap();
    assert_eq!(ok.auth.unwrap().load().unwrap().keys[0].secret, "s3cr3t");
    // A statement whose principal has no key (any more) is kept: deleting the key revokes it.
    let stranger =
        format!("{key}  policy:\n    - {{effect: allow, principals: [q], actions: ['*'], resources: ['*']}}\n");
    assert_eq!(auth(&stranger).unwrap().auth.unwrap().load().unwrap().policy.len(), 1);
    let twice = format!("{key}    - {{access_key_id: AK, secret_access_key: x}}\n");
    assert!(auth(&twice)
        .unwrap_err()
        .to_string()
        .starts_with("auth.keys[1].access_key_id:"));
    let action =
        format!("{key}  policy:\n    - {{effect: allow, principals: [p], actions: [Fly], resources: ['*']}}\n");
    let err = auth(&action).unwrap_err().to_string();
    assert!(
        err.starts_with("auth.policy[0].actions:") && err.contains("Fly"),
        "{err}"
    );
    let other =
        format!("{key}  policy:\n    - {{effect: allow, principals: [p], actions: [Other], resources: ['*']}}\n");
    assert!(auth(&other).unwrap_err().to_string().contains("`Other` is gone"));
}

#[test]
fn expansion_handles_dollars() {
    let env = |_: &str| Some("v".to_owned());
    assert_eq!(expand("a$$b${X}c$", "f", &env).unwrap(), "a$bvc$");
    assert!(expand("${X", "f", &env).is_err());
}
