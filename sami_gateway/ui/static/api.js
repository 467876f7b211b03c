// The public Jobs API as this page uses it: every URL is relative to the page, so the page also
// works behind a proxy that adds a path prefix, and nothing is requested from any other origin
// (result URLs are whatever the gateway hands out: its own signed URLs, or its storage's).

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** An answer that is not success: HTTP status, the envelope's code, text and message, Retry-After. */
export class ApiError extends Error {
  constructor(http, body, retryAfter) {
    const error = (body && (body.error || body)) || {};
    super(error.message || (typeof body === "string" ? body : "") || `HTTP ${http}`);
    this.http = http;
    this.code = Number(error.status_code) || 0;
    this.statusText = error.status_text || "";
    this.retryAfter = retryAfter;
  }
}

/** The gateway could not be reached at all (no HTTP answer). */
export class Unreachable extends Error {}

/** Something to tell the person that is not the gateway's answer (a missing file, a refused key). */
export class Notice extends Error {
  constructor(text, detail = "") {
    super(text);
    this.detail = detail;
  }
}

/** An answer's body: its JSON, or its text when it is not JSON. */
export function parseBody(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function retryAfter(value) {
  const seconds = Number(value);
  return value !== null && value !== "" && Number.isFinite(seconds) ? Math.max(0, Math.ceil(seconds)) : null;
}

/** The error `fetch` and XMLHttpRequest give for an aborted request. */
export const aborted = () => new DOMException("cancelled", "AbortError");

/** Calls the Jobs API with a Bearer token; the page keeps one, whose token a new sign-in replaces,
 *  so that a job followed across a sign-in goes on with the new token. */
export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, { body, headers = {}, signal } = {}) {
    const token = this.token;  // the one this call is made with, whatever a sign-in does meanwhile
    const init = { method, signal, headers: { Authorization: `Bearer ${token}`, ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new Unreachable(String(err.message || err));
    }
    if (!response.ok) {
      const err = new ApiError(response.status, parseBody(await response.text()),
                               retryAfter(response.headers.get("Retry-After")));
      err.token = token;  // a 401 speaks of this token, which may have been replaced since
      throw err;
    }
    return response;
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  models(signal) { return this.json("GET", "api/v1/models", { signal }); }
  createUpload(signal) { return this.json("POST", "api/v1/uploads", { signal }); }
  submit(request, idempotencyKey, signal) {
    return this.json("POST", "api/v1/jobs", { body: request, headers: { "Idempotency-Key": idempotencyKey }, signal });
  }
  job(id, signal) { return this.json("GET", `api/v1/jobs/${encodeURIComponent(id)}`, { signal }); }
  cancel(id) { return this.json("POST", `api/v1/jobs/${encodeURIComponent(id)}/cancel`); }
  remove(id) { return this.json("DELETE", `api/v1/jobs/${encodeURIComponent(id)}`); }
  list(limit, cursor, signal) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    return this.json("GET", `api/v1/jobs?${query}`, { signal });
  }

  /** The job's Server-Sent Events, read with fetch (EventSource cannot send the token): yields
   *  {event, data} until the gateway ends the stream or `signal` aborts it; `onBytes` is called
   *  whenever bytes arrive, keep-alive comments included (a stream that stays silent is dead). */
  async *events(id, signal, onBytes = () => {}) {
    const response = await this.request("GET", `api/v1/jobs/${encodeURIComponent(id)}/events`,
                                        { headers: { Accept: "text/event-stream" }, signal });
    yield* readEvents(response.body, onBytes);
  }
}

