"use strict";
const $ = (id) => document.getElementById(id);
const state = { current: null, frameId: null };

function fixed(value, digits, unit) {
  return value === null || value === undefined ? "\u2013" : value.toFixed(digits) + unit;
}
function clock(ts) {
  return new Date(ts * 1000).toISOString().slice(11, 23);
}
async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
}
function pick(name) {
  state.current = name;
  state.frameId = null;
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  refresh();
}
function renderButtons(list) {
  const nav = $("streams");
  const names = list.map((s) => s.name).join("\n");
  if (nav.dataset.names !== names) {  // rebuilt only when streams come or go, so a click is never lost
    nav.replaceChildren(...list.map((s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.id = "stream-" + s.name;
      button.dataset.stream = s.name;
      const label = document.createElement("span");
      label.textContent = s.name;
      const fps = document.createElement("span");
      fps.className = "fps";
      button.append(label, fps);
      button.addEventListener("click", () => pick(s.name));
      return button;
    }));
    nav.dataset.names = names;
  }
  for (const s of list) {
    const button = document.getElementById("stream-" + s.name);
    button.querySelector(".fps").textContent = fixed(s.fps, 1, " fps");
    button.setAttribute("aria-pressed", String(s.name === state.current));
  }
}
function renderStream(s) {
  $("stream-title").textContent = s.name;
  $("fps").textContent = fixed(s.fps, 1, "");
  $("latency-p50").textContent = fixed(s.latency_p50_ms, 0, " ms");
  $("latency-p99").textContent = fixed(s.latency_p99_ms, 0, " ms");
  $("frame-info").textContent = s.seq === null ? "no result yet"
    : "frame #" + s.seq + " captured " + clock(s.capture_ts) + " UTC, " + s.detections + " detections";
  if (s.frame_id !== null && s.frame_id !== state.frameId) {
    const img = $("frame");
    img.dataset.stream = s.name;
    img.src = "/api/streams/" + encodeURIComponent(s.name) + "/frame.jpg?frame=" + encodeURIComponent(s.frame_id);
    state.frameId = s.frame_id;
  }
}
function renderDetections(rows) {
  const body = $("detections-body");
  body.replaceChildren(...rows.map((d) => {
    const row = document.createElement("tr");
    cell(row, clock(d.capture_ts));
    cell(row, String(d.seq));
    cell(row, d.label);
    cell(row, d.score.toFixed(2));
    cell(row, d.box.map((v) => Math.round(v)).join(", "));
    return row;
  }));
}
async function refresh() {
  clearTimeout(state.timer);
  try {
    const data = await getJSON("/api/streams");
    const list = data.streams;
    if (!list.some((s) => s.name === state.current)) {
      const wanted = decodeURIComponent(location.hash.slice(1));
      state.current = list.some((s) => s.name === wanted) ? wanted : (list.length ? list[0].name : null);
      state.frameId = null;
    }
    renderButtons(list);
    $("window").textContent = String(data.window_s);
    const s = list.find((item) => item.name === state.current);
    if (s) {
      renderStream(s);
      const shown = s.name;
      const dets = await getJSON("/api/streams/" + encodeURIComponent(shown) + "/detections");
      if (shown === state.current) renderDetections(dets.detections);
    }
    $("status").textContent = list.length ? "live" : "waiting for results\u2026";
  } catch (err) {
    $("status").textContent = "cannot reach the server: " + err.message;
  }
  state.timer = setTimeout(refresh, 700);
}
refresh();
