//! Command ids seen within a window of event time, each mapped to the stream sequence of the event it
//! produced. Restored by replaying the log: each envelope carries its command id and body digest.
//!
//! Only accepted commands are remembered: a rejection appends nothing, so a retried rejected command is
//! decided again (and may now succeed).
//!
//! Command ids are scoped by their sender: the key is the first 128 bits of the SHA-256 of the actor
//! (kind and id) and the command id, so the same id from two actors is two commands, one caller can
//! neither block nor observe another's ids, and the `system` actor's deterministic ids (timers) belong
//! to the writer alone (the command intake refuses that actor from outside). Events of every schema
//! version carry their actor, so old logs replay to the same table. Memory does not grow with the
//! ids' lengths.
//!
//! The table is bounded twice: by event time (the window, 24 h by default) and by count (the newest
//! [`super::DomainConfig::max_remembered_commands`], 2,000,000 by default). An id is forgotten when
//! it is older than the window **or** when that many newer ones were accepted after it; a retry of a
//! forgotten id is decided again like a new command. Both bounds are folded from the log, so every
//! writer and every replay forgets the same ids. Each remembered id costs about 60 bytes of memory
//! (measured by `orchestrator bench`: the key, the body digest, the sequence and the time in the map,
//! and the key again in the age order).

use std::collections::{HashMap, VecDeque};

use orchestrator_events::{Actor, ActorKind, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a command id maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The digest of the body it was first accepted with (0: unknown, from a schema 1 envelope: any
    /// body of the same actor is then taken as a retry).
    pub digest: u64,
    /// The stream sequence of the event it produced.
    pub seq: u64,
    /// When that event occurred.
    pub at: Timestamp,
}

/// The outcome of looking a command id up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen within the window: decide it.
    New,
    /// Seen with the same body: answer with the event at `seq`.
    Repeat {
        /// The event's stream sequence.
        seq: u64,
    },
    /// Seen with another body: refuse.
    Conflict,
}

/// The idempotency table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    window_ms: i64,
    max_ids: usize,
    seen: HashMap<u128, Seen>,
    /// The keys in the order they were recorded (oldest first); the time is the entry's.
    order: VecDeque<u128>,
}

/// The SHA-256 of a command id in its sender's scope: the actor's kind, its id (length-prefixed, so
/// no pair of ids can read as another pair) and the command id.
pub(crate) fn scoped_hash(actor: &Actor, command_id: &str) -> [u8; 32] {
    let kind: u8 = match actor.kind {
        ActorKind::User => 0,
        ActorKind::Operator => 1,
        ActorKind::Service => 2,
        ActorKind::System => 3,
    };
    let mut h = Sha256::new();
    h.update([kind]);
    h.update((actor.id.len() as u64).to_be_bytes());
    h.update(actor.id.as_bytes());
    h.update(command_id.as_bytes());
    h.finalize().into()
}

fn key(actor: &Actor, command_id: &str) -> u128 {
    let hash = scoped_hash(actor, command_id);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

impl Idempotency {
    /// An empty table remembering ids for `window_ms` of event time, `max_ids` at the most.
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        Self {
            window_ms,
            max_ids: max_ids.max(1),
            ..Self::default()
        }
    }

    /// Looks a command id of `actor` up as of `now`.
    pub fn lookup(&self, actor: &Actor, command_id: &str, digest: u64, now: Timestamp) -> Lookup {
        match self.seen.get(&key(actor, command_id)) {
            Some(s) if s.at >= now.saturating_sub(self.window_ms) => {
                if s.digest == digest || s.digest == 0 {
                    Lookup::Repeat { seq: s.seq }
                } else {
                    Lookup::Conflict
                }
            }
            _ => Lookup::New,
        }
    }

    /// The entry of a command id of `actor`, if remembered (whatever its age).
    pub fn get(&self, actor: &Actor, command_id: &str) -> Option<Seen> {
        self.seen.get(&key(actor, command_id)).copied()
    }

    /// Records an accepted command, and forgets those older than the window as of its time and the
    /// oldest beyond the count bound.
    pub fn record(&mut self, actor: &Actor, command_id: &str, seen: Seen) {
        let k = key(actor, command_id);
        let horizon = seen.at.saturating_sub(self.window_ms);
        // Event time never goes backwards in a log, so the oldest entries are at the front.
        while let Some(&old) = self.order.front() {
            if self.seen.get(&old).is_some_and(|s| s.at >= horizon) {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        // The first result within the window wins: a duplicate in the log (it cannot be, but never
        // overwrite) is ignored. An entry past the window is a use that was forgotten (lookup calls
        // the id new), so the new use replaces it; otherwise a retry of the new use would be decided
        // again.
        if let Some(old) = self.seen.get(&k) {
            if old.at >= horizon {
                return;
            }
            // Past the window but not at the front: only if event time went backwards.
            self.order.retain(|o| *o != k);
        }
        self.seen.insert(k, seen);
        self.order.push_back(k);
        while self.order.len() > self.max_ids {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Feeds the remembered ids, sorted, into a hasher (for [`super::State::fingerprint`]).
    pub fn hash_into(&self, hasher: &mut Sha256) {
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_unstable_by_key(|(k, _)| **k);
        for (k, s) in seen {
            hasher.update(k.to_be_bytes());
            hasher.update(s.digest.to_be_bytes());
            hasher.update(s.seq.to_be_bytes());
            hasher.update(s.at.to_be_bytes());
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
