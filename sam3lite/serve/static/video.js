// sam3lite web page, video mode: pick a short video, type noun phrases, Track -> POST /v1/track tracks
// every instance through the whole video on the server; then the video plays with each object's mask
// and label drawn on a canvas over it, in step with the frame on show. Uses app.js's helpers ($, state,
// COLORS, MASK_ALPHA, forEachPixel, hexToRgb, setStatus, promptList, authHeaders, errorMessage).
"use strict";

const tracked = {
  file: null,       // the video File picked (sent as is)
  url: null,        // its object URL, played by the <video>
  answer: null,     // the last /v1/track answer: {video: {width, height, frames, fps}, prompts, frames, timings}
  objects: [],      // [{id, phrase, color, frames, best, visible}] of every object in the answer
  shown: -1,        // the frame drawn on the canvas
};

// ---------------------------------------------------------------------------------------------
// The video file
// ---------------------------------------------------------------------------------------------

function loadVideo(file) {
  if (!file) return;
  const el = $("video");
  if (tracked.url) URL.revokeObjectURL(tracked.url);
  Object.assign(tracked, { file: null, url: URL.createObjectURL(file), answer: null, objects: [], shown: -1 });
  $("frame-slider").disabled = true;  // frames are known once tracked (the answer gives fps and count)
  el.onloadedmetadata = () => {
    tracked.file = file;
    for (const id of ["video-box", "video-controls"]) $(id).hidden = false;
    $("video-placeholder").hidden = true;
    sizeOverlay(el.videoWidth, el.videoHeight);
    renderTracks();
    showFrame(0, true);
    syncVideoMode();
    setStatus(`${file.name}: ${el.videoWidth} × ${el.videoHeight}, ${el.duration.toFixed(1)} s. Type phrases, then Track.`);
    document.body.dataset.state = "ready";
  };
  el.onerror = () => {
    syncVideoMode();
    setStatus(`${file.name} is not a video this browser can play (try MP4 or WebM)`, true);
  };
  el.src = tracked.url;
}

function sizeOverlay(width, height) {
  $("video-overlay").width = width;
  $("video-overlay").height = height;
}

// ---------------------------------------------------------------------------------------------
// POST /v1/track
// ---------------------------------------------------------------------------------------------

async function trackVideo(event) {
  event.preventDefault();
  if (!tracked.file) return;
  const prompts = promptList();
  if (!prompts.length) {
    setStatus("Type a noun phrase first (comma-separated for several).", true);
    return;
  }
  const form = new FormData();
  form.append("video", tracked.file, tracked.file.name);
  form.append("prompts", JSON.stringify(prompts));
  const settings = $("track-settings").value.trim();
  if (settings) form.append("settings", settings);  // the server checks it and names what is wrong

  $("video").pause();
  $("submit").disabled = true;
  document.body.dataset.state = "busy";
  setStatus("Tracking the whole video on the server…");
  try {
    const response = await fetch("/v1/track", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error((await errorMessage(response)) + (retry ? ` (retry in ${retry} s)` : ""));
    }
    showAnswer(await response.json());
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  } finally {
    $("submit").disabled = !tracked.file;
  }
}

function showAnswer(answer) {
  const old = new Map(tracked.objects.map((o) => [o.id, o.visible]));
  const objects = new Map();
  for (const frame of answer.frames) {
    for (const obj of frame.objects) {
      const o = objects.get(obj.id) || { id: obj.id, phrase: obj.phrase, frames: 0, best: 0 };
      o.frames += 1;
      o.best = Math.max(o.best, obj.score);
      objects.set(obj.id, o);
    }
  }
  tracked.answer = answer;
  tracked.objects = [...objects.values()].sort((a, b) => a.id - b.id).map((o) => ({
    ...o, color: objectColor(o.id), visible: old.has(o.id) ? old.get(o.id) : true,
  }));
  sizeOverlay(answer.video.width, answer.video.height);  // the masks' size: what the server decoded
  $("frame-slider").max = String(Math.max(answer.video.frames - 1, 0));
  $("frame-slider").disabled = false;
  renderTracks();
  showFrame(frameAt($("video").currentTime), true);
  const t = answer.timings, n = answer.video.frames;
  setStatus(`${tracked.objects.length} object${tracked.objects.length === 1 ? "" : "s"} in ${n} frames, ` +
    `tracked in ${t.total_ms.toFixed(0)} ms (${(t.track_ms / Math.max(n, 1)).toFixed(0)} ms a frame)`);
}

// Colours follow the object id, so an object keeps its colour on every frame and after a new Track.
function objectColor(id) {
  return COLORS[((id % COLORS.length) + COLORS.length) % COLORS.length];
}

// ---------------------------------------------------------------------------------------------
// Drawing, in step with the video
// ---------------------------------------------------------------------------------------------

// The frame on show at media time t: frame = floor(t * fps), within the tracked frames. The small
// epsilon keeps a time of exactly k / fps (k * 0.1 is not exact in binary) on frame k.
function frameAt(t) {
  const info = tracked.answer ? tracked.answer.video : null;
  if (!info || !info.fps) return 0;
  return Math.min(Math.max(Math.floor(t * info.fps + 1e-6), 0), Math.max(info.frames - 1, 0));
}

