// The decision view. Scores come from the Rust scheduling core (decision-view crate, compiled with
// wasm-bindgen): for requests typed here, this page runs Scheduler::schedule itself; for requests
// that went through the gateway, Envoy's decision log carries the decision the filter made.
import init, { DecisionView } from "./pkg/decision_view.js";

const POLL_MS = 1000;
const SAMPLES = 120;
const RECENT = 25;
const COLORS = ["#2457c5", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d",
  "#364fc7", "#a61e4d", "#087f5b", "#5f3dc4", "#e8590c", "#1864ab", "#66a80f", "#9c36b5"];

const $ = (id) => document.getElementById(id);
const state = {
  view: null,
  info: {},
  pool: null,
  stats: null,
  recent: [],
  selected: null, // start_time + path of the log entry shown in the decision panel
  samples: [], // {t, decisions: {addr: n}, hits, queries}
  lastSnapshotError: null,
  colors: new Map(),
};

const EXAMPLE = {
  model: "Qwen/Qwen3-0.6B",
  messages: [
    { role: "system", content: "You are the support assistant of a company that sells garden tools. Answer briefly, and only about the company's products and their care." },
    { role: "user", content: "How do I sharpen my pruning shears?" },
  ],
  stream: true,
  stream_options: { include_usage: true },
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function colorOf(address) {
  if (!state.colors.has(address)) state.colors.set(address, COLORS[state.colors.size % COLORS.length]);
  return state.colors.get(address);
}

const pct = (x) => (x == null || Number.isNaN(x) ? "–" : `${(100 * x).toFixed(1)}%`);
const num = (x, d = 3) => (x == null ? "–" : Number(x).toFixed(d));

async function getJson(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const text = await resp.text();
  let body;
  try { body = JSON.parse(text); } catch { throw new Error(`${path}: not JSON (HTTP ${resp.status})`); }
  if (!resp.ok) throw new Error(body.error || `${path}: HTTP ${resp.status}`);
  return { body, text };
}

function setStatus(messages) {
  const status = $("status");
  const errors = messages.filter((m) => m.error);
  status.classList.toggle("error", errors.length > 0);
  status.textContent = messages.map((m) => m.text).join(" · ");
}

// ---- polling -------------------------------------------------------------------------------

async function poll() {
  const now = Date.now();
  const messages = [];
  const [snap, stats, recent] = await Promise.allSettled([
    getJson("/api/snapshot"), getJson("/api/stats"), getJson(`/api/recent?n=${RECENT}`),
  ]);
  let hits = null, queries = null;
  if (snap.status === "fulfilled") {
    try {
      const count = state.view.setSnapshot(snap.value.text);
      const raw = snap.value.body;
      hits = 0; queries = 0;
      for (const e of raw.endpoints) {
        hits += e.metrics?.prefix_cache_hits_total ?? 0;
        queries += e.metrics?.prefix_cache_queries_total ?? 0;
      }
      messages.push({ text: `pool: ${count} endpoints from the scraper (snapshot #${raw.sequence})` });
    } catch (e) {
      messages.push({ text: `pool snapshot rejected: ${e.message ?? e}`, error: true });
    }
  } else {
    messages.push({ text: `pool: ${snap.reason.message}`, error: true });
  }
  state.pool = JSON.parse(state.view.poolJson(now));
  if (stats.status === "fulfilled") state.stats = stats.value.body;
  else messages.push({ text: `stats: ${stats.reason.message}`, error: true });
  if (recent.status === "fulfilled") state.recent = recent.value.body.requests;
  else messages.push({ text: `decision log: ${recent.reason.message}`, error: true });

  state.samples.push({ t: now, decisions: { ...(state.stats?.decisions ?? {}) }, hits, queries });
  if (state.samples.length > SAMPLES + 1) state.samples.shift();

  renderPool();
  renderRecent();
  drawRouting();
  drawHitRate();
  setStatus(messages);
  document.body.dataset.ready = "true";
}

async function pollForever() {
  for (;;) {
    try { await poll(); } catch (e) { setStatus([{ text: `update failed: ${e.message ?? e}`, error: true }]); }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

// ---- pool ----------------------------------------------------------------------------------

function renderPool() {
  const pool = state.pool;
  const learned = state.stats?.bytes_per_token;
  const ratio = learned != null
    ? `the gateway's learned bytes per token: ${learned.toFixed(2)}`
    : `bytes per token: ${pool.bytes_per_token.toFixed(2)} (the starting guess; the gateway learns it from usage reports)`;
  $("pool-meta").textContent = (pool.source === "scraper"
    ? `snapshot #${pool.sequence}, generated ${pool.generated_at_ms ? new Date(pool.generated_at_ms).toLocaleTimeString() : "–"}`
    : "static endpoints from the configuration (no snapshot yet)") + ` · ${ratio}`;
  const tbody = $("pool-table").querySelector("tbody");
  tbody.replaceChildren(...pool.endpoints.map((e) => {
    // Reachability and readable metrics are separate facts: a pod whose metrics cannot be read still
    // serves, and the scheduler judges it on its own in-flight counts.
    const health = !e.healthy ? el("span", { class: "bad" }, "unreachable")
      : e.stale ? el("span", { class: "warn" }, "metrics unknown") : el("span", { class: "ok" }, "healthy");
    const error = e.last_error
      ? el("span", { class: "warn", title: e.last_error.message }, `${e.last_error.reason}: ${e.last_error.message}`)
      : "–";
    const capacity = state.stats?.capacity?.[e.address] ?? e.index_capacity_blocks;
    const kv = el("span", { class: "bar" }, el("span", { style: `width:${Math.round(100 * e.kv_cache_usage)}%` }));
    const lora = e.max_loras == null ? "–"
      : `${e.lora_running.join(", ") || "–"} / ${e.lora_waiting.join(", ") || "–"} / ${e.max_loras}`;
    const age = e.metrics_age_ms == null ? "never scraped" : `${e.metrics_age_ms} ms`;
    const decisions = state.stats?.decisions?.[e.address];
    return el("tr", { dataset: { address: e.address } },
      el("td", {}, el("span", { class: "swatch", style: `background:${colorOf(e.address)}` }), " ", e.address),
      el("td", {}, health),
      el("td", { class: "num" }, e.waiting_requests),
      el("td", { class: "num" }, e.running_requests),
      el("td", {}, kv, pct(e.kv_cache_usage)),
      el("td", {}, lora),
      el("td", { class: "num" }, age),
      el("td", { class: "num" }, pct(e.prefix_cache_hit_ratio)),
      el("td", { class: "error" }, error),
      el("td", { class: "num" }, capacity ?? "–"),
      el("td", { class: "num" }, decisions ?? "–"));
  }));
}

// ---- charts --------------------------------------------------------------------------------

function canvasContext(id) {
  const canvas = $(id);
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function axes(ctx, w, h, top, label) {
  ctx.strokeStyle = "#dde3ea"; ctx.fillStyle = "#5f6b7a"; ctx.font = "11px system-ui";
  for (const f of [0, 0.5, 1]) {
    const y = h - 18 - f * (h - 30);
    ctx.beginPath(); ctx.moveTo(36, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(label(f * top), 2, y + 4);
  }
  ctx.fillText(`last ${Math.round((SAMPLES * POLL_MS) / 1000)} s`, w - 70, h - 4);
}

function drawRouting() {
  const { ctx, w, h } = canvasContext("routing-chart");
  const s = state.samples;
  const rates = [];
  for (let i = 1; i < s.length; i++) {
    const dt = Math.max(1, s[i].t - s[i - 1].t) / 1000;
    const r = {};
    for (const [addr, n] of Object.entries(s[i].decisions)) r[addr] = Math.max(0, n - (s[i - 1].decisions[addr] ?? n)) / dt;
    rates.push(r);
  }
  const addresses = (state.pool?.endpoints ?? []).map((e) => e.address);
  const top = Math.max(1, ...rates.map((r) => Object.values(r).reduce((a, b) => a + b, 0)));
  axes(ctx, w, h, top, (v) => v.toFixed(v < 10 ? 1 : 0));
  const bw = (w - 40) / SAMPLES;
  rates.forEach((r, i) => {
    let y = h - 18;
    const x = 38 + (SAMPLES - rates.length + i) * bw;
    for (const addr of addresses) {
      const v = r[addr] ?? 0;
      if (!v) continue;
      const bh = (v / top) * (h - 30);
      ctx.fillStyle = colorOf(addr);
      ctx.fillRect(x, y - bh, Math.max(1, bw - 1), bh);
      y -= bh;
    }
  });
  const last = rates.at(-1) ?? {};
  $("routing-legend").replaceChildren(...addresses.map((a) => el("span", {},
    el("span", { class: "swatch", style: `background:${colorOf(a)}` }), `${a} ${(last[a] ?? 0).toFixed(1)}/s`)));
}

function drawHitRate() {
  const { ctx, w, h } = canvasContext("hitrate-chart");
  const s = state.samples;
  const points = [];
  for (let i = 1; i < s.length; i++) {
    const a = s[i - 1], b = s[i];
    if (a.queries == null || b.queries == null) { points.push(null); continue; }
    const dq = b.queries - a.queries, dh = b.hits - a.hits;
    points.push(dq > 0 && dh >= 0 ? Math.min(1, dh / dq) : null);
  }
  axes(ctx, w, h, 1, (v) => `${Math.round(100 * v)}%`);
  ctx.strokeStyle = "#2b8a3e"; ctx.lineWidth = 2; ctx.beginPath();
  let pen = false;
  const bw = (w - 40) / SAMPLES;
  points.forEach((p, i) => {
    const x = 38 + (SAMPLES - points.length + i) * bw + bw / 2;
    if (p == null) { pen = false; return; }
    const y = h - 18 - p * (h - 30);
    if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    pen = true;
  });
  ctx.stroke(); ctx.lineWidth = 1;
  const known = points.filter((p) => p != null);
  const first = s.find((x) => x.queries != null), last = [...s].reverse().find((x) => x.queries != null);
  const overall = first && last && last.queries > first.queries ? (last.hits - first.hits) / (last.queries - first.queries) : null;
  $("hitrate-now").textContent = known.length
    ? `latest interval ${pct(known.at(-1))}; over the window ${pct(overall)}`
    : "no prompt has reached the pool in this window";
}

// ---- recent requests -----------------------------------------------------------------------

const keyOf = (r) => `${r.start_time}|${r.path}|${r.duration_ms}`;
const podList = (v) => (typeof v === "string" && v !== "-" ? v.split(",").map((x) => x.trim()).filter(Boolean) : []);

function renderRecent() {
  const tbody = $("recent-table").querySelector("tbody");
  if (!state.recent.length) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "hint" }, "no request has gone through the gateway yet")));
    return;
  }
  tbody.replaceChildren(...state.recent.map((r) => {
    const d = r.decision;
    const status = Number(r.status);
    const fallbacks = d ? d.fallbacks.join(", ") : podList(r.picked).slice(1).join(", ");
    const prefix = d ? `${d.predicted_cached_blocks}/${d.total_blocks} blocks` : "–";
    const row = el("tr", { class: `clickable${state.selected === keyOf(r) ? " selected" : ""}`, dataset: { primary: d?.primary ?? "" } },
      el("td", {}, (r.start_time ?? "").replace("T", " ").replace("Z", "")),
      el("td", { class: status >= 400 || !status ? "bad" : "ok" }, r.status ?? "–"),
      el("td", {}, r.path ?? "–"),
      el("td", {}, d?.primary ?? (podList(r.picked)[0] || "–")),
      el("td", {}, r.upstream && r.upstream !== "-" ? r.upstream : "–"),
      el("td", {}, fallbacks || "–"),
      el("td", {}, prefix),
      el("td", { class: "num" }, r.duration_ms != null ? `${r.duration_ms} ms` : "–"));
    row.addEventListener("click", () => {
      state.selected = keyOf(r);
      if (d) showDecision(d, null, `gateway request at ${r.start_time}, served by ${r.upstream}`);
      else showError(`This request has no decision: HTTP ${r.status} on ${r.path} (a local reply, a pass-through path, or a plugin without debugHeader "json").`);
      renderRecent();
    });
    return row;
  }));
}

