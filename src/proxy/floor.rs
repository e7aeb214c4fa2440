//! A passed-through object's bytes (GetObject of an uncached bucket) held to its upstream's
//! rate floor, as the cache's chunk reads are (`upstream::Meter`): a body that drips below it
//! over the window is cut, there being no other source to resume it from. Other answers are
//! not: S3 keeps a long CopyObject or CompleteMultipartUpload alive with a space now and then.
//! A client slower than the floor slows the upstream's reads down with it (Pingora reads the
//! upstream as the client takes the bytes), so the time the client's connection held bytes
//! back is not counted against the upstream.

use std::time::Duration;

use pingora_core::protocols::Stream;

use crate::upstream::{Floor, Meter};

/// One passed-through body's rate against its upstream's floor.
pub(super) struct PassFloor {
    meter: Meter,
    /// How long the client's connection had held bytes back, when last asked.
    held: Option<Duration>,
}

impl PassFloor {
    /// A meter against `floor` for a body sent to the client on `client`.
    pub(super) fn new(floor: Floor, client: Option<&Stream>) -> Self {
        Self {
            meter: floor.meter(),
            held: crate::guard::held_back(client),
        }
    }

    /// Counts a piece of `n` bytes from the upstream; past a window below the floor, says why
    /// the upstream is too slow. The client's connection is asked only when a window is to be
    /// judged (a system call once a window, not once a piece).
    pub(super) fn count(&mut self, n: usize, client: Option<&Stream>) -> Option<String> {
        if self.meter.due() {
            let held = crate::guard::held_back(client);
            if let (Some(now), Some(before)) = (held, self.held) {
                self.meter.excuse(now.saturating_sub(before));
            }
            self.held = held;
        }
        self.meter.count(n)
    }
}
