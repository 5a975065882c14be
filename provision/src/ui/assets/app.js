// provision ui: the pages of the dashboard. Plain JavaScript, no build step. Every request is a
// GET to the server's /api; a failed one shows its error above the page and is retried later,
// further apart each time (throttling-safe), never in a tight loop.
"use strict";

const main = document.getElementById("main");
const errorBox = document.getElementById("error");
const MAX_BACKOFF_MS = 60000;
// What the server put in the page: the stack file's overview, and on the stack page what is
// known of the stack now. Drawn before any request.
const boot = JSON.parse(document.getElementById("boot").textContent);

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function dash(v) { return v === null || v === undefined || v === "" ? "–" : esc(v); }
function fmt(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "–"; }
function badge(text, cls) { return `<span class="badge ${cls}">${esc(text)}</span>`; }

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}
function clearError() { errorBox.hidden = true; errorBox.textContent = ""; }

// When the page first drew anything of its own, and when it first showed its data (on the
// stack page: the live status), in ms since navigation started (read by the benchmark).
function markDrawn() {
  if (!document.body.dataset.drawnMs) document.body.dataset.drawnMs = String(Math.round(performance.now()));
}
function markRendered() {
  markDrawn();
  if (!document.body.dataset.renderedMs) document.body.dataset.renderedMs = String(Math.round(performance.now()));
}

// GET /api/...; rejects with the server's message (or why there was no answer) after 30 s at most.
async function api(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 30000);
  let response;
  try {
    response = await fetch(path, { signal: abort.signal, headers: { Accept: "application/json" } });
  } catch (e) {
    throw new Error(e.name === "AbortError"
      ? `${path}: no answer within 30 s`
      : `${path}: the dashboard server does not answer (was provision ui stopped?)`);
  } finally {
    clearTimeout(timer);
  }
  let body;
  try { body = await response.json(); } catch (e) { body = {}; }
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

// Runs `load` after `startAfter` ms (default: now) and again after the delay it returns; after
// an error, waits twice as long as before (up to a minute) and shows the error until a load
// succeeds.
function poll(load, firstDelay, startAfter) {
  let backoff = firstDelay;
  const tick = async () => {
    let next;
    try {
      next = await load();
      clearError();
      backoff = firstDelay;
    } catch (e) {
      showError(e.message);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      next = backoff;
    }
    if (next) setTimeout(tick, next);
  };
  if (startAfter) setTimeout(tick, startAfter); else tick();
}

function header() {
  const o = boot.overview;
  document.title = `${o.stack} (${o.env}) · provision ui`;
  document.getElementById("meta").innerHTML =
    `${esc(o.stack)} · env ${esc(o.env)} · ${esc(o.region)} · ` +
    badge(o.gpu ? "GPU on" : "GPU off", o.gpu ? "gpu" : "") + ` <span class="muted">${esc(o.image_type)}</span>`;
  return o;
}

function activate(page) {
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
}

// ---- Stack graph -------------------------------------------------------------------------

const STATUS_TEXT = { unknown: "not read yet", "no-op": "in sync", create: "missing: apply creates it", update: "differs: apply updates it",
  replace: "differs: apply replaces it", delete: "not in the stack: apply deletes it" };

function depthOf(nodes) {
  const byAddress = new Map(nodes.map((n) => [n.address, n]));
  const depth = new Map();
  const visit = (n, seen) => {
    if (depth.has(n.address)) return depth.get(n.address);
    if (seen.has(n.address)) return 0;
    seen.add(n.address);
    let d = 0;
    for (const dep of n.deps) {
      const m = byAddress.get(dep);
      if (m) d = Math.max(d, visit(m, seen) + 1);
    }
    depth.set(n.address, d);
    return d;
  };
  for (const n of nodes) visit(n, new Set());
  return depth;
}

function isGpu(node, graph) {
  const t = node.live && node.live.image_type;
  if (typeof t === "string") return t.includes("NVIDIA");
  return node.kind === "compute_environment" && graph.gpu;
}

function actionText(action) {
  return action === "no-op" ? "in sync" : action === "unknown" ? "reading…" : action;
}

