//! How one event changes the read models, over any key-value store (layout: [`super::keys`]).
//!
//! A batch of events is folded in an [`Overlay`]: the views it touches are decoded once, changed in
//! memory, and encoded once when the batch is taken out ([`Overlay::into_writes`]); counters too.
//! Index keys of a session born in the same batch that are deleted in it (its `starting` status, its
//! place in the queue, its VM slot once it ends) are never written at all. So a batch holding whole
//! lifecycles writes little more than each session's view and user index.

use std::collections::{BTreeMap, HashMap};

use orchestrator_events::{Envelope, Event, SessionId, VmId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::decode_u64;
use super::keys::{
    count_key, queue_key, reason_key, session_key, status_indexed, status_key, user_key, vm_key,
    vm_session_key, CHECKPOINT_KEY,
};
use super::model::{QueuedView, SessionView, VmView};
use super::ProjectionError;
use crate::domain::{SessionStatus, VmStatus};

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

/// Writes of a batch, in key order: `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A session touched by the batch.
struct Touched {
    view: SessionView,
    /// Started in this batch: none of its keys is in the base store.
    fresh: bool,
}

/// Writes pending over a base store: a batch under construction.
pub struct Overlay<'a, K: Kv> {
    base: &'a K,
    /// Index keys, the queue and the checkpoint.
    writes: Writes,
    /// The sessions the batch changed, by key.
    sessions: HashMap<Vec<u8>, Touched>,
    /// The VMs touched, by key, changed or not (`true`: write it).
    vms: HashMap<Vec<u8>, (VmView, bool)>,
    /// The counters touched (`c:`, `r:`), by key.
    counters: HashMap<Vec<u8>, u64>,
}

fn decode_as<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Views are plain structs of strings, numbers and maps: encoding cannot fail.
    postcard::to_stdvec(value).expect("a view always encodes")
}

