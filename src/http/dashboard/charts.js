// Charts over a chosen window from GET /v1/stats/timeline: sessions per status and pool utilisation,
// drawn as inline SVG line charts, each with a text summary for screen readers.

import { get } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const SERIES = [
  ["starting", "#b35806"],
  ["active", "#1b7837"],
  ["paused", "#5e3c99"],
  ["queued", "#c51b7d"],
];

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function chart(svg, points, series, { max, format }) {
  const W = 560;
  const H = 180;
  const L = 48;
  const B = 24;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const t0 = points[0]?.at_ms ?? 0;
  const t1 = points[points.length - 1]?.at_ms ?? 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 8);
  const y = (v) => H - B - (v / (max || 1)) * (H - B - 8);
  for (const f of [0, 0.5, 1]) {
    svg.append(el("line", { x1: L, x2: W - 8, y1: y(max * f), y2: y(max * f), class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y(max * f) + 4, "text-anchor": "end" }, format(max * f)));
  }
  svg.append(el("text", { x: L, y: H - 6 }, new Date(t0).toLocaleTimeString()));
  svg.append(el("text", { x: W - 8, y: H - 6, "text-anchor": "end" }, new Date(t1).toLocaleTimeString()));
  for (const [name, colour, value] of series) {
    const d = points.map((p) => `${x(p.at_ms).toFixed(1)},${y(value(p)).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: d, fill: "none", stroke: colour, "stroke-width": 2 }, null));
    svg.lastChild.append(el("title", {}, name));
  }
}

export class Charts {
  constructor({ form, windowSelect, sessionsSvg, utilSvg, sessionsText, utilText, onError }) {
    Object.assign(this, { windowSelect, sessionsSvg, utilSvg, sessionsText, utilText, onError });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.draw();
    });
  }

  async draw() {
    const to = new Date();
    try {
      let from;
      if (this.windowSelect.value === "all") {
        // The time of the log's first event.
        const first = await get("/v1/state?at=1");
        from = new Date(first.as_of_ms ?? to.getTime());
      } else {
        from = new Date(to.getTime() - Number(this.windowSelect.value) * 60_000);
      }
      const step = Math.max(1000, Math.ceil((to - from) / 120));
      const t = await get(
        `/v1/stats/timeline?from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&step=${step}`,
      );
      this.render(t.points);
    } catch (e) {
      this.onError(e);
    }
  }

  render(points) {
    const count = (p, s) => (s === "queued" ? p.queued : p.sessions_by_status[s] ?? 0);
    const max = Math.max(1, ...points.flatMap((p) => SERIES.map(([s]) => count(p, s))));
    chart(
      this.sessionsSvg,
      points,
      SERIES.map(([s, c]) => [s, c, (p) => count(p, s)]),
      { max, format: (v) => String(Math.round(v)) },
    );
    chart(this.utilSvg, points, [["utilisation", "#2166ac", (p) => p.utilisation * 100]], {
      max: 100,
      format: (v) => `${Math.round(v)}%`,
    });
    const last = points[points.length - 1];
    const peak = Math.max(0, ...points.map((p) => p.utilisation));
    this.sessionsText.textContent = last
      ? `Now: ${SERIES.map(([s]) => `${s} ${count(last, s)}`).join(", ")}; peak ${max} in one status.`
      : "No data.";
    this.utilText.textContent = last
      ? `Now ${(last.utilisation * 100).toFixed(0)}% (${last.used}/${last.capacity} slots); peak ${(peak * 100).toFixed(0)}%.`
      : "No data.";
  }
}
