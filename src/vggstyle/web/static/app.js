// vggstyle web page: builds its form from /api/options (StyleConfig's fields), sends a job,
// follows it over server-sent events, refreshes the preview and offers the result. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FINISHED = new Set(["done", "failed", "cancelled"]);
const MANAGED = new Set(["style_blend_weights"]); // set by the blend sliders, not typed

const page = {
  options: null,
  content: null,      // File
  styles: [],         // [{file, weight}]
  job: null,          // latest job snapshot
  events: null,       // EventSource
  previewWanted: 0,   // newest preview version announced
  previewShown: 0,    // newest preview version requested
  previewBusy: false,
};

// ------------------------------------------------------------------ form
function fieldElement(spec) {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const label = document.createElement("label");
  label.htmlFor = "f-" + spec.name;
  label.textContent = spec.name.replace(/_/g, " ");
  let input;
  if (spec.choices) {
    input = document.createElement("select");
    for (const choice of spec.choices) {
      const option = document.createElement("option");
      option.value = option.textContent = choice;
      input.append(option);
    }
  } else if (spec.kind === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(spec.default);
  } else {
    input = document.createElement("input");
    if (spec.kind === "float" || spec.kind === "int") {
      input.type = "number";
      input.step = spec.kind === "int" ? "1" : "any";
      input.min = "0";
      const limits = page.options.limits;
      if (spec.name === "image_size") input.max = String(limits.max_image_size);
      if (spec.name === "num_iterations") input.max = String(limits.max_iterations);
    } else {
      input.type = "text";
    }
  }
  input.id = "f-" + spec.name;
  input.name = spec.name;
  input.dataset.default = spec.default === null ? "" : String(spec.default);
  input.dataset.derived = spec.optional ? "1" : ""; // the server derives it (a video's frames have their own)
  if (input.type !== "checkbox") input.value = input.dataset.default;
  if (spec.optional && spec.default === null) input.placeholder = "default";
  if (spec.kind === "layers") wrap.classList.add("wide"); // long defaults stay readable
  const help = document.createElement("small");
  help.textContent = spec.help;
  wrap.append(label, input, help);
  return wrap;
}

function buildForm() {
  for (const spec of page.options.fields) {
    if (MANAGED.has(spec.name)) continue;
    $(spec.main ? "main-fields" : "more-fields").append(fieldElement(spec));
  }
  const presets = $("presets");
  for (const [name, values] of Object.entries(page.options.presets)) {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "preset";
    radio.value = name;
    radio.id = "preset-" + name;
    radio.checked = name === "balanced";
    radio.addEventListener("change", () => applyPreset(values));
    label.title = presetWords(values);
    label.append(radio, ` ${name} `, small(presetWords(values)));
    presets.append(label);
  }
  for (const input of document.querySelectorAll("#main-fields input")) {
    input.addEventListener("input", () => {
      for (const radio of presets.querySelectorAll("input")) radio.checked = false;
    });
  }
}

// What a preset sets, in the words of the fields it sets.
function presetWords(values) {
  return `${values.image_size} px, ${values.num_iterations} iterations`;
}

function small(text) {
  const element = document.createElement("small");
  element.textContent = text;
  return element;
}

function applyPreset(values) {
  for (const [name, value] of Object.entries(values)) {
    const input = $("f-" + name);
    if (input) input.value = String(value);
  }
}

function formValues() {
  const values = {};
  for (const input of document.querySelectorAll("#main-fields [name], #more-fields [name]")) {
    const value = input.type === "checkbox" ? String(input.checked) : input.value.trim();
    const main = input.closest("#main-fields") !== null;
    // Main knobs are always sent, unless the server derives them (content weight, iterations: an
    // image's and a video's differ); the rest only when changed, so defaults stay the server's.
    const always = main && !input.dataset.derived;
    if (value !== "" && (always || value !== input.dataset.default)) values[input.name] = value;
  }
  if (page.styles.length > 1) values.style_blend_weights = page.styles.map((s) => s.weight).join(",");
  return values;
}

// ------------------------------------------------------------------ images
function thumbnail(file) {
  if (KINDS.get(file) === "tiff") return fileLabel(file, "TIFF: the server reads it; this browser cannot show it");
  const img = document.createElement("img");
  img.src = URL.createObjectURL(file);
  img.alt = file.name;
  img.onload = () => URL.revokeObjectURL(img.src);
  return img;
}

