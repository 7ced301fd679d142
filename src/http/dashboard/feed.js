// The live activity: each event of the feed as one line of a timeline (newest first, the last 200
// kept), with its session as a button that opens the session's history.

const KEEP = 200;

/** The event's payload: `{"SessionEnded": {...}}` → ["SessionEnded", {...}]. */
export function payload(ev) {
  const [[type, body]] = Object.entries(ev.event);
  return [type, body];
}

/** A one-line summary of what happened. */
export function summary(ev) {
  const [type, b] = payload(ev);
  switch (type) {
    case "SessionStarted":
      return `${b.user_id} started ${b.game_id}`;
    case "SessionAssigned":
      return `placed on ${b.vm_id} (${b.placement.policy}, ${b.placement.eligible}/${b.placement.candidates} eligible)`;
    case "SessionEnded":
      return `ended: ${b.reason}${b.vm_id ? ` on ${b.vm_id}` : ""}`;
    case "SessionQueued":
      return `queued until ${new Date(b.deadline).toLocaleTimeString()}`;
    case "VmRegistered":
      return `${b.vm_id} registered with ${b.capacity} slots`;
    case "VmDrained":
      return `${b.vm_id} draining`;
    case "VmRetired":
      return `${b.vm_id} retired`;
    case "VmLost":
      return `${b.vm_id} lost`;
    default:
      return type.replace(/^Session/, "session ").toLowerCase();
  }
}

function actor(a) {
  return a.id ? `${a.kind} ${a.id}` : a.kind;
}

export class ActivityView {
  constructor({ list, onSession }) {
    this.list = list;
    this.onSession = onSession;
  }

  clear() {
    this.list.replaceChildren();
  }

  add(ev) {
    const [, body] = payload(ev);
    const li = document.createElement("li");
    li.dataset.seq = ev.seq;
    li.dataset.type = ev.type;
    const time = document.createElement("time");
    time.dateTime = ev.occurred_at_rfc3339;
    time.textContent = new Date(ev.occurred_at).toLocaleTimeString();
    const type = document.createElement("span");
    type.className = `type t-${ev.type}`;
    type.textContent = ev.type;
    const text = document.createElement("span");
    text.textContent = ` ${summary(ev)} · ${actor(ev.actor)} · #${ev.seq}`;
    li.append(time, " ", type);
    if (body.session_id) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = body.session_id;
      b.setAttribute("aria-label", `History of session ${body.session_id}`);
      b.addEventListener("click", () => this.onSession(body.session_id));
      li.append(" ", b);
    }
    li.append(text);
    this.list.prepend(li);
    while (this.list.children.length > KEEP) this.list.lastElementChild.remove();
  }
}
