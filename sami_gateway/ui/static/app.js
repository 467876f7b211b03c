// The page: a token, a song, a model and its stems; progress live; each stem to hear and keep.
import { Api, ApiError, Notice, TERMINAL, Unreachable, elsewhere, explain, jobError, putFile } from "./api.js";
import { followJob, sleep } from "./follow.js";
import { Shelf, element, size, stemLabel } from "./results.js";
import { getToken } from "./sign.js";

const TOKEN_KEY = "sami-gateway.token";
const PAGE_SIZE = 10;
const MAX_PAGE = 100;  // the most jobs one list call returns: a refresh keeps up to that many rows
const CONFIRM_AFTER_MS = 400;  // a second click sooner is a double click, not a confirmation
const CONFIRM_FOR_MS = 5000;  // an armed Delete disarms itself after this

const $ = (id) => document.getElementById(id);
const state = {
  session: new Api(null),  // the one Api of the page: each sign-in gives it its token
  api: null,  // the session while a token is accepted; null once signed out
  catalogue: null,  // GET /api/v1/models; null when it could not be read
  following: null,  // AbortController of the flow that owns the job section (upload, events, results);
                    // it is aborted when it loses the section, so `signal.aborted` means `!owns(signal)`
  uploading: false,  // that flow has no job yet: Separate waits, Cancel stops the upload
  shown: null,  // id of the job shown
  mixes: new Map(),  // job id -> the File submitted from this tab (the gateway keeps no copy to play)
  shelf: null,  // the tracks shown (results.js)
  dropped: null,  // a dropped File the file input could not take (no DataTransfer constructor)
  cursor: null,
  historyCalls: 0,  // the newest list call: an older answer does not overwrite a newer one
};
const cancelled = new WeakSet();  // signals aborted by Cancel (not by another job opened instead)

/** Whether the flow of `signal` still owns the job section: one replaced by another job, closed or
 *  cancelled writes nothing more to the page. */
const owns = (signal) => state.following !== null && state.following.signal === signal;

const percent = (value) => `${Math.floor(value)} %`;
const isUnauthorized = (err) => err instanceof ApiError && err.http === 401;

/** Hide or disable `control`; if it had the focus, `next` gets it (focus is never lost to the page). */
function retire(control, next, how = "hidden") {
  if (document.activeElement === control && next) next.focus({ preventScroll: true });
  control[how] = true;
}

// -- errors ----------------------------------------------------------------------------------

/** Say what went wrong at the top of the section `near` (its id), where the person is looking; the
 *  box takes the focus for what the person just did, not for what the page did by itself. */
function showError(err, near, { context, focus = true } = {}) {
  if (err && err.name === "AbortError") return;
  // Expired: ask for a new token, keep what is shown; not for the answer to a token since replaced.
  if (isUnauthorized(err) && state.api && (err.token === undefined || err.token === state.api.token)) {
    signOut();
    near = "access";
  }
  const { text, detail } = explain(err, context);
  const box = $("error");
  const section = $(near);
  section.insertBefore(box, section.firstElementChild.nextSibling);
  $("error-text").textContent = text;
  $("error-detail").textContent = detail ? `Details: ${detail}` : "";
  box.hidden = false;
  if (focus) {
    box.focus({ preventScroll: true });
    box.scrollIntoView({ block: "nearest" });
  }
}

function clearError() {
  $("error").hidden = true;
}

// -- the token -------------------------------------------------------------------------------

/** Use `token`: the first page of Past jobs proves it; the model list fills the picker, and
 *  without it the page still signs in, with a picker that says why it is empty. */
async function connect(token) {
  const probe = new Api(token);
  const [listed, catalogue] = await Promise.allSettled([probe.list(PAGE_SIZE), probe.models()]);
  if (listed.status === "rejected") throw listed.reason;
  if (catalogue.status === "rejected" && isUnauthorized(catalogue.reason)) throw catalogue.reason;
  state.session.token = token;  // flows still running (a job followed, its results) use it from now on
  state.api = state.session;
  state.catalogue = catalogue.status === "fulfilled" ? catalogue.value : null;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("token-form").hidden = true;
  $("gettoken").hidden = true;
  $("signed-in").hidden = false;
  $("token-state").textContent = describeToken(token);
  fillModels(state.catalogue);
  $("separate").hidden = false;
  $("history").hidden = false;
  state.historyCalls += 1;
  showHistory(listed.value, false);
  if (catalogue.status === "rejected") showError(catalogue.reason, "separate", { focus: false });
}

