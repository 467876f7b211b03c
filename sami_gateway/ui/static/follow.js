// Following a job until it ends, through network blips, restarts and streams that die in silence.
import { ApiError, TERMINAL } from "./api.js";

// The gateway writes a keep-alive comment every 15 s (sami_gateway/jobs/sse.py): a stream silent
// for longer than two and a half of them is dead, whatever the network says.
export const STALL_MS = 40_000;
export const MAX_DELAY_MS = 30_000;

/** Waits `ms`, or less if `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (signal) signal.addEventListener("abort", done, { once: true });
  });
}

/** 1, 2, 4 … seconds after the 1st, 2nd, 3rd … failure in a row, at most MAX_DELAY_MS. */
export const backoff = (failures) => Math.min(MAX_DELAY_MS, 1000 * 2 ** Math.max(0, failures - 1));

/** Whether a failed call may succeed if tried again with `api`: no answer, a 429 or a 5xx, or a 401
 *  for a token `api` has replaced since (not the other 4xx: a job that is gone, a token refused). */
export const retriable = (err, api) => !(err instanceof ApiError) || err.http === 429 || err.http >= 500
  || (err.http === 401 && err.token !== undefined && err.token !== api.token);

/** Follows `job` from its events (`api.events`, `api.job`) until it is terminal, and returns it as it
 *  ended; `onJob` gets every newer state, `onRetry(failures, delay)` each wait before trying again
 *  (the backoff's, or the gateway's Retry-After when that is longer).
 *  Returns null when `signal` aborts; throws what cannot be retried. Each attempt has its own
 *  controller, aborted when no byte arrived for `stallMs`. */
export async function followJob(api, job, signal, { onJob = () => {}, onRetry = () => {},
                                                   stallMs = STALL_MS, delay = backoff } = {}) {
  let current = job;
  let failures = 0;
  while (!TERMINAL.has(current.status)) {
    let asked = 0;  // ms the gateway asked to wait (Retry-After on a 429 or 503)
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener("abort", stop, { once: true });
    let timer;
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(stop, stallMs);
    };
    try {
      alive();
      let events = 0;
      for await (const { event, data } of api.events(current.id, attempt.signal, alive)) {
        if (event === "status") current = data;
        else if (event === "progress") current = { ...current, progress: Math.max(current.progress, data.progress) };
        else continue;
        if (++events > 1) failures = 0;  // news after the opening status: the stream works again
        onJob(current);
      }
      // The stream ended before the job did (a proxy's timeout, a restart): ask for the job itself.
      if (!TERMINAL.has(current.status)) {
        current = await api.job(current.id, attempt.signal);
        failures = 0;
        onJob(current);
      }
    } catch (err) {
      if (signal.aborted) return null;
      if (!retriable(err, api)) throw err;
      failures += 1;
      if (err instanceof ApiError) asked = (err.retryAfter ?? 0) * 1000;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) return null;
    if (TERMINAL.has(current.status)) break;
    const wait = Math.max(delay(Math.max(failures, 1)), asked);  // a cleanly ended stream waits too
    if (failures) onRetry(failures, wait);
    await sleep(wait, signal);
    if (signal.aborted) return null;
  }
  return current;
}
