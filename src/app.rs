//! The composition root: the one module that reads the [`Config`] and turns it into each
//! module's own options, then assembles and runs the Pingora server. It may use every crate and
//! module; nothing uses it but `main`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::{AdminAccess, AdminApp};
use crate::audit::{Audit, AuditOptions, Sink};
use crate::cache::read::{ObjectReader, ReadAhead};
use crate::cache::{CacheError, CacheOptions, ChunkCache, DiskOptions, IoEngine, MemoryOnly};
use crate::cluster::auth::ClusterKey;
use crate::cluster::discovery::DnsDiscovery;
use crate::cluster::placement::Member;
use crate::cluster::{PeerOptions, Peers};
use crate::config::{
    AuditConfig, ClusterConfig, Config, ConfigError, DiskEncryption, IoEngineKind, LineageConfig, Residency,
    S3UpstreamConfig, UpstreamConfig, MIN_SECRET_BYTES,
};
use crate::guard::{ClientLimits, Guard};
use crate::lineage::{Lineage, LineageError, LineageOptions};
use crate::metrics::Metrics;
use crate::proxy::{
    BucketRoute, ClientTimeouts, FallbackRoute, Freshness, PeerApp, ProxyState, Records, Router, S3Proxy, SharedGate,
    Upstream,
};
use crate::reload::Reloader;
use crate::shutdown::{Drain, Readiness};
use crate::tls::{ServerCert, TlsError};
use crate::upstream::{
    BreakerPolicy, Floor, FsOrigin, HedgePolicy, Resilience, Resilient, S3Origin, S3OriginOptions, SignError, Signer,
};

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Encryption is on, but there is no config file to put a new key file beside.
    #[error(
        "cache.disk.key_file: required when the config does not come from a file (or set cache.disk.encryption: none)"
    )]
    NoKeyFile,
    /// An upstream's credentials are missing.
    #[error("upstream `{upstream}`: {source}")]
    Credentials {
        /// Upstream name.
        upstream: String,
        /// What is missing.
        source: SignError,
    },
    /// A helper thread died.
    #[error("start-up thread failed: {0}")]
    Thread(String),
    /// The `auth` section's files could not be read.
    #[error(transparent)]
    Auth(#[from] ConfigError),
    /// A listener's address cannot be bound (taken by another process, say).
    #[error("{field}: cannot listen on {addr}: {source}")]
    Bind {
        /// The config field.
        field: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("audit.file: {0}")]
    Audit(String),
    /// The lineage database could not be opened.
    #[error(transparent)]
    Lineage(#[from] LineageError),
    /// A certificate, key or CA file could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Cluster mode cannot start.
    #[error("cluster.{0}")]
    Cluster(String),
}

/// The disk tier's key file when `cache.disk.key_file` is not set: beside the config file, never
/// in the cache directory.
pub const DEFAULT_KEY_FILE: &str = "shardcache-disk.key";

/// The cache options of a config read from `source` (`None`: not from a file).
pub fn cache_options(config: &Config, source: Option<&Path>) -> Result<CacheOptions, AppError> {
    let c = &config.cache;
    let disk = match &c.disk {
        None => None,
        Some(d) => {
            let key_file = match (d.encryption, &d.key_file) {
                (DiskEncryption::None, _) => None,
                (DiskEncryption::Aes256Gcm, Some(file)) => Some(file.clone()),
                (DiskEncryption::Aes256Gcm, None) => {
                    let dir = source.map(|p| p.parent().unwrap_or(Path::new(".")));
                    Some(dir.ok_or(AppError::NoKeyFile)?.join(DEFAULT_KEY_FILE))
                }
            };
            Some(DiskOptions {
                path: d.path.clone(),
                capacity_bytes: d.capacity_bytes,
                direct: d.direct,
                write_queue_bytes: d.write_queue_bytes,
                io_engine: match d.io_engine {
                    IoEngineKind::Uring => IoEngine::Uring,
                    IoEngineKind::Psync => IoEngine::Psync,
                },
                key_file,
            })
        }
    };
    let mut memory_only = MemoryOnly::default();
    for b in config.buckets.iter().filter(|b| b.cache == Residency::Memory) {
        memory_only.insert(&b.upstream, b.upstream_bucket.as_deref().unwrap_or(&b.name));
    }
    Ok(CacheOptions {
        chunk_size: c.chunk_size,
        memory_bytes: c.memory_bytes,
        disk,
        memory_only,
    })
}

/// The upstreams and bucket routes of a config; with `peers`, chunks are fetched through the
/// cluster.
pub fn router(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    metrics: &Metrics,
    peers: Option<Arc<Peers>>,
) -> Result<Router, AppError> {
    let mut upstreams = Vec::new();
    for (name, up) in &config.upstreams {
        metrics.cache.stale_served.with_label_values(&[name]);
        metrics.upstream.fallback_reads.with_label_values(&[name]);
        upstreams.push(match up {
            UpstreamConfig::Fs { root } => Upstream::fs(name, FsOrigin::new(root.clone())),
            UpstreamConfig::S3(s3) => {
                let signer = Signer::new(&s3.region, &s3.credentials, env).map_err(|source| AppError::Credentials {
                    upstream: name.clone(),
                    source,
                })?;
                let ca = s3.ca_file.as_deref().map(crate::tls::ca_bundle).transpose()?;
                let origin = Arc::new(S3Origin::new(S3OriginOptions {
                    ca,
                    endpoint: s3.endpoint.parse().expect("validated with the config"),
                    addressing: s3.addressing,
                    signer,
                    connect_timeout: Duration::from_secs(s3.connect_timeout_seconds),
                    read_timeout: Duration::from_secs(s3.read_timeout_seconds),
                }));
                let resilience = resilience(s3);
                let floor = resilience.floor;
                let cached = Resilient::new(name, origin.clone(), resilience, &metrics.upstream);
                Upstream::s3(name, origin, Arc::new(cached), floor)
            }
        });
    }
    let ttl = Duration::from_secs(config.cache.metadata_ttl_seconds);
    let stale = Duration::from_secs(config.cache.stale_if_error_seconds);
    let routes = config
        .buckets
        .iter()
        .map(|b| BucketRoute {
            name: b.name.clone(),
            upstream: b.upstream.clone(),
            upstream_bucket: b.upstream_bucket.clone().unwrap_or_else(|| b.name.clone()),
            fresh: Freshness {
                ttl: (!b.immutable).then(|| b.metadata_ttl_seconds.map_or(ttl, Duration::from_secs)),
                stale_if_error: b.stale_if_error_seconds.map_or(stale, Duration::from_secs),
            },
            residency: b.cache,
            fallback: b.fallback.as_ref().map(|f| FallbackRoute {
                upstream: f.upstream.clone(),
                bucket: f
                    .bucket
                    .clone()
                    .unwrap_or_else(|| b.upstream_bucket.clone().unwrap_or_else(|| b.name.clone())),
                served: metrics.upstream.fallback_reads.with_label_values(&[&f.upstream]),
            }),
        })
        .collect();
    Ok(Router::new(
        upstreams,
        routes,
        config.default_upstream.as_deref().map(|u| {
            let fresh = Freshness {
                ttl: Some(ttl),
                stale_if_error: stale,
            };
            (u, fresh)
        }),
        peers,
    ))
}

/// The cluster secret of a `cluster` section (trailing whitespace, a newline say, is not part
/// of it).
fn cluster_key(c: &ClusterConfig) -> Result<ClusterKey, AppError> {
    let secret = std::fs::read(&c.secret_file).map_err(|e| AppError::Cluster(format!("secret_file: {e}")))?;
    let secret = secret.trim_ascii_end();
    if secret.len() < MIN_SECRET_BYTES {
        let why = format!("secret_file: the secret must be at least {MIN_SECRET_BYTES} bytes");
        return Err(AppError::Cluster(why));
    }
    Ok(ClusterKey::new(secret))
}

/// This node, as a `cluster` section names it.
fn me(c: &ClusterConfig) -> Member {
    Member {
        id: c.node.clone(),
        zone: c.zone.clone(),
    }
}

/// The members a `cluster` section lists.
fn static_members(c: &ClusterConfig) -> Vec<(Member, std::net::SocketAddr)> {
    let member = |p: &crate::config::PeerConfig| Member {
        id: p.id.clone(),
        zone: p.zone.clone(),
    };
    c.peers.iter().map(|p| (member(p), p.address)).collect()
}

/// The asking side of a `cluster` section, with its static members.
fn peers(c: &ClusterConfig, metrics: &Arc<Metrics>) -> Result<Peers, AppError> {
    let peers = Peers::new(
        PeerOptions {
            me: me(c),
            key: cluster_key(c)?,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            read_timeout: Duration::from_millis(c.read_timeout_ms),
            breaker: BreakerPolicy {
                failures: c.breaker.failures,
                error_rate: c.breaker.error_rate,
                open_for: Duration::from_secs(c.breaker.open_seconds),
            },
            floor: (c.floor_bytes_per_second > 0).then(|| Floor {
                bytes_per_second: c.floor_bytes_per_second,
                window: Duration::from_secs(c.floor_window_seconds),
            }),
        },
        metrics.cluster.clone(),
    );
    peers.set_members(static_members(c));
    Ok(peers)
}

/// The retries, breaker and hedging of an S3 upstream's config.
fn resilience(s3: &S3UpstreamConfig) -> Resilience {
    Resilience {
        attempts: s3.retry.attempts,
        base_delay: Duration::from_millis(s3.retry.base_delay_ms),
        max_delay: Duration::from_millis(s3.retry.max_delay_ms),
        deadline: Duration::from_secs(s3.retry.deadline_seconds),
        floor: (s3.retry.floor_bytes_per_second > 0).then(|| Floor {
            bytes_per_second: s3.retry.floor_bytes_per_second,
            window: Duration::from_secs(s3.retry.floor_window_seconds),
        }),
        breaker: BreakerPolicy {
            failures: s3.breaker.failures,
            error_rate: s3.breaker.error_rate,
            open_for: Duration::from_secs(s3.breaker.open_seconds),
        },
        hedge: s3.hedge.as_ref().map(|h| HedgePolicy {
            after: Duration::from_millis(h.after_ms),
            quantile: h.quantile,
            max_share: h.max_share,
        }),
    }
}

/// The audit log of an `audit` section, started.
fn audit(a: &AuditConfig, metrics: &Metrics) -> Result<Audit, AppError> {
    let sink = match &a.file {
        None => Sink::Stdout,
        Some(path) => Sink::File {
            path: path.clone(),
            max_bytes: a.max_file_bytes,
            keep: a.max_files,
        },
    };
    let opts = AuditOptions {
        level: a.requests,
        sink,
        queue: a.queue_records,
    };
    Audit::start(opts, metrics.audit_dropped.clone()).map_err(|e| AppError::Audit(e.to_string()))
}

/// The lineage database of a `lineage` section, opened.
fn lineage(l: &LineageConfig, metrics: &Metrics) -> Result<Lineage, AppError> {
    let opts = LineageOptions {
        path: l.path.clone(),
        retention: Duration::from_secs(l.retention_days * 86_400),
        max_bytes: l.max_bytes,
        queue: l.queue_records,
    };
    Ok(Lineage::open(opts, metrics.lineage_dropped.clone())?)
}

/// Runs `fut` to completion on a fresh thread with its own runtime, so callers may be inside
/// or outside a runtime.
fn on_helper_thread<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, AppError> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
    })
    .join()
    .map_err(|_| AppError::Thread("panicked".into()))?
    .map_err(|e| AppError::Thread(e.to_string()))
}

