// Time travel: a slider over the log's sequences and a time field; either asks GET /v1/state?at=
// for the cell as of that point (the same replay as `orchestrator state --at`). "Live" returns.

import { get } from "./api.js";

export class TimeTravel {
  constructor({ slider, output, timeInput, goButton, liveButton, onPast, onLive, onError }) {
    Object.assign(this, { slider, output, timeInput, goButton, liveButton, onPast, onLive, onError });
    this.live = true;
    this.timer = null;
    this.request = 0;
    slider.addEventListener("input", () => {
      this.output.textContent = `sequence ${slider.value}`;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.go(slider.value), 120);
    });
    goButton.addEventListener("click", () => {
      const v = timeInput.value.trim();
      if (!v) return;
      // A number is a sequence; anything else a time (a local datetime field gives no zone).
      const at = /^\d+$/.test(v) ? v : new Date(v).toISOString();
      this.go(at);
    });
    liveButton.addEventListener("click", () => this.backToLive());
  }

  /** The log grew to `seq`: the slider reaches it, and follows it while live. */
  extend(seq) {
    if (seq > Number(this.slider.max)) this.slider.max = String(seq);
    if (this.live) {
      this.slider.value = String(seq);
      this.output.textContent = `live (sequence ${seq})`;
    }
  }

  async go(at) {
    const n = ++this.request;
    try {
      const snap = await get(`/v1/state?at=${encodeURIComponent(at)}`);
      if (n !== this.request) return;
      this.live = false;
      this.liveButton.disabled = false;
      this.slider.value = String(snap.as_of_seq);
      this.output.textContent = `sequence ${snap.as_of_seq}${snap.as_of_time ? ` at ${new Date(snap.as_of_ms).toLocaleString()}` : " (before any event)"}`;
      this.onPast(snap);
    } catch (e) {
      this.onError(e);
    }
  }

  backToLive() {
    this.request += 1;
    this.live = true;
    this.liveButton.disabled = true;
    this.slider.value = this.slider.max;
    this.output.textContent = `live (sequence ${this.slider.max})`;
    this.onLive();
  }
}
