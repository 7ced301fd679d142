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
//!
//! The JSON feed (CloudEvents 1.0, structured mode) republishes every event into a stream of its
//! own, with the event type in the subject so that consumers filter by type as well as by aggregate:
//!
//! | what | subject |
//! |---|---|
//! | a session's events | `orch.<cell>.feed.<EventType>.session.<session_id>` |
//! | a VM's events | `orch.<cell>.feed.<EventType>.vm.<vm_id>` |
//! | one session, every type | `orch.<cell>.feed.*.session.<session_id>` ([`feed_session_filter`]) |
//! | one VM, every type | `orch.<cell>.feed.*.vm.<vm_id>` ([`feed_vm_filter`]) |
//! | one type | `orch.<cell>.feed.<EventType>.>` ([`feed_type_filter`]) |
//! | every feed message of a cell | `orch.<cell>.feed.>` (the feed stream's subject filter) |

use crate::event::{Aggregate, Event, EventType};
use crate::ids::{CellId, SessionId, VmId};

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

/// The name of the JetStream stream holding a cell's JSON feed, e.g. `ORCH_DEFAULT_FEED`.
pub fn feed_stream_name(cell: &CellId) -> String {
    format!("{}_FEED", stream_name(cell))
}

/// The subject an event's feed message is published on:
/// `orch.<cell>.feed.<EventType>.session.<id>` or `orch.<cell>.feed.<EventType>.vm.<id>`.
pub fn feed_subject(cell: &CellId, event: &Event) -> String {
    let kind = event.event_type();
    match event.aggregate() {
        Aggregate::Session(id) => format!("orch.{cell}.feed.{kind}.session.{id}"),
        Aggregate::Vm(id) => format!("orch.{cell}.feed.{kind}.vm.{id}"),
    }
}

/// The subject filter of every feed message of a cell (the feed stream's subjects).
pub fn all_feed(cell: &CellId) -> String {
    format!("orch.{cell}.feed.>")
}

/// The subject filter of one session's feed messages, of every type.
pub fn feed_session_filter(cell: &CellId, session: &SessionId) -> String {
    format!("orch.{cell}.feed.*.session.{session}")
}

/// The subject filter of one VM's feed messages, of every type.
pub fn feed_vm_filter(cell: &CellId, vm: &VmId) -> String {
    format!("orch.{cell}.feed.*.vm.{vm}")
}

/// The subject filter of the feed messages of one event type.
pub fn feed_type_filter(cell: &CellId, event_type: EventType) -> String {
    format!("orch.{cell}.feed.{event_type}.>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EndReason;

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

    /// Whether a subject filter (with `*` and a trailing `>`) matches a subject, as NATS does.
    fn matches(filter: &str, subject: &str) -> bool {
        let (f, s): (Vec<_>, Vec<_>) = (filter.split('.').collect(), subject.split('.').collect());
        for (i, token) in f.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    #[test]
    fn feed_subjects_carry_the_type_and_the_aggregate() {
        let cell = CellId::parse("eu-1").unwrap();
        let s1 = SessionId::parse("s1").unwrap();
        let vm = VmId::parse("vm-1").unwrap();
        let ended = Event::SessionEnded {
            session_id: s1.clone(),
            reason: EndReason::User,
            vm_id: None,
        };
        let drained = Event::VmDrained { vm_id: vm.clone() };
        let ended_subject = feed_subject(&cell, &ended);
        let drained_subject = feed_subject(&cell, &drained);
        assert_eq!(ended_subject, "orch.eu-1.feed.SessionEnded.session.s1");
        assert_eq!(drained_subject, "orch.eu-1.feed.VmDrained.vm.vm-1");
        assert_eq!(feed_stream_name(&cell), "ORCH_EU_1_FEED");
        assert_eq!(all_feed(&cell), "orch.eu-1.feed.>");

        let by_session = feed_session_filter(&cell, &s1);
        let by_vm = feed_vm_filter(&cell, &vm);
        let by_type = feed_type_filter(&cell, EventType::SessionEnded);
        assert_eq!(by_session, "orch.eu-1.feed.*.session.s1");
        assert_eq!(by_vm, "orch.eu-1.feed.*.vm.vm-1");
        assert_eq!(by_type, "orch.eu-1.feed.SessionEnded.>");
        for (filter, ended_in, drained_in) in [
            (&by_session, true, false),
            (&by_vm, false, true),
            (&by_type, true, false),
            (&all_feed(&cell), true, true),
        ] {
            assert_eq!(matches(filter, &ended_subject), ended_in, "{filter}");
            assert_eq!(matches(filter, &drained_subject), drained_in, "{filter}");
        }
        let other = feed_subject(
            &cell,
            &Event::SessionPaused {
                session_id: SessionId::parse("s10").unwrap(),
            },
        );
        assert!(!matches(&by_session, &other), "s1 is not a prefix match");
    }
}
