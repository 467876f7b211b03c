// A job's results: per stem a player, a waveform and a download link, all from one fetch of its
// file; and the small DOM helpers the page shares.
import { ApiError, Notice, Unreachable, parseBody } from "./api.js";
import { MAX_DRAWN_BYTES, keepDrawn, peaksOfBlob } from "./wave.js";

export function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  node.append(...children);
  return node;
}

export const size = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.ceil(bytes / 1e3)} kB`);
export const stemLabel = (stem) => (stem.startsWith("no_") ? `${stem} (all but ${stem.slice(3)})` : stem);
const note = (text) => element("p", { class: "note", textContent: text });

function track(title, name, about) {
  const canvas = element("canvas", { role: "img", "aria-label": `Waveform of ${title}` });
  const audio = element("audio", { controls: true, preload: "metadata", "aria-label": `Play ${title}` });
  const head = element("div", { class: "head" }, element("h3", { textContent: title }));
  const box = element("article", { class: "track", "data-track": name }, head, canvas, audio);
  if (about) box.append(note(about));
  return { box, head, canvas, audio };
}

/** The song's name without its extension, for the names of the files downloaded. */
export function songBase(job) {
  const name = (job.name || job.id).replace(/\.[A-Za-z0-9]{1,5}$/, "").replace(/[\\/:*?"<>|\u0000-\u001f]+/g, "_");
  return Array.from(name).slice(0, 100).join("") || job.id;
}

async function fetchResult(url, signal) {
  try {
    return await fetch(url, { signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Unreachable(String(err.message || err));
  }
}

/** A result file from its signed URL; one that expired (403) is asked for anew, once, from the job. */
async function resultBlob(url, stem, freshJob, signal) {
  let response = await fetchResult(url, signal);
  if (response.status === 403) {
    const fresh = (await freshJob()).result || {};
    if (fresh[stem] && fresh[stem].url) response = await fetchResult(fresh[stem].url, signal);
    if (response.status === 403) {
      throw new Notice("The links to the results have expired: open the job again from Past jobs.",
                       `HTTP 403: ${url.split("?")[0]}`);
    }
  }
  if (!response.ok) throw new ApiError(response.status, parseBody(await response.text()), null);
  return response.blob();
}

// The formats a stem of a job that streams is written in front to back, so that it plays as it comes.
const GROWING_FORMATS = new Set(["wav", "flac"]);

/** The tracks shown in `container`, and what they hold (object URLs, ResizeObservers) until `clear`. */
export class Shelf {
  constructor(container) {
    this.container = container;
    this.urls = [];
    this.observers = [];
    this.liveJob = null;  // the processing job whose stems play as they are separated
  }

  /** Empty it: players removed from the page stop playing; their object URLs are revoked. */
  clear() {
    for (const observer of this.observers.splice(0)) observer.disconnect();
    this.container.replaceChildren();
    for (const url of this.urls.splice(0)) URL.revokeObjectURL(url);
    this.liveJob = null;
  }

  /** While `job` is processing, a player per stem that plays it as it is separated (the job's `streams`
   *  URLs, opened only when played); the finished tracks take their place, at the same moment of the song. */
  live(job) {
    if (job.status !== "processing" || !job.streams || this.liveJob === job.id) return;
    if (!GROWING_FORMATS.has((job.output || {}).format)) return;
    this.liveJob = job.id;
    for (const stem of job.stems) {
      const url = job.streams[stem];
      if (!url) continue;
      const parts = track(stemLabel(stem), stem, "Plays as it is separated; the whole file comes when the job is done.");
      parts.box.dataset.live = "true";
      parts.canvas.remove();
      parts.audio.preload = "none";
      parts.audio.src = url;
      this.container.append(parts.box);
    }
  }

  /** Take the players of `live` off the page: where each was in the song, and whether it played. */
  endLive() {
    const where = {};
    for (const box of this.container.querySelectorAll("[data-live]")) {
      const audio = box.querySelector("audio");
      where[box.dataset.track] = { time: audio.currentTime, playing: !audio.paused };
      audio.pause();
      box.remove();
    }
    return where;
  }

  /** Show `job`'s stems, and `mix` (the File submitted from this tab) when there is one; once `signal`
   *  aborts, nothing more is added. Resolves with the first failure, or null. */
  async show(api, job, mix, signal) {
    const loads = [];
    const resume = this.endLive();
    const original = track("Original mix", "mix", mix ? "" : "The gateway keeps no copy of the original to play: "
                           + "it is shown for songs submitted from this tab.");
    this.container.append(original.box);
    if (mix) {
      loads.push(this.fill(original, mix, "--wave-mix", signal));
    } else {
      original.canvas.remove();
      original.audio.remove();
    }
    let fresh = null;  // the job read again, once, if its links have expired
    const freshJob = () => (fresh = fresh || api.job(job.id, signal));
    const base = songBase(job);
    for (const stem of job.stems) {
      const item = job.result && job.result[stem];
      if (!item) continue;
      const parts = track(stemLabel(stem), stem);
      this.container.append(parts.box);
      if (!item.url) {
        parts.box.append(note("Copied to your storage, not kept here."));
        parts.canvas.remove();
        parts.audio.remove();
        continue;
      }
      const download = { name: `${base} - ${stem}.${item.format}`, label: `${stem}.${item.format}` };
      loads.push(this.fill(parts, () => resultBlob(item.url, stem, freshJob, signal), "--wave", signal, download,
                           resume[stem]));
    }
    const failed = (await Promise.allSettled(loads)).find((outcome) => outcome.status === "rejected");
    return failed ? failed.reason : null;
  }

  /** Fill a track from `source` (a File, or a function that fetches the Blob): one object URL for the
   *  player and the download link, and the waveform, decoded after the tracks before it; `resume` is
   *  where its live player was. */
  async fill(parts, source, colour, signal, download, resume) {
    const blob = source instanceof Blob ? source : await source();
    if (signal.aborted) return;
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    parts.audio.addEventListener("error", () => parts.audio.replaceWith(note("This browser cannot play this format.")),
                                 { once: true });
    parts.audio.src = url;
    if (resume && resume.time > 0) {  // heard while it was separated: go on from there
      parts.audio.currentTime = resume.time;
      if (resume.playing) parts.audio.play().catch(() => {});
    }
    if (download) {
      parts.head.append(element("a", { href: url, download: download.name,
                                       textContent: `Download ${download.label} (${size(blob.size)})` }));
    }
    if (blob.size > MAX_DRAWN_BYTES) {
      parts.canvas.replaceWith(note(`No waveform for a file over ${MAX_DRAWN_BYTES / 1e6} MB: decoding it `
                                    + "could take more memory than this device has to spare."));
      return;
    }
    try {
      const { peaks, duration, rate } = await peaksOfBlob(blob, signal);
      if (signal.aborted) return;
      parts.canvas.dataset.duration = duration.toFixed(3);
      parts.canvas.dataset.rate = String(rate);
      this.observers.push(keepDrawn(parts.canvas, peaks, colour));
    } catch (err) {
      if (!signal.aborted) parts.canvas.replaceWith(note("This browser cannot draw this format."));
    }
  }
}
