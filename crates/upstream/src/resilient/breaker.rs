//! The circuit breaker of one upstream. It opens after `failures` failed calls in a row, or when
//! `error_rate` of the last calls failed; while open, calls fail fast; after `open_for` one probe
//! call is let through, and its outcome closes the breaker or opens it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use prometheus::{IntCounter, IntGauge};

use super::super::OriginError;

/// Calls whose outcomes the error rate is taken over.
const RATE_WINDOW: usize = 50;
/// Calls in the window before the error rate counts.
const RATE_MIN_CALLS: usize = 20;

/// When the breaker opens (from the upstream's `breaker` config).
#[derive(Clone, Copy, Debug)]
pub struct BreakerPolicy {
    /// Failed calls in a row that open it; `0`: no breaker.
    pub failures: u32,
    /// Share of the last 50 calls failed (once 20 are known) that opens it; `None`: no rate.
    pub error_rate: Option<f64>,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Calls pass; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One probe call is out; others fail fast until it settles.
    Probing,
}

struct Inner {
    state: State,
    /// Outcomes of the last calls while closed, `true` for a failure.
    recent: VecDeque<bool>,
}

/// A circuit breaker (of an upstream, or of a cluster peer).
pub struct Breaker {
    /// What it guards, for the log: `upstream b2`, `peer node-a`.
    subject: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
    /// 0 closed, 1 probing, 2 open.
    gauge: IntGauge,
    rejected: IntCounter,
}

impl Breaker {
    /// A closed breaker guarding `subject`, its state in `gauge`, its fast failures counted in
    /// `rejected`.
    pub fn new(subject: String, policy: BreakerPolicy, gauge: IntGauge, rejected: IntCounter) -> Self {
        gauge.set(0);
        Self {
            subject,
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                recent: VecDeque::with_capacity(RATE_WINDOW),
            }),
            gauge,
            rejected,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn set(&self, inner: &mut Inner, to: State) {
        if matches!(to, State::Open { .. }) && !matches!(inner.state, State::Open { .. }) {
            tracing::warn!(subject = %self.subject, open_for = ?self.policy.open_for, "circuit breaker open");
        }
        if !matches!(to, State::Closed { .. }) {
            inner.recent.clear();
        }
        inner.state = to;
        self.gauge.set(match to {
            State::Closed { .. } => 0,
            State::Probing => 1,
            State::Open { .. } => 2,
        });
    }

    /// Lets a call through, or refuses it (naming upstream `name`) while the breaker is open.
    pub fn admit(&self, name: &str) -> Result<Ticket<'_>, OriginError> {
        if self.policy.failures == 0 && self.policy.error_rate.is_none() {
            return Ok(Ticket {
                breaker: None,
                probe: false,
            });
        }
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                self.set(&mut inner, State::Probing);
                true
            }
            State::Open { .. } | State::Probing => {
                self.rejected.inc();
                return Err(OriginError::Unavailable(name.to_owned()));
            }
        };
        Ok(Ticket {
            breaker: Some(self),
            probe,
        })
    }

    /// Reports a failure found after the call's ticket was settled (a body that broke off).
    pub fn record_failure(&self) {
        Ticket {
            breaker: Some(self),
            probe: false,
        }
        .settle(false);
    }

    /// Whether a failure now, with `failures` in a row before it, opens the breaker.
    fn trips(&self, inner: &Inner, failures: u32) -> bool {
        let in_a_row = self.policy.failures > 0 && failures + 1 >= self.policy.failures;
        let rate = self.policy.error_rate.is_some_and(|rate| {
            let failed = inner.recent.iter().filter(|f| **f).count();
            inner.recent.len() >= RATE_MIN_CALLS && failed as f64 >= rate * inner.recent.len() as f64
        });
        in_a_row || rate
    }
}

/// A call let through the breaker; its outcome is reported with [`Ticket::settle`]. A probe
/// dropped unsettled (its caller gave up) leaves the breaker ready for the next probe.
pub struct Ticket<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl Ticket<'_> {
    /// Reports the call's outcome.
    pub fn settle(mut self, ok: bool) {
        let Some(breaker) = self.breaker.take() else {
            return;
        };
        let mut inner = breaker.lock();
        let open = State::Open {
            until: Instant::now() + breaker.policy.open_for,
        };
        if let State::Closed { .. } = inner.state {
            if inner.recent.len() == RATE_WINDOW {
                inner.recent.pop_front();
            }
            inner.recent.push_back(!ok);
        }
        let next = match (inner.state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if breaker.trips(&inner, failures) => open,
            (State::Closed { failures }, false) => State::Closed { failures: failures + 1 },
            // A probe failed; or the breaker opened while this call was out: it stays open.
            (_, false) if self.probe => open,
            (other, false) => other,
        };
        if next != inner.state {
            breaker.set(&mut inner, next);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.filter(|_| self.probe) {
            let mut inner = breaker.lock();
            if inner.state == State::Probing {
                breaker.set(&mut inner, State::Open { until: Instant::now() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, error_rate: Option<f64>) -> Breaker {
        let policy = BreakerPolicy {
            failures,
            error_rate,
            open_for: Duration::from_secs(60),
        };
        Breaker::new(
            "upstream u".into(),
            policy,
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("r", "r").unwrap(),
        )
    }

    #[test]
    fn an_error_rate_opens_it_where_failures_never_come_in_a_row() {
        let b = breaker(5, Some(0.5));
        for i in 0..RATE_MIN_CALLS {
            b.admit("u").unwrap().settle(i % 2 == 0);
        }
        assert!(b.admit("u").is_err(), "half of 20 calls failed: open");
        let without_rate = breaker(5, None);
        for i in 0..100 {
            without_rate.admit("u").unwrap().settle(i % 2 == 0);
        }
        assert!(without_rate.admit("u").is_ok(), "never 5 in a row: closed");
    }

    #[test]
    fn a_low_error_rate_leaves_it_closed() {
        let b = breaker(0, Some(0.5));
        for i in 0..200 {
            b.admit("u").unwrap().settle(i % 3 != 0);
        }
        assert!(b.admit("u").is_ok(), "a third of calls failing stays under a half");
    }
}