// ---- the decision panel --------------------------------------------------------------------

function showError(message) {
  const box = $("decision");
  box.dataset.primary = "";
  box.replaceChildren(el("p", { class: "error" }, message));
}

function showDecision(decision, request, source) {
  $("decision-source").textContent = source;
  const box = $("decision");
  box.dataset.primary = decision.primary;
  const scorers = [];
  for (const row of decision.scores) for (const s of row.scores) if (!scorers.some((x) => x.scorer === s.scorer)) scorers.push(s);
  const rank = (row) => row.address === decision.primary ? 0
    : decision.fallbacks.includes(row.address) ? 1 + decision.fallbacks.indexOf(row.address)
    : row.filtered_out ? 1e9 : 1e6 - row.total;
  const rows = [...decision.scores].sort((a, b) => rank(a) - rank(b));
  const summary = [
    `Winner ${decision.primary}`,
    decision.fallbacks.length ? `fallbacks ${decision.fallbacks.join(", ")}` : "no fallbacks",
    `profile ${decision.profile}, ${decision.picker}`,
    `predicted prefix ${decision.predicted_cached_blocks}/${decision.total_blocks} blocks`,
  ];
  if (decision.fell_back_to_all) summary.push("every endpoint was saturated: all were candidates");
  if (decision.placed_by_key) summary.push("no endpoint holds this prompt yet: placed by its conversation key (rendezvous rank) among the pods within the load bound, not by the load scores, so every gateway replica picks the same pod");
  if (decision.omitted_rows) summary.push(`${decision.omitted_rows} lower-scored endpoints not shown`);
  if (request) summary.push(`${request.api}, model ${request.model}${request.lora_adapter ? ` (LoRA ${request.lora_adapter})` : ""}, ~${request.estimated_prompt_tokens} prompt tokens in ${request.prefix_blocks} prefix blocks`);
  const head = el("tr", {}, el("th", {}, "Endpoint"),
    ...scorers.map((s) => el("th", { class: "num" }, `${s.scorer} ×${s.weight}`)),
    el("th", { class: "num" }, "Total"), el("th", { class: "num" }, "Prefix blocks"),
    el("th", { class: "num" }, "In flight"), el("th", { class: "num" }, "Queue"), el("th", { class: "num" }, "KV"), el("th", {}, "Note"));
  const body = rows.map((row) => {
    const cls = row.address === decision.primary ? "winner" : decision.fallbacks.includes(row.address) ? "fallback" : row.filtered_out ? "filtered" : "";
    const note = row.address === decision.primary ? "winner"
      : decision.fallbacks.includes(row.address) ? `fallback ${1 + decision.fallbacks.indexOf(row.address)}`
      : row.filtered_out ?? "";
    return el("tr", { class: cls, dataset: { address: row.address } },
      el("td", {}, row.address),
      ...scorers.map((s) => {
        const mine = row.scores.find((x) => x.scorer === s.scorer);
        return el("td", { class: "num score" }, mine ? num(mine.score) : "–",
          mine ? el("small", {}, ` → ${num(mine.score * mine.weight, 2)}`) : "");
      }),
      el("td", { class: "num" }, row.filtered_out ? "–" : num(row.total)),
      el("td", { class: "num" }, row.prefix_matched_blocks),
      el("td", { class: "num" }, row.in_flight),
      el("td", { class: "num" }, row.effective_queue),
      el("td", { class: "num" }, pct(row.kv_cache_usage)),
      el("td", {}, note));
  });
  box.replaceChildren(el("p", { class: "summary" }, summary.join(" · ")),
    el("table", { id: "decision-table" }, el("thead", {}, head), el("tbody", {}, ...body)));
}

