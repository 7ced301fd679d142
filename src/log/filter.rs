//! Which events a reader wants: by type, by session, by VM. The SSE feed (`GET /v1/events?type=&
//! session_id=`) and `orchestrator tail --type --session --vm` filter with the same rules.

use std::collections::HashSet;

use orchestrator_events::{Event, EventType, SessionId, VmId};

/// A filter on events; every field set must match (an empty filter keeps everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these types.
    pub types: Option<HashSet<EventType>>,
    /// Only events about this session.
    pub session_id: Option<SessionId>,
    /// Only events that name this VM: its own, and sessions' assignments to it and ends on it.
    pub vm_id: Option<VmId>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        if self
            .types
            .as_ref()
            .is_some_and(|t| !t.contains(&event.event_type()))
        {
            return false;
        }
        if self
            .session_id
            .as_ref()
            .is_some_and(|want| event.session_id() != Some(want))
        {
            return false;
        }
        self.vm_id
            .as_ref()
            .is_none_or(|want| vm_of(event) == Some(want))
    }
}

/// The VM an event names, if any.
pub fn vm_of(event: &Event) -> Option<&VmId> {
    match event {
        Event::SessionAssigned { vm_id, .. }
        | Event::VmRegistered { vm_id, .. }
        | Event::VmDrained { vm_id }
        | Event::VmRetired { vm_id }
        | Event::VmLost { vm_id, .. } => Some(vm_id),
        Event::SessionEnded { vm_id, .. } => vm_id.as_ref(),
        _ => None,
    }
}

/// Parses `SessionStarted,SessionEnded` (names as in the events; blanks between commas ignored).
pub fn parse_types(s: &str) -> Result<HashSet<EventType>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| EventType::parse(t).ok_or_else(|| format!("unknown event type {t:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_and_unknown_ones_are_named() {
        let t = parse_types("SessionStarted, SessionEnded,").unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.contains(&EventType::SessionEnded));
        assert!(parse_types("SessionEnd")
            .unwrap_err()
            .contains("SessionEnd"));
        assert!(EventFilter::default() == EventFilter::default());
    }
}