// What a picked file is, from its first bytes (names and browsers' types lie: a text file named
// .mp4): the formats this server reads. The server checks again, and decodes.
const KINDS = new WeakMap();
const SIGNATURES = [
  ["image", [0x89, 0x50, 0x4e, 0x47]], ["image", [0xff, 0xd8, 0xff]], ["image", [0x47, 0x49, 0x46, 0x38]],
  ["image", [0x42, 0x4d]], ["tiff", [0x49, 0x49, 0x2a, 0x00]], ["tiff", [0x4d, 0x4d, 0x00, 0x2a]],
  ["video", [0x1a, 0x45, 0xdf, 0xa3]],  // Matroska, WebM
];

async function sniff(file) {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const text = (from, to) => String.fromCharCode(...head.slice(from, to));
  for (const [kind, bytes] of SIGNATURES) {
    if (bytes.every((b, i) => head[i] === b)) return kind;
  }
  if (text(0, 4) === "RIFF" && text(8, 12) === "WEBP") return "image";
  if (text(0, 4) === "RIFF" && text(8, 12) === "AVI ") return "video";
  if (text(4, 8) === "ftyp") return "video";  // MP4, MOV, M4V
  return null;
}

function isVideo(file) {
  return KINDS.get(file) === "video";
}

// A picked file is checked here first: a non-image (even one named .jpg) is said at once, by name.
// Images the browser can show are decoded too (a damaged one is said now); TIFF it cannot show.
async function kindOf(file, videoToo) {
  const kind = await sniff(file).catch(() => null);
  if (kind === "video") return videoToo && page.options.limits.video ? kind : null;
  if (kind === "tiff") return kind;
  if (kind !== "image") return null;
  try {
    (await createImageBitmap(file)).close();
    return kind;
  } catch (err) {
    return null;
  }
}

async function images(files, videoToo) {
  const good = [];
  const bad = [];
  for (const file of Array.from(files)) {
    const kind = await kindOf(file, videoToo);
    if (kind) KINDS.set(file, kind);
    (kind ? good : bad).push(file);
  }
  const also = videoToo && page.options.limits.video ? `, or a video (${page.options.limits.video_formats})` : "";
  $("form-error").textContent = bad.length
    ? `Not an image this page can read: ${bad.map((f) => f.name).join(", ")}. Pick a PNG, JPEG, WebP, GIF, BMP or TIFF file${also}.`
    : "";
  return good;
}

// A video is shown by its name: the page plays only what this server sends (its CSP).
function videoLabel(file) {
  return fileLabel(file, `video, ${(file.size / 1048576).toFixed(1)} MB`, "🎞");
}

function fileLabel(file, what, icon = "🖼") {
  const label = document.createElement("div");
  label.className = "video-name";
  label.textContent = `${icon} ${file.name} (${what})`;
  return label;
}

function setContent(file) {
  if (!file) return;
  page.content = file;
  $("content-thumb").replaceChildren(isVideo(file) ? videoLabel(file) : thumbnail(file));
  updateStart();
}

function addStyles(files) {
  for (const file of files) page.styles.push({ file, weight: 5 });
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  list.replaceChildren();
  page.styles.forEach((style, i) => {
    const item = document.createElement("li");
    const middle = document.createElement("div");
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = style.file.name;
    middle.append(name, maskPicker(style, i));
    if (page.styles.length > 1) {
      const slider = document.createElement("input");
      slider.type = "range";
      slider.min = "0";
      slider.max = "10";
      slider.step = "1";
      slider.value = String(style.weight);
      slider.className = "blend";
      slider.setAttribute("aria-label", "blend weight of " + style.file.name);
      slider.addEventListener("input", () => { style.weight = Number(slider.value); });
      middle.append(slider);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "✕";
    remove.title = "remove";
    remove.setAttribute("aria-label", "remove " + style.file.name);
    remove.addEventListener("click", () => { page.styles.splice(i, 1); renderStyles(); });
    item.append(thumbnail(style.file), middle, remove);
    list.append(item);
  });
  updateStart();
}

// A style mask: white where that style applies. All styles get one, or none does.
function maskPicker(style, i) {
  const row = document.createElement("div");
  row.className = "mask";
  const input = document.createElement("input");
  input.type = "file";
  input.accept = "image/*";
  input.id = "mask-file-" + i;
  input.addEventListener("change", async (e) => {
    const [file] = await images(e.target.files);
    if (file) { style.mask = file; renderStyles(); }
  });
  const label = document.createElement("label");
  label.className = "pick";
  label.htmlFor = input.id;
  if (style.mask) {
    label.textContent = "mask: " + style.mask.name;
    const clear = document.createElement("button");
    clear.type = "button";
    clear.className = "link";
    clear.textContent = "no mask";
    clear.addEventListener("click", () => { delete style.mask; renderStyles(); });
    row.append(label, input, " ", clear);
  } else {
    label.textContent = "add a mask";
    label.title = "a grayscale image, white where this style applies";
    row.append(label, input);
  }
  return row;
}

function maskProblem() {
  const withMask = page.styles.filter((s) => s.mask).length;
  return withMask && withMask < page.styles.length
    ? "Give every style image a mask, or none: each mask says where its style goes." : "";
}

function updateStart() {
  $("start").disabled = !(page.content && page.styles.length);
}

function dropZone(zone, onFiles, videoToo) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = await images(e.dataTransfer.files, videoToo);
    if (files.length) onFiles(files);
  });
}

