//! `shardcache stats`: a one-screen summary of a running shardcache, read from its `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::human_bytes;

/// One sample of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, BTreeMap::new()),
            };
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y"` (values may contain escaped quotes and commas).
fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// Sum of the samples of `name` whose labels include every pair of `filter`.
fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .fold(0.0, |total, s| total + s.value)
}

/// Sum of the samples of `name` in a `/metrics` text whose labels include every pair of `filter`.
pub(super) fn total(metrics_text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    sum(&parse(metrics_text), name, filter)
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", 100.0 * part / whole)
    } else {
        "n/a".to_owned()
    }
}

/// The summary `shardcache stats` prints, from a `/metrics` scrape.
pub fn render(metrics_text: &str) -> String {
    let s = parse(metrics_text);
    let bytes = |v: f64| human_bytes(v as u64);
    let gets = |outcome: &str| {
        sum(
            &s,
            "shardcache_requests_total",
            &[("operation", "GetObject"), ("outcome", outcome)],
        )
    };
    let (memory_hits, disk_hits, coalesced, misses) =
        (gets("memory_hit"), gets("disk_hit"), gets("coalesced"), gets("miss"));
    let all_gets = memory_hits + disk_hits + coalesced + misses;
    let served = |source: &str| sum(&s, "shardcache_served_bytes_total", &[("source", source)]);
    let (from_memory, from_disk, from_upstream) = (served("memory"), served("disk"), served("upstream"));
    let served_total = from_memory + from_disk + from_upstream;
    let upstream_bytes = sum(&s, "shardcache_upstream_received_bytes_total", &[]);
    let tier = |name: &str, tier: &str| sum(&s, name, &[("tier", tier)]);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "GetObject requests  {all_gets:.0}: {memory_hits:.0} memory hits, {disk_hits:.0} disk hits, \
         {coalesced:.0} coalesced, {misses:.0} misses (hit ratio {})",
        percent(memory_hits + disk_hits, all_gets)
    );
    let _ = writeln!(
        out,
        "bytes served        {}: memory {}, disk {}, upstream {} (hit ratio {})",
        bytes(served_total),
        bytes(from_memory),
        bytes(from_disk),
        bytes(from_upstream),
        percent(from_memory + from_disk, served_total)
    );
    let _ = writeln!(
        out,
        "upstream            {} fetched in {:.0} requests, {:.0} errors",
        bytes(upstream_bytes),
        sum(&s, "shardcache_upstream_requests_total", &[]),
        sum(&s, "shardcache_upstream_errors_total", &[])
    );
    // Net: what clients received minus what shardcache fetched (warming and unused read-ahead
    // count against it, so it is negative until the cache pays for itself).
    let avoided = served_total - upstream_bytes;
    let sign = if avoided < 0.0 { "-" } else { "" };
    let _ = writeln!(out, "egress avoided      {sign}{} (net)", bytes(avoided.abs()));
    for t in ["memory", "disk"] {
        let (used, capacity) = (
            tier("shardcache_cache_usage_bytes", t),
            tier("shardcache_cache_capacity_bytes", t),
        );
        if capacity > 0.0 {
            let _ = writeln!(
                out,
                "{:<20}{} of {} ({})",
                format!("{t} tier"),
                bytes(used),
                bytes(capacity),
                percent(used, capacity)
            );
        }
    }
    if sum(&s, "shardcache_disk_degraded", &[]) > 0.0 {
        out.push_str("disk tier           DEGRADED: its disk failed; not used until a probe finds it working\n");
    }
    if let Some(line) = working_set(&s) {
        out.push_str(&line);
    }
    out
}

/// The working set against the disk tier, and the hit ratio that follows: a pass over W bytes
/// through a tier of C hits at most C / W of them.
fn working_set(s: &[Sample]) -> Option<String> {
    let working = sum(s, "shardcache_working_set_bytes", &[]);
    let capacity = sum(s, "shardcache_cache_capacity_bytes", &[("tier", "disk")]);
    if working <= 0.0 || capacity <= 0.0 {
        return None;
    }
    let ratio = working / capacity;
    let advice = match ratio {
        r if r <= 1.0 => "it fits".to_owned(),
        r => format!("expect <= {:.0}% hits; add disk or nodes", 100.0 / r),
    };
    Some(format!(
        "working set         ~{} ({:.1}x the disk tier): {advice}\n",
        human_bytes(working as u64),
        ratio
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP shardcache_requests_total S3 requests answered
# TYPE shardcache_requests_total counter
shardcache_requests_total{operation="GetObject",outcome="memory_hit",status="200"} 6
shardcache_requests_total{operation="GetObject",outcome="miss",status="200"} 2
shardcache_requests_total{operation="head_object",outcome="local",status="200"} 9
shardcache_served_bytes_total{source="memory"} 3221225472
shardcache_served_bytes_total{source="upstream"} 1073741824
shardcache_upstream_received_bytes_total{upstream="s3"} 1073741824
shardcache_cache_usage_bytes{tier="memory"} 536870912
shardcache_cache_capacity_bytes{tier="memory"} 1073741824
foyer_memory_usage{name="a\"b,c"} 1
"#;

    #[test]
    fn samples_parse_with_escaped_labels() {
        let samples = parse(SCRAPE);
        assert_eq!(samples.len(), 9);
        assert_eq!(samples[8].labels["name"], "a\"b,c");
        assert_eq!(
            sum(&samples, "shardcache_requests_total", &[("operation", "GetObject")]),
            8.0
        );
    }

    #[test]
    fn the_summary_shows_ratios_egress_and_tiers() {
        let text = render(SCRAPE);
        assert!(
            text.contains("8: 6 memory hits, 0 disk hits, 0 coalesced, 2 misses (hit ratio 75.0%)"),
            "{text}"
        );
        assert!(text.contains("bytes served        4.0 GiB: memory 3.0 GiB"), "{text}");
        assert!(text.contains("(hit ratio 75.0%)\nupstream"), "{text}");
        assert!(text.contains("egress avoided      3.0 GiB (net)"), "{text}");
        assert!(
            text.contains("memory tier         512.0 MiB of 1.0 GiB (50.0%)"),
            "{text}"
        );
        assert!(!text.contains("disk tier"), "{text}");
        assert!(!text.contains("working set"), "{text}");
    }

    #[test]
    fn the_working_set_is_set_against_the_disk_tier() {
        let scrape = |mib: u64| {
            format!(
                "shardcache_working_set_bytes {}\nshardcache_cache_capacity_bytes{{tier=\"disk\"}} 536870912\n",
                mib << 20
            )
        };
        let text = render(&scrape(768));
        assert!(
            text.contains("working set         ~768.0 MiB (1.5x the disk tier): expect <= 67% hits; add disk or nodes"),
            "{text}"
        );
        assert!(render(&scrape(256)).contains("(0.5x the disk tier): it fits"));
    }

    #[test]
    fn a_degraded_disk_tier_is_called_out() {
        let text = render("shardcache_disk_degraded 1\n");
        assert!(text.contains("disk tier           DEGRADED"), "{text}");
        assert!(!render("shardcache_disk_degraded 0\n").contains("DEGRADED"));
    }
}