/// Builds everything from `config`, serves until `run_args`' shutdown signal, then flushes
/// and closes the cache. With the path `config` was read from, its `auth` section is reloaded
/// on SIGHUP and when its files change ([`crate::reload`]).
///
/// `run_args` replaces the default stop ([`crate::shutdown::Drain`]: on SIGTERM, not ready for
/// `grace_period_seconds` while still serving, then a drain of the requests in flight).
pub fn run(config: Config, source: Option<PathBuf>, run_args: Option<RunArgs>) -> Result<(), AppError> {
    // SIGHUP's default action stops the process: it is ignored from here until the reloader, or
    // the task that logs it, listens (opening a large disk tier can take seconds).
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of ours.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    // Pingora retries a bind that finds the address in use for 30 s, then gives up on that
    // listener alone while the process keeps running: check both before starting anything.
    let cluster_listen = config.cluster.as_ref().map(|c| ("cluster.listen", c.listen));
    let listeners = [("listen", config.listen), ("admin_listen", config.admin_listen)];
    for (field, addr) in listeners.into_iter().chain(cluster_listen) {
        std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind { field, addr, source })?;
    }
    let metrics = Arc::new(Metrics::new());
    let peers = config
        .cluster
        .as_ref()
        .map(|c| peers(c, &metrics))
        .transpose()?
        .map(Arc::new);
    let (gate, auth_files) = match config.auth.as_ref().map(crate::reload::gate).transpose()? {
        Some((gate, files)) => (Some(Arc::new(SharedGate::new(gate))), files),
        None => (None, Vec::new()),
    };
    let router = router(&config, &|name| std::env::var(name).ok(), &metrics, peers.clone())?;
    let opts = cache_options(&config, source.as_deref())?;
    let cache = on_helper_thread({
        let (cache_metrics, foyer_registry) = (metrics.cache.clone(), metrics.registry().prometheus().clone());
        async move { ChunkCache::open(opts, cache_metrics, foyer_registry).await }
    })??;
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        chunk_size = config.cache.chunk_size,
        memory_bytes = config.cache.memory_bytes,
        disk = ?config.cache.disk.as_ref().map(|d| &d.path),
        "shardcache starting"
    );
    // Chunks from their cluster owners go to this node's disk only if the cluster says so.
    let owned_on_disk = config
        .cluster
        .as_ref()
        .is_some_and(|c| c.peer_chunks == Residency::Disk);
    let reader = ObjectReader::new(
        cache.clone(),
        metrics.upstream.clone(),
        ReadAhead {
            chunks: config.cache.read_ahead_chunks,
            max_chunks: config.cache.read_ahead_max_chunks,
            per_upstream: config.cache.read_ahead_per_upstream,
        },
        owned_on_disk,
    );
    let state = Arc::new(ProxyState::new(
        router,
        reader,
        metrics.clone(),
        config.virtual_host_domains.clone(),
        gate.clone(),
        Records {
            audit: config.audit.as_ref().map(|a| audit(a, &metrics)).transpose()?,
            lineage: config.lineage.as_ref().map(|l| lineage(l, &metrics)).transpose()?,
        },
    ));

    let conf = ServerConf {
        threads: if config.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.threads
        },
        // Pingora's grace period runs after it stops accepting, with the runtimes still up: that
        // is our drain of the requests in flight. Its own timeout then only bounds runtime
        // teardown. Our grace period (still accepting, not ready) runs before, in `Drain`.
        grace_period_seconds: Some(config.graceful_shutdown_timeout_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let limits = ClientLimits {
        max_connections: config.clients.max_connections,
        header_timeout: Duration::from_secs(config.clients.header_timeout_seconds),
    };
    let timeouts = ClientTimeouts {
        idle_seconds: config.clients.idle_timeout_seconds,
        body: Duration::from_secs(config.clients.body_timeout_seconds),
        send: Duration::from_secs(config.clients.send_timeout_seconds),
    };
    let s3_app = pingora_proxy::http_proxy(&server.configuration, S3Proxy::new(state.clone(), timeouts));
    let mut proxy = Service::new("shardcache-s3".to_owned(), Guard::new(s3_app, limits, &metrics));
    let cert = match &config.tls {
        Some(t) => Some(Arc::new(ServerCert::load(&t.cert_file, &t.key_file)?)),
        None => None,
    };
    // Pingora gives each connection a 64 KiB read buffer by default: 125 MiB for 2,000 idle
    // clients. It reads a request's header into a buffer of its own, and a body in pieces far
    // larger than a small read buffer, which such reads pass by: none is needed.
    let buffers = L4BufferSettings::default().read(0);
    let listener = ListenerConfig::tcp(config.listen.to_string()).l4_buffer(buffers);
    proxy.add_listener(match &cert {
        Some(cert) => listener.tls(cert.settings()),
        None => listener,
    });
    let warm_access = match (&config.auth, &gate) {
        (Some(auth), Some(gate)) => AdminAccess::Checked {
            token: auth.admin_token_file.clone(),
            gate: gate.clone(),
        },
        _ => AdminAccess::Open,
    };
    let readiness = Readiness::new();
    let admin_app = AdminApp::new(state.clone(), warm_access, readiness.clone());
    let mut admin = Service::new("shardcache-admin".to_owned(), admin_app);
    match cert.as_ref().filter(|_| config.tls.as_ref().is_some_and(|t| t.admin)) {
        Some(cert) => admin.add_tls_with_settings(&config.admin_listen.to_string(), None, cert.settings()),
        None => admin.add_tcp(&config.admin_listen.to_string()),
    }
    server.add_service(proxy);
    server.add_service(admin);
    if let Some(c) = &config.cluster {
        let skew = Duration::from_secs(c.max_skew_seconds);
        let app = PeerApp::new(state.clone(), me(c), cluster_key(c)?, skew);
        let mut peer = Service::new("shardcache-peer".to_owned(), app);
        peer.add_tcp(&c.listen.to_string());
        server.add_service(peer);
        if let (Some(dns), Some(peers)) = (&c.dns, &peers) {
            let port = dns.port.unwrap_or(c.listen.port());
            let every = Duration::from_secs(dns.refresh_seconds);
            let discovery = Arc::new(DnsDiscovery::new(
                peers.clone(),
                dns.name.clone(),
                port,
                every,
                static_members(c),
            ));
            let task = Task(move |stop| {
                let discovery = discovery.clone();
                async move { discovery.run(stop).await }
            });
            server.add_service(background_service("shardcache-cluster-dns", task));
        }
        #[cfg(feature = "kubernetes")]
        if let (Some(k), Some(peers)) = (&c.kubernetes, &peers) {
            use crate::cluster::kubernetes::KubeDiscovery;
            let (service, namespace) = (k.service.clone(), k.namespace.clone());
            let discovery = KubeDiscovery::new(peers.clone(), service, namespace, k.port.clone(), static_members(c));
            let discovery = Arc::new(discovery);
            let task = Task(move |stop| {
                let discovery = discovery.clone();
                async move { discovery.run(stop).await }
            });
            server.add_service(background_service("shardcache-cluster-kubernetes", task));
        }
    }
    match (source, gate.is_some() || cert.is_some()) {
        (Some(source), true) => {
            let reload = Reloader::new(source, gate.map(|g| (g, auth_files)), cert, metrics.clone());
            server.add_service(background_service("shardcache-reload", reload));
        }
        (source, _) => {
            let why = match source {
                None => "the config was not read from a file",
                Some(_) => "the config has no auth or tls section (adding one needs a restart)",
            };
            let task = Task(move |stop| crate::reload::log_hangups(why, stop));
            server.add_service(background_service("shardcache-hangups", task));
        }
    }
    server.add_service(background_service("shardcache-heap", Task(trim_heap)));
    let grace = Duration::from_secs(config.grace_period_seconds);
    server.run(run_args.unwrap_or_else(|| RunArgs {
        shutdown_signal: Box::new(Drain::new(grace, readiness)),
    }));
    if let Some(audit) = &state.records.audit {
        audit.flush(Duration::from_secs(5));
    }
    if let Some(lineage) = &state.records.lineage {
        lineage.flush(Duration::from_secs(5));
    }

    on_helper_thread(async move { cache.close().await })?;
    tracing::info!("shardcache stopped");
    Ok(())
}