function showFrame(index, force = false) {
  if (index === tracked.shown && !force) return;
  tracked.shown = index;
  const canvas = $("video-overlay");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const frame = tracked.answer ? tracked.answer.frames[index] : null;
  const objects = frame ? frame.objects.filter((o) => isVisible(o.id)) : [];
  const boxes = objects.length ? paintMasks(ctx, objects, w, h) : [];
  drawLabels(ctx, objects, boxes, w, h);
  const total = tracked.answer ? tracked.answer.video.frames : 0;
  const n = frame ? frame.objects.length : 0;
  $("frame-info").textContent = tracked.answer
    ? `frame ${index + 1} / ${total} · ${n} object${n === 1 ? "" : "s"}`
    : "not tracked yet";
  $("frame-slider").value = String(index);
  // The canvas says in words what it shows (screen readers; the browser tests read it too).
  const labels = objects.map((o) => `#${o.id} ${o.phrase}`);
  canvas.setAttribute("aria-label", `frame ${index}: ${labels.length ? labels.join(", ") : "no tracked objects"}`);
  document.body.dataset.frame = String(index);
}

function isVisible(id) {
  const o = tracked.objects.find((x) => x.id === id);
  return !o || o.visible;
}

// Paints every object's mask; returns each one's bounding box [x1, y1, x2, y2] (pixels, inclusive).
function paintMasks(ctx, objects, w, h) {
  const pixels = ctx.createImageData(w, h);
  const data = pixels.data;
  const alpha = Math.round(255 * MASK_ALPHA);
  const boxes = objects.map((obj) => {
    const [cr, cg, cb] = hexToRgb(objectColor(obj.id));
    const box = [w, h, -1, -1];
    forEachPixel(obj.rle, (x, y) => {
      if (x >= w || y >= h) return;
      const o = (y * w + x) * 4;
      data[o] = cr; data[o + 1] = cg; data[o + 2] = cb; data[o + 3] = alpha;
      if (x < box[0]) box[0] = x;
      if (y < box[1]) box[1] = y;
      if (x > box[2]) box[2] = x;
      if (y > box[3]) box[3] = y;
    });
    return box;
  });
  ctx.putImageData(pixels, 0, 0);
  return boxes;
}

// "#id phrase" on a tag of the object's colour at the top left of its mask (whole pixels, opaque).
function drawLabels(ctx, objects, boxes, w, h) {
  const scale = Math.max(1, Math.round(Math.max(w, h) / 600));
  const tagH = 14 * scale;
  ctx.font = `${12 * scale}px system-ui, sans-serif`;
  for (const [i, obj] of objects.entries()) {
    const [x1, y1, x2] = boxes[i];
    if (x2 < 0) continue;  // an empty mask this frame: nothing to label
    const label = `#${obj.id} ${obj.phrase}`;
    const tagW = Math.ceil(ctx.measureText(label).width) + 6 * scale;
    const x = Math.max(0, Math.min(x1, w - tagW));
    const y = Math.max(y1, tagH);
    ctx.fillStyle = objectColor(obj.id);
    ctx.fillRect(x, y - tagH, tagW, tagH);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + 3 * scale, y - 3 * scale);
  }
}

function renderTracks() {
  const list = $("tracks");
  list.replaceChildren();
  for (const obj of tracked.objects) {
    const item = document.createElement("li");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = obj.visible;
    toggle.title = "show / hide";
    toggle.addEventListener("change", () => { obj.visible = toggle.checked; showFrame(tracked.shown, true); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = obj.color;
    const name = document.createElement("span");
    name.textContent = `#${obj.id} ${obj.phrase}`;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = `${obj.frames} frame${obj.frames === 1 ? "" : "s"}, best ${obj.best.toFixed(2)}`;
    const label = document.createElement("label");
    label.append(toggle, swatch, name);
    item.append(label, count);
    list.append(item);
  }
}

// Follows the video: each presented frame where the browser reports them (requestVideoFrameCallback,
// with the frame's own media time), else every animation frame while playing; and every seek.
function followVideo() {
  const el = $("video");
  if ("requestVideoFrameCallback" in el) {
    const onFrame = (_now, meta) => {
      showFrame(frameAt(meta.mediaTime));
      el.requestVideoFrameCallback(onFrame);
    };
    el.requestVideoFrameCallback(onFrame);
  } else {
    const tick = () => {
      showFrame(frameAt(el.currentTime));
      if (!el.paused && !el.ended) requestAnimationFrame(tick);
    };
    el.addEventListener("play", () => requestAnimationFrame(tick));
  }
  for (const type of ["seeked", "timeupdate", "pause"]) {
    el.addEventListener(type, () => showFrame(frameAt(el.currentTime)));
  }
  el.addEventListener("play", () => { $("play").textContent = "Pause"; });
  el.addEventListener("pause", () => { $("play").textContent = "Play"; });
}

// The slider picks a frame: seek to its middle, so the browser shows that frame and frameAt agrees.
function seekFrame(index) {
  const info = tracked.answer ? tracked.answer.video : null;
  const el = $("video");
  el.pause();
  const fps = info && info.fps ? info.fps : 0;
  if (fps) el.currentTime = (index + 0.5) / fps;
  showFrame(index);
}

// The submit button tracks in video mode, segments otherwise; each needs its own file.
function syncVideoMode() {
  const video = state.mode === "video";
  $("submit").textContent = video ? "Track" : "Segment";
  $("submit").disabled = video ? !tracked.file : !state.file;
  if (!video) $("video").pause();
  if (video && !tracked.file) setStatus("Pick a video to start.");
  if (!video && !state.file) setStatus("Pick an image to start.");
}

function initVideo() {
  $("video-input").addEventListener("change", (e) => loadVideo(e.target.files[0]));
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { if (radio.checked) syncVideoMode(); });
  }
  $("play").addEventListener("click", () => {
    const el = $("video");
    if (el.paused || el.ended) el.play().catch((err) => setStatus(`cannot play: ${err.message}`, true));
    else el.pause();
  });
  $("frame-slider").addEventListener("input", () => seekFrame(Number($("frame-slider").value)));
  followVideo();
}

initVideo();
