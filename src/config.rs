//! The YAML configuration file. Every field's doc comment ends with its default; `config/`
//! holds an example with every key, and CONFIG.md mirrors this file.
//!
//! Loading is three steps: parse (unknown keys are errors, with line and column), expand
//! `${ENV_VAR}` in the fields that may carry secrets or paths, then [`Config::validate`], which
//! names the bad field.
//!
//! It owns the file's shape, defaults and validation; it uses the upstream's
//! [`settings`](crate::upstream::settings) and `auth`'s, `audit`'s and `tls`'s types for the
//! sections they read, and must not reach any running part: `app` turns it into each part's
//! options.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod audit;
mod auth;
mod clients;
mod cluster;
mod lineage;
mod resilience;
mod tls;
mod upstream;
pub use audit::AuditConfig;
pub use auth::{AuthConfig, AuthRules, KeyConfig};
pub use clients::ClientsConfig;
pub use cluster::{ClusterConfig, DnsConfig, KubernetesConfig, PeerConfig, MIN_SECRET_BYTES};
pub use lineage::LineageConfig;
pub use resilience::{BreakerConfig, HedgeConfig, RetryConfig};
pub use tls::TlsConfig;
pub use upstream::{CredentialsConfig, CredentialsSource, S3UpstreamConfig, UpstreamAddressing, UpstreamConfig};

/// A configuration error; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Config file path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// YAML syntax, unknown key or wrong type (serde_yaml names the key and the position).
    #[error("{0}")]
    Parse(#[from] serde_yaml::Error),
    /// A field holds a value shardcache cannot use.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `upstreams.b2.endpoint`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Longest stale-if-error window: 30 days.
const MAX_STALE_SECONDS: u64 = 30 * 86_400;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// S3 listener address. Default: `127.0.0.1:8080`.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`). Default: `127.0.0.1:9090`.
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: SocketAddr,
    /// Base domains for virtual-hosted-style addressing: `bucket.<domain>` names a bucket.
    /// Default: `[]` (path-style only).
    #[serde(default)]
    pub virtual_host_domains: Vec<String>,
    /// Worker threads of the S3 listener. Default: `0` (one per core).
    #[serde(default)]
    pub threads: usize,
    /// Seconds to keep serving after SIGTERM before shutting down. Default: `5`.
    #[serde(default = "defaults::grace_period_seconds")]
    pub grace_period_seconds: u64,
    /// Seconds allowed for in-flight requests to finish at shutdown. Default: `5`.
    #[serde(default = "defaults::grace_period_seconds")]
    pub graceful_shutdown_timeout_seconds: u64,
    /// Limits on the S3 listener's clients. Default: see [`ClientsConfig`].
    #[serde(default)]
    pub clients: ClientsConfig,
    /// The cache. Default: see [`CacheConfig`].
    #[serde(default)]
    pub cache: CacheConfig,
    /// Named upstreams. Required: at least one.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Buckets routed to upstreams by name. Default: `[]`.
    #[serde(default)]
    pub buckets: Vec<BucketConfig>,
    /// Upstream for buckets not listed in `buckets` (same name upstream, default TTL).
    /// Default: none (unlisted buckets answer NoSuchBucket).
    #[serde(default)]
    pub default_upstream: Option<String>,
    /// Client authentication (SigV4) and authorization. Default: none (every request is
    /// accepted, unsigned).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// HTTPS on the listeners. Default: none (plain HTTP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The audit log. Default: none.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Per-job lineage. Default: none.
    #[serde(default)]
    pub lineage: Option<LineageConfig>,
    /// Cluster mode. Default: none (a node on its own).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// The chunked hybrid cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes per chunk; objects are cached as chunks of this size. Between 64 KiB and 64 MiB, a
    /// multiple of 4 KiB. Default: `8388608` (8 MiB).
    #[serde(default = "defaults::chunk_size")]
    pub chunk_size: u64,
    /// Memory tier capacity in bytes. Default: `1073741824` (1 GiB).
    #[serde(default = "defaults::memory_bytes")]
    pub memory_bytes: u64,
    /// Disk tier; `null` for a memory-only cache. Default: see [`DiskConfig`].
    #[serde(default = "defaults::disk")]
    pub disk: Option<DiskConfig>,
    /// Chunks fetched ahead of a reader at first. `0` turns read-ahead off. Default: `2`.
    #[serde(default = "defaults::read_ahead_chunks")]
    pub read_ahead_chunks: u32,
    /// The most chunks fetched ahead of one sequential reader: its window doubles up to this
    /// while it keeps reaching chunks still being fetched. Default: `16`.
    #[serde(default = "defaults::read_ahead_max_chunks")]
    pub read_ahead_max_chunks: u32,
    /// Read-ahead fetches in flight at most per upstream, over all readers. Default: `64`.
    #[serde(default = "defaults::read_ahead_per_upstream")]
    pub read_ahead_per_upstream: u32,
    /// Seconds object metadata is trusted before it is checked with the upstream again.
    /// Per-bucket `metadata_ttl_seconds` overrides it. Default: `60`.
    #[serde(default = "defaults::metadata_ttl_seconds")]
    pub metadata_ttl_seconds: u64,
    /// Seconds past its TTL that object metadata may still be served when the upstream fails
    /// to revalidate it (5xx, timeout, unreachable, breaker open); `0` turns it off. Per-bucket
    /// `stale_if_error_seconds` overrides it. Default: `0`.
    #[serde(default)]
    pub stale_if_error_seconds: u64,
}

