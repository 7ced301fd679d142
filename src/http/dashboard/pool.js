// The pool as a grid of cells on a canvas (one fillRect per VM, so 10,000 VMs draw in a few
// milliseconds), coloured by status and load, with a tooltip on hover, a keyboard cursor, and the
// same VMs as a table (capped, filterable) for screen readers and tests.

const LOAD = ["#e5f5e0", "#a1d99b", "#fdd49e", "#fc8d59", "#d7301f"];
const DRAINING = ["#deebf7", "#9ecae1", "#4292c6", "#2171b5", "#08306b"];
const RETIRED = "#bdbdbd";
const LOST = "#3f007d";
const TABLE_ROWS = 500;

/** The fill of a VM's cell. */
export function colour(vm) {
  if (vm.status === "retired") return RETIRED;
  if (vm.status === "lost") return LOST;
  const load = vm.capacity ? vm.used / vm.capacity : 0;
  const ramp = vm.status === "draining" ? DRAINING : LOAD;
  return ramp[Math.min(ramp.length - 1, Math.floor(load * (ramp.length - 1) + 0.0001))];
}

export function label(vm) {
  const labels = Object.entries(vm.labels || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
  return `${vm.vm_id}: ${vm.status}, ${vm.used}/${vm.capacity} sessions${labels ? ` (${labels})` : ""}`;
}

/** The legend's entries: [fill, text]. */
export const LEGEND = [
  [LOAD[0], "available, empty"],
  [LOAD[2], "available, half full"],
  [LOAD[4], "available, full"],
  [DRAINING[2], "draining (darker: fuller)"],
  [RETIRED, "retired"],
  [LOST, "lost"],
];

export class PoolView {
  constructor({ canvas, tooltip, announce, table, filter, shown, onSelect }) {
    Object.assign(this, { canvas, tooltip, announce, table, filter, shown, onSelect });
    this.vms = [];
    this.cursor = -1;
    this.selected = null;
    this.layout = { cell: 10, cols: 1 };
    this.pending = false;
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => (this.tooltip.hidden = true));
    canvas.addEventListener("click", (e) => {
      const i = this.indexAt(e);
      if (i >= 0) this.select(i);
    });
    canvas.addEventListener("keydown", (e) => this.key(e));
    canvas.addEventListener("focus", () => {
      if (this.cursor < 0 && this.vms.length) this.moveCursor(0);
    });
    filter.addEventListener("input", () => this.renderTable());
    new ResizeObserver(() => this.schedule()).observe(canvas.parentElement);
  }

  /** Shows `vms` (an array sorted by id); redraws on the next frame. */
  show(vms) {
    this.vms = vms;
    if (this.cursor >= vms.length) this.cursor = vms.length - 1;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
      this.renderTable();
    });
  }

  draw() {
    const t0 = performance.now();
    const { canvas, vms } = this;
    const width = canvas.parentElement.clientWidth;
    const n = Math.max(vms.length, 1);
    // The largest cell (up to 28 px) that fits every VM in about 360 px of height.
    let cell = 28;
    while (cell > 3 && Math.ceil(n / Math.floor(width / cell)) * cell > 360) cell -= 1;
    const cols = Math.max(1, Math.floor(width / cell));
    const rows = Math.ceil(n / cols);
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = `${cols * cell}px`;
    canvas.style.height = `${rows * cell}px`;
    canvas.width = Math.round(cols * cell * dpr);
    canvas.height = Math.round(rows * cell * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cols * cell, rows * cell);
    const gap = cell >= 8 ? 1 : 0;
    for (let i = 0; i < vms.length; i++) {
      ctx.fillStyle = colour(vms[i]);
      ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - gap, cell - gap);
    }
    const mark = (i, style, w) => {
      if (i < 0 || i >= vms.length) return;
      ctx.strokeStyle = style;
      ctx.lineWidth = w;
      ctx.strokeRect((i % cols) * cell + w / 2, Math.floor(i / cols) * cell + w / 2, cell - w, cell - w);
    };
    const sel = this.selected == null ? -1 : vms.findIndex((v) => v.vm_id === this.selected);
    mark(sel, "#000", 2);
    if (document.activeElement === canvas) mark(this.cursor, "#c51b8a", 2);
    this.layout = { cell, cols };
    canvas.dataset.drawnVms = String(vms.length);
    canvas.dataset.drawMs = (performance.now() - t0).toFixed(1);
    canvas.setAttribute("aria-label", `Pool: ${vms.length} VMs. Arrow keys move between VMs, Enter selects one.`);
    document.dispatchEvent(new CustomEvent("pool-drawn", { detail: { vms: vms.length } }));
  }

  renderTable() {
    const q = this.filter.value.trim().toLowerCase();
    const rows = [];
    let matched = 0;
    for (const vm of this.vms) {
      if (q && !label(vm).toLowerCase().includes(q)) continue;
      matched += 1;
      if (rows.length < TABLE_ROWS) rows.push(vm);
    }
    const tbody = this.table.tBodies[0];
    const frag = document.createDocumentFragment();
    for (const vm of rows) {
      const tr = document.createElement("tr");
      tr.dataset.vmId = vm.vm_id;
      tr.dataset.status = vm.status;
      tr.dataset.used = vm.used;
      tr.dataset.capacity = vm.capacity;
      const sw = document.createElement("td");
      const dot = document.createElement("span");
      dot.className = "swatch";
      dot.style.background = colour(vm);
      sw.append(dot);
      const id = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = vm.vm_id;
      b.setAttribute("aria-label", `Select ${label(vm)}`);
      b.addEventListener("click", () => this.select(this.vms.indexOf(vm)));
      id.append(b);
      tr.append(sw, id, cellText(vm.status), cellText(`${vm.used}/${vm.capacity}`));
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    this.shown.textContent =
      matched > rows.length ? `Showing ${rows.length} of ${matched} VMs; filter to see others.` : `${matched} VMs.`;
  }

  indexAt(e) {
    const r = this.canvas.getBoundingClientRect();
    const { cell, cols } = this.layout;
    const c = Math.floor((e.clientX - r.left) / cell);
    const row = Math.floor((e.clientY - r.top) / cell);
    if (c < 0 || c >= cols) return -1;
    const i = row * cols + c;
    return i < this.vms.length ? i : -1;
  }

  hover(e) {
    const i = this.indexAt(e);
    if (i < 0) {
      this.tooltip.hidden = true;
      return;
    }
    this.tooltip.textContent = label(this.vms[i]);
    this.tooltip.hidden = false;
    const box = this.canvas.parentElement.getBoundingClientRect();
    this.tooltip.style.left = `${e.clientX - box.left + 12}px`;
    this.tooltip.style.top = `${e.clientY - box.top + 12}px`;
  }

  moveCursor(i) {
    if (!this.vms.length) return;
    this.cursor = Math.max(0, Math.min(this.vms.length - 1, i));
    this.announce.textContent = label(this.vms[this.cursor]);
    this.schedule();
  }

  key(e) {
    const { cols } = this.layout;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, Home: -Infinity, End: Infinity };
    if (e.key in moves) {
      e.preventDefault();
      const to = this.cursor + moves[e.key];
      this.moveCursor(Number.isFinite(to) ? to : to > 0 ? this.vms.length - 1 : 0);
    } else if ((e.key === "Enter" || e.key === " ") && this.cursor >= 0) {
      e.preventDefault();
      this.select(this.cursor);
    }
  }

  select(i) {
    if (i < 0 || i >= this.vms.length) return;
    this.selected = this.vms[i].vm_id;
    this.cursor = i;
    this.schedule();
    this.onSelect(this.vms[i]);
  }
}

function cellText(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}
