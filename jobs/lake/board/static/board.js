// Live signal board: polls /api/state (and /api/chart/<symbol> when the signals table moved), renders in place.
"use strict";

const board = {
  state: null,
  sortKey: "symbol",
  sortDir: 1,
  selected: decodeURIComponent(location.hash.replace(/^#/, "")) || null,
  chartKey: null,
  refreshMs: 2000,
  failures: 0,
};

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 2) => (v === null || v === undefined ? "\u2013" : Number(v).toFixed(digits));
const int = (v) => (v === null || v === undefined ? "\u2013" : Number(v).toLocaleString("en-US"));
const time = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "\u2013");
// A duration in milliseconds for people: 850 ms, 2.5 s, 4.2 min, 7.8 h, 12.0 d.
function duration(ms) {
  if (ms === null || ms === undefined) return "\u2013";
  const s = ms / 1000;
  if (s < 10) return `${int(Math.round(ms))} ms`;
  if (s < 120) return `${fmt(s, 1)} s`;
  if (s < 7200) return `${fmt(s / 60, 1)} min`;
  if (s < 172800) return `${fmt(s / 3600, 1)} h`;
  return `${fmt(s / 86400, 1)} d`;
}
const CROSS = { golden_cross: "golden cross", death_cross: "death cross" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function showMessage(id, text) {
  const node = $(id);
  node.hidden = !text;
  node.textContent = text || "";
}

async function getJSON(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 15000);
  try {
    const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

function sortValue(row, key) {
  if (key === "spread") return row.sma_short === null || row.sma_long === null ? null : row.sma_short - row.sma_long;
  return row[key];
}

function visibleRows(rows) {
  const text = $("filter").value.trim().toUpperCase();
  const signal = $("signal-filter").value;
  const corrected = $("corrected-only").checked;
  const crossed = $("crossed-only").checked;
  const out = rows.filter(
    (r) =>
      (!text || r.symbol.includes(text)) &&
      (!signal || r.signal === signal) &&
      (!corrected || r.corrected) &&
      (!crossed || r.last_crossover)
  );
  const key = board.sortKey;
  out.sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (x === y) return a.symbol < b.symbol ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * board.sortDir;
  });
  return out;
}

function signalRow(r) {
  const spread = r.sma_short === null || r.sma_long === null ? null : r.sma_short - r.sma_long;
  const smaCell = el(
    "td",
    { class: "num " + (spread === null ? "" : spread > 0 ? "above" : spread < 0 ? "below" : "") },
    `${fmt(r.sma_short, 3)} ${spread === null ? "" : spread > 0 ? ">" : spread < 0 ? "<" : "="} ${fmt(r.sma_long, 3)}`
  );
  const cross = r.last_crossover
    ? el(
        "td",
        { class: "cross-" + r.last_crossover },
        `${CROSS[r.last_crossover]} ${time(r.last_crossover_time).slice(11)}`,
        r.new_crossover ? el("span", { class: "badge new" }, " new") : null
      )
    : el("td", {}, "\u2013");
  const revision = el(
    "td",
    { class: "num" },
    r.corrected ? el("span", { class: "badge corrected", title: "corrected by a late tick" }, `corrected r${r.revision}`) : "0"
  );
  const tr = el(
    "tr",
    {
      "data-symbol": r.symbol,
      "data-signal": r.signal,
      "data-revision": String(r.revision),
      class: [r.new_crossover ? "new-crossover" : "", r.corrected ? "corrected" : "", r.symbol === board.selected ? "selected" : ""]
        .filter(Boolean)
        .join(" "),
    },
    el("td", { class: "symbol" }, r.symbol),
    el("td", {}, el("span", { class: "sig sig-" + r.signal }, r.signal)),
    smaCell,
    el("td", { class: "num" }, fmt(r.close)),
    el("td", { class: "num", title: `previous ${int(r.prev_volume)}` }, int(r.volume)),
    el("td", {}, time(r.event_time)),
    cross,
    revision
  );
  tr.addEventListener("click", () => selectSymbol(r.symbol));
  return tr;
}

function renderSignals(signals) {
  showMessage("signals-message", signals.message);
  const rows = visibleRows(signals.rows);
  $("signals").querySelector("tbody").replaceChildren(...rows.map(signalRow));
  $("shown").textContent = `${rows.length} of ${signals.rows.length} symbols shown`;
  document.querySelectorAll("#signals th").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === board.sortKey && board.sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === board.sortKey && board.sortDir === -1);
  });
  const c = signals.counts;
  $("counts").replaceChildren(
    el("span", { class: "above" }, `Buy ${c.Buy}`),
    el("span", { class: "below" }, `Sell ${c.Sell}`),
    el("span", {}, `Hold ${c.Hold}`),
    el("span", {}, `corrected ${signals.corrected}`)
  );
  const select = $("symbol-select");
  const symbols = signals.rows.map((r) => r.symbol);
  if (select.options.length !== symbols.length || [...select.options].some((o, i) => o.value !== symbols[i])) {
    select.replaceChildren(...symbols.map((s) => el("option", { value: s }, s)));
  }
  if (!board.selected || !symbols.includes(board.selected)) {
    const withCross = board.state.crossovers.find((x) => symbols.includes(x.symbol));
    board.selected = withCross ? withCross.symbol : symbols[0] || null;
  }
  if (board.selected) select.value = board.selected;
}

function tile(label, value, id) {
  return el("div", { class: "tile", id }, el("div", { class: "v" }, value), el("div", { class: "k" }, label));
}