/// The disk tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// A directory (created if missing) or a block device. `${ENV}` is expanded.
    /// Default: `./var/cache`.
    pub path: PathBuf,
    /// Bytes of the disk tier; at least 64 MiB and 4 chunks. More than the filesystem has room
    /// for is clamped to 90% of the room, with a warning. Default: `10737418240` (10 GiB).
    #[serde(default = "defaults::disk_bytes")]
    pub capacity_bytes: u64,
    /// I/O engine: `io_uring` or `psync`. Default: `io_uring` (falling back to `psync`).
    #[serde(default)]
    pub io_engine: IoEngineKind,
    /// Open the cache files with O_DIRECT, bypassing the page cache: the memory tier already
    /// holds the hot chunks, and buffered writes stall on dirty-page writeback (cold misses
    /// streamed at 0.29 GB/s buffered vs 0.52-0.75 GB/s direct in the benchmark kit). Falls back
    /// to buffered I/O, with a warning, where the filesystem refuses O_DIRECT (tmpfs).
    /// Default: `true`.
    #[serde(default = "defaults::direct")]
    pub direct: bool,
    /// Bytes of complete chunks allowed to wait for the disk. New fills wait (never drop) for
    /// room when it is full, so chunks streamed but not yet on disk never hold more memory than
    /// this; fills still streaming take none of it.
    /// Default: `67108864` (64 MiB).
    #[serde(default = "defaults::write_queue_bytes")]
    pub write_queue_bytes: u64,
    /// Encryption at rest: `aes-256-gcm` or `none`. Default: `aes-256-gcm`.
    #[serde(default)]
    pub encryption: DiskEncryption,
    /// The master key file (`<id>:<64 hex digits>` per line; the first encrypts new writes).
    /// Created with one random key (mode 0600) if missing. `${ENV}` is expanded. Default:
    /// `shardcache-disk.key` beside the config file.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// How the disk tier protects what it stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DiskEncryption {
    /// AES-256-GCM per segment, a key per write derived from the master key.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption: a CRC-32 per segment still turns damage into misses.
    #[serde(rename = "none")]
    None,
}

/// The disk tier's I/O engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoEngineKind {
    /// io_uring: one ring thread that sleeps when idle. Falls back to `psync`, logged, where
    /// io_uring cannot be set up (a container's default seccomp profile, an old kernel,
    /// `kernel.io_uring_disabled`).
    #[default]
    #[serde(rename = "io_uring")]
    Uring,
    /// `pread`/`pwrite` on tokio's blocking pool.
    Psync,
}

/// A bucket route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Bucket name clients use. Required.
    pub name: String,
    /// Name of the upstream serving it. Required.
    pub upstream: String,
    /// Bucket name at the upstream. Default: same as `name`.
    pub upstream_bucket: Option<String>,
    /// Metadata TTL for this bucket. Default: `cache.metadata_ttl_seconds`.
    pub metadata_ttl_seconds: Option<u64>,
    /// Staleness allowed when revalidation fails, for this bucket.
    /// Default: `cache.stale_if_error_seconds`.
    pub stale_if_error_seconds: Option<u64>,
    /// Objects never change once written: metadata is trusted until evicted. Default: `false`.
    #[serde(default)]
    pub immutable: bool,
    /// Where this bucket's objects may be cached: `disk` (memory and disk), `memory` (never
    /// written to local disk), or `none` (GET and HEAD pass through to the upstream uncached;
    /// S3 upstreams only). Default: `disk`.
    #[serde(default)]
    pub cache: Residency,
    /// A replica of the bucket on another upstream, which serves cached reads (GET, HEAD)
    /// while this one fails. Default: none.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
}

/// A bucket's replica on another upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The upstream holding the replica. Required.
    pub upstream: String,
    /// The replica's bucket name there. Default: the bucket's name at its own upstream.
    pub bucket: Option<String>,
}