impl<'a, K: Kv> Overlay<'a, K> {
    /// An empty batch over `base`.
    pub fn new(base: &'a K) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
            sessions: HashMap::new(),
            vms: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// The batch's writes, views and counters encoded, in key order.
    pub fn into_writes(self) -> Writes {
        let mut writes = self.writes;
        for (key, touched) in self.sessions {
            writes.insert(key, Some(encode(&touched.view)));
        }
        for (key, (vm, changed)) in self.vms {
            if changed {
                writes.insert(key, Some(encode(&vm)));
            }
        }
        for (key, n) in self.counters {
            writes.insert(key, Some(n.to_be_bytes().to_vec()));
        }
        writes
    }

    fn put(&mut self, key: Vec<u8>) {
        self.writes.insert(key, Some(Vec::new()));
    }

    /// Deletes an index key of a session; one its batch wrote itself (`fresh`) is only forgotten.
    fn delete(&mut self, key: Vec<u8>, fresh: bool) {
        if fresh {
            self.writes.remove(&key);
        } else {
            self.writes.insert(key, None);
        }
    }

    fn add(&mut self, key: Vec<u8>, delta: i64) -> Result<(), ProjectionError> {
        let n = match self.counters.get(&key) {
            Some(n) => *n,
            None => self.base.get(&key)?.map(|b| decode_u64(&b)).unwrap_or(0),
        };
        self.counters.insert(key, n.saturating_add_signed(delta));
        Ok(())
    }

    fn add_count(&mut self, status: SessionStatus, delta: i64) -> Result<(), ProjectionError> {
        self.add(count_key(status), delta)
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
                let key = session_key(session_id);
                if self.sessions.contains_key(&key) || self.base.get(&key)?.is_some() {
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
                self.put(user_key(user_id, session_id));
                self.put(status_key(SessionStatus::Starting, session_id));
                self.add_count(SessionStatus::Starting, 1)?;
                self.sessions.insert(key, Touched { view, fresh: true });
            }
            Event::SessionAssigned {
                session_id,
                vm_id,
                placement,
            } => {
                let (mut view, fresh) = self.take_session(session_id, seq)?;
                let mut vm = self.take_vm(vm_id, seq)?;
                if let Some(q) = view.queued.take() {
                    self.delete(queue_key(q.seq), fresh);
                }
                self.move_status(&mut view, fresh, SessionStatus::Active)?;
                view.vm_id = Some(vm_id.clone());
                view.placement = Some(placement.clone());
                view.endpoint = vm.endpoint.clone();
                vm.used += 1;
                vm.free = vm.capacity.saturating_sub(vm.used);
                vm.updated_at = at;
                vm.last_seq = seq;
                self.put(vm_session_key(vm_id, session_id));
                self.keep_vm(vm);
                self.keep_session(view, fresh, at, seq);
            }
            Event::SessionPaused { session_id } | Event::SessionResumed { session_id } => {
                let (mut view, fresh) = self.take_session(session_id, seq)?;
                let to = if matches!(env.event, Event::SessionPaused { .. }) {
                    SessionStatus::Paused
                } else {
                    SessionStatus::Active
                };
                self.move_status(&mut view, fresh, to)?;
                self.keep_session(view, fresh, at, seq);
            }
            Event::SessionEnded {
                session_id, reason, ..
            } => {
                let (mut view, fresh) = self.take_session(session_id, seq)?;
                if let Some(q) = view.queued.take() {
                    self.delete(queue_key(q.seq), fresh);
                }
                if view.status.holds_slot() {
                    if let Some(vm_id) = view.vm_id.clone() {
                        let mut vm = self.take_vm(&vm_id, seq)?;
                        vm.used = vm.used.saturating_sub(1);
                        vm.free = vm.capacity.saturating_sub(vm.used);
                        vm.updated_at = at;
                        vm.last_seq = seq;
                        self.delete(vm_session_key(&vm_id, session_id), fresh);
                        self.keep_vm(vm);
                    }
                }
                self.move_status(&mut view, fresh, SessionStatus::Ended)?;
                view.end_reason = Some(*reason);
                self.add(reason_key(*reason), 1)?;
                self.keep_session(view, fresh, at, seq);
            }
            Event::VmRegistered {
                vm_id,
                capacity,
                labels,
                heartbeat_ms,
                endpoint,
            } => {
                // A lost VM comes back by registering again.
                if let Some(old) = self.find_vm(vm_id)? {
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
                self.keep_vm(vm);
            }
            Event::SessionQueued {
                session_id,
                deadline,
                ..
            } => {
                let (mut view, fresh) = self.take_session(session_id, seq)?;
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
                self.keep_session(view, fresh, at, seq);
            }
            Event::VmDrained { vm_id }
            | Event::VmRetired { vm_id }
            | Event::VmLost { vm_id, .. } => {
                let mut vm = self.take_vm(vm_id, seq)?;
                vm.status = match env.event {
                    Event::VmDrained { .. } => VmStatus::Draining,
                    Event::VmLost { .. } => VmStatus::Lost,
                    _ => VmStatus::Retired,
                };
                vm.updated_at = at;
                vm.last_seq = seq;
                self.keep_vm(vm);
            }
        }
        self.set_checkpoint(seq);
        Ok(())
    }

    /// Takes a session out of the batch (reading it from the base the first time), with whether
    /// the batch started it. Put it back with [`Self::keep_session`].
    fn take_session(
        &mut self,
        id: &SessionId,
        seq: u64,
    ) -> Result<(SessionView, bool), ProjectionError> {
        let key = session_key(id);
        if let Some(t) = self.sessions.remove(&key) {
            return Ok((t.view, t.fresh));
        }
        match self.base.get(&key)? {
            Some(bytes) => Ok((decode_as(&key, &bytes)?, false)),
            None => Err(ProjectionError::Inconsistent {
                seq,
                reason: format!("unknown session {id}"),
            }),
        }
    }

    fn keep_session(&mut self, mut view: SessionView, fresh: bool, at: i64, seq: u64) {
        view.updated_at = at;
        view.last_seq = seq;
        self.sessions
            .insert(session_key(&view.session_id), Touched { view, fresh });
    }

    /// A VM as the batch sees it, if it exists.
    fn find_vm(&mut self, id: &VmId) -> Result<Option<&VmView>, ProjectionError> {
        let key = vm_key(id);
        if !self.vms.contains_key(&key) {
            let Some(bytes) = self.base.get(&key)? else {
                return Ok(None);
            };
            let vm = decode_as(&key, &bytes)?;
            self.vms.insert(key.clone(), (vm, false));
        }
        Ok(self.vms.get(&key).map(|(vm, _)| vm))
    }

    /// A copy of a VM to change; put it back with [`Self::keep_vm`].
    fn take_vm(&mut self, id: &VmId, seq: u64) -> Result<VmView, ProjectionError> {
        self.find_vm(id)?
            .cloned()
            .ok_or_else(|| ProjectionError::Inconsistent {
                seq,
                reason: format!("unknown VM {id}"),
            })
    }

    fn keep_vm(&mut self, vm: VmView) {
        self.vms.insert(vm_key(&vm.vm_id), (vm, true));
    }

    fn move_status(
        &mut self,
        view: &mut SessionView,
        fresh: bool,
        to: SessionStatus,
    ) -> Result<(), ProjectionError> {
        if status_indexed(view.status) {
            self.delete(status_key(view.status, &view.session_id), fresh);
        }
        self.add_count(view.status, -1)?;
        if status_indexed(to) {
            self.put(status_key(to, &view.session_id));
        }
        self.add_count(to, 1)?;
        view.status = to;
        Ok(())
    }
}