// ------------------------------------------------------------------ running a job
async function start(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  if (!page.content || !page.styles.length) return;
  const body = new FormData();
  body.append("content", page.content, page.content.name);
  const problem = maskProblem();
  if (problem) {
    $("form-error").textContent = problem;
    return;
  }
  for (const style of page.styles) body.append("style", style.file, style.file.name);
  for (const style of page.styles) if (style.mask) body.append("style_mask", style.mask, style.mask.name);
  for (const [name, value] of Object.entries(formValues())) body.append(name, value);
  $("start").disabled = true;
  page.sent = body; // the same images and settings, for "Run again" if the job is lost
  const [data, refused] = await send(body);
  if (refused) {
    $("form-error").textContent = refused;
    updateStart();
    return;
  }
  showRun(data);
}

// POST a job; returns [job, null] or [null, one line saying why not].
async function send(body) {
  let response;
  try {
    response = await fetch("/api/jobs", { method: "POST", body });
  } catch (err) {
    return [null, "Cannot reach the server: " + err.message];
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) return [null, data.detail || ("The server answered " + response.status)];
  return [data, null];
}

function showRun(job) {
  $("setup").hidden = true;
  $("run").hidden = false;
  $("run-error").textContent = "";
  $("download").hidden = true;
  $("again").hidden = true;
  $("rerun").hidden = true;
  $("compare").hidden = true;
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  $("bar").value = 0;
  $("losses").textContent = "";
  const video = $("result-video");
  video.hidden = true;
  video.pause();
  video.removeAttribute("src");
  video.load(); // lets go of the last result
  const preview = $("preview");
  preview.hidden = true;  // until its first image arrives: no broken-image icon meanwhile
  preview.removeAttribute("src");
  preview.dataset.loads = "0";
  page.previewWanted = page.previewShown = 0;
  page.job = job;
  update(job);
  follow(job);
}

function follow(job) {
  page.events = new EventSource(`/api/jobs/${job.id}/events`);
  page.events.onmessage = (e) => update(JSON.parse(e.data));
  page.events.addEventListener("stopping", (e) => {  // the server is stopping; the job had not ended
    const job = JSON.parse(e.data);
    if (page.job && job.id === page.job.id) stoppedByServer(job);
  });
  page.events.onerror = () => {
    if (page.job && FINISHED.has(page.job.state)) page.events.close();
    else checkJob(job.id);
  };
}

// The event stream broke: ask for the job. Gone (server restarted, job expired): say so and offer
// to run the same job again; still there: follow it again; server unreachable: retry for a while
// (a restart takes seconds), then say contact was lost, with the same offer.
const RETRIES = 10;
const RETRY_MS = 2000;

async function checkJob(id) {
  if (page.checking || !page.job || page.job.id !== id) return;
  page.checking = true;
  let response = null;
  try {
    response = await fetch(`/api/jobs/${id}`);
  } catch (err) {
    response = null;
  }
  page.checking = false;
  if (!page.job || page.job.id !== id || FINISHED.has(page.job.state)) return;
  if (response === null && (page.retries = (page.retries || 0) + 1) <= RETRIES) {
    if (page.events) page.events.close();
    $("status").textContent = "Reconnecting to the server…";
    setTimeout(() => checkJob(id), RETRY_MS);
    return;
  }
  page.retries = 0;
  if (response && response.ok) {
    update(await response.json());
    if (page.events.readyState === EventSource.CLOSED && !FINISHED.has(page.job.state)) follow(page.job);
    return;
  }
  lost(response === null
    ? "Lost contact with the server: it may have stopped. Your images and settings are kept."
    : "The server no longer has this job: it was restarted, or the job was cleared. " +
      "Your images and settings are kept.");
}

function lost(message) {
  if (page.events) page.events.close();
  page.job = null;
  $("status").textContent = "The job was lost";
  $("run-error").textContent = message;
  $("cancel").hidden = true;
  $("rerun").hidden = false;
  $("again").hidden = false;
}

