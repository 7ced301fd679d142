//! `GET /v1/events`: the log as Server-Sent Events.
//!
//! Each event's `id:` is its stream sequence and its `data:` a [`LogEvent`] (the envelope JSON
//! plus `seq` and `type`); the SSE event name is left as the default (`message`), so a browser's
//! `EventSource.onmessage` sees them all. A client resumes with `Last-Event-ID` (the next event
//! after it) or `?from=<seq>` (that event on); with neither, only events appended from now on
//! come. `?type=SessionStarted,SessionEnded` and `?session_id=` filter. A player sees only their own
//! sessions' events (no VM events), and of other actors only the kind
//! ([`ActorView`](super::types::ActorView)); operators and services see everything.
//!
//! If the log cannot be read any more, one `event: problem` carrying a problem is sent and the
//! feed ends: reconnect with `Last-Event-ID`. The feed also ends when the bridge shuts down.
//!
//! Feeds are capped per caller and in all ([`super::feeds`]: 429 `too_many_feeds`), and read the
//! log on a NATS connection of their own, so a slow feed never holds up commands.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use orchestrator_events::{Endpoint, Event, EventType, SessionId, UserId};

use super::auth::Auth;
use super::errors::ApiError;
use super::extract::ApiQuery;
use super::feeds::FeedSlot;
use super::sessions::visible_session;
use super::state::AppState;
use super::tokens::Principal;
use super::types::{EventsQuery, LogEvent};
use crate::log::filter::EventFilter;
use crate::log::{EventStream, LogError, StoredEvent};
use crate::projections::Projections;

/// Ownership answers remembered per feed before the memory is cleared.
const MAX_REMEMBERED: usize = 100_000;

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Unavailable(m) => ApiError::Unavailable(m),
        other => ApiError::Internal(format!("opening the event feed: {other}")),
    }
}

/// Parses `SessionStarted,SessionEnded` ([`crate::log::filter::parse_types`]).
fn parse_types(s: &str) -> Result<HashSet<EventType>, ApiError> {
    crate::log::filter::parse_types(s).map_err(|e| ApiError::Malformed(format!("{e} in `type`")))
}

struct Feed {
    events: EventStream,
    player: Option<UserId>,
    /// Who reads the feed: what each event shows depends on it.
    viewer: Principal,
    /// The `type` and `session_id` filters, as `tail` applies them too.
    filter: EventFilter,
    store: Projections,
    wait: Duration,
    owned: HashMap<SessionId, bool>,
    /// The feed's place under the caps, given back when the feed is dropped.
    _slot: FeedSlot,
}

impl Feed {
    async fn keep(&mut self, ev: &StoredEvent) -> bool {
        let event = &ev.envelope.event;
        if !self.filter.matches(event) {
            return false;
        }
        let Some(me) = &self.player else {
            return true;
        };
        if self.owned.len() > MAX_REMEMBERED {
            self.owned.clear();
        }
        if let Event::SessionStarted {
            session_id,
            user_id,
            ..
        } = event
        {
            let mine = user_id == me;
            self.owned.insert(session_id.clone(), mine);
            return mine;
        }
        let Some(id) = event.session_id() else {
            return false;
        };
        if let Some(mine) = self.owned.get(id) {
            return *mine;
        }
        // The session started before this feed began: ask the projections, which have the start
        // by the time they reach this event.
        let mut view = self.store.session(id).ok().flatten();
        if view.is_none() && self.store.wait_for(ev.seq, self.wait).await.is_ok() {
            view = self.store.session(id).ok().flatten();
        }
        let mine = view.is_some_and(|v| &v.user_id == me);
        self.owned.insert(id.clone(), mine);
        mine
    }
}

/// Where the client of an assigned session connects: the VM's endpoint, from the projections
/// (which have the VM's registration by the time they reach the assignment).
async fn endpoint(store: Projections, wait: Duration, ev: &StoredEvent) -> Option<Endpoint> {
    let Event::SessionAssigned { vm_id, .. } = &ev.envelope.event else {
        return None;
    };
    let mut vm = store.vm(vm_id).ok().flatten();
    if vm.is_none() && store.wait_for(ev.seq, wait).await.is_ok() {
        vm = store.vm(vm_id).ok().flatten();
    }
    vm.and_then(|v| v.endpoint)
}

fn sse_event(ev: StoredEvent, viewer: &Principal, endpoint: Option<Endpoint>) -> SseEvent {
    let seq = ev.seq;
    let mut data = LogEvent::new(seq, ev.envelope, viewer);
    data.endpoint = endpoint;
    // A LogEvent is plain data: JSON encoding cannot fail; fall back to an empty event if it did.
    SseEvent::default()
        .id(seq.to_string())
        .json_data(&data)
        .unwrap_or_else(|_| SseEvent::default().id(seq.to_string()))
}

fn problem_event(e: LogError) -> SseEvent {
    tracing::warn!(error = %e, "event feed ended by a log error");
    let problem = log_error(e).problem();
    SseEvent::default()
        .event("problem")
        .json_data(&problem)
        .unwrap_or_else(|_| SseEvent::default().event("problem"))
}

/// `GET /v1/events`.
pub async fn events(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let types = q.types.as_deref().map(parse_types).transpose()?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::Malformed("Last-Event-ID must be a stream sequence".into())
                })
        })
        .transpose()?;
    if let (Some(id), Some(_)) = (&q.session_id, auth.0.player()) {
        visible_session(&state, &auth, id).await?;
    }
    let s = state.get();
    let slot = s.feeds.acquire(&auth.0.key())?;
    let start = match (last_event_id, q.from) {
        (Some(id), _) => id.saturating_add(1),
        (None, Some(from)) => from.max(1),
        (None, None) => s.feed_reader.last_seq().await.map_err(log_error)? + 1,
    };
    let events = s.feed_reader.read_from(start).await.map_err(log_error)?;
    tracing::debug!(start, principal = %auth.0.key(), "event feed opened");
    let feed = Feed {
        events,
        player: auth.0.player(),
        viewer: auth.0.clone(),
        filter: EventFilter {
            types,
            session_id: q.session_id,
            vm_id: None,
        },
        store: s.store.clone(),
        wait: s.ryw_timeout,
        owned: HashMap::new(),
        _slot: slot,
    };
    let stream = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        loop {
            match feed.events.next().await? {
                Ok(ev) => {
                    if feed.keep(&ev).await {
                        let endpoint = endpoint(feed.store.clone(), feed.wait, &ev).await;
                        return Some((Ok(sse_event(ev, &feed.viewer, endpoint)), Some(feed)));
                    }
                }
                Err(e) => return Some((Ok(problem_event(e)), None)),
            }
        }
    })
    .take_until(s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
