//! How the CLI shows and parses times, durations, labels, actors and events.

use std::time::Duration;

use orchestrator_events::ids::{LabelKey, LabelValue};
use orchestrator_events::{Actor, ActorKind, Event, Labels, Placement, PlacementReason, Timestamp};

pub use crate::log::point::{parse_point, parse_time, Point, POINT_FORMATS};

/// An event time as RFC 3339 with milliseconds, UTC.
pub fn time(ms: Timestamp) -> String {
    orchestrator_events::rfc3339(ms)
}

pub use crate::clock::now_ms;

/// A duration in milliseconds, for humans: `1m 2s 30ms`.
pub fn duration(ms: i64) -> String {
    if ms <= 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms.unsigned_abs())).to_string()
}

/// Labels as `k=v,k2=v2`, or `-` when there are none.
pub fn labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `key=value` into a label.
pub fn parse_label(s: &str) -> Result<(LabelKey, LabelValue), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    let k = LabelKey::parse(k).map_err(|e| e.to_string())?;
    let v = LabelValue::parse(v).map_err(|e| e.to_string())?;
    Ok((k, v))
}

/// Parses `kind:id`, kind one of `user`, `operator`, `service`. The `system` actor is the
/// orchestrator's own: the writer refuses it from callers, so the command line does too.
pub fn parse_actor(s: &str) -> Result<Actor, String> {
    let (kind, id) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not kind:id (e.g. operator:alice)"))?;
    if id.is_empty() {
        return Err(format!("{s:?} has an empty id"));
    }
    let kind = match kind {
        "user" => ActorKind::User,
        "operator" => ActorKind::Operator,
        "service" => ActorKind::Service,
        "system" => {
            return Err(
                "the system actor is the orchestrator's own (timers, the queue, lost VMs): \
                 use user, operator or service"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "actor kind {other:?}: expected user, operator or service"
            ))
        }
    };
    Ok(Actor {
        kind,
        id: id.to_owned(),
    })
}

/// Why a VM was chosen, in a phrase.
pub fn placement(p: &Placement) -> String {
    let tie = |tied: u32| {
        if tied > 1 {
            format!(", lowest id among {tied} tied")
        } else {
            String::new()
        }
    };
    let why = match p.reason {
        PlacementReason::Requested => "named by the command".to_owned(),
        PlacementReason::FullestWithRoom { tied } => format!("fullest VM with room{}", tie(tied)),
        PlacementReason::EmptiestWithRoom { tied } => format!("emptiest VM with room{}", tie(tied)),
    };
    let queued = p
        .queued
        .map(|q| {
            format!(
                "; from the placement queue after waiting {}",
                duration(i64::try_from(q.waited_ms).unwrap_or(i64::MAX))
            )
        })
        .unwrap_or_default();
    format!(
        "policy {}: {why}; {} eligible of {} candidates; load {}/{} before{queued}",
        p.policy.as_str(),
        p.eligible,
        p.candidates,
        p.load_before,
        p.capacity
    )
}

/// What an event says, in a line (without its type).
pub fn details(event: &Event) -> String {
    match event {
        Event::SessionStarted {
            session_id,
            user_id,
            game_id,
            requirements,
        } => {
            let mut s = format!("session {session_id}: user {user_id}, game {game_id}");
            if !requirements.is_empty() {
                s.push_str(&format!(", requires {}", labels(requirements)));
            }
            s
        }
        Event::SessionAssigned {
            session_id,
            vm_id,
            placement: p,
        } => format!("session {session_id} on VM {vm_id} ({})", placement(p)),
        Event::SessionPaused { session_id } | Event::SessionResumed { session_id } => {
            format!("session {session_id}")
        }
        Event::SessionEnded {
            session_id,
            reason,
            vm_id,
        } => {
            let on = vm_id
                .as_ref()
                .map(|vm| format!(", VM {vm} freed"))
                .unwrap_or_else(|| ", never placed".to_owned());
            format!("session {session_id}: reason {}{on}", reason.as_str())
        }
        Event::VmRegistered {
            vm_id,
            capacity,
            labels: l,
            heartbeat_ms,
            endpoint,
        } => {
            let beat = heartbeat_ms
                .map(|h| format!(", heartbeat every {}", duration(i64::from(h))))
                .unwrap_or_default();
            let at = endpoint
                .as_ref()
                .map(|e| {
                    let ports: Vec<String> =
                        e.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
                    format!(", endpoint {} {}", e.address, ports.join(","))
                })
                .unwrap_or_default();
            format!(
                "VM {vm_id}: capacity {capacity}, labels {}{beat}{at}",
                labels(l)
            )
        }
        Event::SessionQueued {
            session_id,
            policy,
            deadline,
        } => format!(
            "session {session_id}: waits for room ({}) until {}",
            policy.as_str(),
            time(*deadline)
        ),
        Event::VmLost {
            vm_id,
            last_heartbeat,
        } => match last_heartbeat {
            Some(t) => format!("VM {vm_id}: last heartbeat {}", time(*t)),
            None => format!("VM {vm_id}: no heartbeat since this writer took over"),
        },
        Event::VmDrained { vm_id } | Event::VmRetired { vm_id } => format!("VM {vm_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_sequences_or_times() {
        assert_eq!(parse_point("42"), Ok(Point::Seq(42)));
        assert_eq!(
            parse_point("2026-01-02T03:04:05.678Z"),
            Ok(Point::Time(1_767_323_045_678))
        );
        assert_eq!(
            parse_point("2026-01-02 04:04:05+01:00"),
            Ok(Point::Time(1_767_323_045_000))
        );
        assert!(parse_point("2026-01-02 03:04:05").is_err(), "no zone");
        assert!(parse_actor("robot:x").is_err());
        assert!(
            parse_actor("system:orchestrator").is_err(),
            "the writer's own"
        );
        assert_eq!(time(1_767_323_045_678), "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn actors_and_labels_parse() {
        assert_eq!(parse_actor("user:u-1"), Ok(Actor::user("u-1")));
        assert!(parse_actor("robot:x").is_err());
        assert!(parse_actor("operator:").is_err());
        assert!(parse_actor("alice").is_err());
        let (k, v) = parse_label("region=eu-west").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("region", "eu-west"));
        assert!(parse_label("Region=eu").is_err());
        assert!(parse_label("region").is_err());
        assert_eq!(duration(61_005), "1m 1s 5ms");
    }
}