/** The events of an SSE byte stream (a ReadableStream), as {event, data}; see `EventSplitter`. */
export async function* readEvents(body, onBytes = () => {}) {
  const reader = body.getReader();
  try {
    const decoder = new TextDecoder();
    const splitter = new EventSplitter();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onBytes();
      yield* splitter.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Cuts SSE text, given in pieces of any size, into events: lines may end in CRLF, LF or CR (a CR
 *  at the end of a piece waits for the next, which may start with its LF). */
export class EventSplitter {
  constructor() {
    this.buffer = "";
  }

  /** The events that `text` completes. */
  *push(text) {
    let more = this.buffer + text;
    const held = more.endsWith("\r") ? "\r" : "";
    if (held) more = more.slice(0, -1);
    more = more.replace(/\r\n?/g, "\n");
    let end;
    while ((end = more.indexOf("\n\n")) >= 0) {
      const event = parseEvent(more.slice(0, end));
      more = more.slice(end + 2);
      if (event) yield event;
    }
    this.buffer = more + held;
  }
}

/** One SSE block (`event:` and `data:` lines; comments are keep-alives) as {event, data}; null for
 *  a block without data, or whose data is not JSON (that one event is skipped, not the stream). */
export function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

/** PUT `file` to a signed upload URL (no token: the URL carries its signature), reporting progress
 *  0..100; `signal` aborts it (at once if it already has). XMLHttpRequest, because fetch reports no
 *  upload progress. */
export function putFile(url, file, onProgress, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(aborted());
      return;
    }
    const xhr = new XMLHttpRequest();
    const stop = () => xhr.abort();
    const settle = (outcome, value) => {
      if (signal) signal.removeEventListener("abort", stop);
      outcome(value);
    };
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress((100 * event.loaded) / event.total);
    };
    xhr.onload = () => {
      const body = parseBody(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) settle(resolve, body);
      else settle(reject, new ApiError(xhr.status, body, retryAfter(xhr.getResponseHeader("Retry-After"))));
    };
    xhr.onerror = () => settle(reject, new Unreachable("the upload was cut off"));
    xhr.onabort = () => settle(reject, aborted());
    if (signal) signal.addEventListener("abort", stop, { once: true });
    xhr.send(file);
  });
}

/** Where the gateway says it is, when that is not this page's origin: its links (`upload_url`, made
 *  from its SAMI_PUBLIC_URL) point at an address this page's policy does not let it call. That
 *  address is the link up to `/api/v1/`; null when the link is this page's own origin. */
export function elsewhere(link, here = location.origin) {
  const url = new URL(link, here);
  if (url.origin === here) return null;
  const at = url.pathname.indexOf("/api/v1/");
  return url.origin + (at > 0 ? url.pathname.slice(0, at) : "");
}

export function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function seconds(n) {
  return n === 1 ? "1 second" : `${n} seconds`;
}

/** What went wrong, in words a person understands: {text, detail}; `detail` keeps the gateway's
 *  own code and message for whoever reports the problem. */
export function explain(err, context = {}) {
  if (err instanceof Unreachable) {
    return { text: "The gateway cannot be reached. Check that it is running and your network, then try again.",
             detail: err.message };
  }
  if (err instanceof Notice) return { text: err.message, detail: err.detail };
  if (!(err instanceof ApiError)) {
    return { text: "Something went wrong in this page.", detail: String((err && err.message) || err) };
  }
  const wait = err.retryAfter;
  const later = wait === null ? "Try again in a moment." : `Try again in ${seconds(wait)}.`;
  const texts = {
    40000011: "The file is empty.",
    40000012: "This file could not be read as audio. Choose a WAV, FLAC, MP3, OGG or AAC file.",
    40000013: "The song is longer than this gateway accepts.",
    40000016: "The file is larger than this gateway accepts.",
    40000024: "The gateway could not fetch the file.",
    40200001: "The gateway does not know this token's appkey.",
    40200002: "The token was refused: it is wrong or has expired. Paste a new one.",
    40200014: /no namespace/.test(err.message) ? "This gateway does not run separation jobs."
      : "This token's appkey may not run music separation.",
    40300001: "The upload link has expired. Submit the file again.",
    40400002: "This job no longer exists: it has expired or was deleted.",
    40800001: "The upload took too long and was stopped. Try again on a faster connection.",
    40900001: "This cannot be done to the job as it is now (it may not have finished yet).",
    41300001: `The file is larger than this gateway accepts${context.maxBytes ? ` (${megabytes(context.maxBytes)})` : ""}.`,
    41500001: "The gateway refused the form of what this page sent. Reload the page and try again.",
    42900001: `You have reached your quota. ${later}`,
    42900002: "This appkey keeps as much as it may. Delete finished jobs, or wait for them to expire.",
    50000001: "The gateway failed while doing this. Try again; if it happens again, report the details below.",
    50300001: `The gateway is busy. ${later}`,
    50300002: `The gateway is restarting. ${later}`,
    50300003: `The gateway cannot reach its storage or workers right now. ${later}`,
    50400001: "The separation took too long and was stopped.",
  };
  let text = texts[err.code];
  if (!text) {
    if (err.http === 401) text = texts[40200002];
    else if (err.http === 400) text = "The gateway refused the request.";
    else text = `The gateway answered HTTP ${err.http}.`;
  }
  const code = err.code ? `${err.code}${err.statusText ? ` ${err.statusText.split(":")[0]}` : ""}: ` : "";
  return { text, detail: `${code}${err.message}` };
}

/** A failed job's `error` ({status_code, status_text, message}) as an ApiError. */
export function jobError(job) {
  const error = job.error || {};
  const http = Math.floor((Number(error.status_code) || 50000001) / 100000);
  return new ApiError(http, { error }, null);
}
