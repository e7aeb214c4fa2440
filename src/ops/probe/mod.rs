//! `shardcache probe s3://bucket/prefix`: what shardcache buys on the user's own data. It lists
//! the prefix at the upstream, draws a sample of its objects, and reads the sample three times
//! with the same number of readers: directly from the upstream, then through a running
//! shardcache (cold, then warm). Each pass reports throughput, time to first byte and what it
//! cost the upstream (for the passes through shardcache, read off its `/metrics`); the warm
//! pass gives the egress a warm cache saves per epoch over the whole prefix.

mod pass;
mod report;

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_credential_types::Credentials;
use http::Method;
use shardcache_types::SplitMix64;

use super::progress::Bar;
use super::stats::total;
use super::warm::parse_target;
use super::{Bucket, Endpoint};
pub use report::Report;

use pass::{Counters, Object, Outcome};
use report::{percentile, project, Pass};

/// Where the upstream is, and how to sign for it.
pub struct Upstream {
    /// Its endpoint, addressed path-style; `None` for AWS S3 in `region` (virtual-hosted style,
    /// or path-style for a bucket name with dots).
    pub endpoint: Option<Endpoint>,
    /// The region to sign for (and of AWS's endpoint).
    pub region: String,
    /// Credentials; `None` looks them up in the AWS default chain; unsigned if it has none.
    pub credentials: Option<Credentials>,
    /// Send the upstream's requests unsigned (public buckets), whatever credentials exist.
    pub unsigned: bool,
}

/// What to probe, and how hard.
pub struct ProbeArgs {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// The upstream holding it.
    pub upstream: Upstream,
    /// shardcache's S3 listener (signed or not as the caller set it up).
    pub endpoint: Endpoint,
    /// shardcache's admin listener (its `/metrics`).
    pub admin: Endpoint,
    /// At most this many objects in the sample.
    pub max_objects: usize,
    /// At most this many bytes in the sample.
    pub max_bytes: u64,
    /// At most this many objects listed.
    pub list_max: usize,
    /// Readers at once in each pass.
    pub readers: usize,
    /// Dollars per GB of egress.
    pub price_per_gb: f64,
    /// The sample's seed.
    pub seed: u64,
    /// Bound on each wait for an answer or a piece of a body.
    pub deadline: Duration,
}

/// The upstream's bucket: at the given endpoint path-style, else at AWS.
async fn upstream_bucket(u: &Upstream, bucket: &str) -> Result<Bucket, String> {
    let credentials = match (&u.credentials, u.unsigned) {
        (_, true) => None,
        (Some(c), false) => Some(c.clone()),
        (None, false) => {
            match shardcache_upstream::default_chain(&u.region).await {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("shardcache probe: no credentials from the AWS chain ({e}); the upstream's requests go unsigned");
                    None
                }
            }
        }
    };
    let sign = |e: Endpoint| match &credentials {
        Some(c) => e.with_sigv4(c.clone(), u.region.clone()),
        None => e,
    };
    Ok(match &u.endpoint {
        Some(e) => Bucket::path_style(sign(e.clone()), bucket),
        None if bucket.contains('.') => {
            let e = format!("https://s3.{}.amazonaws.com", u.region).parse()?;
            Bucket::path_style(sign(e), bucket)
        }
        None => {
            let e = format!("https://{bucket}.s3.{}.amazonaws.com", u.region).parse()?;
            Bucket::virtual_hosted(sign(e), bucket)
        }
    })
}

/// Up to `max_objects` objects of `listed`, drawn in an order `seed` fixes, whose sizes add up
/// to at most `max_bytes` (an object that would pass it is skipped).
fn sample(listed: &[(String, u64)], max_objects: usize, max_bytes: u64, seed: u64) -> Vec<Object> {
    // A Fisher-Yates shuffle driven by splitmix64: the same seed draws the same sample.
    let mut rng = SplitMix64(seed);
    let mut order: Vec<usize> = (0..listed.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let (mut chosen, mut bytes) = (Vec::new(), 0u64);
    for i in order {
        let (key, size) = &listed[i];
        if chosen.len() == max_objects {
            break;
        }
        if bytes.saturating_add(*size) <= max_bytes {
            bytes += size;
            chosen.push(Object {
                key: key.clone(),
                size: *size,
            });
        }
    }
    chosen
}

/// shardcache's `/metrics` text, or `None` if it cannot be read within `deadline`.
async fn scrape(admin: &Endpoint, deadline: Duration) -> Option<String> {
    let reply = admin.call_within(Method::GET, "/metrics", deadline).await.ok()?;
    (reply.status == 200).then(|| reply.text())
}

/// What shardcache's upstreams were sent between two scrapes: requests and bytes received.
fn upstream_growth(before: Option<&str>, after: Option<&str>) -> (Option<u64>, Option<u64>) {
    let (Some(before), Some(after)) = (before, after) else {
        return (None, None);
    };
    let grew = |name: &str| Some((total(after, name, &[]) - total(before, name, &[])).max(0.0) as u64);
    (
        grew("shardcache_upstream_requests_total"),
        grew("shardcache_upstream_received_bytes_total"),
    )
}

/// Runs one pass with a progress bar.
async fn timed_pass(
    name: &'static str,
    bucket: &Bucket,
    objects: &[Object],
    args: &ProbeArgs,
    expect: Option<&[Option<String>]>,
) -> Outcome {
    let counters = Counters::default();
    let total_bytes = objects.iter().map(|o| o.size).sum();
    let mut bar = Bar::new(objects.len(), Some(total_bytes));
    let label = format!("{name:<7}");
    let run = pass::run(bucket, objects, args.readers, args.deadline, expect, &counters);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            _ = tick.tick() => {
                bar.draw(&label, counters.done.load(Ordering::Relaxed), counters.bytes.load(Ordering::Relaxed), false);
            }
        }
    };
    bar.draw(&label, objects.len(), outcome.bytes, true);
    outcome
}