/** Back to the token form (a token refused with 401): the job shown stays, players and all. */
function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.api = null;
  retire($("cancel"), $("job-title"));  // no token, no cancelling
  for (const id of ["separate", "history", "signed-in"]) $(id).hidden = true;
  $("token-form").hidden = false;
  $("gettoken").hidden = false;
}

function forget() {
  closeJob();
  signOut();
  state.session.token = null;  // forgotten: nothing calls with it any more
  clearError();
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

/** GetToken's refusal in words: its code and message stay in the details. */
function refusal(err) {
  if (err instanceof Unreachable) return err;
  const detail = `${err.code ? `${err.code}: ` : ""}${err.message}`;
  if (err.code === "InvalidTimestamp") {
    return new Notice("This computer's clock is more than 15 minutes off the gateway's: set it to the right time "
                      + "(or let it set itself automatically), then try again.", detail);
  }
  return new Notice("The access key was refused: check the key, its secret and the appkey.", detail);
}

async function onGetToken(event) {
  event.preventDefault();
  clearError();
  $("get-token").disabled = true;
  try {
    let answer;
    try {
      answer = await getToken($("access-key").value.trim(), $("secret-key").value, $("appkey").value.trim());
    } catch (err) {
      showError(refusal(err), "access");
      return;
    }
    $("secret-key").value = "";
    try {
      await connect(answer.token);
    } catch (err) {
      showError(err, "access");
    }
  } finally {
    $("get-token").disabled = false;
  }
}

// -- the form --------------------------------------------------------------------------------

function fillModels(catalogue) {
  const models = catalogue ? catalogue.models : [];
  $("model").replaceChildren(...models.map((model) => element("option", {
    value: model.name, textContent: model.name, selected: model.name === catalogue.default_model,
  })));
  const output = (catalogue && catalogue.output) || {};
  const formats = output.formats || ["wav"];
  const fallback = (output.default && output.default.format) || "wav";
  $("format").replaceChildren(...formats.map((format) => element("option", {
    value: format, textContent: format.toUpperCase(), selected: format === fallback,
  })));
  fillStems();
}

function chosenModel() {
  return state.catalogue ? state.catalogue.models.find((model) => model.name === $("model").value) : undefined;
}

function fillStems() {
  const model = chosenModel();
  let about = model ? model.description || "" : "No model can run on this gateway now: its model store has "
    + "none that can load. Whoever runs it can add one (sami-gateway models fetch htdemucs).";
  if (!state.catalogue) {
    about = "The models could not be listed, so nothing can be separated now. Reload the page to try again.";
  }
  $("model-about").textContent = about;
  const defaults = new Set(model ? model.default_stems : []);
  $("stem-list").replaceChildren(...(model ? model.stems : []).map((stem) => element("label", {},
    element("input", { type: "checkbox", name: "stem", value: stem, checked: defaults.has(stem) }),
    stemLabel(stem))));
  updateSubmit();
}

/** Separate waits while a song uploads, and cannot run without a model. */
function updateSubmit() {
  const button = $("submit");
  if (state.uploading || !chosenModel()) retire(button, $("job").hidden ? $("model") : $("job-title"), "disabled");
  else button.disabled = false;
}

function chosenStems() {
  return Array.from(document.querySelectorAll('#stem-list input[name="stem"]:checked'), (box) => box.value);
}

function chooseFile(file) {
  state.dropped = null;
  try {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    $("file").files = transfer.files;
  } catch {
    state.dropped = file;  // an older Safari: the input stays empty, the page keeps the file itself
    $("file").value = "";
  }
  $("file").required = !state.dropped;
  $("file-hint").textContent = `${file.name} (${size(file.size)})`;
}

const carriesFiles = (event) => Array.from((event.dataTransfer && event.dataTransfer.types) || []).includes("Files");

function onDrop(event) {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) chooseFile(file);
}

/** A file dropped beside the drop zone would make the browser open it, leaving the page (and its upload). */
function guardDrops(event) {
  if (!carriesFiles(event) || event.target.closest?.("#drop")) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "none";
}

// -- a job -----------------------------------------------------------------------------------

function stopFollowing() {
  if (state.following) state.following.abort();
  state.following = null;
  state.uploading = false;
}

