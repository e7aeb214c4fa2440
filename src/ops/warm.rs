//! `shardcache warm s3://bucket/prefix`: asks a running shardcache to bring a prefix (listed
//! through its S3 listener) or a manifest of keys into its cache, object by object, through the
//! admin listener's `POST /warm`. Shows progress on a terminal and ends with a summary.

use std::time::{Duration, Instant};

use super::progress::Bar;
use super::{human_bytes, query_value, Bucket, Endpoint};
use futures_util::stream::{self, StreamExt};
use http::Method;

/// How long a page of the prefix's listing may take.
const LISTING_DEADLINE: Duration = Duration::from_secs(60);

/// What to warm.
pub struct WarmArgs {
    /// `s3://bucket/prefix`; the bucket of a manifest's relative keys.
    pub target: String,
    /// A file of keys, one per line (`#` comments; `s3://bucket/key` lines name their bucket).
    pub manifest: Option<String>,
    /// shardcache's S3 listener, for listing the prefix.
    pub endpoint: Endpoint,
    /// shardcache's admin listener, for `POST /warm`.
    pub admin: Endpoint,
    /// Objects warmed at once.
    pub concurrency: usize,
}

/// What a warm run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Objects warmed.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes that were already cached.
    pub cached_bytes: u64,
    /// Objects that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let cached = if self.bytes == 0 {
            100.0
        } else {
            100.0 * self.cached_bytes as f64 / self.bytes as f64
        };
        write!(
            f,
            "warmed {} objects, {} in {:.1} s ({}/s); {:.1}% already cached; {} failed",
            self.objects,
            human_bytes(self.bytes),
            secs,
            human_bytes((self.bytes as f64 / secs) as u64),
            cached,
            self.failed.len()
        )
    }
}

/// Splits `s3://bucket/prefix` into bucket and prefix.
pub fn parse_target(target: &str) -> Result<(String, String), String> {
    let rest = target
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{target:?}: expected s3://BUCKET[/PREFIX]"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{target:?}: no bucket"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// The `(bucket, key)` pairs of a manifest; relative keys belong to `bucket`.
pub fn parse_manifest(text: &str, bucket: &str) -> Result<Vec<(String, String)>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = match line.strip_prefix("s3://") {
            Some(_) => match parse_target(line)? {
                (_, key) if key.is_empty() => return Err(format!("manifest line {}: {line:?} has no key", n + 1)),
                pair => pair,
            },
            None => (bucket.to_owned(), line.to_owned()),
        };
        keys.push(entry);
    }
    Ok(keys)
}

/// Warms one object; returns `(size, cached_bytes)`.
async fn warm_one(admin: &Endpoint, bucket: &str, key: &str) -> Result<(u64, u64), String> {
    let path = format!("/warm?bucket={}&key={}", query_value(bucket), query_value(key));
    let reply = admin.call(Method::POST, &path).await?;
    let answer: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|_| format!("HTTP {}: {}", reply.status, reply.text().trim()))?;
    if reply.status != 200 {
        let why = answer["error"].as_str().unwrap_or("unknown error");
        return Err(format!("HTTP {}: {why}", reply.status));
    }
    match (answer["size"].as_u64(), answer["cached_bytes"].as_u64()) {
        (Some(size), Some(cached)) => Ok((size, cached)),
        _ => Err(format!("unexpected answer: {}", reply.text().trim())),
    }
}

/// Objects warmed or failed so far.
fn done(s: &Summary) -> usize {
    s.objects as usize + s.failed.len()
}

/// Runs a warm: lists or reads the keys, then warms `concurrency` objects at a time.
pub async fn run(args: WarmArgs) -> Result<Summary, String> {
    let started = Instant::now();
    let (bucket, prefix) = parse_target(&args.target)?;
    let (keys, total_bytes) = match &args.manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            (parse_manifest(&text, &bucket)?, None)
        }
        None => {
            let (listed, _) = Bucket::path_style(args.endpoint.clone(), &bucket)
                .list(&prefix, usize::MAX, LISTING_DEADLINE)
                .await?;
            let total = listed.objects.iter().map(|(_, size)| size).sum();
            let keys = listed
                .objects
                .into_iter()
                .map(|(key, _)| (bucket.clone(), key))
                .collect();
            (keys, Some(total))
        }
    };
    let mut progress = Bar::new(keys.len(), total_bytes);
    let admin = &args.admin;
    let mut results = stream::iter(keys)
        .map(|(bucket, key)| async move {
            let result = warm_one(admin, &bucket, &key).await;
            (format!("s3://{bucket}/{key}"), result)
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut summary = Summary::default();
    while let Some((name, result)) = results.next().await {
        match result {
            Ok((size, cached)) => {
                summary.objects += 1;
                summary.bytes += size;
                summary.cached_bytes += cached;
            }
            Err(why) => summary.failed.push((name, why)),
        }
        progress.draw("", done(&summary), summary.bytes, false);
    }
    progress.draw("", done(&summary), summary.bytes, true);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            parse_target("s3://data/train/").unwrap(),
            ("data".into(), "train/".into())
        );
        assert_eq!(parse_target("s3://data").unwrap(), ("data".into(), "".into()));
        assert!(parse_target("data/train").is_err());
        assert!(parse_target("s3:///train").is_err());
    }

    #[test]
    fn manifests_mix_relative_and_absolute_keys() {
        let text = "# epoch 0\nshard-0.tar\n\n  s3://other/x/shard-1.tar \n";
        let keys = parse_manifest(text, "data").unwrap();
        assert_eq!(
            keys,
            vec![
                ("data".into(), "shard-0.tar".into()),
                ("other".into(), "x/shard-1.tar".into())
            ]
        );
        assert!(parse_manifest("s3://other/\n", "data").is_err());
    }
}
