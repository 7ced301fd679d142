//! How one event changes the read models, over any key-value store.
//!
//! Keys (one sled tree, so a batch of events and the checkpoint commit atomically):
//!
//! | key | value |
//! |---|---|
//! | `s:<session_id>` | [`SessionView`] |
//! | `u:<user_id>\0<session_id>` | empty: sessions by user |
//! | `v:<vm_id>\0<session_id>` | empty: sessions holding a slot on a VM |
//! | `t:<status>\0<session_id>` | empty: sessions by status |
//! | `m:<vm_id>` | [`VmView`] |
//! | `q:<seq>` | session id: the placement queue, in the order sessions were queued |
//! | `c:<status>` | u64: sessions per status |
//! | `r:<end reason>` | u64: sessions ended per reason |
//! | `_checkpoint` | u64: the last stream sequence applied |
//! | `_version` | u32: the projection's version ([`super::PROJECTION_VERSION`]) |

use std::collections::BTreeMap;

use orchestrator_events::{Envelope, Event, SessionId, UserId, VmId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::model::{QueuedView, SessionView, VmView};
use super::ProjectionError;
use crate::domain::{SessionStatus, VmStatus};

/// The checkpoint key.
pub const CHECKPOINT_KEY: &[u8] = b"_checkpoint";
/// The version key.
pub const VERSION_KEY: &[u8] = b"_version";

/// Read access to a store of projections.
pub trait Kv {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;
}

impl Kv for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
}

/// One message of the log for the projections: its sequence, and its event unless it is a message
/// every reader skips.
pub type Message = (u64, Option<Envelope>);

