//! `shardcache warm s3://bucket/prefix`: asks a running shardcache to bring a prefix (listed
//! through its S3 listener) or a manifest of keys into its cache, object by object, through the
//! admin listener's `POST /warm`. Shows progress on a terminal and ends with a summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::{human_bytes, query_value, Endpoint};
use crate::s3::encode_path;
use crate::s3::xml::parse_list_answer;
use futures_util::stream::{self, StreamExt};
use http::Method;

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

/// Every `(key, size)` under `prefix`, listed through shardcache's S3 listener.
async fn list(endpoint: &Endpoint, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, String> {
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/{}?list-type=2&prefix={}", encode_path(bucket), query_value(prefix));
        if let Some(t) = &token {
            path.push_str(&format!("&continuation-token={}", query_value(t)));
        }
        let reply = endpoint.call(Method::GET, &path).await?;
        if reply.status != 200 {
            return Err(format!(
                "listing s3://{bucket}/{prefix}: HTTP {}: {}",
                reply.status,
                reply.text()
            ));
        }
        let page = parse_list_answer(&reply.text())
            .ok_or_else(|| format!("listing s3://{bucket}/{prefix}: not a ListObjectsV2 answer"))?;
        objects.extend(page.objects.into_iter().filter(|(key, _)| !key.ends_with('/')));
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(objects),
        }
    }
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

/// A one-line progress display on stderr, drawn only when stderr is a terminal.
struct Progress {
    total_objects: usize,
    total_bytes: Option<u64>,
    started: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Progress {
    fn draw(&mut self, s: &Summary, last: bool) {
        if !self.tty || (!last && self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100))) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let done = s.objects as usize + s.failed.len();
        let share = if self.total_objects == 0 {
            1.0
        } else {
            done as f64 / self.total_objects as f64
        };
        let width = 30;
        let filled = (share * width as f64) as usize;
        let bytes = match self.total_bytes {
            Some(total) => format!("{} / {}", human_bytes(s.bytes), human_bytes(total)),
            None => human_bytes(s.bytes),
        };
        let rate = s.bytes as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} objects, {bytes}, {}/s   ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.total_objects,
            human_bytes(rate as u64)
        );
        if last {
            let _ = writeln!(err);
        }
    }
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
            let listed = list(&args.endpoint, &bucket, &prefix).await?;
            let total = listed.iter().map(|(_, size)| size).sum();
            let keys = listed.into_iter().map(|(key, _)| (bucket.clone(), key)).collect();
            (keys, Some(total))
        }
    };
    let mut progress = Progress {
        total_objects: keys.len(),
        total_bytes,
        started,
        last_draw: None,
        tty: std::io::stderr().is_terminal(),
    };
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
        progress.draw(&summary, false);
    }
    progress.draw(&summary, true);
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
