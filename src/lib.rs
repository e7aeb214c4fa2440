//! shardcache: a caching read-through S3 proxy for GPU training nodes.
//!
//! This crate is the server: the S3, admin and peer listeners on Pingora (`proxy`, `admin`,
//! `guard`, `tls`), the config and the composition root (`config`, `app`, `reload`,
//! `shutdown`), what it records (`audit`, `lineage`) and the operator commands (`ops`). The
//! layers below are crates of their own, re-exported here under their module names (see
//! ARCHITECTURE.md for the graph):
//!
//! ```text
//! server (this crate) -> cache -> cluster -> upstream -> s3 -> types
//!                           └──-> store -> metrics
//! ```

pub mod admin;
pub mod app;
pub mod audit;
pub mod config;
pub mod guard;
pub mod lineage;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod reload;
pub mod shutdown;
pub mod tls;

pub use shardcache_cache as cache;
pub use shardcache_cluster as cluster;
pub use shardcache_s3 as s3;
pub use shardcache_s3::auth;
pub use shardcache_types as types;
pub use shardcache_upstream as upstream;