fn summarize(name: &'static str, mut o: Outcome, upstream: (Option<u64>, Option<u64>)) -> Pass {
    let seconds = o.elapsed.as_secs_f64();
    Pass {
        name,
        objects: o.objects,
        bytes: o.bytes,
        seconds,
        bytes_per_second: o.bytes as f64 / seconds.max(1e-9),
        ttfb_p50_ms: percentile(&mut o.first_bytes, 50.0),
        ttfb_p99_ms: percentile(&mut o.first_bytes, 99.0),
        upstream_requests: upstream.0,
        upstream_bytes: upstream.1,
        errors: o.errors,
    }
}

/// The cache's capacity in a `/metrics` text: its larger tier.
fn capacity(metrics: &str) -> u64 {
    ["memory", "disk"]
        .iter()
        .map(|tier| total(metrics, "shardcache_cache_capacity_bytes", &[("tier", tier)]) as u64)
        .max()
        .unwrap_or(0)
}

/// Runs a probe.
pub async fn run(args: ProbeArgs) -> Result<Report, String> {
    let (bucket, prefix) = parse_target(&args.target)?;
    let upstream = upstream_bucket(&args.upstream, &bucket).await?;
    let (listed, listing_requests) = upstream.list(&prefix, args.list_max, args.deadline).await?;
    let mut scraped = scrape(&args.admin, args.deadline).await;
    let capacity = scraped.as_deref().map(capacity);
    // A sample larger than the cache would thrash it: the warm pass would not be warm.
    let max_bytes = args.max_bytes.min(capacity.unwrap_or(u64::MAX));
    let objects = sample(&listed.objects, args.max_objects, max_bytes, args.seed);
    if objects.is_empty() {
        return Err(format!(
            "no object under {} fits the sample (at most {} objects of {} bytes in all)",
            args.target, args.max_objects, max_bytes
        ));
    }
    let proxied = Bucket::path_style(args.endpoint.clone(), &bucket);

    let direct = timed_pass("direct", &upstream, &objects, &args, None).await;
    let expect = direct.etags.clone();
    let own = (Some(direct.requests), Some(direct.bytes));
    let mut passes = vec![summarize("direct", direct, own)];
    let mut warm_fetched = None;
    for name in ["cold", "warm"] {
        let outcome = timed_pass(name, &proxied, &objects, &args, Some(&expect)).await;
        let after = scrape(&args.admin, args.deadline).await;
        let growth = upstream_growth(scraped.as_deref(), after.as_deref());
        warm_fetched = growth.1;
        passes.push(summarize(name, outcome, growth));
        scraped = after;
    }
    let listed_bytes = listed
        .objects
        .iter()
        .fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
    let sampled_bytes = objects.iter().map(|o| o.size).sum();
    Ok(Report {
        target: args.target.clone(),
        listed_objects: listed.objects.len() as u64,
        listed_bytes,
        listing_truncated: listed.truncated,
        listing_requests,
        sampled_objects: objects.len() as u64,
        sampled_bytes,
        readers: args.readers,
        seed: args.seed,
        passes,
        cache_capacity_bytes: capacity,
        egress: warm_fetched.map(|w| project(listed_bytes, sampled_bytes, w, capacity, args.price_per_gb)),
        price_per_gb: args.price_per_gb,
    })
}

/// A size: a number of bytes, or with a unit (`KB`, `MB`, `GB`, `TB` in powers of 1000; `KiB`,
/// `MiB`, `GiB`, `TiB` in powers of 1024; any case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 2GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1 tib").unwrap(), 1 << 40);
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn samples_are_capped_and_repeatable() {
        let listed: Vec<(String, u64)> = (0..100).map(|i| (format!("k{i}"), 10)).collect();
        let a = sample(&listed, 8, u64::MAX, 7);
        assert_eq!(a.len(), 8);
        let keys = |s: &[Object]| s.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(&a),
            keys(&sample(&listed, 8, u64::MAX, 7)),
            "same seed, same sample"
        );
        assert_ne!(keys(&a), keys(&sample(&listed, 8, u64::MAX, 8)));
        assert_eq!(sample(&listed, 100, 35, 7).len(), 3, "at most 35 bytes");
        let mixed = vec![("big".to_owned(), 100), ("small".to_owned(), 1)];
        assert_eq!(keys(&sample(&mixed, 10, 50, 1)), ["small"], "too big is skipped");
    }

    #[test]
    fn upstream_growth_needs_both_scrapes() {
        let before = "shardcache_upstream_requests_total{upstream=\"a\",call=\"GetObject\"} 2\n\
                      shardcache_upstream_received_bytes_total{upstream=\"a\"} 100\n";
        let after = "shardcache_upstream_requests_total{upstream=\"a\",call=\"GetObject\"} 5\n\
                     shardcache_upstream_requests_total{upstream=\"a\",call=\"HeadObject\"} 1\n\
                     shardcache_upstream_received_bytes_total{upstream=\"a\"} 400\n";
        assert_eq!(upstream_growth(Some(before), Some(after)), (Some(4), Some(300)));
        assert_eq!(upstream_growth(None, Some(after)), (None, None));
    }
}
