// The live page: builds one card per stream from /status.json, then refreshes the numbers every
// second. No library and nothing from the internet: the run serves this file itself.
"use strict";

const query = location.search;  // carries ?token=... to every request the page makes
const cards = {};
let built = false;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function streamPath(status, name) {
  // One stream is the main stream; with several, each has its own channel.
  return status.streams.length === 1 ? "stream.mjpg" : encodeURIComponent(name);
}

function build(status) {
  document.getElementById("model").textContent = status.model || "";
  const legend = document.getElementById("legend");
  for (const cls of status.classes) {
    const item = element("li");
    const swatch = element("span", "swatch");
    swatch.style.background = cls.color;
    item.append(swatch, element("span", "", cls.name));
    legend.append(item);
  }
  const grid = document.getElementById("streams");
  for (const stream of status.streams) {
    const card = element("div", "card");
    card.dataset.stream = stream.name;
    const title = element("div", "title");
    const status_ = element("span", "status", "");
    title.append(element("h3", "", stream.name), status_);
    const img = element("img");
    img.alt = "stream " + stream.name;
    img.addEventListener("error", () => { card.classList.add("failed"); status_.textContent = "stream unavailable"; });
    img.addEventListener("load", () => { card.dataset.loaded = String(img.naturalWidth); });
    if (!stream.error) img.src = streamPath(status, stream.name) + query;
    const charts = element("div", "charts");
    const fps = chart("FPS"), latency = chart("latency ms");
    charts.append(fps.box, latency.box);
    const bars = element("div", "bars");
    card.append(title, img, charts, bars);
    grid.append(card);
    cards[stream.name] = { card, status: status_, img, fps, latency, bars, barRows: {} };
  }
  built = true;
}

function chart(label) {
  const box = element("div", "chart");
  const head = element("div", "label", label);
  const canvas = element("canvas");
  box.append(head, canvas);
  return { box, head, canvas, label };
}

function draw(plot, values, colour) {
  const canvas = plot.canvas;
  const width = canvas.clientWidth || 160, height = canvas.clientHeight || 60;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const known = values.filter((v) => v !== null);
  const top = Math.max(1, ...known) * 1.15;
  g.strokeStyle = "#2b2f35";
  g.beginPath();
  g.moveTo(0, height - 0.5);
  g.lineTo(width, height - 0.5);
  g.stroke();
  g.strokeStyle = colour;
  g.lineWidth = 1.5;
  g.beginPath();
  let open = false;
  values.forEach((v, i) => {
    if (v === null) { open = false; return; }
    const x = (i / Math.max(1, values.length - 1)) * (width - 2) + 1;
    const y = height - 2 - (v / top) * (height - 4);
    if (open) g.lineTo(x, y); else g.moveTo(x, y);
    open = true;
  });
  g.stroke();
  const last = known.length ? known[known.length - 1] : null;
  plot.head.textContent = plot.label + (last === null ? "" : ": " + (Math.round(last * 10) / 10));
}

function bars(entry, shares, legend) {
  for (const cls of legend) {
    let row = entry.barRows[cls.name];
    if (!row) {
      const line = element("div", "bar");
      const track = element("div", "track");
      const fill = element("div", "fill");
      fill.style.background = cls.color;
      track.append(fill);
      const value = element("span", "value");
      line.append(element("span", "", cls.name), track, value);
      entry.bars.append(line);
      row = entry.barRows[cls.name] = { fill, value };
    }
    const share = shares[cls.name] || 0;
    row.fill.style.width = (100 * share).toFixed(1) + "%";
    row.value.textContent = (100 * share).toFixed(1) + "%";
  }
}

function update(status) {
  if (!built) build(status);
  for (const stream of status.streams) {
    const entry = cards[stream.name];
    if (!entry) continue;
    if (stream.error) {
      entry.card.classList.add("failed");
      entry.status.textContent = "FAILED: " + stream.error;
      if (entry.img.src && !entry.card.dataset.loaded) entry.img.removeAttribute("src");  // no frame will come
    } else if (!entry.card.classList.contains("failed")) {
      const recent = stream.fps.slice(-5);  // frames per second over the last five seconds
      const fps = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : 0;
      entry.status.textContent = fps.toFixed(1) + " FPS";
    }
    draw(entry.fps, stream.fps, "#4fc3f7");
    draw(entry.latency, stream.latency_ms, "#ffb74d");
    bars(entry, stream.classes, status.classes);
  }
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

async function poll() {
  const state = document.getElementById("connection");
  try {
    const response = await fetch("status.json" + query, { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    update(await response.json());
    state.textContent = "live";
  } catch (error) {
    state.textContent = "run not reachable (" + error.message + ")";
  }
  setTimeout(poll, 1000);
}

poll();
