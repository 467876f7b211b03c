// The page: a token, a song, a model and its stems; progress live; each stem to hear and keep.
import { Api, ApiError, Notice, TERMINAL, explain, jobError, putFile } from "./api.js";
import { getToken } from "./sign.js";
import { keepDrawn, peaksOf } from "./wave.js";

const TOKEN_KEY = "sami-gateway.token";
const PAGE_SIZE = 10;
const RETRY_MS = 2000;  // before following a job again after its event stream broke

const $ = (id) => document.getElementById(id);
const state = {
  api: null,
  catalogue: null,  // GET /api/v1/models
  following: null,  // AbortController of the job shown, its upload and its events
  shown: null,  // id of the job shown
  mixes: new Map(),  // job id -> the File submitted from this tab (the gateway keeps no copy to play)
  urls: [],  // object URLs of the tracks shown, revoked when others replace them
  cursor: null,
};

function element(tag, props = {}, ...children) {
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const percent = (value) => `${Math.floor(value)} %`;
const size = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.ceil(bytes / 1e3)} kB`);
const stemLabel = (stem) => (stem.startsWith("no_") ? `${stem} (all but ${stem.slice(3)})` : stem);

// -- errors ----------------------------------------------------------------------------------

/** Say what went wrong at the top of the section `near` (its id), where the person is looking. */
function showError(err, near, context) {
  if (err && err.name === "AbortError") return;
  if (err instanceof ApiError && err.http === 401 && state.api) {  // expired: ask for a new token
    forget();
    near = "access";
  }
  const { text, detail } = explain(err, context);
  const box = $("error");
  const section = $(near);
  section.insertBefore(box, section.firstElementChild.nextSibling);
  $("error-text").textContent = text;
  $("error-detail").textContent = detail ? `Details: ${detail}` : "";
  box.hidden = false;
  box.focus({ preventScroll: true });
  box.scrollIntoView({ block: "nearest" });
}

function clearError() {
  $("error").hidden = true;
}

// -- the token -------------------------------------------------------------------------------

async function connect(token) {
  const api = new Api(token);
  const catalogue = await api.models();  // also proves the token
  state.api = api;
  state.catalogue = catalogue;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("token-form").hidden = true;
  $("gettoken").hidden = true;
  $("signed-in").hidden = false;
  $("token-state").textContent = describeToken(token);
  fillModels(catalogue);
  $("separate").hidden = false;
  $("history").hidden = false;
  await loadHistory(false);
}

function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
  stopFollowing();
  state.api = null;
  for (const id of ["separate", "job", "history", "signed-in"]) $(id).hidden = true;
  $("token-form").hidden = false;
  $("gettoken").hidden = false;
  $("token").focus();
}

/** Who the token speaks for and until when, read from its claims (the gateway has just accepted it). */
function describeToken(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    const until = new Date(claims.exp * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return `Appkey ${claims.sub}; the token is valid until ${until}.`;
  } catch {
    return "Token accepted for this tab.";
  }
}

async function onToken(event) {
  event.preventDefault();
  clearError();
  const token = $("token").value.trim();
  if (!token) return;
  $("use-token").disabled = true;
  try {
    await connect(token);
  } catch (err) {
    showError(err, "access");
  } finally {
    $("use-token").disabled = false;
  }
}

async function onGetToken(event) {
  event.preventDefault();
  clearError();
  $("get-token").disabled = true;
  try {
    const answer = await getToken($("access-key").value.trim(), $("secret-key").value, $("appkey").value.trim());
    $("secret-key").value = "";
    await connect(answer.token);
  } catch (err) {
    if (err instanceof ApiError || err.name === "AbortError" || err.name === "TypeError") showError(err, "access");
    else showError(new Notice("The access key was refused: check the key, its secret and the appkey.",
                              `${err.code ? `${err.code}: ` : ""}${err.message}`), "access");
  } finally {
    $("get-token").disabled = false;
  }
}

// -- the form --------------------------------------------------------------------------------

function fillModels(catalogue) {
  const select = $("model");
  select.replaceChildren(...catalogue.models.map((model) => element("option", {
    value: model.name, textContent: model.name, selected: model.name === catalogue.default_model,
  })));
  const formats = (catalogue.output && catalogue.output.formats) || ["wav"];
  const fallback = (catalogue.output && catalogue.output.default && catalogue.output.default.format) || "wav";
  $("format").replaceChildren(...formats.map((format) => element("option", {
    value: format, textContent: format.toUpperCase(), selected: format === fallback,
  })));
  fillStems();
}

function chosenModel() {
  return state.catalogue.models.find((model) => model.name === $("model").value);
}

function fillStems() {
  const model = chosenModel();
  $("model-about").textContent = model ? model.description || "" : "No model is available.";
  const defaults = new Set(model ? model.default_stems : []);
  $("stem-list").replaceChildren(...(model ? model.stems : []).map((stem) => element("label", {},
    element("input", { type: "checkbox", name: "stem", value: stem, checked: defaults.has(stem) }),
    stemLabel(stem))));
}

function chosenStems() {
  return Array.from(document.querySelectorAll('#stem-list input[name="stem"]:checked'), (box) => box.value);
}

function chooseFile(file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  $("file").files = transfer.files;
  $("file-hint").textContent = `${file.name} (${size(file.size)})`;
}

function onDrop(event) {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) chooseFile(file);
}

// -- a job -----------------------------------------------------------------------------------

function stopFollowing() {
  if (state.following) state.following.abort();
  state.following = null;
}

function showMeters(upload, progress) {
  if (upload !== null) {
    $("upload-progress").value = upload;
    $("upload-percent").textContent = percent(upload);
  }
  $("job-progress").value = progress;
  $("job-percent").textContent = percent(progress);
}

const STATUS_WORDS = {
  queued: "Waiting for a free model…",
  processing: "Separating…",
  succeeded: "Done.",
  cancelled: "Cancelled.",
};

function showJob(job) {
  $("job-name").textContent = job.name || job.id;
  showMeters(null, job.status === "succeeded" ? 100 : job.progress || 0);
  const status = $("job-status");
  status.classList.toggle("done", job.status === "succeeded");
  status.classList.toggle("failed", job.status === "failed");
  status.textContent = job.status === "failed" ? "Failed." : STATUS_WORDS[job.status] || job.status;
  $("cancel").hidden = TERMINAL.has(job.status);
}

function openJobSection(name) {
  stopFollowing();
  clearError();
  for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
  $("results").replaceChildren();
  $("job").hidden = false;
  $("job-name").textContent = name;
  $("job-status").classList.remove("done");
  showMeters(0, 0);
  state.following = new AbortController();
  return state.following.signal;
}

async function onSubmit(event) {
  event.preventDefault();
  const file = $("file").files[0];
  const stems = chosenStems();
  if (!file) return showError(new Notice("Choose an audio file first."), "separate");
  if (!stems.length) return showError(new Notice("Choose at least one stem."), "separate");
  const signal = openJobSection(file.name);
  state.shown = null;  // until the job exists, Cancel stops the upload
  $("job").scrollIntoView({ block: "nearest" });
  $("submit").disabled = true;
  $("cancel").hidden = false;
  $("job-status").textContent = "Uploading…";
  let upload;
  try {
    upload = await state.api.createUpload();
    if (file.size > upload.max_bytes) {
      throw new ApiError(413, { error: { status_code: 41300001, status_text: "PayloadTooLarge",
        message: `${file.name} is ${size(file.size)}; uploads are at most ${size(upload.max_bytes)}` } }, null);
    }
    await putFile(upload.upload_url, file, (value) => showMeters(value, 0), signal);
    showMeters(100, 0);
    $("job-status").textContent = "Submitting…";
    const job = await state.api.submit({
      input: { upload_id: upload.upload_id }, model: $("model").value, stems,
      output: { format: $("format").value }, name: file.name.slice(0, 200),
    }, crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
    state.mixes.set(job.id, file);
    state.shown = job.id;
    $("submit").disabled = false;  // another song may follow; this one goes on and stays in Past jobs
    showJob(job);
    loadHistory(false);
    await follow(job, signal);
  } catch (err) {
    if (err.name === "AbortError") {
      $("job-status").textContent = "Upload cancelled.";
      $("cancel").hidden = true;
    } else {
      $("job-status").textContent = "";
      $("cancel").hidden = true;
      showError(err, "job", { maxBytes: upload && upload.max_bytes });
    }
  } finally {
    $("submit").disabled = false;
  }
}

/** Show the job live from its events until it ends (reconnecting if the stream breaks), then its results. */
async function follow(job, signal) {
  let current = job;
  while (!TERMINAL.has(current.status)) {
    try {
      for await (const { event, data } of state.api.events(current.id, signal)) {
        if (event === "status") current = data;
        else if (event === "progress") current = { ...current, progress: Math.max(current.progress, data.progress) };
        showJob(current);
      }
      if (!TERMINAL.has(current.status)) current = await state.api.job(current.id);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.http < 500) throw err;
      await sleep(RETRY_MS);
      if (signal.aborted) return;
      current = await state.api.job(current.id);
    }
  }
  if (signal.aborted) return;
  showJob(current);
  if (current.status === "succeeded") await showResults(current, signal);
  else if (current.status === "failed") showError(jobError(current), "job");
  loadHistory(false);
}

async function onCancel() {
  const id = state.shown;
  if (!id) {
    stopFollowing();
    return;
  }
  $("cancel").disabled = true;
  try {
    showJob(await state.api.cancel(id));
  } catch (err) {
    showError(err, "job");
  } finally {
    $("cancel").disabled = false;
  }
}

// -- results ---------------------------------------------------------------------------------

function track(title, name, note) {
  const canvas = element("canvas", { role: "img", "aria-label": `Waveform of ${title}` });
  const audio = element("audio", { controls: true, preload: "metadata", "aria-label": `Play ${title}` });
  const head = element("div", { class: "head" }, element("h3", { textContent: title }));
  const box = element("article", { class: "track", "data-track": name }, head, canvas, audio);
  if (note) box.append(element("p", { class: "note", textContent: note }));
  return { box, head, canvas, audio };
}

/** Fetch `source` (a URL or a File) once: the player plays it and the waveform is drawn from it. */
async function fill(parts, source, colour, signal) {
  const blob = source instanceof Blob ? source : await (async () => {
    const response = await fetch(source, { signal });
    if (!response.ok) throw new ApiError(response.status, await response.text(), null);
    return response.blob();
  })();
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  parts.audio.src = url;
  try {
    const { peaks, duration } = await peaksOf(await blob.arrayBuffer());
    parts.canvas.dataset.duration = duration.toFixed(3);
    keepDrawn(parts.canvas, peaks, colour);
  } catch {
    parts.canvas.replaceWith(element("p", { class: "note", textContent: "This browser cannot draw this format." }));
  }
}

async function showResults(job, signal) {
  const results = $("results");
  const mix = state.mixes.get(job.id);
  const loads = [];
  const original = track("Original mix", "mix", mix ? "" : "The gateway keeps no copy of the original to play: "
                         + "it is shown for songs submitted from this tab.");
  results.append(original.box);
  if (mix) {
    loads.push(fill(original, mix, "--wave-mix", signal));
  } else {
    original.canvas.remove();
    original.audio.remove();
  }
  for (const stem of job.stems) {
    const item = job.result && job.result[stem];
    if (!item) continue;
    const parts = track(stemLabel(stem), stem);
    results.append(parts.box);
    if (!item.url) {
      parts.box.append(element("p", { class: "note", textContent: "Copied to your storage, not kept here." }));
      parts.canvas.remove();
      parts.audio.remove();
      continue;
    }
    parts.head.append(element("a", {  // the gateway names the file <stem>.<format> (Content-Disposition)
      href: item.url, download: `${stem}.${item.format}`,
      textContent: `Download ${stem}.${item.format} (${size(item.size)})`,
    }));
    loads.push(fill(parts, item.url, "--wave", signal));
  }
  const failed = (await Promise.allSettled(loads)).find((outcome) => outcome.status === "rejected");
  if (failed && !signal.aborted) showError(failed.reason, "job");
}

// -- past jobs -------------------------------------------------------------------------------

function jobRow(job) {
  const label = job.name || job.id;
  const when = new Date(job.created_at).toLocaleString();
  const open = element("button", { type: "button", class: "quiet", textContent: "Open", "aria-label": `Open ${label}` });
  const remove = element("button", { type: "button", class: "danger", textContent: "Delete",
                                     "aria-label": `Delete ${label}` });
  open.addEventListener("click", () => reopen(job.id));
  remove.addEventListener("click", () => removeJob(job, remove));
  return element("li", { "data-job": job.id },
    element("span", { class: "what" }, `${label} `,
            element("span", { class: `badge ${job.status}`, textContent: job.status }),
            element("span", { class: "when", textContent: `${job.model} · ${job.stems.join(", ")} · ${when}` })),
    element("span", { class: "actions" }, open, remove));
}

async function loadHistory(more) {
  if (!state.api) return;
  try {
    const page = await state.api.list(PAGE_SIZE, more ? state.cursor : null);
    const rows = page.jobs.map(jobRow);
    if (more) $("jobs").append(...rows);
    else $("jobs").replaceChildren(...rows);
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    $("history-empty").hidden = $("jobs").children.length > 0;
  } catch (err) {
    showError(err, "history");
  }
}

async function reopen(id) {
  const signal = openJobSection(id);
  state.shown = id;
  try {
    const job = await state.api.job(id);
    $("upload-progress").value = 100;
    $("upload-percent").textContent = percent(100);
    showJob(job);
    $("job").scrollIntoView({ block: "start" });
    await follow(job, signal);
  } catch (err) {
    showError(err, "job");
  }
}

async function removeJob(job, button) {
  if (button.dataset.armed !== "true") {  // a second click confirms
    button.dataset.armed = "true";
    button.textContent = "Delete for good?";
    return;
  }
  button.disabled = true;
  try {
    await state.api.remove(job.id);
    if (state.shown === job.id) {
      stopFollowing();
      $("job").hidden = true;
    }
    state.mixes.delete(job.id);
    await loadHistory(false);
  } catch (err) {
    button.disabled = false;
    showError(err, "history");
  }
}

// -- start -----------------------------------------------------------------------------------

function start() {
  $("token-form").addEventListener("submit", onToken);
  $("gettoken-form").addEventListener("submit", onGetToken);
  $("forget").addEventListener("click", forget);
  $("model").addEventListener("change", fillStems);
  $("job-form").addEventListener("submit", onSubmit);
  $("cancel").addEventListener("click", onCancel);
  $("refresh").addEventListener("click", () => loadHistory(false));
  $("more").addEventListener("click", () => loadHistory(true));
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file-hint").textContent = file ? `${file.name} (${size(file.size)})` : "Choose a file, or drop one here.";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", onDrop);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    connect(saved).catch((err) => {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err, "access");
    });
  }
  document.body.dataset.ready = "true";
}

start();
