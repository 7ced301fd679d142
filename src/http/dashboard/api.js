// The API as the dashboard calls it: the operator's token (kept in sessionStorage for this browser
// tab only) sent as `Authorization: Bearer`, problems (RFC 9457) turned into errors that carry them,
// commands sent with an `Idempotency-Key`, and the event feed read with fetch() (EventSource cannot
// send the Authorization header).

const TOKEN_KEY = "orchestrator.operatorToken";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer that was not a success: `problem` is the API's problem body when it sent one. */
export class ApiError extends Error {
  constructor(status, problem, text) {
    const title = problem?.title || `HTTP ${status}`;
    const detail = problem?.detail || text || "";
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.problem = problem;
  }
}

async function failure(res) {
  const text = await res.text();
  let problem = null;
  try {
    problem = JSON.parse(text);
  } catch {
    // Not JSON: the text is the detail.
  }
  return new ApiError(res.status, problem, problem ? "" : text.slice(0, 300));
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** GET `path` as JSON; throws ApiError unless 2xx. */
export async function get(path, signal) {
  const res = await fetch(path, { headers: headers(), signal });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** A random UUID v4, also outside secure contexts (where crypto.randomUUID is missing). */
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** POST a command to `path` with a fresh Idempotency-Key; returns {status, body} or throws. */
export async function command(path, body = {}) {
  const res = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", "Idempotency-Key": uuid() }),
    body: JSON.stringify(body),
  });
  if (!res.ok) throw await failure(res);
  return { status: res.status, body: await res.json() };
}

/**
 * Reads the SSE feed at `path` until `signal` aborts or the feed ends, calling `onEvent(id, data)`
 * for each event and `onProblem(problem)` for an `event: problem`. Resumes after `lastId` when set.
 */
export async function feed(path, lastId, onEvent, onProblem, signal) {
  const extra = { Accept: "text/event-stream" };
  if (lastId != null) extra["Last-Event-ID"] = String(lastId);
  const res = await fetch(path, { headers: headers(extra), signal });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let id = null;
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const v = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = Number(v);
        else if (field === "event") name = v;
        else if (field === "data") data.push(v);
      }
      if (!data.length) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      if (name === "problem") onProblem(parsed);
      else onEvent(id, parsed);
    }
  }
}