/** The job section gone: nothing followed, nothing playing, no object URL kept. */
function closeJob() {
  stopFollowing();
  state.shown = null;
  state.shelf.clear();  // players removed from the page stop playing
  $("job").hidden = true;
  delete $("job").dataset.job;
  updateSubmit();
}

function showMeters(upload, progress) {
  if (upload !== null) {
    $("upload-progress").value = upload;
    $("upload-percent").textContent = percent(upload);
  }
  $("job-progress").value = progress;
  $("job-percent").textContent = percent(progress);
}

function setStatus(text, kind = "") {
  const status = $("job-status");
  status.classList.toggle("done", kind === "done");
  status.classList.toggle("failed", kind === "failed");
  status.textContent = text;
}

function setCancel(visible) {
  if (visible) $("cancel").hidden = false;
  else retire($("cancel"), $("job-title"));
}

const STATUS_WORDS = {
  queued: "Waiting for a free model…",
  processing: "Separating…",
  succeeded: "Done.",
  failed: "Failed.",
  cancelled: "Cancelled.",
};

function showJob(job) {
  $("job").dataset.job = job.id;
  $("job-name").textContent = job.name || job.id;
  showMeters(null, job.status === "succeeded" ? 100 : job.progress || 0);
  setStatus(STATUS_WORDS[job.status] || job.status, job.status === "succeeded" ? "done" : job.status);
  setCancel(!TERMINAL.has(job.status) && state.api !== null);
}

/** The job section for a job about to be shown; the flow that had it stops. Returns the new flow's signal. */
function openJobSection(name) {
  stopFollowing();
  clearError();
  state.shelf.clear();  // players removed from the page stop playing
  state.shown = null;
  const section = $("job");
  section.hidden = false;
  delete section.dataset.job;
  $("job-name").textContent = name;
  setStatus("");
  setCancel(false);
  showMeters(0, 0);
  state.following = new AbortController();
  updateSubmit();
  return state.following.signal;
}

/** Submit once per upload: the key is the upload's, so a retry (or a second click) gets the same job. */
async function submitJob(api, request, uploadId) {
  const key = `ui-${uploadId}`;
  try {
    return await api.submit(request, key);
  } catch (err) {
    if (!(err instanceof Unreachable)) throw err;
    await sleep(1000);
    return api.submit(request, key);
  }
}

/** Upload `file` and submit it; the steps stop as soon as Cancel is hit or another job is opened. */
async function onSubmit(event) {
  event.preventDefault();
  const file = $("file").files[0] || state.dropped;
  const stems = chosenStems();
  if (!file) return showError(new Notice("Choose an audio file first."), "separate");
  if (!chosenModel()) return showError(new Notice("No model can run on this gateway now."), "separate");
  if (!stems.length) return showError(new Notice("Choose at least one stem."), "separate");
  const api = state.api;
  const signal = openJobSection(file.name);
  state.uploading = true;
  updateSubmit();
  $("job").scrollIntoView({ block: "nearest" });
  setCancel(true);
  setStatus("Uploading…");
  let upload;
  try {
    upload = await api.createUpload(signal);
    if (!owns(signal)) return;
    const there = elsewhere(upload.upload_url);
    if (there) {  // the details name the link, not its signature
      throw new Notice(`This gateway hands out links for ${there}: open ${there}/ui`, upload.upload_url.split("?")[0]);
    }
    if (file.size > upload.max_bytes) {
      throw new ApiError(413, { error: { status_code: 41300001, status_text: "PayloadTooLarge",
        message: `${file.name} is ${size(file.size)}; uploads are at most ${size(upload.max_bytes)}` } }, null);
    }
    await putFile(upload.upload_url, file, (value) => owns(signal) && showMeters(value, 0), signal);
    if (!owns(signal)) return;
    showMeters(100, 0);
    setStatus("Submitting…");
    // Not aborted halfway: the job it creates must be known, to cancel it if Cancel came meanwhile.
    const job = await submitJob(api, {
      input: { upload_id: upload.upload_id }, model: $("model").value, stems,
      output: { format: $("format").value }, name: Array.from(file.name).slice(0, 200).join(""),
    }, upload.upload_id);
    state.mixes.set(job.id, file);
    if (!owns(signal)) {
      const after = () => loadHistory(false);
      if (cancelled.has(signal)) api.cancel(job.id).then(after, after);
      else after();  // another job was opened meanwhile: this one runs on, in Past jobs
      return;
    }
    state.shown = job.id;
    state.uploading = false;  // another song may follow; this one goes on and stays in Past jobs
    updateSubmit();
    showJob(job);
    loadHistory(false);
    await follow(api, job, signal);
  } catch (err) {
    if (signal.aborted || !owns(signal)) return;
    setStatus("");
    setCancel(false);
    showError(err, "job", { context: { maxBytes: upload && upload.max_bytes } });
  } finally {
    if (owns(signal)) {
      state.uploading = false;
      updateSubmit();
    }
  }
}

