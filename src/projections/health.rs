//! A damaged store: how it is found, and what happens then.
//!
//! sled checks a CRC-32 of every message of its log, both when it recovers at open (a torn or
//! corrupt tail ends the recovery there: the store opens at an older, whole state, since the
//! checkpoint commits in the same atomic batch as the views) and whenever it reads a page back from
//! disk (a corrupt page is an [`sled::Error::Corruption`]). What a CRC cannot see is left to this
//! module:
//!
//! - at open, [`scan`] reads every key and value once: each value must decode as its key's type
//!   says, a view must sit under its own id and not be newer than the checkpoint, the counters per
//!   status must equal the session views counted, and a store holding data must hold its
//!   checkpoint. Reading every value also makes sled check every page's CRC. Anything else is
//!   damage: the store is moved aside and rebuilt from the log ([`Rebuild::Corrupt`]).
//! - while running, a read or a batch that meets damage (a value that does not decode, a sled
//!   corruption or I/O error, a panic inside sled) reports it ([`Health::report`]); the read answers
//!   [`super::ProjectionError::Corrupt`] (the bridge: 503 `projections_rebuilding`), and the
//!   projector moves the store aside, opens an empty one and rebuilds it from the log. Until the
//!   rebuild reaches the end of the log as it was when the rebuild started, reads answer
//!   [`super::ProjectionError::Rebuilding`]: an error, never an older or a partial state.
//!
//! A value is not checksummed on its own: sled's CRC already covers every page a value is read
//! from, so a flipped byte on disk fails that check before postcard sees the value.
//!
//! Every rebuild is counted by reason ([`Rebuild`]) for `orch_projection_rebuilds_total`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use orchestrator_events::SessionId;

use super::keys::{self, CHECKPOINT_KEY, VERSION_KEY};
use super::model::{SessionView, VmView};
use crate::domain::SessionStatus;

/// Why a store was rebuilt from the log: the `reason` of `orch_projection_rebuilds_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rebuild {
    /// sled could not open it (or panicked opening it).
    Unreadable,
    /// It opened, but its content is damaged: found by the scan at open or by a read while running.
    Corrupt,
    /// Its layout version differed.
    Version,
    /// It was built from another log.
    OtherLog,
}

impl Rebuild {
    /// Every reason, in the order they are shown.
    pub const ALL: [Rebuild; 4] = [
        Rebuild::Unreadable,
        Rebuild::Corrupt,
        Rebuild::Version,
        Rebuild::OtherLog,
    ];

    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rebuild::Unreadable => "unreadable",
            Rebuild::Corrupt => "corrupt",
            Rebuild::Version => "version",
            Rebuild::OtherLog => "other_log",
        }
    }
}

/// Reads not served while a rebuild runs whose target is not known yet.
const TARGET_UNKNOWN: u64 = u64::MAX;

/// The store's health: damage reported and not yet repaired, a rebuild in progress, rebuilds
/// counted.
#[derive(Default)]
pub(super) struct Health {
    /// Damage found and not yet handed to the projector: what was wrong.
    damage: Mutex<Option<String>>,
    /// Wakes the projector when damage is reported.
    pub(super) notify: tokio::sync::Notify,
    /// 0 while reads are served; else the checkpoint a rebuild must reach before they are again
    /// ([`TARGET_UNKNOWN`] until the projector has read the log's end).
    rebuilding_until: AtomicU64,
    /// Rebuilds so far, by reason.
    rebuilds: Mutex<BTreeMap<Rebuild, u64>>,
}

impl Health {
    /// Records damage found by a read or a batch, and wakes the projector. The first report wins
    /// until the projector takes it.
    pub(super) fn report(&self, what: &str) {
        let mut damage = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        if damage.is_none() {
            tracing::warn!(damage = %what, "projection store damaged: it will be rebuilt from the log");
            *damage = Some(what.to_owned());
            self.notify.notify_one();
        }
    }

