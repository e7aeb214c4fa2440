//! Cluster mode: DaemonSet peers sharing one cache, so each chunk leaves the upstream once per
//! cluster. A chunk is placed on one member by rendezvous hashing ([`placement`]); a node that
//! does not own a chunk asks its owner over the peer listener ([`peers`]), with a proof under
//! the cluster secret ([`auth`]). Members come from the config, from DNS ([`discovery`]) or, with the
//! `kubernetes` feature, from a Service's EndpointSlices (`kubernetes`).
//! The owner's side is `proxy::peer`.
//!
//! It uses `types`, `metrics`, and the upstream's body and error types (a peer's answer is read
//! like an upstream's); it must not reach the cache, the proxy or the config.

pub mod auth;
pub mod discovery;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod metrics;
pub mod peers;
pub mod placement;

pub use metrics::ClusterMetrics;
pub use peers::{ChunkPlace, PeerFetch, PeerOptions, Peers, Served, UpstreamFetch};