/** Whether news of the job may take the focus: the person is still with it (the focus is in the job
 *  section, where the page put it), not gone on to something else meanwhile. */
const withTheJob = () => $("job").contains(document.activeElement) || document.activeElement === document.body;

/** Show the job live until it ends (through broken streams, see follow.js), then its results. What
 *  goes wrong meanwhile takes the focus only from a person still with the job (`withTheJob`). */
async function follow(api, job, signal) {
  let ended;
  try {
    ended = await followJob(api, job, signal, {
      onJob: (current) => {
        if (!owns(signal)) return;
        showJob(current);
        state.shelf.live(current);
      },
      onRetry: () => owns(signal) && setStatus("Reconnecting…"),
    });
  } catch (err) {
    if (signal.aborted || !owns(signal)) return;
    setStatus("");
    setCancel(false);
    showError(err, "job", { focus: withTheJob() });
    return;
  }
  if (!ended || !owns(signal)) return;
  showJob(ended);
  if (ended.status === "succeeded") {
    const failure = await state.shelf.show(api, ended, state.mixes.get(ended.id), signal);
    if (failure && owns(signal)) showError(failure, "job", { focus: withTheJob() });
  } else if (ended.status === "failed") {
    showError(jobError(ended), "job", { focus: withTheJob() });
  }
  if (owns(signal)) loadHistory(false);
}

async function onCancel() {
  const flow = state.following;
  if (!flow) return;
  if (state.uploading) {  // no job yet: stop the upload (a job being created is cancelled once it exists)
    cancelled.add(flow.signal);
    stopFollowing();
    updateSubmit();
    setStatus("Upload cancelled.");
    setCancel(false);
    return;
  }
  const id = state.shown;
  retire($("cancel"), $("job-title"), "disabled");
  try {
    const job = await state.api.cancel(id);
    if (owns(flow.signal)) showJob(job);
  } catch (err) {
    if (owns(flow.signal)) showError(err, "job");
  } finally {
    $("cancel").disabled = false;
  }
}

// -- past jobs -------------------------------------------------------------------------------

function describeRow(job) {
  const when = new Date(job.created_at).toLocaleString();
  return [`${job.name || job.id} `, element("span", { class: `badge ${job.status}`, textContent: job.status }),
          element("span", { class: "when", textContent: `${job.model} · ${job.stems.join(", ")} · ${when}` })];
}

function jobRow(job) {
  const label = job.name || job.id;
  const open = element("button", { type: "button", class: "quiet", textContent: "Open", "aria-label": `Open ${label}` });
  const remove = element("button", { type: "button", class: "danger", textContent: "Delete",
                                     "aria-label": `Delete ${label}` });
  open.addEventListener("click", () => reopen(job.id));
  remove.addEventListener("click", () => removeJob(job, remove));
  return element("li", { "data-job": job.id, "data-status": job.status },
    element("span", { class: "what" }, ...describeRow(job)),
    element("span", { class: "actions" }, open, remove));
}

/** Show a page of jobs: rows already there are updated in place (an armed Delete, the focus stay). */
function showHistory(page, more) {
  const list = $("jobs");
  const existing = new Map(Array.from(list.children, (row) => [row.dataset.job, row]));
  const rows = page.jobs.map((job) => {
    const row = existing.get(job.id);
    existing.delete(job.id);
    if (!row) return jobRow(job);
    if (row.dataset.status !== job.status) {
      row.dataset.status = job.status;
      row.querySelector(".what").replaceChildren(...describeRow(job));
    }
    return row;
  });
  if (more) {
    list.append(...rows.filter((row) => !row.isConnected));
  } else {
    for (const row of existing.values()) row.remove();
    rows.forEach((row, i) => {
      if (list.children[i] !== row) list.insertBefore(row, list.children[i] || null);
    });
  }
  state.cursor = page.next_cursor;
  if (page.next_cursor) {
    $("more").hidden = false;
  } else {  // the last page: the focus on "Show older jobs" goes to the last job shown
    const last = list.lastElementChild;
    retire($("more"), last ? last.querySelector("button.quiet") : $("history-title"));
  }
  $("history-empty").hidden = list.children.length > 0;
}

