//! The placement index: for each distinct requirement set of the sessions waiting for a VM, the VMs
//! that can take them, grouped by load, so a placement reads the fullest or emptiest group instead
//! of walking every VM.
//!
//! It gives exactly the choice and the explanation of [`super::choose`] (a property test compares
//! them after every step of random command sequences). [`crate::domain::evolve()`] keeps it: a
//! VM's contribution is removed before the VM changes and added back after; a requirement set is
//! indexed while a `starting` session needs it (built with one walk over the VMs when it first
//! appears) and dropped with its last such session.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_events::{Labels, Placement, PlacementPolicy, PlacementReason, VmId};
use serde::{Deserialize, Serialize};

use super::super::rejection::Rejection;
use super::super::state::{Vm, VmStatus};

/// The VMs a requirement set can use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slots {
    /// `starting` sessions that need this set.
    waiting: u32,
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

    /// A `starting` session needs `requirements`: index them if no other session does yet.
    pub fn want(&mut self, requirements: &Labels, vms: &BTreeMap<VmId, Vm>) {
        if let Some(slots) = self.sets.get_mut(requirements) {
            slots.waiting += 1;
            return;
        }
        let mut slots = Slots {
            waiting: 1,
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
        if let Some(slots) = self.sets.get_mut(requirements) {
            slots.waiting = slots.waiting.saturating_sub(1);
            if slots.waiting == 0 {
                self.sets.remove(requirements);
            }
        }
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
