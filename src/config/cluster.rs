//! The `cluster` section: nodes that share one cache, each chunk owned by one of them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{expand, expand_path, invalid, BreakerConfig, ConfigError, Residency};

/// Shortest cluster secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Cluster mode: chunks are placed over the members (rendezvous hashing), and a node that does
/// not own a chunk asks its owner over the peer listener before the upstream. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, stable across restarts: in Kubernetes, the node name from the downward
    /// API (`${NODE_NAME}`, expanded). Required.
    pub node: String,
    /// This node's zone (`${ZONE}` expanded); chunks are placed over the members of the same
    /// zone only. Default: none (all members).
    #[serde(default)]
    pub zone: Option<String>,
    /// The peer listener, for other members only (never clients). Required.
    pub listen: SocketAddr,
    /// A file holding the cluster secret, at least 32 bytes, shared by every member: peer
    /// requests carry an HMAC-SHA256 under it (`${ENV}` expanded). Required.
    pub secret_file: PathBuf,
    /// The members, this node included or not: a static list. Default: `[]` (this node alone).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Members found by DNS, besides `peers`. Default: none.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Members from a Kubernetes Service's EndpointSlices, besides `peers` (needs a build with
    /// the `kubernetes` feature, as the container image is). Default: none.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// Where a node keeps the chunks it got from their owner: `memory` (the memory tier only;
    /// the owner keeps them on disk) or `disk`. Default: `memory`.
    #[serde(default = "peer_chunks")]
    pub peer_chunks: Residency,
    /// Milliseconds to connect to a peer. Default: `500`.
    #[serde(default = "connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a peer's answer or the next bytes of its body, in milliseconds; an owner
    /// filling from a slow upstream must answer within it. Default: `10000`.
    #[serde(default = "read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// The least an owner's body must deliver, in bytes per second over `floor_window_seconds`:
    /// below it (every read arriving within `read_timeout_ms`), the rest of the chunk comes from
    /// the upstream, from the byte reached; `0` turns it off. Default: `65536` (64 KiB/s, as
    /// upstreams').
    #[serde(default = "floor_bytes_per_second")]
    pub floor_bytes_per_second: u64,
    /// Seconds over which an owner's rate is measured against the floor. Default: `10`.
    #[serde(default = "floor_window_seconds")]
    pub floor_window_seconds: u64,
    /// Seconds a peer request's time may differ from the receiver's clock. Default: `60`.
    #[serde(default = "max_skew_seconds")]
    pub max_skew_seconds: u64,
    /// The breaker that ejects a failing peer (per peer); its chunks go to the second choice.
    /// Default: see [`BreakerConfig`].
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// A member of a static list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id. Required.
    pub id: String,
    /// Its peer listener. Required.
    pub address: SocketAddr,
    /// Its zone. Default: none.
    #[serde(default)]
    pub zone: Option<String>,
}

/// Members from a DNS name's records (a Kubernetes headless Service): resolved every
/// `refresh_seconds`; each address is asked which node it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The name (`${ENV}` expanded). Required.
    pub name: String,
    /// The members' peer port. Default: the port of `cluster.listen`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Seconds between lookups. Default: `10`.
    #[serde(default = "refresh_seconds")]
    pub refresh_seconds: u64,
}

/// Members from the EndpointSlices of a Service: its ready, non-terminating endpoints, with
/// their node name as id and their zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The Service (`${ENV}` expanded). Required.
    pub service: String,
    /// Its namespace (`${ENV}` expanded). Default: the API client's (in a pod, the pod's own).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The name of the members' peer port in the slices. Default: `peer`.
    #[serde(default = "port_name")]
    pub port: String,
}

fn port_name() -> String {
    "peer".to_owned()
}

fn refresh_seconds() -> u64 {
    10
}

fn peer_chunks() -> Residency {
    Residency::Memory
}

fn connect_timeout_ms() -> u64 {
    500
}

fn read_timeout_ms() -> u64 {
    10_000
}

fn floor_bytes_per_second() -> u64 {
    64 << 10
}

fn floor_window_seconds() -> u64 {
    10
}

fn max_skew_seconds() -> u64 {
    60
}

impl ClusterConfig {
    /// Expands `${ENV}` in the node id, zone and secret path.
    pub(super) fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.node = expand(&self.node, "cluster.node", env)?;
        if let Some(zone) = &self.zone {
            self.zone = Some(expand(zone, "cluster.zone", env)?).filter(|z| !z.is_empty());
        }
        self.secret_file = expand_path(&self.secret_file, "cluster.secret_file", env)?;
        if let Some(dns) = &mut self.dns {
            dns.name = expand(&dns.name, "cluster.dns.name", env)?;
        }
        if let Some(k) = &mut self.kubernetes {
            k.service = expand(&k.service, "cluster.kubernetes.service", env)?;
            if let Some(ns) = &k.namespace {
                k.namespace = Some(expand(ns, "cluster.kubernetes.namespace", env)?).filter(|n| !n.is_empty());
            }
        }
        Ok(())
    }

    /// Checks the values; the error names the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = |id: &str| {
            !id.is_empty() && id.len() <= 253 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if !id_ok(&self.node) {
            return Err(invalid(
                "cluster.node",
                "must be 1 to 253 characters of letters, digits, '-', '.' and '_'",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if !id_ok(&p.id) {
                return Err(invalid(
                    format!("cluster.peers[{i}].id"),
                    "must be 1 to 253 characters of letters, digits, '-', '.' and '_'",
                ));
            }
            if !seen.insert(&p.id) {
                return Err(invalid(
                    format!("cluster.peers[{i}].id"),
                    format!("`{}` is listed twice", p.id),
                ));
            }
        }
        if let Some(dns) = &self.dns {
            if dns.name.is_empty() {
                return Err(invalid("cluster.dns.name", "must not be empty"));
            }
            if !(1..=3600).contains(&dns.refresh_seconds) {
                return Err(invalid("cluster.dns.refresh_seconds", "must be between 1 and 3600"));
            }
        }
        if let Some(k) = &self.kubernetes {
            if !cfg!(feature = "kubernetes") {
                return Err(invalid(
                    "cluster.kubernetes",
                    "this build has no Kubernetes support (cargo feature `kubernetes`; the container image has it); use cluster.dns or cluster.peers",
                ));
            }
            if k.service.is_empty() || k.port.is_empty() {
                return Err(invalid("cluster.kubernetes", "service and port must not be empty"));
            }
        }
        if self.peer_chunks == Residency::None {
            return Err(invalid("cluster.peer_chunks", "must be `memory` or `disk`"));
        }
        for (field, value) in [
            ("cluster.connect_timeout_ms", self.connect_timeout_ms),
            ("cluster.read_timeout_ms", self.read_timeout_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return Err(invalid(field, "must be between 1 and 600000"));
            }
        }
        for (field, value) in [
            ("cluster.max_skew_seconds", self.max_skew_seconds),
            ("cluster.floor_window_seconds", self.floor_window_seconds),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(field, "must be between 1 and 3600"));
            }
        }
        // The secret file is read at start-up (a Secret mounted later than the config is fine).
        self.breaker.validate("cluster.breaker")
    }
}