/** Past jobs anew (as many rows as are shown), or `more` of them; `focus` for the person's own click. */
async function loadHistory(more, { focus = false } = {}) {
  const api = state.api;
  if (!api) return;
  const call = ++state.historyCalls;
  const limit = more ? PAGE_SIZE : Math.min(MAX_PAGE, Math.max(PAGE_SIZE, $("jobs").children.length));
  try {
    const page = await api.list(limit, more ? state.cursor : null);
    if (call === state.historyCalls && api === state.api) showHistory(page, more);
  } catch (err) {
    if (call === state.historyCalls && api === state.api) showError(err, "history", { focus });
  }
}

async function reopen(id) {
  const api = state.api;
  const signal = openJobSection(id);
  state.shown = id;
  $("job").dataset.job = id;
  $("job-title").focus({ preventScroll: true });
  $("job").scrollIntoView({ block: "start" });
  try {
    const job = await api.job(id, signal);
    if (!owns(signal)) return;
    showMeters(100, job.progress || 0);
    showJob(job);
    await follow(api, job, signal);
  } catch (err) {
    if (!signal.aborted && owns(signal)) showError(err, "job");
  }
}

function disarm(button, label) {
  clearTimeout(Number(button.dataset.timer));
  delete button.dataset.armed;
  button.textContent = "Delete";
  button.setAttribute("aria-label", `Delete ${label}`);
}

/** The first click arms Delete ("Delete for good?"); a second one, not too soon, deletes. */
async function removeJob(job, button) {
  const label = job.name || job.id;
  if (!button.dataset.armed) {
    button.dataset.armed = String(Date.now());
    button.textContent = "Delete for good?";
    button.setAttribute("aria-label", `Delete for good? ${label}`);  // the spoken name starts as shown
    button.dataset.timer = String(setTimeout(() => disarm(button, label), CONFIRM_FOR_MS));
    button.addEventListener("blur", () => disarm(button, label), { once: true });
    return;
  }
  if (Date.now() - Number(button.dataset.armed) < CONFIRM_AFTER_MS) return;
  const api = state.api;
  button.disabled = true;
  if (state.shown === job.id) closeJob();  // before the call: nothing plays or follows a job being deleted
  try {
    await api.remove(job.id);
  } catch (err) {
    if (!(err instanceof ApiError && err.http === 404)) {  // gone already is as good as deleted
      button.disabled = false;
      showError(err, "history");
      return;
    }
  }
  state.mixes.delete(job.id);
  const row = button.closest("li");
  const next = row.nextElementSibling || row.previousElementSibling;
  const focused = row.contains(document.activeElement) || document.activeElement === document.body;
  row.remove();
  $("history-empty").hidden = $("jobs").children.length > 0;
  if (focused) (next ? next.querySelector("button.quiet") : $("history-title")).focus();
  loadHistory(false);
}

// -- start -----------------------------------------------------------------------------------

function start() {
  state.shelf = new Shelf($("results"));
  $("token-form").addEventListener("submit", onToken);
  $("gettoken-form").addEventListener("submit", onGetToken);
  $("insecure").hidden = window.isSecureContext;
  $("forget").addEventListener("click", forget);
  $("model").addEventListener("change", fillStems);
  $("job-form").addEventListener("submit", onSubmit);
  $("cancel").addEventListener("click", onCancel);
  $("refresh").addEventListener("click", () => loadHistory(false, { focus: true }));
  $("more").addEventListener("click", () => loadHistory(true, { focus: true }));
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    state.dropped = null;
    $("file").required = true;
    $("file-hint").textContent = file ? `${file.name} (${size(file.size)})` : "Choose a file, or drop one here.";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", onDrop);
  document.addEventListener("dragover", guardDrops);
  document.addEventListener("drop", guardDrops);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  const first = saved ? connect(saved).catch((err) => {
    if (isUnauthorized(err)) sessionStorage.removeItem(TOKEN_KEY);
    else $("token").value = saved;  // a passing failure: "Use token" tries it again
    showError(err, "access", { focus: false });
  }) : Promise.resolve();
  first.finally(() => { document.body.dataset.ready = "true"; });
}

start();