function graphSvg(graph) {
  const W = 230, H = 46, GX = 70, GY = 14, PAD = 16;
  const depth = depthOf(graph.nodes);
  const columns = [];
  for (const n of graph.nodes) {
    const d = depth.get(n.address) || 0;
    (columns[d] = columns[d] || []).push(n);
  }
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((n, r) => pos.set(n.address, {
    x: PAD + c * (W + GX), y: PAD + r * (H + GY) })));
  const width = PAD * 2 + columns.length * (W + GX) - GX;
  const height = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (H + GY) - GY;
  let edges = "", boxes = "";
  for (const n of graph.nodes) {
    const to = pos.get(n.address);
    for (const dep of n.deps) {
      const from = pos.get(dep);
      if (!from) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2, mx = (x1 + x2) / 2;
      edges += `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
    }
    const gpu = isGpu(n, graph);
    const tags = (n.drift ? " · drift" : "") + (gpu ? " · GPU" : "");
    boxes += `<g class="node a-${esc(n.action)}${n.drift ? " drifted" : ""}" data-address="${esc(n.address)}" transform="translate(${to.x},${to.y})">` +
      `<title>${esc(n.name)}: ${esc(STATUS_TEXT[n.action] || n.action)}${n.drift ? " (changed outside the tool)" : ""}</title>` +
      `<rect width="${W}" height="${H}" rx="5"/>` +
      `<text x="8" y="18" font-weight="600">${esc(n.address)}</text>` +
      `<text x="8" y="36" fill="#6b7580">${esc(actionText(n.action))}${esc(tags)}</text></g>`;
  }
  return `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${edges}${boxes}</svg>`;
}

// The stack as the page shows it before a reading: the stack file's resources and their
// dependencies, each "reading…".
function structureGraph(structure) {
  const o = boot.overview;
  return { stack: o.stack, env: o.env, gpu: o.gpu, image_type: o.image_type, applied_gpu: null, summary: null,
    nodes: structure.map((n) => ({ ...n, name: "", action: "unknown", drift: false, diffs: [], live: null })) };
}

function timeOf(iso) { return iso ? new Date(iso).toLocaleTimeString() : "–"; }

// Draws graph `g`; `live`: it comes from a reading (not the stack file alone); `note`: what
// the read line adds (a newer reading under way, or the latest one failed).
function drawStack(g, live, note) {
  const s = g.summary;
  const drifted = g.nodes.filter((n) => n.drift).length;
  const switched = g.applied_gpu !== null && g.applied_gpu !== undefined && g.applied_gpu !== g.gpu;
  const read = live
    ? `Live read at ${esc(timeOf(g.read_at))}, in ${esc(g.took_ms)} ms` + (note ? ` · ${esc(note)}` : "")
    : "Reading the state and every resource from AWS…";
  let html = `<h1>Stack ${esc(g.stack)} <span class="muted">(${esc(g.env)}` +
    (live ? `, account ${esc(g.account)}, serial ${esc(g.serial)}` : "") + `)</span></h1>` +
    `<p class="status-line" id="stack-read">${read} <button id="read-again" type="button"${live ? "" : " disabled"}>Read again</button></p>` +
    `<p id="gpu-switch">GPU switch: ${badge(g.gpu ? "gpu = true" : "gpu = false", g.gpu ? "gpu" : "")} → compute environments use <code>${esc(g.image_type)}</code>` +
    (!live ? "" : g.applied_gpu === null ? " · never applied" : ` · last apply: gpu = ${esc(g.applied_gpu)}`) +
    (switched ? ` ${badge("switch pending: apply replaces the compute environments", "a-replace")}` : "") + `</p>` +
    (s ? `<p id="plan-summary">Plan: ${s.add} to add, ${s.change} to change, ${s.destroy} to destroy.` +
      (drifted ? ` ${badge(drifted + " drifted", "drift")}` : "") + `</p>` : `<p class="muted">Plan: not read yet.</p>`) +
    `<p class="legend muted"><span>${badge("in sync", "a-no-op")}</span><span>${badge("create", "a-create")}</span>` +
    `<span>${badge("update", "a-update")}</span><span>${badge("replace / delete", "a-replace")}</span><span>${badge("drift", "drift")}</span></p>` +
    `<div id="graph"${live ? ' class="live"' : ""}>${graphSvg(g)}</div><h2>Resources</h2>` +
    `<table id="resources"><thead><tr><th>Address</th><th>Name</th><th>Status</th><th>Differences</th></tr></thead><tbody>`;
  for (const n of g.nodes) {
    const diffs = n.diffs.map((d) => `<div><code>${esc(d.name)}</code>: ${esc(JSON.stringify(d.before))} → ${esc(JSON.stringify(d.after))}</div>`).join("");
    html += `<tr data-address="${esc(n.address)}"><td><code>${esc(n.address)}</code></td><td>${dash(n.name)}</td>` +
      `<td>${badge(actionText(n.action), "a-" + n.action)}${n.drift ? " " + badge("drift", "drift") : ""}` +
      `${isGpu(n, g) ? " " + badge("GPU", "gpu") : ""}</td><td>${diffs || '<span class="muted">–</span>'}</td></tr>`;
  }
  main.innerHTML = html + "</tbody></table>";
  document.getElementById("read-again").addEventListener("click", readAgain);
}

let shownStack = null;

async function readAgain() {
  const button = document.getElementById("read-again");
  button.disabled = true;
  try {
    shownStack = await api("/api/stack?fresh=1");
    clearError();
    drawStack(shownStack, true, "");
  } catch (e) {
    showError(e.message);
    button.disabled = false;
  }
}

// Draws at once what the server knew (the latest reading, else the stack file's resources),
// then the live status when the reading it started arrives, then again every poll_after_ms.
function stackPage() {
  activate("stack");
  const known = boot.stack;
  shownStack = known.reading;
  if (shownStack) {
    drawStack(shownStack, true, known.fresh ? "" : known.failed ? "the latest read failed" : "reading again…");
  } else {
    drawStack(structureGraph(known.structure), false, "");
  }
  if (known.failed) showError(known.failed);
  markDrawn();
  if (known.fresh) markRendered();
  poll(async () => {
    try {
      shownStack = await api("/api/stack");
    } catch (e) {
      // Keep what is drawn; say that it is not the latest.
      if (shownStack) drawStack(shownStack, true, "the latest read failed");
      throw e;
    }
    drawStack(shownStack, true, "");
    markRendered();
    return shownStack.poll_after_ms;
  }, 5000, known.fresh ? known.reading.poll_after_ms : 0);
}

// ---- Jobs table -----------------------------------------------------------------------------

function arrayCell(job) {
  if (!job.array) return "–";
  const parts = Object.entries(job.array.by_status).map(([s, n]) => `${s} ${n}`);
  return `${job.array.size} children` + (parts.length ? `: ${esc(parts.join(", "))}` : "");
}

function jobRow(job, child) {
  const expand = job.array
    ? `<button class="expand" data-id="${esc(job.job_id)}" title="children">${expanded.has(job.job_id) ? "▾" : "▸"}</button>` : "";
  const reason = job.reason || (job.exit_code !== null && job.exit_code !== undefined ? `exit ${job.exit_code}` : "");
  return `<tr class="${child ? "child" : "job"}" data-id="${esc(job.job_id)}" data-status="${esc(job.status)}">` +
    `<td>${expand}</td><td><a href="/jobs/${encodeURIComponent(job.job_id)}">${esc(child ? `[${job.index}] ${job.name}` : job.name)}</a></td>` +
    `<td>${esc(job.queue)}</td><td>${badge(job.status, "s-" + job.status)}</td><td>${arrayCell(job)}</td>` +
    `<td>${dash(job.created)}</td><td>${dash(job.started)}</td><td>${dash(job.stopped)}</td><td>${dash(reason)}</td></tr>`;
}

const expanded = new Set();
const childrenOf = new Map();

function jobsQuery() {
  const q = new URLSearchParams();
  for (const name of ["queue", "status", "since"]) {
    const v = document.getElementById("f-" + name).value;
    if (v) q.set(name, v);
  }
  return q;
}

function renderJobs(data) {
  const name = document.getElementById("f-name").value.trim().toLowerCase();
  const rows = [];
  let shown = 0;
  for (const job of data.jobs) {
    if (name && !job.name.toLowerCase().includes(name)) continue;
    shown++;
    rows.push(jobRow(job, false));
    if (expanded.has(job.job_id)) {
      for (const c of childrenOf.get(job.job_id) || []) rows.push(jobRow(c, true));
    }
  }
  document.querySelector("#jobs tbody").innerHTML = rows.join("") ||
    `<tr><td></td><td colspan="8" class="muted">No jobs match.</td></tr>`;
  const totals = Object.entries(data.totals).map(([s, n]) => `${s} ${n}`).join(", ");
  document.getElementById("jobs-status").textContent =
    `${shown} of ${data.jobs.length} jobs${totals ? " (" + totals + ")" : ""} · updated ${new Date().toLocaleTimeString()}` +
    ` · ${data.cached ? "cached listing" : data.calls + " requests"} · next refresh in ${Math.round(data.poll_after_ms / 1000)} s`;
  markRendered();
}

async function jobsPage(overview) {
  activate("jobs");
  const params = new URLSearchParams(location.search);
  const options = (list, selected) => list.map((v) => `<option${v === selected ? " selected" : ""}>${esc(v)}</option>`).join("");
  const sinces = [["", "any time"], ["1h", "last hour"], ["1d", "last day"], ["7d", "last 7 days"]];
  main.innerHTML = `<h1>Jobs</h1><form class="filters" id="filters">` +
    `<label>Queue <select id="f-queue"><option value="">all</option>${options(overview ? overview.queues : [], params.get("queue"))}</select></label>` +
    `<label>Status <select id="f-status"><option value="">all</option>${options(overview ? overview.statuses : [], params.get("status"))}</select></label>` +
    `<label>Created <select id="f-since">${sinces.map(([v, t]) => `<option value="${v}"${v === (params.get("since") || "") ? " selected" : ""}>${t}</option>`).join("")}</select></label>` +
    `<label>Name <input id="f-name" placeholder="filter by job name" value="${esc(params.get("name") || "")}"></label></form>` +
    `<div class="status-line" id="jobs-status">Listing…</div>` +
    `<table id="jobs"><thead><tr><th></th><th>Name</th><th>Queue</th><th>Status</th><th>Array</th><th>Created</th><th>Started</th><th>Stopped</th><th>Reason</th></tr></thead><tbody></tbody></table>`;
  let latest = null;
  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    const data = await api("/api/jobs?" + jobsQuery());
    for (const id of expanded) {
      childrenOf.set(id, (await api(`/api/jobs/${encodeURIComponent(id)}/children`)).jobs);
    }
    if (mine !== generation) return null;
    latest = data;
    renderJobs(data);
    return data.poll_after_ms;
  };
  document.getElementById("filters").addEventListener("change", () => {
    const q = jobsQuery();
    const name = document.getElementById("f-name").value.trim();
    if (name) q.set("name", name);
    history.replaceState(null, "", "/jobs" + (q.toString() ? "?" + q : ""));
    load().catch((e) => showError(e.message));
  });
  document.getElementById("f-name").addEventListener("input", () => { if (latest) renderJobs(latest); });
  document.querySelector("#jobs tbody").addEventListener("click", async (event) => {
    const button = event.target.closest("button.expand");
    if (!button) return;
    const id = button.dataset.id;
    if (expanded.has(id)) {
      expanded.delete(id);
    } else {
      try {
        childrenOf.set(id, (await api(`/api/jobs/${encodeURIComponent(id)}/children`)).jobs);
        expanded.add(id);
      } catch (e) { showError(e.message); return; }
    }
    if (latest) renderJobs(latest);
  });
  poll(load, 5000);
}

// ---- One job --------------------------------------------------------------------------------

function kv(rows) {
  return `<table class="kv"><tbody>${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("")}</tbody></table>`;
}

async function jobPage(id) {
  activate("jobs");
  const d = await api(`/api/jobs/${encodeURIComponent(id)}`);
  const j = d.job;
  const res = d.resources || {};
  let html = `<h1>${esc(j.name)} ${badge(j.status, "s-" + j.status)}</h1>` + kv([
    ["Job id", `<code>${esc(j.job_id)}</code>`],
    ["Queue", dash(d.queue)],
    ["Job definition", dash(d.job_definition)],
    ["Created", dash(d.created)], ["Started", dash(j.started)], ["Stopped", dash(j.stopped)],
    ["Status reason", dash(j.reason)],
    ["Exit code", dash(d.exit_code)], ["Exit reason", dash(d.exit_reason)],
    ["Resources", `vCPUs ${dash(res.vcpu)} · memory ${dash(res.memory)} MiB · GPUs ${dash(res.gpu || 0)}`],
    ["Retry attempts", dash(d.retry_attempts)], ["Timeout", d.timeout_s ? esc(d.timeout_s) + " s" : "–"],
    ["Depends on", d.depends_on.length ? d.depends_on.map((x) => `<a href="/jobs/${encodeURIComponent(x)}">${esc(x)}</a>`).join(", ") : "–"],
    ["Array", d.array_size ? `${d.array_size} children${j.array ? ": " + esc(Object.entries(j.array).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(", ")) : ""}` :
      d.index !== null && d.index !== undefined ? `child ${esc(d.index)}` : "–"],
    ["Command", d.command ? `<code>${esc(d.command.join(" "))}</code>` : "–"],
  ]);
  const params = Object.entries(d.parameters || {});
  html += `<h2>Parameters</h2>` + (params.length ? kv(params.map(([k, v]) => [k, `<code>${esc(v)}</code>`])) : `<p class="muted">None.</p>`);
  const env = d.environment || [];
  html += `<h2>Environment</h2>` + (env.length ? kv(env.map((e) => [e.name, `<code>${esc(e.value)}</code>`])) : `<p class="muted">None.</p>`);
  html += `<h2>Attempts</h2>`;
  html += d.attempts.length
    ? `<table id="attempts"><thead><tr><th>#</th><th>Started</th><th>Stopped</th><th>Exit code</th><th>Reason</th><th>Log stream</th></tr></thead><tbody>` +
      d.attempts.map((a) => `<tr><td>${a.attempt}</td><td>${dash(a.started)}</td><td>${dash(a.stopped)}</td><td>${dash(a.exit_code)}</td><td>${dash(a.reason)}</td><td><code>${dash(a.log_stream)}</code></td></tr>`).join("") +
      `</tbody></table>`
    : `<p class="muted">No attempt yet.</p>`;
  if (d.array_size) {
    html += `<h2>Children</h2><table id="children"><thead><tr><th></th><th>Name</th><th>Queue</th><th>Status</th><th>Array</th><th>Created</th><th>Started</th><th>Stopped</th><th>Reason</th></tr></thead><tbody></tbody></table>`;
  } else {
    html += `<h2>Log <label class="muted"><input type="checkbox" id="follow" checked> follow</label></h2>` +
      `<div class="status-line" id="log-status"></div><pre class="log" id="log"></pre>`;
  }
  main.innerHTML = html;
  markRendered();
  if (d.array_size) {
    const kids = await api(`/api/jobs/${encodeURIComponent(id)}/children`);
    document.querySelector("#children tbody").innerHTML = kids.jobs.map((c) => jobRow(c, true)).join("");
    return;
  }
  followLog(id);
}

function followLog(id) {
  const log = document.getElementById("log");
  const status = document.getElementById("log-status");
  const follow = document.getElementById("follow");
  let token = null;
  let lines = 0;
  poll(async () => {
    const q = token ? "?token=" + encodeURIComponent(token) : "";
    const page = await api(`/api/jobs/${encodeURIComponent(id)}/logs${q}`);
    if (page.events.length) {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(page.events.map((e) => e.message + "\n").join(""));
      lines += page.events.length;
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    if (page.next_token) token = page.next_token;
    const where = page.stream ? `${page.group} / ${page.stream}` : "";
    const finished = page.job_done && page.at_end;
    status.textContent = [where, `${lines} lines`, page.note || "", finished ? "the job has ended" : (follow.checked ? "following" : "paused")]
      .filter(Boolean).join(" · ");
    if (finished) return null;
    if (!page.at_end) return 1;  // more pages waiting: read on at once
    return follow.checked ? page.poll_after_ms : 2000;
  }, 3000);
}

// ---- Results --------------------------------------------------------------------------------

function curve(title, epochs, trainKey, valKey) {
  const W = 300, H = 150, L = 40, R = 8, T = 8, B = 22;
  const pts = (key) => epochs.filter((e) => typeof e[key] === "number").map((e) => [e.epoch, e[key]]);
  const train = pts(trainKey), val = pts(valKey);
  const all = train.concat(val);
  if (!all.length) return "";
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const path = (p) => p.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  const dots = (p, cls) => p.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.2" class="${cls}"/>`).join("");
  return `<div class="chart"><h3>${esc(title)}</h3><svg width="${W}" height="${H}" class="curve">` +
    `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>` +
    `<text x="2" y="${T + 8}">${y1.toFixed(3)}</text><text x="2" y="${H - B}">${y0.toFixed(3)}</text>` +
    `<text x="${L}" y="${H - 6}">epoch ${x0}</text><text x="${W - R - 40}" y="${H - 6}">${x1}</text>` +
    `<path class="line-train" d="${path(train)}"/><path class="line-val" d="${path(val)}"/>${dots(train, "line-train")}${dots(val, "line-val")}` +
    `<text x="${W - 110}" y="${T + 10}" style="fill:#2b5fad">train</text><text x="${W - 70}" y="${T + 10}" style="fill:#c77700">validation</text></svg></div>`;
}

async function resultsPage() {
  activate("results");
  const r = await api("/api/results");
  const buckets = Object.entries(r.buckets).map(([k, v]) => `${k}: <code>s3://${esc(v)}</code>`).join(", ");
  let html = `<h1>Results</h1><p class="muted">Read from the stack's buckets: ${buckets || "none"}.</p><h2>Models</h2>`;
  if (!r.models.length) {
    html += `<p class="muted">No training_summary.json in the stack's buckets yet.</p>`;
  } else {
    html += `<table id="models"><thead><tr><th>Dataset</th><th>Model</th><th>Device</th><th class="num">Best epoch</th><th class="num">Val loss</th>` +
      `<th class="num">Val acc</th><th class="num">Test loss</th><th class="num">Test acc</th><th class="num">Samples/s</th></tr></thead><tbody>` +
      r.models.map((m) => `<tr><td><code title="${esc(m.uri)}">${esc(m.dataset)}</code></td><td>${esc(m.model)}</td><td>${dash(m.device)}</td>` +
        `<td class="num">${dash(m.best_epoch)}</td><td class="num">${fmt(m.best_val_loss, 4)}</td><td class="num">${fmt(m.best_val_accuracy, 3)}</td>` +
        `<td class="num">${fmt(m.test_loss, 4)}</td><td class="num">${fmt(m.test_accuracy, 3)}</td><td class="num">${fmt(m.samples_per_s, 0)}</td></tr>`).join("") +
      `</tbody></table><h2>Curves</h2>`;
    const byDataset = new Map();
    for (const m of r.models) (byDataset.get(m.dataset) || byDataset.set(m.dataset, []).get(m.dataset)).push(m);
    for (const [dataset, models] of byDataset) {
      html += `<h3><code>${esc(dataset)}</code></h3><div class="charts">` +
        models.map((m) => curve(`${m.model}: loss`, m.epochs, "train_loss", "val_loss") +
          curve(`${m.model}: accuracy`, m.epochs, "train_accuracy", "val_accuracy")).join("") + `</div>`;
    }
  }
  html += `<h2>Prepared datasets</h2>`;
  if (!r.datasets.length) {
    html += `<p class="muted">No preparation_config.json in the stack's buckets yet.</p>`;
  } else {
    const split = (d, name) => {
      const s = d.splits[name];
      if (!s) return "–";
      const classes = s.class_counts ? Object.entries(s.class_counts).map(([k, v]) => `${k}:${v}`).join(" ") : "";
      return `${esc(s.rows)}<div class="muted">${esc(classes)}</div>`;
    };
    html += `<table id="datasets"><thead><tr><th>Dataset</th><th class="num">Rows</th><th class="num">Train</th><th class="num">Validation</th>` +
      `<th class="num">Test</th><th class="num">Lookback</th><th class="num">Horizon</th><th>Files</th></tr></thead><tbody>` +
      r.datasets.map((d) => `<tr><td><code title="${esc(d.uri)}">${esc(d.dataset)}</code></td><td class="num">${dash(d.rows)}</td>` +
        `<td class="num">${split(d, "train")}</td><td class="num">${split(d, "validation")}</td><td class="num">${split(d, "test")}</td>` +
        `<td class="num">${dash(d.lookback)}</td><td class="num">${dash(d.horizon)}</td>` +
        `<td>${Object.entries(d.files).map(([f, n]) => `${esc(f)} <span class="muted">(${(n / 1024).toFixed(1)} KiB)</span>`).join("<br>")}</td></tr>`).join("") +
      `</tbody></table>`;
  }
  main.innerHTML = html;
  markRendered();
}

// ---- Cost -----------------------------------------------------------------------------------

function usd(v) { return typeof v === "number" ? "$" + v.toFixed(v < 1 ? 4 : 2) : "–"; }

async function costPage() {
  activate("cost");
  const c = await api("/api/cost");
  let html = `<h1>Cost estimate</h1><p class="muted">Prices of ${esc(c.prices_as_of)} for ${esc(c.prices_region)} (${esc(c.currency)}; Spot prices: ${esc(c.spot_prices)}), ` +
    `as <code>provision cost</code> estimates them.</p>` +
    `<p id="cost-total">${usd(c.full_scale_per_hour)}/hour at full scale (every compute environment at max_vcpus), ` +
    `${usd(c.idle_per_hour)}/hour idle (min_vcpus).</p>` +
    `<table id="compute-cost"><thead><tr><th>Compute</th><th>Pricing</th><th class="num">vCPUs (min–max)</th><th>Cheapest type</th>` +
    `<th class="num">Instances at full scale</th><th class="num">Full scale $/h</th><th class="num">Idle $/h</th>` +
    `<th class="num">All Spot $/h</th><th class="num">All On-Demand $/h</th><th>Unpriced types</th></tr></thead><tbody>` +
    c.compute.map((e) => `<tr><td><code>${esc(e.address)}</code></td><td>${esc(e.pricing)}</td><td class="num">${e.min_vcpus}–${e.max_vcpus}</td>` +
      `<td>${dash(e.instance_type)}</td><td class="num">${e.instances_at_full_scale}</td><td class="num">${usd(e.full_scale_per_hour)}</td>` +
      `<td class="num">${usd(e.idle_per_hour)}</td><td class="num">${usd(e.full_scale_spot_per_hour)}</td>` +
      `<td class="num">${usd(e.full_scale_on_demand_per_hour)}</td><td>${esc(e.unpriced_types.join(", ")) || "–"}</td></tr>`).join("") +
    `</tbody></table><h2>Storage</h2>` +
    `<p id="storage-cost">S3: ${c.storage.s3_gb.toFixed(3)} GB ${c.s3_measured ? "(measured in the stack's buckets now)" : "(not applied yet)"} at ${usd(c.storage.s3_per_gb_month)}/GB-month · ` +
    `ECR at ${usd(c.storage.ecr_per_gb_month)}/GB-month · ${usd(c.storage.per_month)}/month</p>`;
  main.innerHTML = html;
  markRendered();
}

// ---- Routing --------------------------------------------------------------------------------

function route() {
  const overview = header();
  const path = location.pathname;
  const show = async (render) => {
    try { await render(); } catch (e) {
      showError(e.message);
      main.innerHTML = `<p class="muted">This page could not be loaded; reload to try again.</p>`;
    }
  };
  if (path === "/" || path === "") return stackPage();
  if (path === "/jobs") return jobsPage(overview);
  if (path.startsWith("/jobs/")) return show(() => jobPage(decodeURIComponent(path.slice(6))));
  if (path === "/results") return show(resultsPage);
  if (path === "/cost") return show(costPage);
  main.innerHTML = `<p>No such page. <a href="/">The stack</a></p>`;
}

route();
