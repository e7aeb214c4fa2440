//! Telling sequential readers from random ones, so read-ahead only fetches bytes a reader is
//! likely to ask for next.

use std::collections::HashMap;
use std::ops::Range;

use parking_lot::Mutex;

use shardcache_types::ObjectRef;

/// Objects tracked at once; past this the table starts over (a bounded, cheap forget).
const MAX_TRACKED: usize = 4096;

/// Where the last read of each recently read object ended.
#[derive(Default)]
pub(super) struct SequentialReads {
    last_end: Mutex<HashMap<ObjectRef, u64>>,
}

impl SequentialReads {
    /// Records a read of `span` and says whether it continues a sequential pass: it starts at
    /// the beginning of the object, or within `slack` bytes of where the previous read ended.
    pub(super) fn observe(&self, object: &ObjectRef, span: &Range<u64>, slack: u64) -> bool {
        let mut map = self.last_end.lock();
        let sequential = span.start == 0 || map.get(object).is_some_and(|&end| span.start.abs_diff(end) <= slack);
        if map.len() >= MAX_TRACKED && !map.contains_key(object) {
            map.clear();
        }
        map.insert(object.clone(), span.end);
        sequential
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ranges_are_sequential_and_jumps_are_not() {
        let s = SequentialReads::default();
        let o = ObjectRef {
            upstream: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
        };
        assert!(s.observe(&o, &(0..100), 10));
        assert!(s.observe(&o, &(100..200), 10));
        assert!(!s.observe(&o, &(5000..5100), 10));
        assert!(s.observe(&o, &(5105..5200), 10));
    }
}
