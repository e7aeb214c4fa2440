//! Cluster mode: DaemonSet peers sharing one cache, so each chunk leaves the upstream once per
//! cluster. Built in steps (issue #14); so far the placement of chunks over members, and the
//! proof that authenticates a peer request.

pub mod auth;
pub mod placement;
