#!/usr/bin/env python3
"""Time in each state per game, from the orchestrator's JSON feed (CloudEvents on NATS JetStream).

Attaches a durable pull consumer to the feed stream ORCH_<CELL>_FEED, folds every event into the
time each game's sessions spent starting, active and paused, and acks after processing.

Delivery: JetStream gives at least once (a message not acked is delivered again, after newer ones).
With --state FILE this consumer makes it exactly once and in order: each batch is processed, its
output written and flushed, the state (analytics, the last log sequence, the feed stream position)
saved atomically, and only then acked. A message whose log `sequence` is not above the saved one is
a redelivery and is skipped; on a start that finds the durable consumer elsewhere than the state
(messages delivered and never acked when the previous run died), the consumer is recreated at the
state's position, so nothing is skipped, repeated or reordered. Without --state it is at least once.

Usage:
    python feed_analytics.py --server nats://127.0.0.1:4333 --state state.json --report
    python feed_analytics.py --ids-out ids.txt --state state.json --until-idle 3
"""

import argparse
import asyncio
import calendar
import json
import os
import signal
import sys
import time
from datetime import datetime

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

STATES = ("starting", "active", "paused")

# The state a session is in after each event type; None: the session is over.
NEXT_STATE = {
    "SessionStarted": "starting",
    "SessionQueued": "starting",
    "SessionAssigned": "active",
    "SessionResumed": "active",
    "SessionPaused": "paused",
    "SessionEnded": None,
}


def millis(rfc3339):
    """Milliseconds since the Unix epoch of an RFC 3339 UTC time such as 2023-11-14T22:13:20.123Z."""
    t = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return calendar.timegm(t.utctimetuple()) * 1000 + t.microsecond // 1000


class Analytics:
    """Time in each state per game, exact to the millisecond of the events.

    A session is `starting` from its SessionStarted (a SessionQueued keeps it there) until its
    SessionAssigned, `active` until a SessionPaused or its SessionEnded, `paused` until a
    SessionResumed or its SessionEnded. Each interval runs from the `time` of the event that entered
    the state to the `time` of the event that left it. Sessions not ended yet count up to the time
    of the latest event seen (`as_of`). Events of sessions whose SessionStarted this consumer never
    saw (expired from the feed before it attached) are counted in `unknown_session_events`.
    """

    def __init__(self, saved=None):
        saved = saved or {}
        self.games = saved.get("games", {})
        self.sessions = saved.get("sessions", {})
        self.as_of = saved.get("as_of")
        self.unknown = saved.get("unknown_session_events", 0)

    def apply(self, event):
        kind = event["type"]
        at = millis(event["time"])
        self.as_of = at if self.as_of is None else max(self.as_of, at)
        if kind not in NEXT_STATE:
            return  # VM events
        sid = event["subject"]
        if kind == "SessionStarted":
            game = event["data"]["SessionStarted"]["game_id"]
            self.sessions[sid] = {"game": game, "state": "starting", "since": at}
            self.game(game)["sessions"] += 1
            return
        session = self.sessions.get(sid)
        if session is None:
            self.unknown += 1
            return
        following = NEXT_STATE[kind]
        if following == session["state"]:
            return
        self.game(session["game"])[session["state"] + "_ms"] += at - session["since"]
        if following is None:
            del self.sessions[sid]
        else:
            session["state"], session["since"] = following, at

    def game(self, game):
        return self.games.setdefault(
            game, {"sessions": 0, "starting_ms": 0, "active_ms": 0, "paused_ms": 0}
        )

    def report(self):
        """Totals per game, open sessions counted up to `as_of`."""
        totals = {g: dict(t) for g, t in self.games.items()}
        for s in self.sessions.values():
            totals[s["game"]][s["state"] + "_ms"] += self.as_of - s["since"]
        return {"as_of": self.as_of, "games": dict(sorted(totals.items()))}

    def saved(self):
        return {
            "games": self.games,
            "sessions": self.sessions,
            "as_of": self.as_of,
            "unknown_session_events": self.unknown,
        }