function scheduleTyped() {
  const path = $("whatif-path").value;
  const body = $("whatif-body").value;
  const headers = $("whatif-headers").value;
  const remember = $("whatif-remember").checked;
  try {
    const out = JSON.parse(state.view.schedule(path, body, headers, Date.now(), remember));
    showDecision(out.decision, out.request, `scheduled in this page${out.remembered ? " (remembered)" : ""}`);
    state.pool = JSON.parse(state.view.poolJson(Date.now()));
    renderPool();
  } catch (e) {
    $("decision-source").textContent = "rejected, as the gateway would reject it";
    showError(e.message ?? String(e));
  }
}

// ---- start ---------------------------------------------------------------------------------

async function main() {
  await init({ module_or_path: new URL("./pkg/decision_view_bg.wasm", import.meta.url) });
  const { body: info } = await getJson("/api/info");
  state.info = info;
  state.view = new DecisionView(JSON.stringify(info.plugin_config ?? {}));
  const links = $("links");
  if (info.chat_url) links.append(el("a", { href: info.chat_url, target: "_blank" }, "chat"));
  if (info.gateway_url) links.append(el("span", {}, `  gateway ${info.gateway_url}`));
  $("schedule-btn").addEventListener("click", scheduleTyped);
  $("forget-btn").addEventListener("click", () => {
    state.view.forget();
    $("decision-source").textContent = "this page's memory was cleared";
  });
  try { await poll(); } catch { /* pollForever reports it */ }
  // The example asks for a model the pool serves, so it schedules as it is.
  const served = state.pool?.endpoints.find((e) => e.models.length)?.models[0]
    ?? info.plugin_config?.models?.served?.[0];
  $("whatif-body").value = JSON.stringify({ ...EXAMPLE, model: served ?? EXAMPLE.model }, null, 2);
  await pollForever();
}

main().catch((e) => {
  setStatus([{ text: `the decision view could not start: ${e.message ?? e}`, error: true }]);
  document.body.dataset.ready = "error";
});
