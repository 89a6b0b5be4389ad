"use strict";
const $ = (id) => document.getElementById(id);
const state = { current: null, frameId: null, tracker: undefined, polls: 0, rows: new Map(), tiles: new Map() };

function fixed(value, digits, unit) {
  return value === null || value === undefined ? "\u2013" : value.toFixed(digits) + unit;
}
function clock(ts) {
  return new Date(ts * 1000).toISOString().slice(11, 23);
}
function part(text) {
  return encodeURIComponent(text);
}
async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (response.status === 401) location.assign("/login");  // the session ended: log in again
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
function cell(row, content) {
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content;
  else td.append(content);
  row.append(td);
}

// ------------------------------------------------------------------------------------------ one stream at a time
function pick(name) {
  state.current = name;
  state.frameId = null;
  history.replaceState(null, "", "#" + part(name));
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
      button.append(element("span", "", s.name), element("span", "fps"));
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
    img.src = "/api/streams/" + part(s.name) + "/frame.jpg?frame=" + part(s.frame_id);
    state.frameId = s.frame_id;
  }
}
function renderDetections(rows) {
  $("detections-body").replaceChildren(...rows.map((d) => {
    const row = document.createElement("tr");
    cell(row, clock(d.capture_ts));
    cell(row, String(d.seq));
    cell(row, d.label);
    cell(row, d.score.toFixed(2));
    cell(row, d.box.map((v) => Math.round(v)).join(", "));
    return row;
  }));
}
async function refreshSingle(list) {
  if (!list.some((s) => s.name === state.current)) {
    const wanted = decodeURIComponent(location.hash.slice(1));
    state.current = list.some((s) => s.name === wanted) ? wanted : (list.length ? list[0].name : null);
    state.frameId = null;
  }
  renderButtons(list);
  const s = list.find((item) => item.name === state.current);
  if (s) {
    renderStream(s);
    const shown = s.name;
    const dets = await getJSON("/api/streams/" + part(shown) + "/detections");
    if (shown === state.current) renderDetections(dets.detections);
  }
}

// ------------------------------------------------------------------------------------------ the tracker's grid
function tile(name) {
  let t = state.tiles.get(name);
  if (!t) {
    const figure = element("figure", "tile");
    figure.id = "tile-" + name;
    figure.dataset.stream = name;
    const caption = element("figcaption");
    t = { figure, frameId: null, name: element("b", "name", name), fps: element("span", "fps"),
      objects: element("span", "objects"), img: element("img"), ids: element("p", "track-ids"),
      counts: element("p", "counts") };
    t.img.alt = "latest frame of " + name + " with its tracked objects";
    caption.append(t.name, t.fps, t.objects);
    figure.append(caption, t.img, t.ids, t.counts);
    state.tiles.set(name, t);
  }
  return t;
}
function renderGrid(list) {
  const names = list.map((s) => s.name).join("\n");
  const grid = $("grid");
  if (grid.dataset.names !== names) {
    grid.replaceChildren(...list.map((s) => tile(s.name).figure));
    grid.dataset.names = names;
  }
  for (const s of list) {
    const t = tile(s.name);
    t.fps.textContent = fixed(s.fps, 1, " fps");
    const tracks = s.tracks;
    if (!tracks) {
      t.objects.textContent = "no tracks yet";
      continue;
    }
    t.objects.textContent = tracks.objects.length + " tracked, " + tracks.untracked + " not";
    t.ids.textContent = tracks.objects.map((o) => "#" + o.track_id + " " + o.label).join(", ");
    if (tracks.frame_id !== t.frameId) {
      t.img.src = "/api/streams/" + part(s.name) + "/tracks.jpg?frame=" + part(tracks.frame_id);
      t.img.dataset.frame = tracks.frame_id;
      t.frameId = tracks.frame_id;
    }
  }
}
async function refreshCounts(list) {
  for (const s of list) {
    try {
      const found = await getJSON("/api/streams/" + part(s.name) + "/counts");
      const entries = Object.entries(found.counts).sort();
      tile(s.name).counts.textContent = entries.map(([k, v]) => k + " " + v).join(" \u00b7 ");
    } catch (err) {
      tile(s.name).counts.textContent = "";
    }
  }
}
function where(e) {
  if (e.line) return "line " + e.line + (e.direction ? " (" + e.direction + ")" : "");
  if (e.zone) return "zone " + e.zone;
  return e.zones.length ? "in " + e.zones.join(", ") : "";
}
function snapshot(e) {
  const url = "/api/events/" + part(e.stream) + "/" + part(e.event_id) + "/snapshot.jpg";
  const img = element("img");
  img.alt = "best shot of track " + e.track_id;
  img.addEventListener("error", async () => {  // ask again for the reason: the frame trimmed away, most likely
    let why = "best shot not available";
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) why = await response.text();
    } catch (err) { /* the reason stays generic */ }
    img.replaceWith(element("span", "gone", why));
  }, { once: true });
  img.src = url;
  return img;
}
function eventRow(e) {
  const row = document.createElement("tr");
  row.dataset.event = e.event_id;
  cell(row, clock(e.capture_ts));
  cell(row, e.stream);
  cell(row, e.change ? e.event + ": " + e.change.replace("_", " ") : e.event);
  cell(row, e.label);
  cell(row, "#" + e.track_id);
  cell(row, where(e));
  cell(row, e.duration_s.toFixed(1) + " s");
  cell(row, snapshot(e));
  const link = element("a", "clip", "clip");
  link.href = "/api/events/" + part(e.stream) + "/" + part(e.event_id) + "/clip.mp4";
  link.target = "_blank";
  link.rel = "noopener";
  cell(row, link);
  return row;
}
function renderEvents(events) {
  const rows = new Map();
  for (const e of events) rows.set(e.stream + "\n" + e.event_id, state.rows.get(e.stream + "\n" + e.event_id) || eventRow(e));
  state.rows = rows;  // rows kept are moved, not remade: their snapshots are not fetched again
  $("events-body").replaceChildren(...rows.values());
}
async function refreshTracking(list) {
  renderGrid(list);
  const found = await getJSON("/api/events?limit=50");
  renderEvents(found.events);
  if (state.polls % 5 === 0) refreshCounts(list);
}

// ------------------------------------------------------------------------------------------ both
async function showUser() {
  try {
    const me = await getJSON("/api/me");
    if (me.user) $("user").textContent = me.user;
    $("logout").hidden = !me.logout;
  } catch (err) { /* the status line says it when the server cannot be reached */ }
}
async function refresh() {
  clearTimeout(state.timer);
  try {
    const data = await getJSON("/api/streams");
    const list = data.streams;
    if (state.tracker !== data.tracker) {
      state.tracker = data.tracker;
      $("single").hidden = Boolean(data.tracker);
      $("streams").hidden = Boolean(data.tracker);
      $("tracking").hidden = !data.tracker;
      $("tracker-name").textContent = data.tracker ? "tracker " + data.tracker : "";
    }
    $("window").textContent = String(data.window_s);
    if (data.tracker) await refreshTracking(list);
    else await refreshSingle(list);
    state.polls += 1;
    $("status").textContent = list.length ? "live" : "waiting for results\u2026";
  } catch (err) {
    $("status").textContent = "cannot reach the server: " + err.message;
  }
  state.timer = setTimeout(refresh, 700);
}
showUser();
refresh();