/// How often the heap is checked for free memory to give back.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Free heap bytes past which they are given back.
const TRIM_PAST: usize = 32 << 20;

/// Gives the heap's free pages back to the kernel when it holds more than [`TRIM_PAST`] free:
/// glibc keeps what a burst frees (2,000 connections left 110 MiB behind, for good) and returns
/// it only when asked. Checked every [`TRIM_EVERY`].
async fn trim_heap(mut stop: ShutdownWatch) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stop.changed() => return,
        }
        #[cfg(target_env = "gnu")]
        {
            // SAFETY: mallinfo2 reads the allocator's counters; malloc_trim releases only free
            // pages of its own arenas.
            if unsafe { libc::mallinfo2() }.fordblks > TRIM_PAST {
                unsafe { libc::malloc_trim(0) };
            }
        }
    }
}

/// A background task of a lower layer, which runs until its shutdown signal changes, as one of
/// Pingora's background services (the crates below the server know nothing of Pingora's).
struct Task<F>(F);

#[async_trait::async_trait]
impl<F, T> BackgroundService for Task<F>
where
    F: Fn(ShutdownWatch) -> T + Send + Sync,
    T: std::future::Future<Output = ()> + Send,
{
    async fn start(&self, shutdown: ShutdownWatch) {
        (self.0)(shutdown).await
    }
}