def load_state(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def save_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def attach(js, stream, durable, subject, stream_seq):
    """The durable pull consumer, recreated at `stream_seq + 1` when it is elsewhere than the state."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        info = None
    if info is not None and stream_seq is not None:
        if info.num_ack_pending or info.ack_floor.stream_seq != stream_seq:
            print(
                f"consumer {durable} at {info.ack_floor.stream_seq} with "
                f"{info.num_ack_pending} unacked, state at {stream_seq}: recreating it there",
                file=sys.stderr,
            )
            await js.delete_consumer(stream, durable)
            info = None
    if info is None:
        start = (stream_seq or 0) + 1
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if start == 1 else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if start == 1 else start,
            max_ack_pending=10_000,
            ack_wait=30,
        )
        await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable, stream=stream)


async def run(args):
    stream = "ORCH_" + args.cell.upper().replace("-", "_") + "_FEED"
    subject = args.filter or f"orch.{args.cell}.feed.>"
    saved = load_state(args.state)
    analytics = Analytics(saved.get("analytics"))
    last_sequence = saved.get("last_sequence", 0)
    out = None
    if args.ids_out:
        out = open(args.ids_out, "a+b")
        if args.state:
            # Lines written after the last saved state belong to a batch processed again.
            out.truncate(saved.get("out_len", 0))
        out.seek(0, os.SEEK_END)

    nc = await nats.connect(args.server, name="feed analytics example")
    js = nc.jetstream()
    psub = await attach(js, stream, args.durable, subject, saved.get("stream_seq"))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    idle_since = None  # when the current run of empty fetches began (monotonic seconds)
    while not stopping.is_set():
        try:
            msgs = await psub.fetch(args.batch, timeout=1)
        except (NatsTimeout, asyncio.TimeoutError):
            # nats-py raises its own TimeoutError, or asyncio's when a fetch expires while the
            # consumer is still starting.
            msgs = []
        if not msgs:
            # Nothing came (a fetch can also come back empty at once right after the consumer was
            # recreated, seen on nats-server 2.15): idle, measured in time, not in fetches.
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if args.until_idle and now - idle_since >= args.until_idle:
                break
            await asyncio.sleep(0.05)
            continue
        idle_since = None
        lines = []
        for msg in msgs:
            event = json.loads(msg.data)
            sequence = int(event["sequence"])
            if sequence <= last_sequence:
                continue  # delivered again: processed before
            analytics.apply(event)
            last_sequence = sequence
            lines.append(f"{sequence} {event['id']}\n")
        if out is not None and lines:
            out.write("".join(lines).encode())
            out.flush()
            os.fsync(out.fileno())
        if args.print_ids:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
        if args.state:
            save_state(
                args.state,
                {
                    "last_sequence": last_sequence,
                    "stream_seq": msgs[-1].metadata.sequence.stream,
                    "out_len": out.tell() if out is not None else 0,
                    "analytics": analytics.saved(),
                },
            )
        for msg in msgs:
            await msg.ack()

    await nc.flush()  # the acks leave before the connection closes
    await nc.close()
    if out is not None:
        out.close()
    if args.report:
        print(json.dumps(analytics.report(), indent=2))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="nats://127.0.0.1:4333")
    p.add_argument("--cell", default="default")
    p.add_argument("--durable", default="analytics", help="the durable consumer's name")
    p.add_argument("--filter", help="a subject filter (default: the whole feed)")
    p.add_argument("--state", help="state file: exactly once across restarts")
    p.add_argument("--ids-out", help="append '<sequence> <id>' per event to this file")
    p.add_argument("--print-ids", action="store_true", help="print '<sequence> <id>' per event")
    p.add_argument("--batch", type=int, default=500, help="messages per fetch")
    p.add_argument("--until-idle", type=float, help="exit after this many seconds without messages")
    p.add_argument("--report", action="store_true", help="print the time in each state per game")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