/// Where a bucket's objects may rest on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residency {
    /// The memory tier and the disk tier.
    #[default]
    Disk,
    /// The memory tier only: nothing of the bucket is written to local disk.
    Memory,
    /// Not cached at all.
    None,
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9090))
    }
    pub fn grace_period_seconds() -> u64 {
        5
    }
    pub fn chunk_size() -> u64 {
        8 << 20
    }
    pub fn memory_bytes() -> u64 {
        1 << 30
    }
    pub fn disk() -> Option<super::DiskConfig> {
        Some(super::DiskConfig {
            path: PathBuf::from("./var/cache"),
            capacity_bytes: disk_bytes(),
            io_engine: super::IoEngineKind::Uring,
            direct: direct(),
            write_queue_bytes: write_queue_bytes(),
            encryption: super::DiskEncryption::default(),
            key_file: None,
        })
    }
    pub fn direct() -> bool {
        true
    }
    pub fn disk_bytes() -> u64 {
        10 << 30
    }
    pub fn write_queue_bytes() -> u64 {
        64 << 20
    }
    pub fn read_ahead_chunks() -> u32 {
        2
    }
    pub fn read_ahead_max_chunks() -> u32 {
        16
    }
    pub fn read_ahead_per_upstream() -> u32 {
        64
    }
    pub fn metadata_ttl_seconds() -> u64 {
        60
    }
    pub fn region() -> String {
        "us-east-1".to_owned()
    }
    pub fn connect_timeout_seconds() -> u64 {
        10
    }
    pub fn read_timeout_seconds() -> u64 {
        60
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            chunk_size: defaults::chunk_size(),
            memory_bytes: defaults::memory_bytes(),
            disk: defaults::disk(),
            read_ahead_chunks: defaults::read_ahead_chunks(),
            read_ahead_max_chunks: defaults::read_ahead_max_chunks(),
            read_ahead_per_upstream: defaults::read_ahead_per_upstream(),
            metadata_ttl_seconds: defaults::metadata_ttl_seconds(),
            stale_if_error_seconds: 0,
        }
    }
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// The `auth` section of a config file, expanded and checked on its own: a reload of the
    /// keys must not fail because another section does not validate at that instant (a
    /// certificate caught mid-rotation, say).
    pub fn load_auth(path: &Path) -> Result<Option<AuthConfig>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = serde_yaml::from_str(&text)?;
        let Some(mut auth) = config.auth else {
            return Ok(None);
        };
        auth.expand_env(&|name| std::env::var(name).ok())?;
        auth.validate()?;
        Ok(Some(auth))
    }

    /// Parses, expands (`env` looks variables up) and validates YAML text.
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config: Config = serde_yaml::from_str(text)?;
        config.expand_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(auth) = &mut self.auth {
            auth.expand_env(env)?;
        }
        if let Some(tls) = &mut self.tls {
            tls.expand_env(env)?;
        }
        if let Some(audit) = &mut self.audit {
            audit.expand_env(env)?;
        }
        if let Some(lineage) = &mut self.lineage {
            lineage.expand_env(env)?;
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.expand_env(env)?;
        }
        if let Some(disk) = &mut self.cache.disk {
            disk.path = expand_path(&disk.path, "cache.disk.path", env)?;
            if let Some(key_file) = &disk.key_file {
                disk.key_file = Some(expand_path(key_file, "cache.disk.key_file", env)?);
            }
        }
        for (name, up) in &mut self.upstreams {
            match up {
                UpstreamConfig::Fs { root } => *root = expand_path(root, &format!("upstreams.{name}.root"), env)?,
                UpstreamConfig::S3(s3) => {
                    s3.endpoint = expand(&s3.endpoint, &format!("upstreams.{name}.endpoint"), env)?;
                    if let Some(ca) = &mut s3.ca_file {
                        *ca = expand_path(ca, &format!("upstreams.{name}.ca_file"), env)?;
                    }
                    let c = &mut s3.credentials;
                    for (field, value) in [
                        ("access_key_id", &mut c.access_key_id),
                        ("secret_access_key", &mut c.secret_access_key),
                        ("session_token", &mut c.session_token),
                    ] {
                        if let Some(v) = value {
                            *v = expand(v, &format!("upstreams.{name}.credentials.{field}"), env)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks every value shardcache cannot use; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.clients.validate()?;
        let c = &self.cache;
        if !(64 << 10..=64 << 20).contains(&c.chunk_size) || !c.chunk_size.is_multiple_of(4096) {
            return Err(invalid(
                "cache.chunk_size",
                "must be a multiple of 4096 between 65536 and 67108864",
            ));
        }
        if c.read_ahead_max_chunks < c.read_ahead_chunks || c.read_ahead_max_chunks > 1024 {
            return Err(invalid(
                "cache.read_ahead_max_chunks",
                "must be at least cache.read_ahead_chunks and at most 1024",
            ));
        }
        if c.read_ahead_per_upstream == 0 {
            return Err(invalid("cache.read_ahead_per_upstream", "must be at least 1"));
        }
        if c.memory_bytes < c.chunk_size {
            return Err(invalid(
                "cache.memory_bytes",
                "must hold at least one chunk (cache.chunk_size)",
            ));
        }
        if let Some(d) = &c.disk {
            if d.capacity_bytes < 4 * c.chunk_size.max(16 << 20) {
                return Err(invalid(
                    "cache.disk.capacity_bytes",
                    "must be at least 64 MiB and 4 chunks",
                ));
            }
            if d.write_queue_bytes < 2 * c.chunk_size {
                return Err(invalid("cache.disk.write_queue_bytes", "must hold at least two chunks"));
            }
        }
        if self.upstreams.is_empty() {
            return Err(invalid("upstreams", "at least one upstream is required"));
        }
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        if let Some(audit) = &self.audit {
            audit.validate()?;
        }
        if let Some(lineage) = &self.lineage {
            lineage.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(t) = &self.tls {
            crate::tls::ServerCert::load(&t.cert_file, &t.key_file).map_err(|e| invalid("tls", e.to_string()))?;
        }
        for (name, up) in &self.upstreams {
            if let UpstreamConfig::S3(s3) = up {
                upstream::validate_s3(name, s3)?;
            }
        }
        if c.stale_if_error_seconds > MAX_STALE_SECONDS {
            return Err(invalid(
                "cache.stale_if_error_seconds",
                "must be at most 2592000 (30 days)",
            ));
        }
        let known = |u: &str| self.upstreams.contains_key(u);
        if let Some(u) = &self.default_upstream {
            if !known(u) {
                return Err(invalid("default_upstream", format!("no upstream named `{u}`")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.buckets.iter().enumerate() {
            let field = |f: &str| format!("buckets[{i}].{f}");
            if crate::types::BucketName::parse(&b.name).is_none() {
                return Err(invalid(field("name"), format!("`{}` is not a bucket name", b.name)));
            }
            if !seen.insert(&b.name) {
                return Err(invalid(field("name"), format!("bucket `{}` is listed twice", b.name)));
            }
            if !known(&b.upstream) {
                return Err(invalid(
                    field("upstream"),
                    format!("no upstream named `{}`", b.upstream),
                ));
            }
            if b.cache == Residency::None && matches!(self.upstreams.get(&b.upstream), Some(UpstreamConfig::Fs { .. }))
            {
                return Err(invalid(
                    field("cache"),
                    "`none` needs an s3 upstream (a local directory is read through the memory tier)",
                ));
            }
            if let Some(f) = &b.fallback {
                if !known(&f.upstream) {
                    return Err(invalid(
                        field("fallback.upstream"),
                        format!("no upstream named `{}`", f.upstream),
                    ));
                }
                let primary = b.upstream_bucket.as_deref().unwrap_or(&b.name);
                let replica = f.bucket.as_deref().unwrap_or(primary);
                if crate::types::BucketName::parse(replica).is_none() {
                    return Err(invalid(
                        field("fallback.bucket"),
                        format!("`{replica}` is not a bucket name"),
                    ));
                }
                if f.upstream == b.upstream && replica == primary {
                    return Err(invalid(field("fallback"), "names the bucket itself"));
                }
            }
            if b.stale_if_error_seconds.is_some_and(|s| s > MAX_STALE_SECONDS) {
                return Err(invalid(
                    field("stale_if_error_seconds"),
                    "must be at most 2592000 (30 days)",
                ));
            }
            if let Some(ub) = &b.upstream_bucket {
                if crate::types::BucketName::parse(ub).is_none() {
                    return Err(invalid(
                        field("upstream_bucket"),
                        format!("`{ub}` is not a bucket name"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Replaces each `${NAME}` with the variable's value; an unset variable is an error naming both
/// the field and the variable. `$$` is a literal `$`.
fn expand(s: &str, field: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| invalid(field, "unterminated `${` in value"))?;
            let var = &body[..end];
            let value = env(var).ok_or_else(|| invalid(field, format!("environment variable `{var}` is not set")))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_path(p: &Path, field: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    let s = p.to_str().ok_or_else(|| invalid(field, "path is not valid UTF-8"))?;
    expand(s, field, env).map(PathBuf::from)
}

#[cfg(test)]
mod tests;
