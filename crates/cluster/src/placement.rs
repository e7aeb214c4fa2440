//! Which node owns a chunk: rendezvous (highest random weight) hashing of the chunk's place
//! (upstream, bucket, key, chunk index) over the members of the local node's zone.
//!
//! Every node computes the same owner from the same member list, with no coordination. A member
//! joining or leaving moves only the chunks it wins or held (about 1/N of them), and the second
//! choice is the fallback when the owner fails. The ETag is left out of the place on purpose:
//! the owner is known before the object's metadata is, and a new version of an object stays on
//! the node that held the old one.

use std::hash::Hasher;

use shardcache_types::SplitMix64;

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable identity: the Kubernetes node name, so a restarted pod keeps owning what is on
    /// its hostPath disk.
    pub id: String,
    /// Its zone (`topology.kubernetes.io/zone`), if known.
    pub zone: Option<String>,
}

/// Where a chunk belongs, before its version is known.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// Upstream name.
    pub upstream: &'a str,
    /// Bucket name at the upstream.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// Chunk index.
    pub chunk: u64,
}

impl Place<'_> {
    /// A 64-bit digest of the place; fields are length-prefixed so no two places collide by
    /// concatenation.
    fn digest(&self) -> u64 {
        let mut h = Fnv1a::default();
        for part in [self.upstream, self.bucket, self.key] {
            h.write_u64(part.len() as u64);
            h.write(part.as_bytes());
        }
        h.write_u64(self.chunk);
        h.finish()
    }
}

/// The members a node places chunks over: those of its own zone (crossing zones is billed per
/// byte), or all of them when its zone is unknown.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Candidates with the digest of their id, computed once.
    candidates: Vec<(u64, Member)>,
}

impl Placement {
    /// The placement of node `me` over `members` (which should include `me`).
    pub fn new(me: &Member, members: &[Member]) -> Self {
        let local = |m: &&Member| me.zone.is_none() || m.zone == me.zone;
        let candidates = members
            .iter()
            .filter(local)
            .map(|m| {
                let mut h = Fnv1a::default();
                h.write(m.id.as_bytes());
                (h.finish(), m.clone())
            })
            .collect();
        Self { candidates }
    }

    /// How many members chunks are placed over.
    pub fn members(&self) -> usize {
        self.candidates.len()
    }

    /// The owner of `place` and the second choice, by highest weight; `None` where there are
    /// too few members.
    pub fn owners(&self, place: &Place<'_>) -> (Option<&Member>, Option<&Member>) {
        let digest = place.digest();
        let mut best: Option<(u64, &Member)> = None;
        let mut second: Option<(u64, &Member)> = None;
        for (id_digest, member) in &self.candidates {
            let weight = mix(digest ^ id_digest);
            if best.is_none_or(|(w, _)| weight > w) {
                second = best;
                best = Some((weight, member));
            } else if second.is_none_or(|(w, _)| weight > w) {
                second = Some((weight, member));
            }
        }
        (best.map(|(_, m)| m), second.map(|(_, m)| m))
    }
}

/// A finaliser with full avalanche (splitmix64's), so that nearby inputs get unrelated weights.
fn mix(z: u64) -> u64 {
    SplitMix64(z).next_u64()
}

/// FNV-1a: stable across processes, versions and machines (std's hashers promise none of that).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01B3);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn members(n: usize, zone: Option<&str>) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("node-{i}"),
                zone: zone.map(str::to_owned),
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("datasets/shard-{:05}.tar", i / 8)).collect()
    }

    /// The owner of each of `keys` (chunk = position mod 8) under `placement`.
    fn owners(placement: &Placement, keys: &[String]) -> Vec<String> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                let place = Place {
                    upstream: "s3",
                    bucket: "b",
                    key,
                    chunk: (i % 8) as u64,
                };
                placement.owners(&place).0.unwrap().id.clone()
            })
            .collect()
    }

    #[test]
    fn chunks_spread_evenly_and_a_second_choice_differs_from_the_first() {
        let all = members(16, None);
        let placement = Placement::new(&all[0], &all);
        let keys = keys(64_000);
        let mut load: HashMap<String, usize> = HashMap::new();
        for owner in owners(&placement, &keys) {
            *load.entry(owner).or_default() += 1;
        }
        let mean = keys.len() as f64 / 16.0;
        let max = *load.values().max().unwrap() as f64;
        assert_eq!(load.len(), 16);
        assert!(max / mean < 1.06, "max/mean load {:.3}", max / mean);
        let place = Place {
            upstream: "s3",
            bucket: "b",
            key: "k",
            chunk: 0,
        };
        let (first, second) = placement.owners(&place);
        assert_ne!(first, second);
    }

    #[test]
    fn a_member_joining_or_leaving_moves_only_its_own_share() {
        let keys = keys(64_000);
        let sixteen = members(16, None);
        let seventeen = members(17, None);
        let before = owners(&Placement::new(&sixteen[0], &sixteen), &keys);
        let after = owners(&Placement::new(&seventeen[0], &seventeen), &keys);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        // Every moved chunk moved to the newcomer, and about 1/17 of them did.
        assert!(moved.iter().all(|(_, a)| *a == "node-16"));
        let share = moved.len() as f64 / keys.len() as f64;
        assert!((share - 1.0 / 17.0).abs() < 0.01, "moved {share:.4} on a join");
        // A member leaving moves only its own chunks, each to its second choice.
        let full = Placement::new(&sixteen[0], &sixteen);
        let fifteen: Vec<_> = sixteen.iter().filter(|m| m.id != "node-5").cloned().collect();
        let after = owners(&Placement::new(&fifteen[0], &fifteen), &keys);
        for (i, key) in keys.iter().enumerate() {
            let place = Place {
                upstream: "s3",
                bucket: "b",
                key,
                chunk: (i % 8) as u64,
            };
            let (first, second) = full.owners(&place);
            let want = match first.unwrap().id.as_str() {
                "node-5" => &second.unwrap().id,
                kept => &kept.to_owned(),
            };
            assert_eq!(&after[i], want, "chunk {i}");
        }
    }

    #[test]
    fn every_node_agrees_and_only_its_zone_is_used() {
        let mut all = members(4, Some("a"));
        all.extend((0..4).map(|i| Member {
            id: format!("other-{i}"),
            zone: Some("b".into()),
        }));
        let keys = keys(2_000);
        let from_first = owners(&Placement::new(&all[0], &all), &keys);
        let from_third = owners(&Placement::new(&all[2], &all), &keys);
        assert_eq!(from_first, from_third, "nodes of one zone agree");
        assert!(
            from_first.iter().all(|o| o.starts_with("node-")),
            "zone a stays in zone a"
        );
        let from_b = owners(&Placement::new(&all[5], &all), &keys);
        assert!(from_b.iter().all(|o| o.starts_with("other-")));
    }
}
