//! The placement index: for each distinct requirement set of the sessions waiting for a VM, the VMs
//! that can take them, grouped by load, so a placement reads the fullest or emptiest group instead
//! of walking every VM.
//!
//! It gives exactly the choice and the explanation of [`super::choose`] (a property test compares
//! them after every step of random command sequences). [`crate::domain::evolve()`] keeps it: a
//! VM's contribution is removed before the VM changes and added back after; a requirement set is
//! indexed while a `starting` session needs it (built with one walk over the VMs when it first
//! appears), and kept after its last such session is placed while it is among the
//! [`IDLE_SETS_KEPT`] most recently wanted idle sets: sessions that start and are placed one at a
//! time (the usual case at low load) would otherwise rebuild their set, walking every VM, at each
//! start.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_events::{Labels, Placement, PlacementPolicy, PlacementReason, VmId};
use serde::{Deserialize, Serialize};

use super::super::rejection::Rejection;
use super::super::state::{Vm, VmStatus};

/// How many requirement sets with no `starting` session stay indexed; past that, the least
/// recently wanted is dropped. Each costs an entry per eligible VM and a label match per VM change.
pub const IDLE_SETS_KEPT: u32 = 16;

/// The VMs a requirement set can use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slots {
    /// `starting` sessions that need this set; none when it is idle.
    waiting: u32,
    /// The index's count of wants when a session last needed this set: the idle set wanted least
    /// recently is dropped first.
    wanted_at: u64,
    /// Available VMs carrying every label of the set.
    matching: u32,
    /// Of those, the ones with room, by load (sessions held); ids sorted, so the lowest wins a tie.
    by_load: BTreeMap<u32, BTreeSet<VmId>>,
    /// How many VMs `by_load` holds.
    eligible: u32,
}

/// See the module's documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementIndex {
    /// VMs that are not retired or lost: a placement's candidates.
    candidates: u32,
    sets: BTreeMap<Labels, Slots>,
    /// Sets in `sets` that no `starting` session needs.
    idle: u32,
    /// Sessions that wanted a set so far (a logical clock, so a replay drops the same sets).
    wants: u64,
}

fn is_candidate(vm: &Vm) -> bool {
    !matches!(vm.status, VmStatus::Retired | VmStatus::Lost)
}

impl Slots {
    fn add(&mut self, id: &VmId, vm: &Vm) {
        self.matching += 1;
        if vm.free() > 0 {
            self.eligible += 1;
            self.by_load.entry(vm.used).or_default().insert(id.clone());
        }
    }

    fn remove(&mut self, id: &VmId, vm: &Vm) {
        self.matching = self.matching.saturating_sub(1);
        if vm.free() > 0 {
            if let Some(ids) = self.by_load.get_mut(&vm.used) {
                if ids.remove(id) {
                    self.eligible = self.eligible.saturating_sub(1);
                }
                if ids.is_empty() {
                    self.by_load.remove(&vm.used);
                }
            }
        }
    }
}

impl PlacementIndex {
    /// Takes a VM's contribution out, before it changes (or leaves).
    pub fn remove_vm(&mut self, id: &VmId, vm: &Vm) {
        if is_candidate(vm) {
            self.candidates = self.candidates.saturating_sub(1);
        }
        if vm.status != VmStatus::Available {
            return;
        }
        for (requirements, slots) in &mut self.sets {
            if vm.matches(requirements) {
                slots.remove(id, vm);
            }
        }
    }

    /// Puts a VM's contribution in, after it changed (or joined).
    pub fn add_vm(&mut self, id: &VmId, vm: &Vm) {
        if is_candidate(vm) {
            self.candidates += 1;
        }
        if vm.status != VmStatus::Available {
            return;
        }
        for (requirements, slots) in &mut self.sets {
            if vm.matches(requirements) {
                slots.add(id, vm);
            }
        }
    }

    /// A `starting` session needs `requirements`: index them if they are not yet.
    pub fn want(&mut self, requirements: &Labels, vms: &BTreeMap<VmId, Vm>) {
        self.wants += 1;
        if let Some(slots) = self.sets.get_mut(requirements) {
            if slots.waiting == 0 {
                self.idle = self.idle.saturating_sub(1);
            }
            slots.waiting += 1;
            slots.wanted_at = self.wants;
            return;
        }
        let mut slots = Slots {
            waiting: 1,
            wanted_at: self.wants,
            ..Slots::default()
        };
        for (id, vm) in vms {
            if vm.status == VmStatus::Available && vm.matches(requirements) {
                slots.add(id, vm);
            }
        }
        self.sets.insert(requirements.clone(), slots);
    }

    /// A session that needed `requirements` was placed or ended.
    pub fn release(&mut self, requirements: &Labels) {
        let Some(slots) = self.sets.get_mut(requirements) else {
            return;
        };
        if slots.waiting == 0 {
            return;
        }
        slots.waiting -= 1;
        if slots.waiting > 0 {
            return;
        }
        self.idle += 1;
        if self.idle > IDLE_SETS_KEPT {
            let oldest = self
                .sets
                .iter()
                .filter(|(_, slots)| slots.waiting == 0)
                .min_by_key(|(_, slots)| slots.wanted_at)
                .map(|(requirements, _)| requirements.clone());
            if let Some(oldest) = oldest {
                self.sets.remove(&oldest);
                self.idle -= 1;
            }
        }
    }

    /// Whether `requirements` are indexed (a `starting` session needs them, or they are idle and
    /// kept).
    pub fn holds(&self, requirements: &Labels) -> bool {
        self.sets.contains_key(requirements)
    }

    /// Every indexed requirement set, with the number of `starting` sessions needing it.
    pub fn sets(&self) -> impl Iterator<Item = (&Labels, u32)> {
        self.sets
            .iter()
            .map(|(labels, slots)| (labels, slots.waiting))
    }

    /// The choice of [`super::choose`] for `requirements`, or `None` when they are not indexed.
    pub fn choose(
        &self,
        vms: &BTreeMap<VmId, Vm>,
        requirements: &Labels,
        policy: PlacementPolicy,
    ) -> Option<Result<(VmId, Placement), Rejection>> {
        let slots = self.sets.get(requirements)?;
        let best = match policy {
            PlacementPolicy::Spread => slots.by_load.iter().next(),
            PlacementPolicy::Packed | PlacementPolicy::Explicit => slots.by_load.iter().next_back(),
        };
        let Some((load, ids)) = best else {
            return Some(Err(Rejection::NoCapacity {
                candidates: self.candidates,
                matching: slots.matching,
            }));
        };
        // Non-empty by construction: an emptied load is removed.
        let id = ids.iter().next()?;
        let tied = ids.len() as u32;
        let reason = match policy {
            PlacementPolicy::Spread => PlacementReason::EmptiestWithRoom { tied },
            PlacementPolicy::Packed | PlacementPolicy::Explicit => {
                PlacementReason::FullestWithRoom { tied }
            }
        };
        let capacity = vms.get(id)?.capacity;
        Some(Ok((
            id.clone(),
            Placement {
                policy,
                candidates: self.candidates,
                eligible: slots.eligible,
                load_before: *load,
                capacity,
                reason,
                queued: None,
            },
        )))
    }
}
