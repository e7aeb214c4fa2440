//! How shardcache stops. On SIGTERM it first goes not-ready (`/readyz` answers 503) and keeps
//! accepting for `grace_period_seconds`, so that load balancers and Kubernetes endpoints stop
//! sending it new clients; then it stops accepting and gives the requests in flight up to
//! `graceful_shutdown_timeout_seconds` to finish. SIGINT (or a second SIGTERM) stops at once.
//!
//! Pingora, left to itself, stops accepting as soon as SIGTERM arrives; this watch hands it the
//! signal only once the grace period is over.
//!
//! It owns readiness and the stop sequence; it uses Pingora's shutdown signal and must not reach
//! any other module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// Whether the process is still taking new clients: `/readyz` reads it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicBool::new(true)))
    }

    /// Whether `/readyz` says ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn draining(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The signal watch that keeps serving through the grace period.
pub struct Drain {
    grace: Duration,
    readiness: Arc<Readiness>,
}

impl Drain {
    /// Serves `grace` more after SIGTERM, not ready, before the listeners close.
    pub fn new(grace: Duration, readiness: Arc<Readiness>) -> Self {
        Self { grace, readiness }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot listen for SIGTERM and SIGINT; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        self.readiness.draining();
        tracing::info!(
            seconds = self.grace.as_secs(),
            "SIGTERM: not ready, still serving for the grace period"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => ShutdownSignal::GracefulTerminate,
            _ = term.recv() => ShutdownSignal::FastShutdown,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
