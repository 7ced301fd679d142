//! The pure domain: every session and VM decision, with no I/O, no clock and no randomness.
//!
//! - [`command`]: the commands, their wire request and their digest.
//! - [`rejection`]: why a command is refused, with stable machine-readable codes.
//! - [`state`]: the decision state of one cell: sessions, VMs, per-user counts, seen command ids.
//! - [`decide()`]: `decide(&State, &Command) -> Result<Event, Rejection>`, one event per accepted command.
//! - [`evolve()`]: `evolve(&mut State, seq, &Envelope)`, folding the log into the state.
//! - [`placement`]: the `packed` and `spread` policies, with the explanation recorded in the event,
//!   and the index per requirement set that makes a placement read only the VMs it could use.
//! - [`idempotency`]: command ids seen within a window of event time, restored by a replay.
//! - [`timers`]: timeouts, the placement queue and lost VMs, as commands of the `system` actor.
//! - [`invariants`]: the design's invariants as checks on a state and on an event, for tests and
//!   `orchestrator verify`.
//!
//! [`handle`] puts these together the way the writer uses them: a command id seen before returns the
//! first result, a new one is decided.

pub mod command;
pub mod decide;
pub mod evolve;
pub mod idempotency;
pub mod invariants;
pub mod placement;
pub mod rejection;
pub mod state;
pub mod timeline;
pub mod timers;

#[cfg(test)]
mod tests;

pub use command::{Command, CommandMeta, CommandRequest};
pub use decide::{decide, handle, Decision};
pub use evolve::evolve;
pub use rejection::Rejection;
pub use state::{DomainConfig, Session, SessionStatus, State, Vm, VmStatus};