function renderHealth(health) {
  showMessage("health-message", health.message);
  if (!health.batches) {
    $("health").replaceChildren();
    return;
  }
  const lag = health.lag_ms === null || health.lag_ms === undefined ? "\u2013" : health.lag_ms < 10000 ? `${fmt(health.lag_ms / 1000, 1)} s` : duration(health.lag_ms);
  $("health").replaceChildren(
    tile("records / s (last batches)", int(Math.round(health.records_per_second)), "records-per-second"),
    tile("batch duration (avg)", `${duration(health.batch_duration_ms)} (${duration(health.avg_batch_duration_ms)})`, "batch-duration"),
    tile("event-time lag, newest batch", lag, "lag"),
    tile(`last batch #${health.last_batch_id}`, `${health.last_batch_age_seconds < 120 ? fmt(Math.max(0, health.last_batch_age_seconds), 0) + " s" : duration(health.last_batch_age_seconds * 1000)} ago`, "last-batch"),
    tile("records read", int(health.totals.records_read), "records-read"),
    tile("quarantined / duplicates", `${int(health.totals.quarantined)} / ${int(health.totals.duplicates)}`, "rejected")
  );
}

function renderQuarantine(q) {
  showMessage("quarantine-message", q.message);
  $("quarantine-window").textContent = `by reason, last ${Math.round(q.window_seconds / 60)} min: ${q.total}`;
  const rows = q.by_reason.map((r) =>
    el("tr", { "data-reason": r.reason }, el("td", {}, r.reason), el("td", { class: "num" }, int(r.records)))
  );
  if (!rows.length && !q.message) rows.push(el("tr", {}, el("td", { class: "muted" }, "nothing quarantined in the window")));
  $("quarantine").querySelector("tbody").replaceChildren(...rows);
}

function renderCrossovers(list) {
  const items = list.map((x) => {
    const li = el(
      "li",
      { class: x.new ? "new" : "", "data-symbol": x.symbol, "data-crossover": x.crossover },
      el("b", {}, x.symbol),
      " ",
      el("span", { class: "cross-" + x.crossover }, CROSS[x.crossover]),
      ` at ${time(x.event_time)}, close ${fmt(x.close)}`,
      x.new ? el("span", { class: "badge new" }, " new") : null
    );
    li.addEventListener("click", () => selectSymbol(x.symbol));
    return li;
  });
  if (!items.length) items.push(el("li", { class: "muted" }, "no crossover yet"));
  $("crossovers").replaceChildren(...items);
}

function renderStatus(s) {
  const versions = Object.entries(s.tables)
    .map(([name, t]) => `${name} v${t.version === null ? "-" : t.version}`)
    .join(", ");
  const read = s.tables.signals.last_change;
  $("status").textContent = `updated ${time(s.generated_at).slice(11)} UTC \u00b7 ${versions} \u00b7 last change read: ${read.files_read} files, ${read.rows_read} rows in ${read.ms} ms`;
  $("status").classList.remove("stale");
  $("footer").textContent = `tables under ${s.storage_root} \u00b7 SMA(${s.windows.short}) / SMA(${s.windows.long}) \u00b7 refresh every ${s.refresh_seconds} s`;
  const errors = Object.values(s.tables).map((t) => t.error).filter(Boolean);
  $("error").hidden = !errors.length;
  $("error").textContent = errors.join(" \u00b7 ");
}

async function renderChart() {
  const s = board.state;
  if (!s || !board.selected) {
    showMessage("chart-message", s && s.signals.message ? "No chart until the signals table has rows." : null);
    return;
  }
  const key = `${board.selected}@${s.signals.version}`;
  if (key === board.chartKey) return;
  try {
    const chart = await getJSON(`/api/chart/${encodeURIComponent(board.selected)}`);
    $("chart-title").textContent = `${chart.symbol}, newest ${chart.ticks} ticks`;
    showMessage("chart-message", null);
    await Plotly.react("chart", chart.figure.data, chart.figure.layout, { responsive: true, displaylogo: false });
    board.chartKey = key;
    document.body.dataset.chart = key;
  } catch (err) {
    showMessage("chart-message", `chart of ${board.selected} unavailable: ${err.message}`);
  }
}

function render() {
  const s = board.state;
  if (!s) return;
  renderStatus(s);
  renderSignals(s.signals);
  renderHealth(s.health);
  renderQuarantine(s.quarantine);
  renderCrossovers(s.crossovers);
  document.body.dataset.version = String(s.signals.version);
}

function selectSymbol(symbol) {
  board.selected = symbol;
  history.replaceState(null, "", `#${encodeURIComponent(symbol)}`);
  render();
  renderChart();
}

async function poll() {
  try {
    board.state = await getJSON("/api/state");
    board.refreshMs = Math.max(500, board.state.refresh_seconds * 1000);
    board.failures = 0;
    render();
    await renderChart();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (err) {
    board.failures += 1;
    $("status").textContent = `board server unreachable (${err.message}); retrying`;
    $("status").classList.add("stale");
  } finally {
    setTimeout(poll, board.refreshMs * Math.min(1 + board.failures, 5));
  }
}

function setup() {
  document.querySelectorAll("#signals th").forEach((th) =>
    th.addEventListener("click", () => {
      board.sortDir = board.sortKey === th.dataset.key ? -board.sortDir : 1;
      board.sortKey = th.dataset.key;
      render();
    })
  );
  for (const id of ["filter", "signal-filter", "corrected-only", "crossed-only"]) {
    $(id).addEventListener("input", render);
    $(id).addEventListener("change", render);
  }
  $("symbol-select").addEventListener("change", (e) => selectSymbol(e.target.value));
  poll();
}

setup();