    /// Takes the damage reported, if any.
    pub(super) fn take(&self) -> Option<String> {
        self.damage.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether damage was reported and not yet taken.
    pub(super) fn is_damaged(&self) -> bool {
        self.damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Counts a rebuild.
    pub(super) fn count(&self, why: Rebuild) {
        *self
            .rebuilds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    /// Rebuilds so far, by reason (every reason, zeros included).
    pub(super) fn rebuilds(&self) -> Vec<(Rebuild, u64)> {
        let counted = self.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
        Rebuild::ALL
            .into_iter()
            .map(|r| (r, counted.get(&r).copied().unwrap_or(0)))
            .collect()
    }

    /// Reads are refused from now until [`Health::rebuilding_to`] is given a target and the
    /// checkpoint reaches it.
    pub(super) fn start_rebuild(&self) {
        self.rebuilding_until
            .store(TARGET_UNKNOWN, Ordering::SeqCst);
    }

    /// Whether a rebuild waits for its target.
    pub(super) fn target_unknown(&self) -> bool {
        self.rebuilding_until.load(Ordering::SeqCst) == TARGET_UNKNOWN
    }

    /// The rebuild's target: reads are served again once the checkpoint reaches `last` (at once
    /// when it already has).
    /// Nothing happens when no rebuild waits for its target.
    pub(super) fn rebuilding_to(&self, last: u64, checkpoint: u64) {
        let until = if last <= checkpoint { 0 } else { last };
        let set = self.rebuilding_until.compare_exchange(
            TARGET_UNKNOWN,
            until,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if set.is_ok() && until == 0 {
            tracing::info!(checkpoint, "projection store rebuilt: serving reads again");
        }
    }

    /// The checkpoint moved to `checkpoint`: a rebuild that reached its target ends.
    pub(super) fn applied(&self, checkpoint: u64) {
        let until = self.rebuilding_until.load(Ordering::SeqCst);
        if until != 0 && until != TARGET_UNKNOWN && checkpoint >= until {
            // Only this rebuild's target is cleared; a new one started meanwhile stays.
            let _ = self.rebuilding_until.compare_exchange(
                until,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            tracing::info!(checkpoint, "projection store rebuilt: serving reads again");
        }
    }

    /// The checkpoint a rebuild must reach before reads are served (`None`: they are served;
    /// `Some(None)`: a rebuild runs whose target is not known yet).
    pub(super) fn rebuilding(&self) -> Option<Option<u64>> {
        match self.rebuilding_until.load(Ordering::SeqCst) {
            0 => None,
            TARGET_UNKNOWN => Some(None),
            until => Some(Some(until)),
        }
    }
}

/// Reads every key and value of `tree` and checks what a CRC cannot (see the module's docs).
/// `Err` says what is damaged.
pub(super) fn scan(tree: &sled::Tree) -> Result<(), String> {
    let mut checkpoint = None;
    let mut counters: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut counted: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut data = false;
    for kv in tree.iter() {
        let (k, v) = kv.map_err(|e| format!("reading the store: {e}"))?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let bad = |what: &str| format!("key {key}: {what}");
        let (prefix, rest) = k.split_at(k.len().min(2));
        match prefix {
            b"s:" => {
                let view: SessionView =
                    postcard::from_bytes(&v).map_err(|e| bad(&e.to_string()))?;
                if view.session_id.as_str().as_bytes() != rest {
                    return Err(bad("a session view under another session's id"));
                }
                if checkpoint.is_some_and(|c| view.last_seq > c) {
                    return Err(bad("a session view newer than the checkpoint"));
                }
                *counted.entry(view.status.as_str()).or_default() += 1;
            }
            b"m:" => {
                let view: VmView = postcard::from_bytes(&v).map_err(|e| bad(&e.to_string()))?;
                if view.vm_id.as_str().as_bytes() != rest {
                    return Err(bad("a VM view under another VM's id"));
                }
                if checkpoint.is_some_and(|c| view.last_seq > c) {
                    return Err(bad("a VM view newer than the checkpoint"));
                }
            }
            b"c:" | b"r:" => {
                let n = u64_value(&v).ok_or_else(|| bad("a counter that is not 8 bytes"))?;
                if prefix == b"c:" {
                    counters.insert(rest.to_vec(), n);
                }
            }
            b"u:" | b"v:" | b"t:" => {
                if !v.is_empty() {
                    return Err(bad("an index key with a value"));
                }
                let id = rest.split(|b| *b == 0).nth(1);
                let valid = id
                    .and_then(|id| std::str::from_utf8(id).ok())
                    .map(|id| SessionId::parse(id.to_owned()).is_ok());
                if valid != Some(true) {
                    return Err(bad("an index key without a valid session id"));
                }
            }
            b"q:" => {
                let id = std::str::from_utf8(&v)
                    .ok()
                    .map(|id| SessionId::parse(id.to_owned()));
                if rest.len() != 8 || !matches!(id, Some(Ok(_))) {
                    return Err(bad("a queue entry that is not a sequence and a session id"));
                }
            }
            _ if k.as_ref() == CHECKPOINT_KEY => {
                checkpoint = Some(u64_value(&v).ok_or_else(|| bad("not 8 bytes"))?);
                continue;
            }
            _ if k.as_ref() == VERSION_KEY || k.as_ref() == super::store::ORIGIN_KEY => continue,
            _ => return Err(bad("a key of no known kind")),
        }
        data = true;
    }
    if data && checkpoint.is_none() {
        return Err("the store holds read models but no checkpoint".into());
    }
    for status in SessionStatus::ALL {
        let stored = counters
            .get(status.as_str().as_bytes())
            .copied()
            .unwrap_or(0);
        let views = counted.get(status.as_str()).copied().unwrap_or(0);
        if stored != views {
            return Err(format!(
                "{stored} sessions {} counted, {views} session views in that status",
                status.as_str()
            ));
        }
    }
    Ok(())
}

/// A big-endian u64 value, `None` when it is not 8 bytes.
fn u64_value(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

/// Checks that `key` and the view under it agree (for reads: a value moved under another key is
/// damage, not data).
pub(super) fn session_key_matches(key: &[u8], view: &SessionView) -> bool {
    key == keys::session_key(&view.session_id).as_slice()
}

/// See [`session_key_matches`].
pub(super) fn vm_key_matches(key: &[u8], view: &VmView) -> bool {
    key == keys::vm_key(&view.vm_id).as_slice()
}
