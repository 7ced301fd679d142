//! Usage for billing: the time the sessions of each user, game or VM spent in each status
//! (`starting`, `active`, `paused`) within a window of event time, as a pure fold over the log's
//! events. Exact to the millisecond of the events' `occurred_at`.
//!
//! The definitions (also in docs/analytics.md):
//! - A session is in a status from the time of the event that put it there (`SessionStarted`:
//!   `starting`; `SessionAssigned`, `SessionResumed`: `active`; `SessionPaused`: `paused`) until the
//!   time of the next event that changes it; `SessionEnded` ends it. [`status_after`] is the rule, the
//!   same one `history` uses.
//! - Each such interval is clipped to the window `[from, to)`: a session started before `from`
//!   counts from `from`, one still open at `to` counts up to `to`.
//! - By VM, a session's time counts for its VM only while it is assigned to it, from its
//!   `SessionAssigned` to its end (`active` and `paused`). Its `starting` time, before any VM, is
//!   reported apart as `unattributed`.
//! - A row's `sessions` counts the sessions that spent more than 0 ms of the window in that row.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use orchestrator_events::{Event, GameId, SessionId, Timestamp, UserId, VmId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::window::Window;
use crate::domain::timeline::{status_after, TimeInStatus};
use crate::domain::SessionStatus;
use crate::log::point::format_time;

/// What the usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The session's user.
    User,
    /// The session's game.
    Game,
    /// The VM the session is assigned to (only while it is).
    Vm,
}

impl GroupBy {
    /// As on the command line and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Game => "game",
            GroupBy::Vm => "vm",
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(GroupBy::User),
            "game" => Ok(GroupBy::Game),
            "vm" => Ok(GroupBy::Vm),
            other => Err(format!("{other:?}: expected user, game or vm")),
        }
    }
}

/// One user's, game's or VM's usage in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRow {
    /// The user, game or VM id.
    pub key: String,
    /// Sessions that spent more than 0 ms of the window in this row.
    pub sessions: u64,
    /// Milliseconds in each status, within the window.
    pub time_ms: TimeInStatus,
}

/// The usage of a window, grouped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageReport {
    /// What the rows are.
    pub by: GroupBy,
    /// The window's start (inclusive), RFC 3339.
    pub from: String,
    /// The window's start, in milliseconds since the Unix epoch.
    pub from_ms: Timestamp,
    /// The window's end (exclusive), RFC 3339.
    pub to: String,
    /// The window's end, in milliseconds since the Unix epoch.
    pub to_ms: Timestamp,
    /// One row per user, game or VM with time in the window, sorted by key.
    pub rows: Vec<UsageRow>,
    /// By VM only: the time of sessions on no VM (`starting`, before their placement); its
    /// `key` is empty. Absent by user and by game, where every session has a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattributed: Option<UsageRow>,
    /// The sum of the rows and of `unattributed` (`key` `total`; `sessions` counts each session
    /// once).
    pub total: UsageRow,
    /// Events read to compute it.
    pub events_read: u64,
    /// The last stream sequence read (0: none).
    pub last_seq: u64,
}

/// A session not ended, as the fold follows it.
#[derive(Debug, Clone)]
struct Live {
    user: UserId,
    game: GameId,
    vm: Option<VmId>,
    status: SessionStatus,
    /// When it entered `status`.
    since: Timestamp,
    /// Whether it has been counted in its row's `sessions` (its row never changes by user or game;
    /// by VM it changes once, from unattributed to its VM, and the flag is reset then).
    counted: bool,
    /// Whether it has been counted in the total's `sessions`.
    counted_total: bool,
}

/// The fold: feed it the log's events in order with [`UsageFold::apply`], then
/// [`UsageFold::finish`]. Holds only the sessions not ended, and one tally per row.
#[derive(Debug, Clone)]
pub struct UsageFold {
    window: Window,
    by: GroupBy,
    live: HashMap<SessionId, Live>,
    rows: BTreeMap<String, UsageRow>,
    unattributed: UsageRow,
    total: UsageRow,
    events_read: u64,
    last_seq: u64,
}

impl UsageFold {
    /// An empty fold of `window`, grouped `by`.
    pub fn new(window: Window, by: GroupBy) -> Self {
        Self {
            window,
            by,
            live: HashMap::new(),
            rows: BTreeMap::new(),
            unattributed: UsageRow::default(),
            total: UsageRow {
                key: "total".to_owned(),
                ..UsageRow::default()
            },
            events_read: 0,
            last_seq: 0,
        }
    }

    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Folds in the event stored at `seq`, which happened `at`. Events must come in log order;
    /// events that do not fit (a second start of a session, a change of an unknown one) change
    /// nothing, as in [`crate::domain::evolve()`].
    pub fn apply(&mut self, seq: u64, at: Timestamp, event: &Event) {
        self.events_read += 1;
        self.last_seq = seq;
        if let Event::SessionStarted {
            session_id,
            user_id,
            game_id,
            ..
        } = event
        {
            self.live.entry(session_id.clone()).or_insert_with(|| Live {
                user: user_id.clone(),
                game: game_id.clone(),
                vm: None,
                status: SessionStatus::Starting,
                since: at,
                counted: false,
                counted_total: false,
            });
            return;
        }
        let Some(id) = event.session_id() else {
            return;
        };
        let Some(mut live) = self.live.remove(id) else {
            return;
        };
        self.charge(&mut live, at);
        live.status = status_after(event, live.status);
        live.since = at;
        if let Event::SessionAssigned { vm_id, .. } = event {
            live.vm = Some(vm_id.clone());
            if self.by == GroupBy::Vm {
                live.counted = false;
            }
        }
        if live.status != SessionStatus::Ended {
            self.live.insert(id.clone(), live);
        }
    }

    /// Counts the sessions still open up to the window's end, and returns the report.
    pub fn finish(mut self) -> UsageReport {
        let to = self.window.to;
        let mut live = std::mem::take(&mut self.live);
        for s in live.values_mut() {
            self.charge(s, to);
        }
        let unattributed = (self.by == GroupBy::Vm).then_some(self.unattributed);
        UsageReport {
            by: self.by,
            from: format_time(self.window.from),
            from_ms: self.window.from,
            to: format_time(self.window.to),
            to_ms: self.window.to,
            rows: self.rows.into_values().collect(),
            unattributed,
            total: self.total,
            events_read: self.events_read,
            last_seq: self.last_seq,
        }
    }

    /// Charges the session's time in its current status from `since` to `until`, clipped to the
    /// window, to its row.
    fn charge(&mut self, s: &mut Live, until: Timestamp) {
        let ms = self.window.overlap(s.since, until);
        if ms == 0 {
            return;
        }
        let key = match self.by {
            GroupBy::User => Some(s.user.as_str()),
            GroupBy::Game => Some(s.game.as_str()),
            GroupBy::Vm if s.status.holds_slot() => s.vm.as_ref().map(VmId::as_str),
            GroupBy::Vm => None,
        };
        let row = match key {
            Some(key) => self.rows.entry(key.to_owned()).or_insert_with(|| UsageRow {
                key: key.to_owned(),
                ..UsageRow::default()
            }),
            None => &mut self.unattributed,
        };
        row.time_ms.add(s.status, ms);
        self.total.time_ms.add(s.status, ms);
        if !s.counted {
            row.sessions += 1;
            s.counted = true;
        }
        if !s.counted_total {
            self.total.sessions += 1;
            s.counted_total = true;
        }
    }
}
