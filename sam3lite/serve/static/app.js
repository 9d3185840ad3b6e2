// sam3lite web page: pick an image, type prompts, draw boxes, see every instance overlaid; or click on
// objects (SAM3's tracker) and refine each with more clicks. Video mode (track by name through a video)
// is in video.js, which uses this file's helpers. Plain browser JavaScript, no build step.
// Talks only to this server's /v1 API.
"use strict";

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
  "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"];
const MASK_ALPHA = 0.45;
const OBJECT_COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ec4899", "#8b5cf6", "#06b6d4", "#84cc16", "#ef4444"];
const DRAG_PIXELS = 4;  // a pointer that moves less than this (screen pixels) clicks; more draws a box

const $ = (id) => document.getElementById(id);
const state = {
  file: null,          // the File picked: sent as is, so the server's cache recognizes it
  image: null,         // HTMLImageElement of it
  boxes: [],           // {x1, y1, x2, y2, label} in image pixels
  drag: null,          // box being drawn
  results: [],         // [{prompt, detections, color, visible}]
  mode: "find",        // "find" (prompts, exemplar boxes), "click" (objects) or "video" (video.js)
  tracker: false,      // the server's model answers clicks (GET /v1/model)
  session: null,       // the server's click session for this image (it keeps each object's last mask)
  objects: [],         // [{id, answer, pending: [prompts not answered yet], color, visible}]
  current: -1,         // index in objects of the object that clicks refine (-1: the next click starts one)
  press: null,         // pointer down in click mode: {x, y, sx, sy, label}
  sending: Promise.resolve(),  // click requests run one after the other, each refining the last answer
  answered: 0,         // click requests answered (tests wait on body[data-answered])
};

// ---------------------------------------------------------------------------------------------
// COCO compressed RLE -> mask (the string format of pycocotools' rleToString)
// ---------------------------------------------------------------------------------------------

function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];  // runs after the first two are deltas
    counts.push(x);
  }
  return counts;
}

// Calls paint(x, y) for every foreground pixel; runs are column-major and start with background.
function forEachPixel(rle, paint) {
  const [h] = rle.size;
  const counts = rleCounts(rle.counts);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    if (r % 2 === 1) {
      for (let j = i; j < i + counts[r]; j++) paint(Math.floor(j / h), j % h);
    }
    i += counts[r];
  }
}

// ---------------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------------

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// [{rle, color}] of every mask on show: text detections, then each object's best mask.
function visibleMasks() {
  const masks = [];
  for (const result of state.results.filter((r) => r.visible)) {
    for (const det of result.detections) masks.push({ rle: det.rle, color: result.color });
  }
  for (const obj of state.objects.filter((o) => o.visible && o.answer)) {
    masks.push({ rle: obj.answer.masks[obj.answer.best].rle, color: obj.color });
  }
  return masks;
}

function drawOverlay() {
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  const w = canvas.width, h = canvas.height;
  const masks = visibleMasks();
  if (masks.length) {
    const pixels = ctx.createImageData(w, h);
    const data = pixels.data;
    for (const mask of masks) {
      const [cr, cg, cb] = hexToRgb(mask.color);
      forEachPixel(mask.rle, (x, y) => {
        if (x >= w || y >= h) return;  // a browser that ignores EXIF rotation sees other sizes
        const o = (y * w + x) * 4;
        data[o] = cr; data[o + 1] = cg; data[o + 2] = cb; data[o + 3] = Math.round(255 * MASK_ALPHA);
      });
    }
    ctx.putImageData(pixels, 0, 0);
  }
  const scale = Math.max(1, Math.round(Math.max(w, h) / 600));  // lines readable on big images
  const visible = state.results.filter((r) => r.visible);
  ctx.lineWidth = 2 * scale;
  ctx.font = `${12 * scale}px system-ui, sans-serif`;
  for (const result of visible) {
    for (const det of result.detections) {
      const [x1, y1, x2, y2] = det.box;
      ctx.strokeStyle = result.color;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = `${result.prompt} ${det.score.toFixed(2)}`;
      const tw = ctx.measureText(label).width + 6 * scale;
      const ty = Math.max(y1, 14 * scale);
      ctx.fillStyle = result.color;
      ctx.fillRect(x1, ty - 14 * scale, tw, 14 * scale);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x1 + 3 * scale, ty - 3 * scale);
    }
  }
  ctx.setLineDash([6 * scale, 4 * scale]);
  if (state.mode === "find") {
    for (const b of state.drag ? [...state.boxes, state.drag] : state.boxes) {
      ctx.strokeStyle = b.label === 1 ? "#16a34a" : "#dc2626";
      ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
    }
  }
  ctx.setLineDash([]);
  drawObjectPrompts(ctx, scale);
}

