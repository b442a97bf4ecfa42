// Alpha Arena dashboard: SVG charts, the $ / % and range toggles, live polling, lazy chat cards.
// No library: the server already downsamples every line to at most 2,000 points.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function utc(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16);
}

function money(value) {
  return "$" + value.toLocaleString("en-US", { maximumFractionDigits: value >= 1000 ? 0 : 2 });
}

function percent(value) {
  return (value >= 0 ? "+" : "") + value.toFixed(2) + "%";
}

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

// Draw lines [{key, label, kind, xs, ys}] into an <svg>, with a y axis formatted by `format`.
function drawChart(svg, lines, format, markers) {
  const box = svg.viewBox.baseVal;
  const width = box.width, height = box.height;
  const m = { left: 78, right: 120, top: 12, bottom: 26 };
  svg.replaceChildren();
  const shown = lines.filter((line) => line.xs.length > 0);
  if (!shown.length) {
    svg.appendChild(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" }, "no data yet"));
    return;
  }
  const xs = shown.flatMap((line) => [line.xs[0], line.xs[line.xs.length - 1]]);
  const ys = shown.flatMap((line) => line.ys);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.06 || Math.abs(y1) * 0.01 || 1;
  y0 -= pad; y1 += pad;
  const sx = (x) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const sy = (y) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const yAxis = el("g", { class: "y-axis" });
  for (let i = 0; i <= 4; i++) {
    const value = y0 + ((y1 - y0) * i) / 4;
    yAxis.appendChild(el("line", { x1: m.left, x2: width - m.right, y1: sy(value), y2: sy(value), class: "grid" }));
    yAxis.appendChild(el("text", { x: m.left - 6, y: sy(value) + 4, "text-anchor": "end" }, format(value)));
  }
  svg.appendChild(yAxis);
  const xAxis = el("g", { class: "x-axis" });
  for (let i = 0; i <= 3; i++) {
    const value = x0 + ((x1 - x0) * i) / 3;
    xAxis.appendChild(el("text", { x: sx(value), y: height - 6, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" }, utc(value)));
  }
  svg.appendChild(xAxis);
  const labels = [];
  shown.forEach((line, index) => {
    const points = line.xs.map((x, i) => sx(x).toFixed(1) + "," + sy(line.ys[i]).toFixed(1)).join(" ");
    const color = line.key === "buy_and_hold" ? "#222" : PALETTE[index % PALETTE.length];
    svg.appendChild(el("polyline", { points, class: "line " + line.kind, "data-key": line.key, stroke: color }));
    const last = line.ys[line.ys.length - 1];
    labels.push({ y: sy(last) + 4, color, text: line.label + " " + format(last) });
  });
  // End labels, pushed apart so that close lines stay readable.
  labels.sort((a, b) => a.y - b.y);
  labels.forEach((label, i) => {
    if (i > 0 && label.y - labels[i - 1].y < 12) label.y = labels[i - 1].y + 12;
    svg.appendChild(el("text", { x: width - m.right + 6, y: label.y, class: "end-label", fill: label.color }, label.text));
  });
  for (const marker of markers || []) {
    const shape = marker.kind === "exit" ? el("circle", { cx: sx(marker.x), cy: sy(marker.y), r: 4 }) : el("text", { x: sx(marker.x), y: sy(marker.y) + 5, "text-anchor": "middle" }, marker.kind === "long" ? "▲" : "▼");
    shape.setAttribute("class", "marker " + marker.kind);
    shape.appendChild(el("title", {}, marker.title));
    svg.appendChild(shape);
  }
}

// The account-value chart of the live and run pages.
function equityChart(svg) {
  const state = { mode: "usd", range: "all", lines: [] };
  const run = svg.dataset.run;
  const legend = document.getElementById("legend");
  function render() {
    const pct = state.mode === "pct";
    const lines = state.lines.map((line) => ({
      key: line.key, label: line.label, kind: line.kind, xs: line.times_ms,
      ys: pct ? line.values.map((v) => (v / line.starting_cash_usd - 1) * 100) : line.values,
    }));
    drawChart(svg, lines, pct ? percent : money);
    if (legend) {
      const hodl = state.lines.some((l) => l.key === "buy_and_hold");
      legend.textContent = state.lines.map((l) => l.label).join(" · ") + (hodl ? " (buy & hold: equal weight in every coin from the first cycle, no fees)" : "");
    }
  }
  async function load() {
    const chart = await getJson(`/api/v1/runs/${encodeURIComponent(run)}/chart?range=${state.range}`);
    state.lines = chart.lines;
    render();
  }
  document.querySelectorAll("[data-group=mode] button").forEach((button) => button.addEventListener("click", () => {
    state.mode = button.dataset.mode;
    setOn(button);
    render();
  }));
  document.querySelectorAll("[data-group=range] button").forEach((button) => button.addEventListener("click", () => {
    state.range = button.dataset.range;
    setOn(button);
    load().catch(showProblem);
  }));
  load().catch(showProblem);
  return load;
}

function setOn(button) {
  button.parentElement.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === button));
}

function showProblem(error) {
  const status = document.querySelector(".status") || document.querySelector("main");
  let note = document.getElementById("problem");
  if (!note) {
    note = document.createElement("p");
    note.id = "problem";
    note.className = "bad";
    status.after(note);
  }
  note.textContent = "could not refresh: " + error.message;
}

// Poll the change marker; when a cycle lands, refresh the chart, the prices and the standings.
function poll(run, reloadChart) {
  const label = document.getElementById("last-cycle");
  let seen = null;
  let refreshes = 0;
  async function tick() {
    try {
      const version = await getJson(`/api/v1/version?run=${encodeURIComponent(run)}`);
      // Heavy answers are recomputed in the background: refresh again on the next tick.
      if (seen !== null && version.version !== seen) refreshes = 2;
      if (refreshes > 0) {
        refreshes -= 1;
        await Promise.all([reloadChart(), refreshPrices(run), refreshBoard(run)]);
        if (label) {
          label.dataset.cycles = version.cycles;
          label.textContent = `${version.cycles} cycles, last ${version.last_cycle_at ? version.last_cycle_at.replace("T", " ").slice(0, 19) + " UTC" : "–"}`;
        }
      }
      seen = version.version;
      const problem = document.getElementById("problem");
      if (problem) problem.remove();
    } catch (error) {
      showProblem(error);
    }
    setTimeout(tick, POLL_MS);
  }
  tick();
}

async function refreshPrices(run) {
  const prices = await getJson(`/api/v1/runs/${encodeURIComponent(run)}/prices`);
  for (const item of prices) {
    const cell = document.querySelector(`#ticker [data-coin="${item.coin}"] .px`);
    if (cell) cell.textContent = item.price.toLocaleString("en-US", { maximumSignificantDigits: 6 });
  }
}

async function refreshBoard(run) {
  const body = document.querySelector("#mini-board tbody");
  if (!body) return;
  const rows = await getJson(`/api/v1/runs/${encodeURIComponent(run)}/leaderboard`);
  rows.forEach((row, index) => {
    const cells = body.children[index] && body.children[index].children;
    if (!cells) return;
    body.children[index].dataset.agent = row.base.name;
    cells[0].textContent = index + 1;
    cells[1].querySelector("a").textContent = row.base.name;
    cells[3].textContent = row.base.final_equity.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    cells[4].textContent = percent(row.base.return_pct);
    cells[5].textContent = row.base.trades;
  });
}

// Chat cards load their prompt, reasoning and raw answer when first opened.
function lazyCards(run) {
  document.querySelectorAll("details.card").forEach((card) => card.addEventListener("toggle", async () => {
    const lazy = card.querySelector(".lazy");
    if (!card.open || !lazy || lazy.dataset.loaded !== "no") return;
    lazy.dataset.loaded = "loading";
    try {
      const call = await getJson(`/api/v1/runs/${encodeURIComponent(run)}/calls/${card.dataset.call}`);
      lazy.querySelector(".prompt").textContent = call.user_prompt || "(not recorded)";
      const charts = lazy.querySelector(".charts");
      if (charts && call.images && call.images.length) {
        charts.replaceChildren(Object.assign(document.createElement("h4"), { textContent: "Charts the model saw" }));
        for (const image of call.images) {
          const img = document.createElement("img");
          img.src = `/api/v1/runs/${encodeURIComponent(run)}/calls/${card.dataset.call}/images/${image.number}.png`;
          img.alt = img.title = image.caption;
          img.width = image.width_px;
          img.height = image.height_px;
          img.loading = "lazy";
          img.className = "chart-image";
          charts.appendChild(img);
        }
      }
      lazy.querySelector(".reasoning").textContent = call.reasoning || "(the model gave no separate reasoning)";
      lazy.querySelector(".answer").textContent = call.response_text || "(no answer)";
      lazy.dataset.loaded = "yes";
    } catch (error) {
      lazy.querySelector(".prompt").textContent = "could not load: " + error.message;
      lazy.dataset.loaded = "no";
    }
  }));
}

// The agent page: its own account curve and its trades on a coin's price line.
async function agentCharts(run) {
  const curve = document.getElementById("agent-chart");
  if (curve) {
    const chart = await getJson(`/api/v1/runs/${encodeURIComponent(run)}/chart`);
    const lines = chart.lines.filter((line) => line.key === curve.dataset.agent || line.key === "buy_and_hold");
    drawChart(curve, lines.map((line) => ({ key: line.key, label: line.label, kind: line.kind, xs: line.times_ms, ys: line.values })), money);
  }
  const priceSvg = document.getElementById("price-chart");
  if (priceSvg && priceSvg.dataset.coin) {
    const url = `/api/v1/runs/${encodeURIComponent(run)}/prices/${encodeURIComponent(priceSvg.dataset.coin)}?agent=${encodeURIComponent(priceSvg.dataset.agent)}`;
    const data = await getJson(url);
    const markers = [];
    const ms = (iso) => Date.parse(iso.endsWith("Z") || iso.includes("+") ? iso : iso + "Z");
    for (const trade of [...data.trades, ...data.positions]) {
      markers.push({ kind: trade.side, x: ms(trade.opened_at), y: trade.entry_price, title: `${trade.side} entry at ${trade.entry_price}` });
      if (trade.closed_at) markers.push({ kind: "exit", x: ms(trade.closed_at), y: trade.exit_price, title: `exit (${trade.exit_reason}) at ${trade.exit_price}, net ${trade.net_pnl_usd.toFixed(2)}` });
    }
    let xs = data.times_ms, ys = data.prices;
    if (!xs.length) {  // no candles in the database: the trades' own prices draw the line
      const sorted = markers.slice().sort((a, b) => a.x - b.x);
      xs = sorted.map((mk) => mk.x);
      ys = sorted.map((mk) => mk.y);
    }
    drawChart(priceSvg, [{ key: data.coin, label: data.coin, kind: "price", xs, ys }], (v) => v.toPrecision(6), markers);
  }
}

function boardToggle() {
  document.querySelectorAll("[data-group=board] button").forEach((button) => button.addEventListener("click", () => {
    setOn(button);
    document.getElementById("board-overall").hidden = button.dataset.board !== "overall";
    document.getElementById("board-advanced").hidden = button.dataset.board !== "advanced";
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.body.dataset.run;
  if (!run) return;
  const chart = document.getElementById("equity-chart");
  if (chart) {
    const reload = equityChart(chart);
    if (document.getElementById("last-cycle")) poll(run, reload);
  }
  lazyCards(run);
  boardToggle();
  agentCharts(run).catch(showProblem);
});
