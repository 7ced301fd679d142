// The dashboard's entry point: sign-in, the live model of the pool (loaded from GET /v1/vms and
// /v1/capacity, then kept up to date from the event feed), the actions, and the wiring between the
// views. See docs/dashboard.md.

import * as api from "./api.js";
import { PoolView, LEGEND, label } from "./pool.js";
import { ActivityView, payload } from "./feed.js";
import { HistoryView, duration } from "./history.js";
import { TimeTravel } from "./travel.js";
import { Charts } from "./charts.js";

const $ = (id) => document.getElementById(id);

/** The live pool: VMs by id (with the sequence of their last event), the session totals. */
const live = { vms: new Map(), sorted: null, lastSeq: 0, totals: null };
let feedAbort = null;
let totalsTimer = null;
let selected = null;

function showError(e) {
  const box = $("error");
  const code = e?.problem?.code ? ` [${e.problem.code}]` : "";
  box.querySelector("p").textContent = `${e?.message || e}${code}`;
  box.hidden = false;
  console.error(e);
}

function showResult(text, problem) {
  const out = $("action-result");
  out.textContent = text;
  out.classList.toggle("bad", Boolean(problem));
}

function sortedVms() {
  if (!live.sorted) {
    live.sorted = [...live.vms.values()].sort((a, b) => (a.vm_id < b.vm_id ? -1 : a.vm_id > b.vm_id ? 1 : 0));
  }
  return live.sorted;
}

function renderTotals({ counts, queued, oldest, capacity, used, asOf }) {
  for (const s of ["starting", "active", "paused", "ended"]) {
    $(`n-${s}`).textContent = String(counts[s] ?? 0);
  }
  $("n-queued").textContent = String(queued);
  $("n-oldest").textContent = oldest == null ? "–" : duration(Math.max(0, Date.now() - oldest));
  $("n-slots").textContent = `${used}/${capacity}`;
  $("as-of").textContent = asOf;
}

function liveTotals() {
  const c = live.totals;
  if (!c) return;
  renderTotals({
    counts: c.sessions,
    queued: c.queued,
    oldest: c.oldest_queued_since,
    capacity: c.capacity,
    used: c.used,
    asOf: `live, sequence ${live.lastSeq}`,
  });
}

async function refreshTotals() {
  try {
    live.totals = await api.get("/v1/capacity");
    if (travel.live) liveTotals();
  } catch (e) {
    showError(e);
  }
}

function scheduleTotals() {
  clearTimeout(totalsTimer);
  totalsTimer = setTimeout(refreshTotals, 250);
}

/** Folds one event of the feed into the live pool (each VM remembers its last event's sequence). */
function apply(ev) {
  const [type, b] = payload(ev);
  live.lastSeq = Math.max(live.lastSeq, ev.seq);
  let vm = b.vm_id ? live.vms.get(b.vm_id) : null;
  if (vm && ev.seq <= vm.last_seq) return false;
  switch (type) {
    case "VmRegistered":
      if (!vm) live.sorted = null;
      vm = { vm_id: b.vm_id, status: "available", used: 0, capacity: b.capacity, labels: b.labels };
      live.vms.set(b.vm_id, vm);
      break;
    case "VmDrained":
    case "VmRetired":
    case "VmLost":
      if (!vm) return false;
      vm.status = { VmDrained: "draining", VmRetired: "retired", VmLost: "lost" }[type];
      break;
    case "SessionAssigned":
      if (!vm) return false;
      vm.used += 1;
      break;
    case "SessionEnded":
      if (!vm) return false;
      vm.used = Math.max(0, vm.used - 1);
      break;
    default:
      return false;
  }
  vm.last_seq = ev.seq;
  return true;
}

function showLive() {
  pool.show(sortedVms());
  liveTotals();
  if (selected) showSelected(live.vms.get(selected) || null);
}

async function startFeed() {
  feedAbort?.abort();
  const abort = new AbortController();
  feedAbort = abort;
  let last = null;
  let from = Math.max(1, live.lastSeq - 49);
  while (!abort.signal.aborted) {
    $("conn").textContent = "Live";
    const path = last == null ? `/v1/events?from=${from}` : "/v1/events";
    try {
      await api.feed(
        path,
        last,
        (id, ev) => {
          last = id;
          activity.add(ev);
          const changed = apply(ev);
          travel.extend(live.lastSeq);
          if (travel.live) {
            if (changed) showLive();
            scheduleTotals();
          }
          if (history.sessionId && b(ev).session_id === history.sessionId) history.refresh();
        },
        (problem) => showError(new api.ApiError(problem.status || 503, problem)),
        abort.signal,
      );
    } catch (e) {
      if (abort.signal.aborted) return;
      showError(e);
      if (e.status === 401 || e.status === 403) return signOut();
    }
    if (abort.signal.aborted) return;
    $("conn").textContent = "Feed interrupted; reconnecting…";
    await new Promise((r) => setTimeout(r, 2000));
    from = live.lastSeq + 1;
  }
}

function b(ev) {
  return payload(ev)[1];
}

async function loadLive() {
  const [list, capacity] = await Promise.all([api.get("/v1/vms"), api.get("/v1/capacity")]);
  live.vms = new Map(list.vms.map((v) => [v.vm_id, v]));
  live.sorted = null;
  live.lastSeq = Math.max(list.as_of_seq, capacity.as_of_seq);
  live.totals = capacity;
  travel.extend(live.lastSeq);
  showLive();
}

