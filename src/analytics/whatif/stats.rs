//! What a run of the pool looked like within the window: peak and mean VMs used, mean load, waits
//! in the placement queue, placements. Fed the same way for the recorded run and the what-if, so
//! the two columns are comparable.

use std::collections::{BTreeMap, HashMap};

use orchestrator_events::{Event, SessionId, Timestamp, VmId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::window::Window;
use crate::domain::State;

/// Waits in the placement queue of sessions queued within the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueWaits {
    /// Sessions that waited.
    pub count: u64,
    /// Mean wait, in milliseconds: to the placement, to the end, or to the window's end.
    pub mean_ms: f64,
    /// The longest wait, in milliseconds.
    pub max_ms: i64,
    /// Of those, how many were placed from the queue.
    pub placed: u64,
    /// Of those, how many ended with `placement_timeout` while waiting.
    pub timed_out: u64,
}

/// One run's figures within the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunStats {
    /// The most VMs holding at least one session at once.
    pub peak_vms_used: u32,
    /// VMs holding at least one session, averaged over the window's time.
    pub mean_vms_used: f64,
    /// Slot-time used ÷ slot-time of the VMs holding at least one session (0 to 1).
    pub mean_load: f64,
    /// Sessions placed within the window (from the queue included).
    pub placements: u64,
    /// Commands refused, by code (the recorded log holds only accepted commands: empty there).
    pub rejections: BTreeMap<String, u64>,
    /// Waits in the placement queue.
    pub queue: QueueWaits,
}

/// The accumulator: call [`Observer::before`] and [`Observer::after`] around each event folded
/// into the run's state, then [`Observer::finish`].
#[derive(Debug, Clone)]
pub struct Observer {
    window: Window,
    last_at: Timestamp,
    used: u64,
    vms_used: u32,
    capacity_used: u64,
    used_ms: f64,
    capacity_ms: f64,
    vms_ms: f64,
    waiting: HashMap<SessionId, Timestamp>,
    waits: Vec<i64>,
    /// The VM the current event touches, and its (used, capacity) before it.
    touched: Option<(VmId, u32, u32)>,
    stats: RunStats,
}

fn vm_of(event: &Event) -> Option<&VmId> {
    match event {
        Event::SessionAssigned { vm_id, .. } => Some(vm_id),
        Event::SessionEnded { vm_id, .. } => vm_id.as_ref(),
        _ => None,
    }
}

impl Observer {
    /// An observer of `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            last_at: Timestamp::MIN,
            used: 0,
            vms_used: 0,
            capacity_used: 0,
            used_ms: 0.0,
            capacity_ms: 0.0,
            vms_ms: 0.0,
            waiting: HashMap::new(),
            waits: Vec::new(),
            touched: None,
            stats: RunStats::default(),
        }
    }

    /// Whether `at` is in the window.
    pub fn in_window(&self, at: Timestamp) -> bool {
        at >= self.window.from && at < self.window.to
    }

    /// Counts a refused command.
    pub fn rejected(&mut self, at: Timestamp, code: &str) {
        if self.in_window(at) {
            *self.stats.rejections.entry(code.to_owned()).or_insert(0) += 1;
        }
    }

    /// Before `event`, which happens `at`, is folded into `state`.
    pub fn before(&mut self, state: &State, at: Timestamp, event: &Event) {
        self.advance(at);
        self.touched = vm_of(event).and_then(|id| {
            let vm = state.vms.get(id)?;
            Some((id.clone(), vm.used, vm.capacity))
        });
    }

    /// After `event`, which happened `at`, was folded into `state`.
    pub fn after(&mut self, state: &State, at: Timestamp, event: &Event) {
        if let Some((id, used_before, capacity)) = self.touched.take() {
            let used_after = state.vms.get(&id).map_or(used_before, |vm| vm.used);
            self.used = (self.used + u64::from(used_after)).saturating_sub(u64::from(used_before));
            match (used_before > 0, used_after > 0) {
                (false, true) => {
                    self.vms_used += 1;
                    self.capacity_used += u64::from(capacity);
                }
                (true, false) => {
                    self.vms_used = self.vms_used.saturating_sub(1);
                    self.capacity_used = self.capacity_used.saturating_sub(u64::from(capacity));
                }
                _ => {}
            }
        }
        if self.in_window(at) {
            self.stats.peak_vms_used = self.stats.peak_vms_used.max(self.vms_used);
        }
        match event {
            Event::SessionQueued { session_id, .. } if self.in_window(at) => {
                self.waiting.insert(session_id.clone(), at);
            }
            Event::SessionAssigned { session_id, .. } => {
                if self.in_window(at) {
                    self.stats.placements += 1;
                }
                if let Some(since) = self.waiting.remove(session_id) {
                    self.waits.push(at - since);
                    self.stats.queue.placed += 1;
                }
            }
            Event::SessionEnded {
                session_id, reason, ..
            } => {
                if let Some(since) = self.waiting.remove(session_id) {
                    self.waits.push(at - since);
                    if *reason == orchestrator_events::EndReason::PlacementTimeout {
                        self.stats.queue.timed_out += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Integrates the current figures from the last event up to `at`, within the window.
    fn advance(&mut self, at: Timestamp) {
        let ms = self.window.overlap(self.last_at, at) as f64;
        if ms > 0.0 {
            self.stats.peak_vms_used = self.stats.peak_vms_used.max(self.vms_used);
        }
        self.used_ms += ms * self.used as f64;
        self.capacity_ms += ms * self.capacity_used as f64;
        self.vms_ms += ms * f64::from(self.vms_used);
        self.last_at = self.last_at.max(at);
    }

    /// The figures, counting what is still open up to the window's end.
    pub fn finish(mut self) -> RunStats {
        self.advance(self.window.to);
        let to = self.window.to;
        self.waits
            .extend(self.waiting.values().map(|since| to - since));
        let q = &mut self.stats.queue;
        q.count = self.waits.len() as u64;
        q.max_ms = self.waits.iter().copied().max().unwrap_or(0);
        q.mean_ms = if self.waits.is_empty() {
            0.0
        } else {
            self.waits.iter().sum::<i64>() as f64 / self.waits.len() as f64
        };
        let span = (self.window.to - self.window.from) as f64;
        self.stats.mean_vms_used = if span > 0.0 { self.vms_ms / span } else { 0.0 };
        self.stats.mean_load = if self.capacity_ms > 0.0 {
            self.used_ms / self.capacity_ms
        } else {
            0.0
        };
        self.stats
    }
}
