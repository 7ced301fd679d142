//! Placement: which VM a session goes to.
//!
//! Candidates are every VM that is not retired or lost. A candidate is eligible when it is `available`, carries
//! every label the session requires, and has a free slot. `packed` (the default) picks the eligible VM
//! with the most sessions, so whole VMs stay free to be scaled down; `spread` picks the one with the
//! fewest, so load spreads. Ties go to the lowest VM id, so a replay always makes the same choice. The
//! explanation goes into [`orchestrator_events::Placement`].

use orchestrator_events::{Labels, Placement, PlacementPolicy, PlacementReason, VmId};

use super::rejection::Rejection;
use super::state::{State, Vm, VmStatus};
use std::collections::BTreeMap;

mod index;
pub use index::{PlacementIndex, IDLE_SETS_KEPT};

/// Chooses as [`choose`] does, from the state's [`PlacementIndex`] when it holds `requirements`
/// (every `starting` session's are), else by walking every VM.
pub fn choose_in(
    state: &State,
    requirements: &Labels,
    policy: PlacementPolicy,
) -> Result<(VmId, Placement), Rejection> {
    match state.placement.choose(&state.vms, requirements, policy) {
        Some(choice) => choice,
        None => choose(&state.vms, requirements, policy).map(|(id, p)| (id.clone(), p)),
    }
}

/// Chooses a VM for a session with `requirements` by `policy`, or explains why none can take it,
/// by walking every VM: the reference the [`PlacementIndex`] must agree with.
pub fn choose<'a>(
    vms: &'a BTreeMap<VmId, Vm>,
    requirements: &Labels,
    policy: PlacementPolicy,
) -> Result<(&'a VmId, Placement), Rejection> {
    let mut candidates = 0u32;
    let mut matching = 0u32;
    let mut eligible = 0u32;
    // (vm, load, tied)
    let mut best: Option<(&VmId, &Vm, u32)> = None;
    for (id, vm) in vms {
        if matches!(vm.status, VmStatus::Retired | VmStatus::Lost) {
            continue;
        }
        candidates += 1;
        if vm.status != VmStatus::Available || !vm.matches(requirements) {
            continue;
        }
        matching += 1;
        if vm.free() == 0 {
            continue;
        }
        eligible += 1;
        best = match best {
            None => Some((id, vm, 1)),
            Some((bid, bvm, tied)) => {
                let better = match policy {
                    PlacementPolicy::Spread => vm.used < bvm.used,
                    PlacementPolicy::Packed | PlacementPolicy::Explicit => vm.used > bvm.used,
                };
                if better {
                    Some((id, vm, 1))
                } else if vm.used == bvm.used {
                    Some((bid, bvm, tied + 1))
                } else {
                    Some((bid, bvm, tied))
                }
            }
        };
    }
    let (id, vm, tied) = best.ok_or(Rejection::NoCapacity {
        candidates,
        matching,
    })?;
    let reason = match policy {
        PlacementPolicy::Spread => PlacementReason::EmptiestWithRoom { tied },
        PlacementPolicy::Packed | PlacementPolicy::Explicit => {
            PlacementReason::FullestWithRoom { tied }
        }
    };
    Ok((
        id,
        Placement {
            policy,
            candidates,
            eligible,
            load_before: vm.used,
            capacity: vm.capacity,
            reason,
            queued: None,
        },
    ))
}

/// Checks that a named VM can take a session, and explains the placement.
pub fn explicit(
    vms: &BTreeMap<VmId, Vm>,
    vm_id: &VmId,
    requirements: &Labels,
) -> Result<Placement, Rejection> {
    let vm = vms.get(vm_id).ok_or_else(|| Rejection::VmNotFound {
        vm_id: vm_id.clone(),
    })?;
    match vm.status {
        VmStatus::Retired => {
            return Err(Rejection::VmRetired {
                vm_id: vm_id.clone(),
            })
        }
        VmStatus::Draining => {
            return Err(Rejection::VmDraining {
                vm_id: vm_id.clone(),
            })
        }
        VmStatus::Lost => {
            return Err(Rejection::invalid_transition(
                super::rejection::Entity::Vm,
                vm_id.as_str(),
                vm.status.as_str(),
                "assign",
            ))
        }
        VmStatus::Available => {}
    }
    if !vm.matches(requirements) {
        let missing = requirements
            .iter()
            .filter(|(k, v)| vm.labels.get(*k) != Some(*v))
            .map(|(k, _)| k.to_string())
            .collect();
        return Err(Rejection::RequirementsNotMet {
            vm_id: vm_id.clone(),
            missing,
        });
    }
    if vm.free() == 0 {
        return Err(Rejection::VmFull {
            vm_id: vm_id.clone(),
            capacity: vm.capacity,
        });
    }
    let candidates = vms
        .values()
        .filter(|v| !matches!(v.status, VmStatus::Retired | VmStatus::Lost))
        .count() as u32;
    Ok(Placement {
        policy: PlacementPolicy::Explicit,
        candidates,
        eligible: 1,
        load_before: vm.used,
        capacity: vm.capacity,
        reason: PlacementReason::Requested,
        queued: None,
    })
}