function showSelected(vm) {
  const box = $("selected");
  if (!vm) {
    box.querySelector("[data-field=vm]").textContent = "None: pick a cell of the grid or a row of the table.";
    box.querySelectorAll("button").forEach((x) => (x.disabled = true));
    delete box.dataset.vmId;
    return;
  }
  box.dataset.vmId = vm.vm_id;
  box.querySelector("[data-field=vm]").textContent = label(vm);
  const canAct = travel.live;
  $("drain").disabled = !canAct || vm.status !== "available";
  $("retire").disabled = !canAct || !["available", "draining"].includes(vm.status);
  $("vm-sessions").disabled = false;
}

async function vmCommand(action) {
  if (!selected) return;
  showResult(`Sending ${action} for ${selected}…`);
  try {
    const { status, body } = await api.command(`/v1/vms/${encodeURIComponent(selected)}/${action}`);
    const ev = body.events.map((e) => `${e.type} (sequence ${e.seq})`).join(", ");
    showResult(`${status}: ${ev}${body.pending ? ` — ${body.pending}` : ""}`);
  } catch (e) {
    showResult(`${action} refused: ${e.message}${e.problem?.code ? ` [${e.problem.code}]` : ""}`, true);
  }
}

async function endSession(id) {
  showResult(`Ending ${id}…`);
  try {
    const { status, body } = await api.command(`/v1/sessions/${encodeURIComponent(id)}/end`, { reason: "operator" });
    showResult(`${status}: ${body.events.map((e) => `${e.type} (sequence ${e.seq})`).join(", ")}`);
    history.refresh();
  } catch (e) {
    showResult(`End refused: ${e.message}${e.problem?.code ? ` [${e.problem.code}]` : ""}`, true);
  }
}

async function vmSessions() {
  if (!selected) return;
  const list = $("vm-session-list");
  try {
    const page = await api.get(`/v1/sessions?vm_id=${encodeURIComponent(selected)}&limit=50`);
    list.replaceChildren(
      ...page.sessions.map((s) => {
        const li = document.createElement("li");
        const btn = document.createElement("button");
        btn.type = "button";
        btn.className = "link";
        btn.textContent = `${s.session_id} (${s.status}, ${s.user_id})`;
        btn.addEventListener("click", () => history.open(s.session_id));
        li.append(btn);
        return li;
      }),
    );
    if (!page.sessions.length) list.textContent = "No sessions on this VM.";
  } catch (e) {
    showError(e);
  }
}

const pool = new PoolView({
  canvas: $("pool"),
  tooltip: $("tooltip"),
  announce: $("pool-cursor"),
  table: $("vm-table"),
  filter: $("vm-filter"),
  shown: $("vm-shown"),
  onSelect: (vm) => {
    selected = vm.vm_id;
    $("vm-session-list").replaceChildren();
    showSelected(vm);
  },
});
const activity = new ActivityView({ list: $("feed"), onSession: (id) => history.open(id) });
const history = new HistoryView({ box: $("history"), onEnd: endSession, onError: showError });
const travel = new TimeTravel({
  slider: $("seq"),
  output: $("seq-out"),
  timeInput: $("at"),
  goButton: $("go"),
  liveButton: $("live"),
  onPast: (snap) => {
    document.body.classList.add("past");
    pool.show(snap.vms);
    renderTotals({
      counts: snap.sessions_by_status,
      queued: snap.queued,
      oldest: snap.oldest_queued_since ? Date.parse(snap.oldest_queued_since) : null,
      capacity: snap.capacity,
      used: snap.used,
      asOf: `as of sequence ${snap.as_of_seq}`,
    });
    if (selected) showSelected(snap.vms.find((v) => v.vm_id === selected) || null);
  },
  onLive: () => {
    document.body.classList.remove("past");
    showLive();
  },
  onError: showError,
});
const charts = new Charts({
  form: $("chart-form"),
  windowSelect: $("window"),
  sessionsSvg: $("chart-sessions"),
  utilSvg: $("chart-util"),
  sessionsText: $("chart-sessions-text"),
  utilText: $("chart-util-text"),
  onError: showError,
});

$("legend").replaceChildren(
  ...LEGEND.map(([fill, text]) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = fill;
    li.append(sw, ` ${text}`);
    return li;
  }),
);
$("drain").addEventListener("click", () => vmCommand("drain"));
$("retire").addEventListener("click", () => vmCommand("retire"));
$("vm-sessions").addEventListener("click", vmSessions);
$("error").querySelector("button").addEventListener("click", () => ($("error").hidden = true));

async function signIn() {
  $("login").hidden = true;
  $("logout").hidden = false;
  $("main").hidden = false;
  $("conn").textContent = "Loading…";
  try {
    await loadLive();
    startFeed();
    charts.draw();
  } catch (e) {
    showError(e);
    if (e.status === 401 || e.status === 403) signOut();
  }
}

function signOut() {
  feedAbort?.abort();
  api.setToken(null);
  $("login").hidden = false;
  $("logout").hidden = true;
  $("main").hidden = true;
  $("conn").textContent = "Signed out";
  $("token").focus();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  api.setToken($("token").value.trim());
  $("token").value = "";
  $("error").hidden = true;
  signIn();
});
$("logout").addEventListener("click", signOut);
showSelected(null);
if (api.token()) signIn();
else $("token").focus();
document.body.dataset.ready = "yes";
