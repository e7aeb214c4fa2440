//! shardcache: a caching read-through S3 proxy for GPU training nodes.
//!
//! A request flows one way through the crate (see ARCHITECTURE.md):
//!
//! ```text
//! proxy (Pingora phases) -> s3 (parse, route) -> cache (chunks, coalescing) -> upstream (on a miss)
//!                        -> respond (headers, streamed body, the one error mapping)
//! ```
//!
//! `types`, `s3`, `cache`, `upstream` and `metrics` are leaves that know nothing of the request
//! lifecycle; `proxy` is the one module that sees every layer; `app` is the one module that
//! reads the config.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod guard;
pub mod lineage;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod reload;
pub mod s3;
pub mod shutdown;
pub mod tls;
pub mod types;
pub mod upstream;