async function rerun() {
  $("rerun").disabled = true;
  const [job, problem] = await send(page.sent);
  $("rerun").disabled = false;
  if (problem) {
    $("run-error").textContent = problem;
    return;
  }
  showRun(job);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return Math.max(1, Math.round(seconds)) + " s";
  if (seconds < 3600) return Math.round(seconds / 60) + " min";
  return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
}

function update(job) {
  if (!page.job || job.id !== page.job.id) return;
  page.job = job;
  const status = $("status");
  const eta = job.eta_seconds !== null ? " · about " + duration(job.eta_seconds) + " left" : "";
  if (job.state === "queued") {
    status.textContent = `Waiting: number ${job.queue_position} in the queue${eta}`;
  } else if (job.state === "running") {
    status.textContent = job.kind === "video" ? videoStatus(job, eta) : imageStatus(job, eta);
    if (job.cancel_requested) status.textContent = "Cancelling…";
  }
  $("bar").value = fractionDone(job);
  const l = job.losses;
  if (l && l.total !== undefined) {  // every term the total is made of (a video's temporal one too)
    const terms = Object.keys(l).filter((k) => k !== "total").map((k) => `${k} ${l[k].toPrecision(3)}`);
    $("losses").textContent = `loss ${l.total.toPrecision(4)} = ${terms.join(" + ")}`;
  }
  if (job.preview_version > page.previewWanted) {
    page.previewWanted = job.preview_version;
    loadPreview();
  }
  if (FINISHED.has(job.state)) finish(job);
}

function imageStatus(job, eta) {
  const scale = job.scale ? ` (scale ${job.scale[0]} of ${job.scale[1]})` : "";
  return job.step
    ? `Iteration ${job.step} of ${job.total}${scale} · ${job.iterations_per_second.toFixed(1)} it/s${eta}`
    : "Starting (loading the network)…";
}

function videoStatus(job, eta) {
  if (job.spread) {
    const { done, total, running, chunks } = job.spread;
    return `Spread over the cluster: ${done} of ${total} chunk passes done (${chunks} chunks, ${running} running)${eta}`;
  }
  if (!job.frame) return "Starting (loading the network, reading the video)…";
  const pace = job.seconds_per_frame ? ` · ${job.seconds_per_frame.toFixed(1)} s per frame` : "";
  const pass = job.passes > 1 ? `Pass ${job.pass} of ${job.passes}: f` : "F";
  return `${pass}rame ${job.frame} of ${job.frames}, iteration ${job.step} of ${job.total}${pace}${eta}`;
}

function fractionDone(job) {
  if (job.kind !== "video") return job.total ? job.step / job.total : 0;
  if (job.spread) return job.spread.total ? job.spread.done / job.spread.total : 0;
  const passes = job.passes || 1;
  if ((job.pass || 1) === 1) {
    const current = job.frame > job.frames_done && job.total ? job.step / job.total : 0;
    return job.frames ? (job.frames_done + current) / job.frames / passes : 0;
  }
  const current = job.total && job.step < job.total ? job.step / job.total : 0;  // between frames: 0
  const within = job.pass_frames ? (job.pass_done + current) / job.pass_frames : 0;
  return (job.pass - 1 + within) / passes;
}

function loadPreview(final) {
  // One request at a time; when it lands, fetch the newest version announced meanwhile.
  if (page.previewBusy) return;
  const version = final ? "final" : page.previewWanted;
  if (!final && version <= page.previewShown) return;
  page.previewBusy = true;
  page.previewShown = final ? page.previewShown : version;
  const preview = $("preview");
  const done = () => {
    page.previewBusy = false;
    if (page.finalPending) {
      page.finalPending = false;
      loadPreview(true);
    } else if (!final && page.previewWanted > page.previewShown) {
      loadPreview();
    }
  };
  preview.onload = () => {
    preview.hidden = !$("result-video").hidden;  // a video's result plays in its place
    preview.dataset.loads = String(Number(preview.dataset.loads) + 1);
    preview.dataset.version = String(version);
    done();
  };
  preview.onerror = done;
  preview.src = `/api/jobs/${page.job.id}/preview?v=${version}`;
}