/// Writes pending over a base store: a batch under construction.
pub struct Overlay<'a, K: Kv> {
    base: &'a K,
    /// The writes: `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, K: Kv> Overlay<'a, K> {
    /// An empty batch over `base`.
    pub fn new(base: &'a K) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn get_as<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ProjectionError> {
        self.get(key)?
            .map(|b| {
                postcard::from_bytes(&b).map_err(|e| ProjectionError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn put_as<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        // Views are plain structs of strings, numbers and maps: encoding cannot fail.
        let bytes = postcard::to_stdvec(value).expect("a view always encodes");
        self.writes.insert(key, Some(bytes));
    }

    fn put(&mut self, key: Vec<u8>) {
        self.writes.insert(key, Some(Vec::new()));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    fn add_count(&mut self, status: SessionStatus, delta: i64) -> Result<(), ProjectionError> {
        let key = count_key(status);
        let n = self.get(&key)?.map(|b| decode_u64(&b)).unwrap_or(0);
        let n = n.saturating_add_signed(delta);
        self.writes.insert(key, Some(n.to_be_bytes().to_vec()));
        Ok(())
    }

    /// Applies consecutive messages, the first of which must be at `expected`; returns the
    /// sequence the next batch must start at. A message that is not an event (`None`: foreign or
    /// quarantined, see [`crate::log::entry`]) only moves the checkpoint. A gap or a repeat is an
    /// error, never skipped.
    pub fn apply_all(
        &mut self,
        mut expected: u64,
        messages: &[Message],
    ) -> Result<u64, ProjectionError> {
        for (seq, env) in messages {
            if *seq != expected {
                return Err(ProjectionError::OutOfOrder {
                    expected,
                    got: *seq,
                });
            }
            match env {
                Some(env) => self.apply(*seq, env)?,
                None => self.set_checkpoint(*seq),
            }
            expected += 1;
        }
        Ok(expected)
    }

    fn set_checkpoint(&mut self, seq: u64) {
        self.writes
            .insert(CHECKPOINT_KEY.to_vec(), Some(seq.to_be_bytes().to_vec()));
    }

    /// Applies the event stored at `seq`.
    pub fn apply(&mut self, seq: u64, env: &Envelope) -> Result<(), ProjectionError> {
        let at = env.occurred_at;
        let inconsistent = |reason: String| ProjectionError::Inconsistent { seq, reason };
        match &env.event {
            Event::SessionStarted {
                session_id,
                user_id,
                game_id,
                requirements,
            } => {
                if self.get(&session_key(session_id))?.is_some() {
                    return Err(inconsistent(format!("session {session_id} started twice")));
                }
                let view = SessionView {
                    session_id: session_id.clone(),
                    user_id: user_id.clone(),
                    game_id: game_id.clone(),
                    requirements: requirements.clone(),
                    status: SessionStatus::Starting,
                    vm_id: None,
                    placement: None,
                    end_reason: None,
                    queued: None,
                    queue_position: None,
                    endpoint: None,
                    started_at: at,
                    updated_at: at,
                    last_seq: seq,
                };
                self.put_as(session_key(session_id), &view);
                self.put(user_key(user_id, session_id));
                self.put(status_key(SessionStatus::Starting, session_id));
                self.add_count(SessionStatus::Starting, 1)?;
            }
            Event::SessionAssigned {
                session_id,
                vm_id,
                placement,
            } => {
                let mut view = self.session(session_id, seq)?;
                let mut vm = self.vm(vm_id, seq)?;
                if let Some(q) = view.queued.take() {
                    self.delete(queue_key(q.seq));
                }
                self.move_status(&mut view, SessionStatus::Active)?;
                view.vm_id = Some(vm_id.clone());
                view.placement = Some(placement.clone());
                view.endpoint = vm.endpoint.clone();
                vm.used += 1;
                vm.free = vm.capacity.saturating_sub(vm.used);
                vm.updated_at = at;
                vm.last_seq = seq;
                self.put(vm_key_session(vm_id, session_id));
                self.put_as(vm_key(vm_id), &vm);
                self.finish_session(view, at, seq);
            }
            Event::SessionPaused { session_id } | Event::SessionResumed { session_id } => {
                let mut view = self.session(session_id, seq)?;
                let to = if matches!(env.event, Event::SessionPaused { .. }) {
                    SessionStatus::Paused
                } else {
                    SessionStatus::Active
                };
                self.move_status(&mut view, to)?;
                self.finish_session(view, at, seq);
            }
            Event::SessionEnded {
                session_id, reason, ..
            } => {
                let mut view = self.session(session_id, seq)?;
                if let Some(q) = view.queued.take() {
                    self.delete(queue_key(q.seq));
                }
                if view.status.holds_slot() {
                    if let Some(vm_id) = view.vm_id.clone() {
                        let mut vm = self.vm(&vm_id, seq)?;
                        vm.used = vm.used.saturating_sub(1);
                        vm.free = vm.capacity.saturating_sub(vm.used);
                        vm.updated_at = at;
                        vm.last_seq = seq;
                        self.delete(vm_key_session(&vm_id, session_id));
                        self.put_as(vm_key(&vm_id), &vm);
                    }
                }
                self.move_status(&mut view, SessionStatus::Ended)?;
                view.end_reason = Some(*reason);
                let key = reason_key(*reason);
                let n = self.get(&key)?.map(|b| decode_u64(&b)).unwrap_or(0);
                self.writes
                    .insert(key, Some(n.saturating_add(1).to_be_bytes().to_vec()));
                self.finish_session(view, at, seq);
            }
            Event::VmRegistered {
                vm_id,
                capacity,
                labels,
                heartbeat_ms,
                endpoint,
            } => {
                // A lost VM comes back by registering again.
                if let Some(old) = self.get_as::<VmView>(&vm_key(vm_id))? {
                    if old.status != VmStatus::Lost {
                        return Err(inconsistent(format!("VM {vm_id} registered twice")));
                    }
                }
                let vm = VmView {
                    vm_id: vm_id.clone(),
                    capacity: *capacity,
                    used: 0,
                    free: *capacity,
                    status: VmStatus::Available,
                    labels: labels.clone(),
                    heartbeat_ms: *heartbeat_ms,
                    endpoint: endpoint.clone(),
                    registered_at: at,
                    updated_at: at,
                    last_seq: seq,
                };
                self.put_as(vm_key(vm_id), &vm);
            }
            Event::SessionQueued {
                session_id,
                deadline,
                ..
            } => {
                let mut view = self.session(session_id, seq)?;
                if view.status != SessionStatus::Starting || view.queued.is_some() {
                    return Err(inconsistent(format!(
                        "session {session_id} queued while {}",
                        view.status.as_str()
                    )));
                }
                view.queued = Some(QueuedView {
                    since: at,
                    deadline: *deadline,
                    seq,
                });
                self.writes.insert(
                    queue_key(seq),
                    Some(session_id.as_str().as_bytes().to_vec()),
                );
                self.finish_session(view, at, seq);
            }
            Event::VmDrained { vm_id }
            | Event::VmRetired { vm_id }
            | Event::VmLost { vm_id, .. } => {
                let mut vm = self.vm(vm_id, seq)?;
                vm.status = match env.event {
                    Event::VmDrained { .. } => VmStatus::Draining,
                    Event::VmLost { .. } => VmStatus::Lost,
                    _ => VmStatus::Retired,
                };
                vm.updated_at = at;
                vm.last_seq = seq;
                self.put_as(vm_key(vm_id), &vm);
            }
        }
        self.set_checkpoint(seq);
        Ok(())
    }

    fn session(&self, id: &SessionId, seq: u64) -> Result<SessionView, ProjectionError> {
        self.get_as(&session_key(id))?
            .ok_or_else(|| ProjectionError::Inconsistent {
                seq,
                reason: format!("unknown session {id}"),
            })
    }

    fn vm(&self, id: &VmId, seq: u64) -> Result<VmView, ProjectionError> {
        self.get_as(&vm_key(id))?
            .ok_or_else(|| ProjectionError::Inconsistent {
                seq,
                reason: format!("unknown VM {id}"),
            })
    }

    fn move_status(
        &mut self,
        view: &mut SessionView,
        to: SessionStatus,
    ) -> Result<(), ProjectionError> {
        self.delete(status_key(view.status, &view.session_id));
        self.add_count(view.status, -1)?;
        self.put(status_key(to, &view.session_id));
        self.add_count(to, 1)?;
        view.status = to;
        Ok(())
    }

    fn finish_session(&mut self, mut view: SessionView, at: i64, seq: u64) {
        view.updated_at = at;
        view.last_seq = seq;
        self.put_as(session_key(&view.session_id), &view);
    }
}

/// `r:<end reason>`: how many sessions ended for it.
pub fn reason_key(reason: orchestrator_events::EndReason) -> Vec<u8> {
    format!("r:{}", reason.as_str()).into_bytes()
}

/// Decodes a big-endian u64 value (0 if malformed).
pub fn decode_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// `s:<session_id>`
pub fn session_key(id: &SessionId) -> Vec<u8> {
    [b"s:", id.as_str().as_bytes()].concat()
}

/// `u:<user_id>\0`: the prefix of a user's sessions.
pub fn user_prefix(user: &UserId) -> Vec<u8> {
    [b"u:", user.as_str().as_bytes(), b"\0"].concat()
}

fn user_key(user: &UserId, id: &SessionId) -> Vec<u8> {
    [user_prefix(user).as_slice(), id.as_str().as_bytes()].concat()
}

/// `v:<vm_id>\0`: the prefix of the sessions holding a slot on a VM.
pub fn vm_sessions_prefix(vm: &VmId) -> Vec<u8> {
    [b"v:", vm.as_str().as_bytes(), b"\0"].concat()
}

fn vm_key_session(vm: &VmId, id: &SessionId) -> Vec<u8> {
    [vm_sessions_prefix(vm).as_slice(), id.as_str().as_bytes()].concat()
}

/// `t:<status>\0`: the prefix of the sessions in a status.
pub fn status_prefix(status: SessionStatus) -> Vec<u8> {
    [b"t:", status.as_str().as_bytes(), b"\0"].concat()
}

fn status_key(status: SessionStatus, id: &SessionId) -> Vec<u8> {
    [status_prefix(status).as_slice(), id.as_str().as_bytes()].concat()
}

/// The key of a session's place in the placement queue: `q:` and its `SessionQueued`'s sequence,
/// big-endian so keys sort in queue order.
pub fn queue_key(seq: u64) -> Vec<u8> {
    let mut k = b"q:".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `m:<vm_id>`
pub fn vm_key(id: &VmId) -> Vec<u8> {
    [b"m:", id.as_str().as_bytes()].concat()
}

/// `c:<status>`
pub fn count_key(status: SessionStatus) -> Vec<u8> {
    [b"c:", status.as_str().as_bytes()].concat()
}
