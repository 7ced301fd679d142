//! Tests of the domain.
//!
//! - [`bounds`]: every accepted command yields an event within the log's limit.
//! - [`framework`]: the given/when/then harness (after cqrs-es' `TestFramework`) and builders.
//! - [`sessions`]: every session command in every session state, as a table.
//! - [`vms`]: every VM command in every VM state, placement refusals, quota and argument checks.
//! - [`placement`]: the `packed` and `spread` policies and their explanation.
//! - [`idempotency`]: command ids through [`super::handle`], across replays and the window.
//! - [`invariants`]: the invariant checks catch what they claim to.
//! - [`memory`]: what the state keeps of ended sessions and command ids.
//! - [`timers`]: timeouts, the placement queue and lost VMs, with a controlled clock.
//! - [`props`]: proptest over random command sequences.

mod bounds;
mod framework;
mod idempotency;
mod invariants;
mod memory;
mod placement;
mod props;
mod sessions;
mod timers;
mod vms;
