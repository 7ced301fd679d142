// A session's history from GET /v1/sessions/{id}/history: each event with its time, actor, reason
// and placement explanation, the time spent in each status, and an "End session" action.

import { get } from "./api.js";
import { payload } from "./feed.js";

export function duration(ms) {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  const m = s / 60;
  if (m < 120) return `${m.toFixed(1)} min`;
  return `${(m / 60).toFixed(1)} h`;
}

function details(type, b) {
  switch (type) {
    case "SessionStarted":
      return `user ${b.user_id}, game ${b.game_id}`;
    case "SessionAssigned": {
      const p = b.placement;
      const reason = Object.keys(p.reason === "requested" ? { requested: 1 } : p.reason)[0];
      const tied = p.reason[reason]?.tied;
      let s = `on ${b.vm_id}: policy ${p.policy}, ${p.eligible} of ${p.candidates} VMs eligible, load ${p.load_before}/${p.capacity} before, reason ${reason.replaceAll("_", " ")}`;
      if (tied > 1) s += ` (${tied} tied, lowest id won)`;
      if (p.queued) s += `; waited ${duration(p.queued.waited_ms)} in the queue`;
      return s;
    }
    case "SessionEnded":
      return `reason ${b.reason}${b.vm_id ? `, freed a slot on ${b.vm_id}` : ""}`;
    case "SessionQueued":
      return `policy ${b.policy}, deadline ${new Date(b.deadline).toLocaleString()}`;
    default:
      return "";
  }
}

export class HistoryView {
  constructor({ box, onEnd, onError }) {
    Object.assign(this, { box, onEnd, onError });
    this.sessionId = null;
  }

  async open(id) {
    this.sessionId = id;
    try {
      const h = await get(`/v1/sessions/${encodeURIComponent(id)}/history`);
      if (this.sessionId === id) this.render(h);
    } catch (e) {
      this.onError(e);
    }
  }

  refresh() {
    if (this.sessionId) this.open(this.sessionId);
  }

  render(h) {
    const box = this.box;
    box.hidden = false;
    box.querySelector("[data-field=id]").textContent = h.session_id;
    box.querySelector("[data-field=status]").textContent = h.status;
    box.dataset.sessionId = h.session_id;
    box.dataset.status = h.status;
    const tbody = box.querySelector("tbody");
    tbody.replaceChildren(
      ...h.events.map((e) => {
        const [type, b] = payload(e);
        const tr = document.createElement("tr");
        const cells = [
          new Date(e.occurred_at).toLocaleTimeString(),
          type,
          e.actor.id ? `${e.actor.kind} ${e.actor.id}` : e.actor.kind,
          details(type, b),
          e.status,
          duration(e.ms_in_previous_status),
        ];
        for (const c of cells) {
          const td = document.createElement("td");
          td.textContent = c;
          tr.append(td);
        }
        return tr;
      }),
    );
    const times = box.querySelector("[data-field=times]");
    times.textContent = Object.entries(h.time_in_status_ms)
      .map(([status, ms]) => `${status} ${duration(ms)}`)
      .join(" · ");
    const end = box.querySelector("button[data-action=end]");
    end.disabled = h.status === "ended";
    end.onclick = () => this.onEnd(h.session_id);
  }
}
