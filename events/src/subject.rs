//! NATS subjects and headers of the log.
//!
//! One subject per aggregate, the event type in a header:
//!
//! | what | subject |
//! |---|---|
//! | a session's events | `orch.<cell>.evt.session.<session_id>` |
//! | a VM's events | `orch.<cell>.evt.vm.<vm_id>` |
//! | every event of a cell | `orch.<cell>.evt.>` (the stream's subject filter) |
//! | commands | `orch.<cell>.cmd.<name>` |

use crate::event::{Aggregate, Event};
use crate::ids::CellId;

/// Header naming the event's type, e.g. `SessionStarted`.
pub const EVENT_TYPE_HEADER: &str = "Orch-Event-Type";
/// Header carrying the payload's schema version.
pub const SCHEMA_VERSION_HEADER: &str = "Orch-Schema-Version";

/// The subject an event is published on.
pub fn event_subject(cell: &CellId, event: &Event) -> String {
    match event.aggregate() {
        Aggregate::Session(id) => format!("orch.{cell}.evt.session.{id}"),
        Aggregate::Vm(id) => format!("orch.{cell}.evt.vm.{id}"),
    }
}

/// The subject filter of every event of a cell.
pub fn all_events(cell: &CellId) -> String {
    format!("orch.{cell}.evt.>")
}

/// The subject filter of one session's events.
pub fn session_events(cell: &CellId, session: &crate::ids::SessionId) -> String {
    format!("orch.{cell}.evt.session.{session}")
}

/// The subject a command is sent to, e.g. `orch.default.cmd.start`.
pub fn command_subject(cell: &CellId, name: &str) -> String {
    format!("orch.{cell}.cmd.{name}")
}

/// The name of the JetStream stream holding a cell's events.
pub fn stream_name(cell: &CellId) -> String {
    format!(
        "ORCH_{}",
        cell.as_str().to_ascii_uppercase().replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, VmId};

    #[test]
    fn subjects_per_aggregate() {
        let cell = CellId::default_cell();
        let e = Event::SessionPaused {
            session_id: SessionId::parse("s1").unwrap(),
        };
        assert_eq!(event_subject(&cell, &e), "orch.default.evt.session.s1");
        let e = Event::VmDrained {
            vm_id: VmId::parse("vm-1").unwrap(),
        };
        assert_eq!(event_subject(&cell, &e), "orch.default.evt.vm.vm-1");
        assert_eq!(stream_name(&CellId::parse("eu-1").unwrap()), "ORCH_EU_1");
    }
}