function finish(job) {
  if (page.events) page.events.close();
  $("cancel").hidden = true;
  $("again").hidden = false;
  const status = $("status");
  const video = job.kind === "video";
  if (job.state === "done") {
    status.textContent = video
      ? `Done: ${job.frames_done} frames in ${duration(job.elapsed)}, ${job.size[0]}×${job.size[1]} px`
      : `Done: ${job.step} iterations in ${duration(job.elapsed)}, ${job.size[0]}×${job.size[1]} px`;
  } else if (job.state === "cancelled" && job.error) {  // the server stopped it (shutting down)
    stoppedByServer(job);
    return;
  } else if (job.state === "cancelled") {
    if (!job.has_result) status.textContent = "Cancelled before a result was ready";
    else if (video && job.pass > 1) {
      status.textContent = `Cancelled in pass ${job.pass} of ${job.passes}: the first pass's ${job.frames_done} frames are kept`;
    } else status.textContent = video ? `Cancelled: the ${job.frames_done} of ${job.frames} frames done are kept`
      : `Cancelled after ${job.step} iterations`;
  } else {
    status.textContent = "Failed";
    $("run-error").textContent = job.error || "the job failed";
  }
  if (job.has_result) {
    if (video) showVideo(job);
    else if (page.previewBusy) page.finalPending = true;
    else loadPreview(true);
    showComparison(job);
    const link = $("download");
    link.href = `/api/jobs/${job.id}/result`;
    link.download = `vggstyle-${job.size[0]}x${job.size[1]}` + (video ? ".mp4" : ".png");  // as the server names it
    link.textContent = video ? "Download MP4" : "Download PNG";
    link.hidden = false;
  }
}

function stoppedByServer(job) {
  if (page.events) page.events.close();
  page.job = { ...job, state: "cancelled" };  // nothing more will come of it
  $("cancel").hidden = true;
  $("again").hidden = false;
  $("status").textContent = "Stopped by the server";
  $("run-error").textContent = `The ${job.error}. Your images and settings are kept.`;
  $("rerun").hidden = false;
}

// A video's result plays where its preview was.
function showVideo(job) {
  const player = $("result-video");
  player.src = `/api/jobs/${job.id}/result`;
  player.hidden = false;
  $("preview").hidden = true;
}

// Before and after, side by side: the content, the style(s) and the result.
function showComparison(job) {
  const row = $("compare-images");
  const figure = (img, caption) => {
    const f = document.createElement("figure");
    const c = document.createElement("figcaption");
    c.textContent = caption;
    f.append(img, c);
    return f;
  };
  const video = job.kind === "video";
  const result = document.createElement("img");
  result.src = video ? `/api/jobs/${job.id}/result/first-frame` : `/api/jobs/${job.id}/preview?v=final`;
  result.alt = "result";
  let content = thumbnail(page.content);
  if (video) { // the first frame, as the server read it, beside the same frame of the result
    content = document.createElement("img");
    content.src = `/api/jobs/${job.id}/content`;
    content.alt = "first frame of " + page.content.name;
  }
  const items = [figure(content, video ? "content (first frame)" : "content")];
  page.styles.forEach((s, i) => items.push(figure(thumbnail(s.file), page.styles.length > 1 ? `style ${i + 1}` : "style")));
  items.push(figure(result, video ? "result (first frame)" : "result"));
  row.replaceChildren(...items);
  $("compare").hidden = false;
}

async function cancel() {
  if (!page.job) return;
  $("cancel").disabled = true;
  $("status").textContent = "Cancelling…";
  await fetch(`/api/jobs/${page.job.id}`, { method: "DELETE" }).catch(() => {});
}

function again() {
  if (page.events) page.events.close();
  $("result-video").pause();
  page.job = null;
  $("run").hidden = true;
  $("setup").hidden = false;
  updateStart(); // the images stay chosen: change a knob and go again
}

// ------------------------------------------------------------------ wiring
async function init() {
  try {
    const response = await fetch("/api/options");
    page.options = await response.json();
  } catch (err) {
    $("form-error").textContent = "Cannot reach the server: " + err.message;
    return;
  }
  buildForm();
  const limits = page.options.limits;
  $("video-limit").textContent = String(limits.max_video_seconds);
  $("video-hint").hidden = !limits.video;
  $("content-file").addEventListener("change", async (e) => {
    setContent((await images(e.target.files, true))[0]);
    e.target.value = "";
  });
  $("style-files").addEventListener("change", async (e) => {
    addStyles(await images(e.target.files));
    e.target.value = "";
  });
  dropZone($("content-drop"), (files) => setContent(files[0]), true);
  dropZone($("style-drop"), addStyles);
  $("setup").addEventListener("submit", start);
  $("cancel").addEventListener("click", cancel);
  $("again").addEventListener("click", again);
  $("rerun").addEventListener("click", rerun);
  document.body.dataset.ready = "1";
}

init();