// Each object's box (dashed, in its colour) and clicks (green: on the object, red: background).
function drawObjectPrompts(ctx, scale) {
  const boxes = state.objects.filter((o) => o.visible && objectBox(o)).map((o) => [objectBox(o), o.color]);
  if (state.mode === "click" && state.drag) {
    const d = state.drag;
    boxes.push([[d.x1, d.y1, d.x2, d.y2], "#111827"]);
  }
  ctx.setLineDash([6 * scale, 4 * scale]);
  ctx.lineWidth = 2 * scale;
  for (const [[x1, y1, x2, y2], color] of boxes) {
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
  ctx.setLineDash([]);
  for (const [i, obj] of state.objects.entries()) {
    if (!obj.visible) continue;
    for (const [x, y, label] of objectPoints(obj)) {
      ctx.beginPath();
      ctx.arc(x, y, (i === state.current ? 6 : 4.5) * scale, 0, 2 * Math.PI);
      ctx.fillStyle = label === 1 ? "#16a34a" : "#dc2626";
      ctx.fill();
      ctx.lineWidth = 1.5 * scale;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  }
}

function renderResults() {
  const list = $("results");
  list.replaceChildren();
  for (const result of state.results) {
    const item = document.createElement("li");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = result.visible;
    toggle.title = "show / hide";
    toggle.addEventListener("change", () => { result.visible = toggle.checked; drawOverlay(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = result.color;
    const name = document.createElement("span");
    name.textContent = result.prompt;
    const count = document.createElement("span");
    count.className = "count";
    const n = result.detections.length;
    const best = n ? `, best ${Math.max(...result.detections.map((d) => d.score)).toFixed(2)}` : "";
    count.textContent = `${n} found${best}`;
    const label = document.createElement("label");
    label.append(toggle, swatch, name);
    item.append(label, count);
    list.append(item);
  }
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const [i, obj] of state.objects.entries()) {
    const item = document.createElement("li");
    item.classList.toggle("current", i === state.current);
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = obj.visible;
    toggle.title = "show / hide";
    toggle.addEventListener("change", () => { obj.visible = toggle.checked; drawOverlay(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = obj.color;
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "pick";
    pick.title = "refine this object with the next clicks";
    pick.textContent = `object ${i + 1}`;
    pick.addEventListener("click", () => { state.current = i; renderObjects(); drawOverlay(); });
    const count = document.createElement("span");
    count.className = "count";
    const n = objectPoints(obj).length;
    const parts = [`${n} click${n === 1 ? "" : "s"}${objectBox(obj) ? " + box" : ""}`];
    if (obj.answer) {
      parts.push(`IoU ${obj.answer.masks[obj.answer.best].iou_score.toFixed(2)}`);
      parts.push(`score ${obj.answer.object_score.toFixed(2)}`);
    }
    count.textContent = parts.join(" · ");
    item.append(toggle, swatch, pick, count);
    list.append(item);
  }
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------------------
// Image, boxes
// ---------------------------------------------------------------------------------------------

function loadFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    state.file = file;
    state.image = img;
    state.boxes = [];
    state.results = [];
    state.session = null;  // sessions belong to one image
    state.objects = [];
    state.current = -1;
    for (const id of ["image-layer", "overlay"]) {
      $(id).width = img.naturalWidth;
      $(id).height = img.naturalHeight;
    }
    $("image-layer").getContext("2d").drawImage(img, 0, 0);
    $("canvas-box").hidden = false;
    $("placeholder").hidden = true;
    $("submit").disabled = false;
    updateBoxCount();
    renderResults();
    renderObjects();
    drawOverlay();
    setStatus(`${file.name}: ${img.naturalWidth} × ${img.naturalHeight}`);
    document.body.dataset.state = "ready";
  };
  img.onerror = () => setStatus(`${file.name} is not an image this browser can show`, true);
  img.src = url;
}

function imagePoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.image.naturalWidth;
  const y = ((event.clientY - rect.top) / rect.height) * state.image.naturalHeight;
  return [Math.min(Math.max(x, 0), state.image.naturalWidth), Math.min(Math.max(y, 0), state.image.naturalHeight)];
}

function boxLabel() {
  return Number(document.querySelector("input[name=box-label]:checked").value);
}

function updateBoxCount() {
  const n = state.boxes.length;
  $("box-count").textContent = `${n} box${n === 1 ? "" : "es"}`;
}

function startBox(event) {
  if (!state.image) return;
  if (state.mode === "click") return startClick(event);
  const [x, y] = imagePoint(event);
  state.drag = { x0: x, y0: y, x1: x, y1: y, x2: x, y2: y, label: boxLabel() };
  $("overlay").setPointerCapture(event.pointerId);
}

function moveBox(event) {
  if (state.mode === "click") return moveClick(event);
  if (!state.drag) return;
  const [x, y] = imagePoint(event);
  const d = state.drag;
  Object.assign(d, { x1: Math.min(d.x0, x), y1: Math.min(d.y0, y), x2: Math.max(d.x0, x), y2: Math.max(d.y0, y) });
  drawOverlay();
}

function endBox(event) {
  if (state.mode === "click") return endClick(event);
  const d = state.drag;
  state.drag = null;
  if (d && d.x2 - d.x1 >= 3 && d.y2 - d.y1 >= 3) {
    state.boxes.push({ x1: d.x1, y1: d.y1, x2: d.x2, y2: d.y2, label: d.label });
    updateBoxCount();
  }
  drawOverlay();
}

// ---------------------------------------------------------------------------------------------
// Objects: clicks and boxes (POST /v1/segment_object)
// ---------------------------------------------------------------------------------------------

function startClick(event) {
  const [x, y] = imagePoint(event);
  // Right button or shift: a negative click (background).
  const label = event.button === 2 || event.shiftKey ? 0 : 1;
  state.press = { x, y, sx: event.clientX, sy: event.clientY, label };
  $("overlay").setPointerCapture(event.pointerId);
}

function moveClick(event) {
  const p = state.press;
  if (!p || Math.hypot(event.clientX - p.sx, event.clientY - p.sy) < DRAG_PIXELS) return;
  const [x, y] = imagePoint(event);
  state.drag = { x1: Math.min(p.x, x), y1: Math.min(p.y, y), x2: Math.max(p.x, x), y2: Math.max(p.y, y) };
  drawOverlay();
}

function endClick(event) {
  const p = state.press, d = state.drag;
  state.press = null;
  state.drag = null;
  if (!p || event.type === "pointercancel") return drawOverlay();
  if (d) addToObject({ box: [d.x1, d.y1, d.x2, d.y2] });
  else addToObject({ points: [[round1(p.x), round1(p.y), p.label]] });
}

function round1(v) { return Math.round(v * 10) / 10; }

function newObject() {
  const obj = {
    id: null, answer: null, pending: [], visible: true,
    color: OBJECT_COLORS[state.objects.length % OBJECT_COLORS.length],
  };
  state.objects.push(obj);
  state.current = state.objects.length - 1;
  return obj;
}

// A click or a box on the current object (a new one if there is none): shown at once, then sent.
function addToObject(prompt) {
  if (!state.tracker) {
    setStatus("This server's model has no tracker: start it with --tracker sam3 to click on objects.", true);
    return;
  }
  const obj = state.current >= 0 ? state.objects[state.current] : newObject();
  obj.pending.push(prompt);
  renderObjects();
  drawOverlay();
  state.sending = state.sending.then(() => sendObject(obj, prompt));
}

// One request for one object. The first sends the image; later ones send the session and only the
// new click: the server keeps the object's clicks and last mask. If the server has forgotten them
// (expired session, image no longer cached) the object is sent again whole, with the image.
async function sendObject(obj, prompt) {
  const started = performance.now();
  document.body.dataset.state = "busy";
  setStatus("Segmenting the object…");
  try {
    let response = await postObject(obj, prompt, false);
    if (!response.ok) {
      const code = await errorCode(response.clone());
      if (code === "unknown_session") state.session = null;
      if (code === "unknown_session" || code === "unknown_object" || code === "image_not_cached") {
        if (code !== "image_not_cached") obj.id = null;
        response = await postObject(obj, prompt, true);
      }
    }
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error((await errorMessage(response)) + (retry ? ` (retry in ${retry} s)` : ""));
    }
    const body = await response.json();
    const answer = body.objects[0];
    state.session = body.session;
    Object.assign(obj, { id: answer.object_id, answer });
    const t = body.timings;
    const encoder = t.image_cache_hit ? "image features cached" : `image encoder ${t.image_encoder_ms.toFixed(0)} ms`;
    const best = answer.masks[answer.best];
    setStatus(`object ${state.objects.indexOf(obj) + 1}: IoU ${best.iou_score.toFixed(2)}, ` +
      `score ${answer.object_score.toFixed(2)} in ${(performance.now() - started).toFixed(0)} ms ` +
      `(${encoder}, tracker ${t.prompts_ms.toFixed(0)} ms)`);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  } finally {
    obj.pending.shift();  // answered, or refused (the status says why): either way no longer pending
    renderObjects();
    drawOverlay();
    state.answered += 1;
    document.body.dataset.answered = String(state.answered);
  }
}

// Clicks of an object: those of its last answer, then those still on their way.
function objectPoints(obj) {
  const points = obj.answer ? [...obj.answer.points] : [];
  for (const prompt of obj.pending) points.push(...(prompt.points || []));
  return points;
}

function objectBox(obj) {
  const boxes = obj.pending.filter((p) => p.box).map((p) => p.box);
  return boxes.length ? boxes[boxes.length - 1] : obj.answer && obj.answer.box;
}

function postObject(obj, prompt, whole) {
  const refine = !whole && obj.id !== null && state.session !== null;
  // The object as the server will see it after this request: its answered clicks and box, and the new ones.
  const points = [...(obj.answer ? obj.answer.points : []), ...(prompt.points || [])];
  const box = prompt.box || (obj.answer && obj.answer.box);
  const item = refine ? { object_id: obj.id, ...prompt } : { points };
  if (!refine && box) item.box = box;
  const form = new FormData();
  if (!state.session || whole) form.append("image", state.file, state.file.name);
  if (state.session) form.append("session", state.session);
  form.append("objects", JSON.stringify([item]));
  // One click alone is ambiguous (a part or the whole?): ask for three candidates, show the best.
  form.append("multimask", String(points.length === 1 && !box));
  form.append("output", "rle");
  return fetch("/v1/segment_object", { method: "POST", body: form, headers: authHeaders() });
}

async function errorCode(response) {
  try {
    return (await response.json()).error.code;
  } catch (_) {
    return null;
  }
}

function setMode(mode) {
  state.mode = mode;
  document.body.dataset.mode = mode;
  drawOverlay();
}

// ---------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function promptList() {
  return $("prompts").value.split(",").map((p) => p.trim()).filter((p) => p.length);
}

async function segment(event) {
  event.preventDefault();
  if (!state.file) return;
  const prompts = promptList();
  if (!prompts.length && !state.boxes.length) {
    setStatus("Type a prompt or draw a box first.", true);
    return;
  }
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("prompts", JSON.stringify(prompts));
  if (state.boxes.length) {
    form.append("boxes", JSON.stringify(state.boxes.map((b) => [b.x1, b.y1, b.x2, b.y2])));
    form.append("box_labels", JSON.stringify(state.boxes.map((b) => b.label)));
  }
  form.append("threshold", $("threshold").value);
  form.append("mask_threshold", $("mask-threshold").value);
  form.append("output", "rle");

  $("submit").disabled = true;
  document.body.dataset.state = "busy";
  setStatus("Segmenting…");
  try {
    const response = await fetch("/v1/segment", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error((await errorMessage(response)) + (retry ? ` (retry in ${retry} s)` : ""));
    }
    const body = await response.json();
    const old = new Map(state.results.map((r) => [r.prompt, r.visible]));
    state.results = body.results.map((r, i) => ({
      ...r, color: COLORS[i % COLORS.length], visible: old.has(r.prompt) ? old.get(r.prompt) : true,
    }));
    renderResults();
    drawOverlay();
    const t = body.timings;
    const encoder = t.image_cache_hit ? "image features cached" : `image encoder ${t.image_encoder_ms.toFixed(0)} ms`;
    const found = state.results.reduce((n, r) => n + r.detections.length, 0);
    setStatus(`${found} found in ${t.total_ms.toFixed(0)} ms (${encoder}, prompts ${t.prompts_ms.toFixed(0)} ms)`);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  } finally {
    $("submit").disabled = false;
  }
}

async function showModelInfo() {
  try {
    const response = await fetch("/v1/model", { headers: authHeaders() });
    if (!response.ok) {
      $("model-info").textContent = response.status === 401 ? "API key needed (see below)" : await errorMessage(response);
      return;
    }
    const m = await response.json();
    $("model-info").textContent = `${m.name} · ${m.variant} · ${m.device} · ${m.dtype}${m.tracker ? " · tracker" : ""}`;
    state.tracker = m.tracker;
    $("mode-click").disabled = !m.tracker;
    $("mode-video").disabled = !m.tracker;
    $("tracker-note").hidden = m.tracker;
    $("tracker-note").textContent = m.tracker ? "" : "(clicks and videos need a tracker: sam3lite serve ... --tracker sam3)";
  } catch (err) {
    $("model-info").textContent = `server unreachable: ${err.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

function init() {
  $("image-input").addEventListener("change", (e) => loadFile(e.target.files[0]));
  $("controls").addEventListener("submit", (e) => (state.mode === "video" ? trackVideo(e) : segment(e)));
  $("clear-boxes").addEventListener("click", () => { state.boxes = []; updateBoxCount(); drawOverlay(); });
  for (const [input, output] of [["threshold", "threshold-value"], ["mask-threshold", "mask-threshold-value"]]) {
    $(input).addEventListener("input", () => { $(output).textContent = Number($(input).value).toFixed(2); });
  }
  $("api-key").addEventListener("change", showModelInfo);
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { if (radio.checked) setMode(radio.value); });
  }
  $("new-object").addEventListener("click", () => { state.current = -1; renderObjects(); drawOverlay(); });
  $("clear-objects").addEventListener("click", () => {
    state.objects = [];
    state.current = -1;
    renderObjects();
    drawOverlay();
  });
  const overlay = $("overlay");
  // Right click is a negative click in click mode, not the browser's menu.
  overlay.addEventListener("contextmenu", (e) => { if (state.mode === "click") e.preventDefault(); });
  overlay.addEventListener("pointerdown", startBox);
  overlay.addEventListener("pointermove", moveBox);
  overlay.addEventListener("pointerup", endBox);
  overlay.addEventListener("pointercancel", endBox);
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("dragging");
    (state.mode === "video" ? loadVideo : loadFile)(e.dataTransfer.files[0]);
  });
  showModelInfo();
}

init();
