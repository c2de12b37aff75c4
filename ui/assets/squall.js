// Squall UI: renders the cluster, topology and component pages from Storm's REST API
// (/api/v1/...). Plain JavaScript, no framework. Every refresh builds each table as
// one HTML string (every API string escaped with esc()) and sets it once; clicks are
// handled by one delegated listener per page, never one per row.
"use strict";

(function () {
  const POLL_MS = 5000;
  const WINDOWS = [["600", "10 min"], ["10800", "3 h"], ["86400", "1 day"], [":all-time", "All time"]];
  const SECRET_KEY = "squall.secret";

  // ---------------------------------------------------------------- helpers

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(v) {
    if (v === null || v === undefined) return "";
    return String(v).replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }
  function num(v) {
    if (v === null || v === undefined || v === "") return "";
    const n = Number(v);
    return Number.isFinite(n) ? n.toLocaleString("en-US") : esc(v);
  }
  function params() { return new URLSearchParams(location.search); }
  function currentWindow() { return params().get("window") || "600"; }
  function enc(s) { return encodeURIComponent(s); }
  function link(href, text) { return '<a href="' + esc(href) + '">' + esc(text) + "</a>"; }
  function extLink(href, text) {
    if (!href) return "";
    return '<a href="' + esc(href) + '" target="_blank" rel="noopener">' + esc(text) + "</a>";
  }
  function firstLine(s) { return String(s || "").split("\n")[0]; }
  function when(secs) {
    if (secs === null || secs === undefined || secs === "") return "";
    let ms = Number(secs);
    if (!Number.isFinite(ms)) return esc(secs);
    if (ms < 1e12) ms *= 1000;
    return esc(new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"));
  }
  function badge(s) { return '<span class="badge ' + esc(s) + '">' + esc(s) + "</span>"; }
  function bar(used, total) {
    const pct = total > 0 ? Math.min(100, Math.round((100 * used) / total)) : 0;
    return '<span class="bar"><i style="width:' + pct + '%"></i></span>';
  }

  // Sets an element's HTML when it changed since the last refresh.
  const shown = new Map();
  function put(id, html) {
    const el = document.getElementById(id);
    if (!el) return;
    if (shown.get(id) === html) return;
    shown.set(id, html);
    el.innerHTML = html;
    el.classList.remove("loading");
  }

  function message(text, isError) {
    const el = document.getElementById("message");
    if (!el) return;
    if (!text) { el.hidden = true; el.textContent = ""; return; }
    el.hidden = false;
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  class ApiError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }

  async function api(path, options) {
    let resp;
    try {
      resp = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    } catch (e) {
      throw new ApiError(0, "The UI daemon did not answer (" + e.message + ")");
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok || (body && body.error)) {
      const why = body && (body.errorMessage || body.error) ? (body.errorMessage || body.error) : resp.statusText;
      throw new ApiError(resp.status, why + " (HTTP " + resp.status + ")");
    }
    return body;
  }

  // A table: cols are {h: header, k: field name (data-f), n: numeric, f: row => HTML}.
  function table(cols, rows, opts) {
    opts = opts || {};
    if (!rows || rows.length === 0) return '<p class="muted">' + esc(opts.empty || "None.") + "</p>";
    const out = ['<div class="table-box"><table', opts.id ? ' id="' + esc(opts.id) + '"' : "", "><thead><tr>"];
    for (const c of cols) out.push("<th", c.n ? ' class="n"' : "", c.title ? ' title="' + esc(c.title) + '"' : "", ">", esc(c.h), "</th>");
    out.push("</tr></thead><tbody>");
    for (const r of rows) {
      const cls = opts.rowClass ? opts.rowClass(r) : "";
      out.push(cls ? '<tr class="' + esc(cls) + '">' : "<tr>");
      for (const c of cols) {
        const v = c.f ? c.f(r) : (c.n ? num(r[c.k]) : esc(r[c.k]));
        out.push("<td", c.n ? ' class="n"' : "", c.k ? ' data-f="' + esc(c.k) + '"' : "", ">", v, "</td>");
      }
      out.push("</tr>");
    }
    out.push("</tbody></table></div>");
    return out.join("");
  }

  function kv(items) {
    return '<div class="kv">' + items.map(([label, value, key]) =>
      "<div" + (key ? ' data-f="' + esc(key) + '"' : "") + "><b>" + value + "</b><span>" + esc(label) + "</span></div>").join("") + "</div>";
  }

  // Failed split into timed out and explicit fails (Squall's extra fields).
  const FAIL_COLS = [
    { h: "Failed", k: "failed", n: true, title: "Storm's failed: every failed tuple tree, timeouts included" },
    { h: "Timed out", k: "timedOut", n: true, title: "tuple trees that timed out (part of failed)", f: (r) => '<span class="timedout">' + num(r.timedOut) + "</span>" },
    { h: "Failed explicitly", k: "failedExplicit", n: true, title: "explicit fails (failed minus timed out)", f: (r) => '<span class="failed">' + num(r.failedExplicit) + "</span>" },
  ];

  function windowSelector() {
    const sel = document.getElementById("window");
    if (!sel) return;
    const w = currentWindow();
    sel.innerHTML = WINDOWS.map(([v, label]) =>
      '<option value="' + esc(v) + '"' + (v === w ? " selected" : "") + ">" + esc(label) + "</option>").join("");
    sel.addEventListener("change", () => {
      const p = params();
      p.set("window", sel.value);
      history.replaceState(null, "", location.pathname + "?" + p.toString());
      refreshNow();
    });
  }

  // ---------------------------------------------------------------- polling

  let timer = null;
  let render = null;
  async function refresh() {
    timer = null;
    if (!document.hidden) {
      try {
        await render();
        const el = document.getElementById("refreshed");
        if (el) el.textContent = "updated " + new Date().toLocaleTimeString();
        if (!document.getElementById("message").dataset.sticky) message("");
      } catch (e) {
        message(e.message, true);
      }
    }
    timer = setTimeout(refresh, POLL_MS);
  }
  function refreshNow() {
    if (timer) clearTimeout(timer);
    refresh();
  }

  // ---------------------------------------------------------------- cluster page

  async function renderCluster() {
    const [summary, nimbus, supervisors, topologies] = await Promise.all([
      api("/api/v1/cluster/summary"),
      api("/api/v1/nimbus/summary"),
      api("/api/v1/supervisor/summary"),
      api("/api/v1/topology/summary"),
    ]);
    put("cluster-summary", kv([
      ["Version", esc(summary.stormVersion)],
      ["Leader", esc(summary.leader || "none"), "leader"],
      ["Supervisors", num(summary.supervisors), "supervisors"],
      ["Slots used", num(summary.slotsUsed), "slotsUsed"],
      ["Slots free", num(summary.slotsFree), "slotsFree"],
      ["Slots total", num(summary.slotsTotal), "slotsTotal"],
      ["Topologies", num(summary.topologies), "topologies"],
      ["Executors", num(summary.executorsTotal), "executorsTotal"],
      ["Tasks", num(summary.tasksTotal), "tasksTotal"],
    ]));
    put("nimbus-summary", table([
      { h: "Host", k: "host" },
      { h: "Port", k: "port", n: true, f: (r) => esc(r.port) },
      { h: "Status", k: "status", f: (r) => badge(r.status) },
      { h: "Uptime", k: "nimbusUpTime" },
      { h: "Version", k: "version" },
      { h: "Log", f: (r) => extLink(r.nimbusLogLink, "log") },
    ], (nimbus.nimbuses || []), { id: "nimbus-table", empty: "No Nimbus answers." }));
    const tops = (topologies.topologies || []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
    put("topology-summary", table([
      { h: "Name", k: "name", f: (r) => link("topology.html?id=" + enc(r.id), r.name) },
      { h: "Id", k: "id", f: (r) => '<span class="mono">' + esc(r.id) + "</span>" },
      { h: "Status", k: "status", f: (r) => badge(r.status) },
      { h: "Uptime", k: "uptime" },
      { h: "Workers", k: "workersTotal", n: true },
      { h: "Executors", k: "executorsTotal", n: true },
      { h: "Tasks", k: "tasksTotal", n: true },
      { h: "Owner", k: "owner" },
    ], tops, { id: "topologies-table", empty: "No topologies running." }));
    put("supervisor-summary", table([
      { h: "Id", k: "id", f: (r) => '<span class="mono">' + esc(r.id) + "</span>" },
      { h: "Host", k: "host" },
      { h: "Uptime", k: "uptime" },
      { h: "Slots used", k: "slotsUsed", n: true, f: (r) => bar(r.slotsUsed, r.slotsTotal) + num(r.slotsUsed) },
      { h: "Slots free", k: "slotsFree", n: true },
      { h: "Slots", k: "slotsTotal", n: true },
      { h: "Version", k: "version" },
    ], (supervisors.supervisors || []), { id: "supervisors-table", empty: "No supervisors." }));
  }

  // ---------------------------------------------------------------- topology page

  let topo = null; // the last topology answer, for the actions

  function lastError(r) {
    if (!r.lastError) return "";
    const text = firstLine(r.lastError);
    return '<span class="failed" title="' + esc(r.lastError) + '">' + esc(text.length > 80 ? text.slice(0, 80) + "…" : text) + "</span>";
  }
  function throttleFlag(r) { return r.throttling ? '<span class="flag" title="throttles the topology">throttling</span>' : ""; }

  async function renderTopology() {
    const id = params().get("id");
    if (!id) throw new Error("The page needs ?id=<topology name or id>.");
    const w = currentWindow();
    const base = "/api/v1/topology/" + enc(id);
    const [t, vis] = await Promise.all([
      api(base + "?window=" + enc(w)),
      api(base + "/visualization?window=" + enc(w)).catch((e) => ({ __error: e.message })),
    ]);
    topo = t;
    document.title = t.name + " - Squall UI";
    put("crumb", esc(t.name));
    put("topology-name", "Topology " + esc(t.name));
    const throttling = t.throttlingComponents || [];
    put("topology-summary", kv([
      ["Status", badge(t.status), "status"],
      ["Id", '<span class="mono">' + esc(t.id) + "</span>", "id"],
      ["Uptime", esc(t.uptime), "uptime"],
      ["Workers", num(t.workersTotal), "workersTotal"],
      ["Executors", num(t.executorsTotal), "executorsTotal"],
      ["Tasks", num(t.tasksTotal), "tasksTotal"],
      ["Message timeout (s)", num(t.msgTimeout), "msgTimeout"],
      ["Throttled by", throttling.length ? '<span class="flag">' + throttling.map(esc).join(", ") + "</span>" : "nothing", "throttlingComponents"],
    ]));
    const winLink = (r) => link("topology.html?id=" + enc(id) + "&window=" + enc(r.window), r.windowPretty || r.window);
    put("topology-stats", table([
      { h: "Window", k: "window", f: winLink },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
      { h: "Complete latency (ms)", k: "completeLatency", n: true, f: (r) => esc(r.completeLatency) },
      { h: "Acked", k: "acked", n: true },
    ].concat(FAIL_COLS), t.topologyStats || [], { id: "topology-stats-table" }));
    const comp = (cid) => "component.html?topology=" + enc(id) + "&id=" + enc(cid) + "&window=" + enc(w);
    put("spouts", table([
      { h: "Id", k: "spoutId", f: (r) => link(comp(r.spoutId), r.spoutId) },
      { h: "Executors", k: "executors", n: true },
      { h: "Tasks", k: "tasks", n: true },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
      { h: "Complete latency (ms)", k: "completeLatency", n: true, f: (r) => esc(r.completeLatency) },
      { h: "p99 (ms)", k: "completeLatencyP99", n: true, f: (r) => esc(r.completeLatencyP99), title: "since worker start" },
      { h: "Acked", k: "acked", n: true },
    ].concat(FAIL_COLS, [
      { h: "Throttling", k: "throttling", f: throttleFlag },
      { h: "Last error", k: "lastError", f: lastError },
    ]), t.spouts || [], { id: "spouts-table", rowClass: (r) => (r.throttling ? "throttling" : "") }));
    put("bolts", table([
      { h: "Id", k: "boltId", f: (r) => link(comp(r.boltId), r.boltId) },
      { h: "Executors", k: "executors", n: true },
      { h: "Tasks", k: "tasks", n: true },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
      { h: "Capacity", k: "capacity", n: true, f: (r) => esc(r.capacity) },
      { h: "Execute latency (ms)", k: "executeLatency", n: true, f: (r) => esc(r.executeLatency) },
      { h: "Executed", k: "executed", n: true },
      { h: "Process latency (ms)", k: "processLatency", n: true, f: (r) => esc(r.processLatency) },
      { h: "Acked", k: "acked", n: true },
    ].concat(FAIL_COLS, [
      { h: "Queue", k: "queueDepth", n: true, f: (r) => num(r.queueDepth) + (r.queueCapacity ? " / " + num(r.queueCapacity) : "") },
      { h: "Backpressure", k: "backpressure", n: true, f: (r) => esc(r.backpressure), title: "share of the window its producers were blocked on its full queue" },
      { h: "Throttling", k: "throttling", f: throttleFlag },
      { h: "Last error", k: "lastError", f: lastError },
    ]), t.bolts || [], { id: "bolts-table", rowClass: (r) => (r.throttling ? "throttling" : "") }));
    put("workers", table([
      { h: "Host", k: "host" },
      { h: "Port", k: "port", n: true, f: (r) => esc(r.port) },
      { h: "Supervisor", k: "supervisorId", f: (r) => '<span class="mono">' + esc(r.supervisorId) + "</span>" },
      { h: "Executors", k: "executorsTotal", n: true },
      { h: "Uptime", k: "uptime" },
      { h: "Log", f: (r) => extLink(r.workerLogLink, "worker.log") },
    ], t.workers || [], { id: "workers-table", empty: "No workers assigned." }));
    put("placement", table([
      { h: "Component", k: "component" },
      { h: "Executor", k: "id" },
      { h: "Host", k: "host" },
      { h: "Port", k: "port", n: true, f: (r) => esc(r.port) },
      { h: "Supervisor", k: "supervisorId", f: (r) => '<span class="mono">' + esc(r.supervisorId) + "</span>" },
      { h: "Log", f: (r) => extLink(r.workerLogLink, "worker.log") },
    ], t.executorPlacement || [], { id: "placement-table", empty: "No executors placed." }));
    const levels = Object.entries(t.logLevels || {}).map(([logger, v]) => ({
      logger, level: v.level, expires: v.expiresSecs ? when(v.expiresSecs) : "never",
    }));
    put("log-levels", table([
      { h: "Logger", k: "logger" }, { h: "Level", k: "level" }, { h: "Reverts", k: "expires", f: (r) => r.expires },
    ], levels, { empty: "Workers' defaults (set with squall set_log_level)." }));
    const conf = t.configuration || {};
    const confRows = Object.keys(conf).sort().map((k) => ({ key: k, value: typeof conf[k] === "string" ? conf[k] : JSON.stringify(conf[k]) }));
    put("configuration", table([{ h: "Key", k: "key", f: (r) => '<span class="mono">' + esc(r.key) + "</span>" }, { h: "Value", k: "value", f: (r) => '<span class="mono">' + esc(r.value) + "</span>" }], confRows, { id: "configuration-table" }));
    if (vis && vis.__error) put("graph", '<p class="failed">Graph unavailable: ' + esc(vis.__error) + "</p>");
    else drawGraph(vis || {}, id, w);
  }

  // ---------------------------------------------------------------- graph

  let layoutKey = null;
  let layout = null; // {nodes: {id: {x,y,width,height}}, edges: [...], width, height}

  function load(c) {
    const cap = Number(c[":capacity"]) || 0;
    const bp = Number(c[":backpressure"]) || 0;
    return Math.max(0, Math.min(1, Math.max(cap, bp)));
  }
  function colour(v) {
    const hue = Math.round(120 * (1 - v));
    return "hsl(" + hue + ", 70%, 82%)";
  }
  const textWidth = (s, px) => Math.ceil(String(s).length * px);

  function computeLayout(vis) {
    if (typeof dagre === "undefined") throw new Error("the dagre layout library did not load");
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 90, edgesep: 14, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    const ids = Object.keys(vis).sort();
    for (const id of ids) g.setNode(id, { width: Math.max(176, textWidth(id, 7.6) + 28), height: 48 });
    const edges = [];
    for (const id of ids) {
      for (const inp of vis[id][":inputs"] || []) {
        const from = inp[":component"];
        if (!(from in vis)) continue;
        const label = (inp[":stream"] || "default") + " · " + (inp[":grouping"] || "");
        const name = from + "\u0000" + (inp[":stream"] || "default");
        g.setEdge(from, id, { label, width: textWidth(label, 6), height: 14, labelpos: "c" }, name);
        edges.push({ v: from, w: id, name, stream: inp[":stream"] || "default", grouping: inp[":grouping"] || "", label });
      }
    }
    dagre.layout(g);
    const nodes = {};
    for (const id of ids) {
      const n = g.node(id);
      nodes[id] = { x: n.x, y: n.y, width: n.width, height: n.height };
    }
    for (const e of edges) {
      const l = g.edge({ v: e.v, w: e.w, name: e.name });
      e.points = l.points || [];
      e.x = l.x; e.y = l.y;
    }
    const gg = g.graph();
    return { nodes, edges, width: Math.ceil(gg.width || 200), height: Math.ceil(gg.height || 100) };
  }

  function drawGraph(vis, topologyId, w) {
    const ids = Object.keys(vis).sort();
    if (ids.length === 0) { put("graph", '<p class="muted">No components.</p>'); return; }
    const key = JSON.stringify(ids.map((id) => [id, (vis[id][":inputs"] || []).map((i) => [i[":component"], i[":stream"], i[":grouping"]])]));
    if (key !== layoutKey) {
      try {
        layout = computeLayout(vis);
        layoutKey = key;
      } catch (e) {
        put("graph", '<p class="failed">Cannot lay the graph out: ' + esc(e.message) + "</p>");
        return;
      }
    }
    const out = ['<svg id="topology-graph" class="graph" xmlns="http://www.w3.org/2000/svg" width="', layout.width,
      '" height="', layout.height, '" viewBox="0 0 ', layout.width, " ", layout.height, '">',
      '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7b879e"/></marker></defs>'];
    for (const e of layout.edges) {
      const d = e.points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join(" ");
      out.push('<g class="edge" data-from="', esc(e.v), '" data-to="', esc(e.w), '" data-stream="', esc(e.stream), '" data-grouping="', esc(e.grouping), '">',
        '<title>', esc(e.v + " → " + e.w + ": stream " + e.stream + ", " + e.grouping + " grouping"), "</title>",
        '<path d="', d, '" marker-end="url(#arrow)"/>');
      if (e.x !== undefined) out.push('<text x="', e.x.toFixed(1), '" y="', (e.y + 4).toFixed(1), '" text-anchor="middle">', esc(e.label), "</text>");
      out.push("</g>");
    }
    for (const id of ids) {
      const c = vis[id];
      const n = layout.nodes[id];
      if (!n) continue;
      const type = c[":type"] === "spout" ? "spout" : "bolt";
      const v = load(c);
      const cls = "node " + type + (c[":throttling"] ? " throttling" : "");
      const sub = type === "bolt"
        ? "cap " + (Number(c[":capacity"]) || 0).toFixed(3) + " · bp " + (Number(c[":backpressure"]) || 0).toFixed(3)
        : "lat " + (Number(c[":latency"]) || 0).toFixed(3) + " ms · bp " + (Number(c[":backpressure"]) || 0).toFixed(3);
      const x = n.x - n.width / 2, y = n.y - n.height / 2;
      const href = "component.html?topology=" + enc(topologyId) + "&id=" + enc(id) + "&window=" + enc(w);
      out.push('<g class="', cls, '" data-component="', esc(id), '" data-type="', type, '"><a href="', esc(href), '">',
        "<title>", esc(id + " (" + type + "): " + num(c[":executors"]) + " executors, " + num(c[":tasks"]) + " tasks, transferred " + num(c[":transferred"])), "</title>",
        '<rect x="', x.toFixed(1), '" y="', y.toFixed(1), '" width="', n.width, '" height="', n.height, '" rx="', type === "spout" ? 18 : 4, '" fill="', colour(v), '"/>',
        '<text x="', n.x.toFixed(1), '" y="', (n.y - 4).toFixed(1), '" text-anchor="middle" font-weight="600">', esc(id), "</text>",
        '<text class="sub" x="', n.x.toFixed(1), '" y="', (n.y + 13).toFixed(1), '" text-anchor="middle">', esc(sub), "</text>",
        "</a></g>");
    }
    out.push("</svg>");
    put("graph", out.join(""));
  }

  // ---------------------------------------------------------------- actions

  let secretRequired = null;
  async function authHeaders() {
    if (secretRequired === null) {
      const s = await api("/api/v1/cluster/summary");
      secretRequired = !!s.secretRequired;
    }
    if (!secretRequired) return {};
    let secret = sessionStorage.getItem(SECRET_KEY);
    if (!secret) {
      secret = prompt("This cluster requires its secret for actions. Cluster secret:");
      if (!secret) throw new Error("Cancelled: the action needs the cluster secret.");
      sessionStorage.setItem(SECRET_KEY, secret.trim());
      secret = secret.trim();
    }
    return { Authorization: "Bearer " + secret };
  }

  function askAction(action) {
    return new Promise((resolve) => {
      const dlg = document.getElementById("action-dialog");
      const name = topo ? topo.name : params().get("id");
      const texts = {
        activate: "Activate topology " + name + "? Its spouts resume emitting.",
        deactivate: "Deactivate topology " + name + "? Its spouts stop emitting.",
        rebalance: "Rebalance topology " + name + "? Its spouts pause for the wait, then its executors are spread again.",
        kill: "Kill topology " + name + "? Its spouts stop for the wait, then its workers shut down. This cannot be undone.",
      };
      document.getElementById("action-title").textContent = action.charAt(0).toUpperCase() + action.slice(1);
      document.getElementById("action-text").textContent = texts[action];
      const waitRow = document.getElementById("action-wait-row");
      const workersRow = document.getElementById("action-workers-row");
      waitRow.hidden = !(action === "rebalance" || action === "kill");
      workersRow.hidden = action !== "rebalance";
      document.getElementById("action-wait").value = topo && topo.msgTimeout !== undefined ? topo.msgTimeout : 30;
      document.getElementById("action-workers").value = topo ? topo.workersTotal : 1;
      if (!dlg.showModal) { resolve(confirm(texts[action]) ? {} : null); return; }
      dlg.returnValue = "";
      dlg.addEventListener("close", () => {
        if (dlg.returnValue !== "ok") { resolve(null); return; }
        resolve({
          wait: Math.max(0, parseInt(document.getElementById("action-wait").value, 10) || 0),
          workers: parseInt(document.getElementById("action-workers").value, 10) || 0,
        });
      }, { once: true });
      dlg.showModal();
    });
  }

  async function runAction(action) {
    const id = topo ? topo.id : params().get("id");
    const answer = await askAction(action);
    if (!answer) return;
    let path = "/api/v1/topology/" + enc(id) + "/" + action;
    let body;
    if (action === "kill") path += "/" + answer.wait;
    if (action === "rebalance") {
      path += "/" + answer.wait;
      body = JSON.stringify({ rebalanceOptions: answer.workers > 0 ? { numWorkers: answer.workers } : {} });
    }
    const headers = Object.assign({ "Content-Type": "application/json", Accept: "application/json" }, await authHeaders());
    try {
      const r = await api(path, { method: "POST", headers, body });
      message("Topology " + (topo ? topo.name : id) + ": " + (r.topologyOperation || action) + " " + (r.status || "done") + ".");
      document.getElementById("message").dataset.sticky = "1";
      setTimeout(() => { delete document.getElementById("message").dataset.sticky; }, 8000);
    } catch (e) {
      if (e.status === 401) sessionStorage.removeItem(SECRET_KEY);
      throw e;
    }
    refreshNow();
  }

  async function logSearch(text) {
    const id = topo ? topo.id : params().get("id");
    put("logsearch-results", '<p class="muted">Searching…</p>');
    const r = await api("/api/v1/topology/" + enc(id) + "/logsearch?search=" + enc(text));
    const errs = (r.errors || []).map((e) => '<p class="failed">' + esc(e.host) + ": " + esc(e.error) + "</p>").join("");
    put("logsearch-results", errs + table([
      { h: "Host", k: "host" },
      { h: "Port", k: "port", n: true, f: (r) => esc(r.port) },
      { h: "File", k: "file", f: (m) => '<span class="mono">' + esc(m.file) + "</span>" },
      { h: "Line", k: "line", n: true },
      { h: "Text", k: "text", f: (m) => extLink(m.link, m.text) },
    ], r.matches || [], { id: "logsearch-table", empty: "No line contains “" + text + "”." }));
  }

  // ---------------------------------------------------------------- component page

  async function renderComponent() {
    const p = params();
    const topology = p.get("topology");
    const id = p.get("id");
    if (!topology || !id) throw new Error("The page needs ?topology=<topology>&id=<component>.");
    const w = currentWindow();
    const c = await api("/api/v1/topology/" + enc(topology) + "/component/" + enc(id) + "?window=" + enc(w));
    const spout = c.componentType === "spout";
    document.title = id + " - Squall UI";
    const tlink = document.getElementById("crumb-topology");
    if (tlink) { tlink.href = "topology.html?id=" + enc(topology) + "&window=" + enc(w); tlink.textContent = c.name || c.topologyName || topology; }
    put("crumb", esc(id));
    put("component-name", (spout ? "Spout " : "Bolt ") + esc(id));
    put("component-summary", kv([
      ["Type", esc(c.componentType), "componentType"],
      ["Topology", link("topology.html?id=" + enc(topology), c.name || c.topologyName || topology)],
      ["Executors", num(c.executors), "executors"],
      ["Tasks", num(c.tasks), "tasks"],
      ["Errors", num((c.componentErrors || []).length), "errors"],
    ]));
    // Custom gauges (set_gauge; Squall's extra): the component's sums, each executor's
    // latest values beside them; the section shows only when there are any.
    const gaugeNames = Object.keys(c.gauges || {}).sort();
    const gaugeSection = document.getElementById("gauges-section");
    if (gaugeSection) gaugeSection.hidden = gaugeNames.length === 0;
    if (gaugeNames.length) {
      const perExecutor = (name) => (c.executorStats || [])
        .filter((e) => e.gauges && Object.prototype.hasOwnProperty.call(e.gauges, name))
        .map((e) => esc(e.id) + ": " + num(e.gauges[name]))
        .join(", ");
      put("gauges", table([
        { h: "Name", k: "name", f: (r) => '<span class="mono">' + esc(r.name) + "</span>" },
        { h: "Value", k: "value", n: true, title: "the latest values, summed over the component's executors" },
        { h: "Per executor", k: "executors", f: (r) => perExecutor(r.name) },
      ], gaugeNames.map((name) => ({ name: name, value: c.gauges[name] })), { id: "gauges-table" }));
    }
    const winLink = (r) => link("component.html?topology=" + enc(topology) + "&id=" + enc(id) + "&window=" + enc(r.window), r.windowPretty || r.window);
    if (spout) {
      put("component-stats", table([
        { h: "Window", k: "window", f: winLink },
        { h: "Emitted", k: "emitted", n: true },
        { h: "Transferred", k: "transferred", n: true },
        { h: "Complete latency (ms)", k: "completeLatency", n: true, f: (r) => esc(r.completeLatency) },
        { h: "Acked", k: "acked", n: true },
      ].concat(FAIL_COLS), c.spoutSummary || [], { id: "component-stats-table" }));
    } else {
      put("component-stats", table([
        { h: "Window", k: "window", f: winLink },
        { h: "Emitted", k: "emitted", n: true },
        { h: "Transferred", k: "transferred", n: true },
        { h: "Execute latency (ms)", k: "executeLatency", n: true, f: (r) => esc(r.executeLatency) },
        { h: "Executed", k: "executed", n: true },
        { h: "Process latency (ms)", k: "processLatency", n: true, f: (r) => esc(r.processLatency) },
        { h: "Acked", k: "acked", n: true },
      ].concat(FAIL_COLS), c.boltStats || [], { id: "component-stats-table" }));
    }
    const inputSection = document.getElementById("input-section");
    if (inputSection) inputSection.hidden = spout;
    if (!spout) {
      put("input-stats", table([
        { h: "Component", k: "component", f: (r) => link("component.html?topology=" + enc(topology) + "&id=" + enc(r.component) + "&window=" + enc(w), r.component) },
        { h: "Stream", k: "stream" },
        { h: "Execute latency (ms)", k: "executeLatency", n: true, f: (r) => esc(r.executeLatency) },
        { h: "Process latency (ms)", k: "processLatency", n: true, f: (r) => esc(r.processLatency) },
        { h: "Executed", k: "executed", n: true },
        { h: "Acked", k: "acked", n: true },
      ].concat(FAIL_COLS), c.inputStats || [], { id: "input-stats-table" }));
    }
    put("output-stats", table(spout ? [
      { h: "Stream", k: "stream" },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
      { h: "Complete latency (ms)", k: "completeLatency", n: true, f: (r) => esc(r.completeLatency) },
      { h: "Acked", k: "acked", n: true },
    ].concat(FAIL_COLS) : [
      { h: "Stream", k: "stream" },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
    ], c.outputStats || [], { id: "output-stats-table" }));
    const execCols = [
      { h: "Executor", k: "id" },
      { h: "Uptime", k: "uptime" },
      { h: "Host", k: "host" },
      { h: "Port", k: "port", n: true, f: (r) => extLink(r.workerLogLink, r.port) },
      { h: "Emitted", k: "emitted", n: true },
      { h: "Transferred", k: "transferred", n: true },
    ].concat(spout ? [
      { h: "Complete latency (ms)", k: "completeLatency", n: true, f: (r) => esc(r.completeLatency) },
      { h: "p50", k: "completeLatencyP50", n: true, f: (r) => esc(r.completeLatencyP50) },
      { h: "p99", k: "completeLatencyP99", n: true, f: (r) => esc(r.completeLatencyP99) },
      { h: "max", k: "completeLatencyMax", n: true, f: (r) => esc(r.completeLatencyMax) },
      { h: "Acked", k: "acked", n: true },
    ] : [
      { h: "Capacity", k: "capacity", n: true, f: (r) => esc(r.capacity) },
      { h: "Execute latency (ms)", k: "executeLatency", n: true, f: (r) => esc(r.executeLatency) },
      { h: "Executed", k: "executed", n: true },
      { h: "Process latency (ms)", k: "processLatency", n: true, f: (r) => esc(r.processLatency) },
      { h: "Acked", k: "acked", n: true },
    ]).concat(FAIL_COLS, spout ? [] : [
      { h: "Queue", k: "queueDepth", n: true, f: (r) => num(r.queueDepth) + (r.queueCapacity ? " / " + num(r.queueCapacity) : "") },
      { h: "Backpressure", k: "backpressure", n: true, f: (r) => esc(r.backpressure) },
    ], [
      { h: "Throttling", k: "throttling", f: throttleFlag },
      { h: "Log", f: (r) => extLink(r.workerLogLink, "worker.log") },
    ]);
    put("executor-stats", table(execCols, c.executorStats || [], { id: "executor-stats-table", rowClass: (r) => (r.throttling ? "throttling" : "") }));
    const errors = (c.componentErrors || []).slice().sort((x, y) => (Number(y.errorTime) || 0) - (Number(x.errorTime) || 0)); // newest first
    put("errors", table([
      { h: "Time", k: "errorTime", f: (r) => when(r.errorTime) },
      { h: "Host", k: "errorHost" },
      { h: "Port", k: "errorPort", n: true, f: (r) => esc(r.errorPort) },
      { h: "Error", k: "error", f: (r) => '<pre class="error-text">' + esc(r.error) + "</pre>" },
      { h: "Worker log", k: "errorWorkerLogLink", f: (r) => extLink(r.errorWorkerLogLink, "log at the error") },
    ], errors, { id: "errors-table", empty: "No errors reported." }));
  }

  // ---------------------------------------------------------------- start

  function start() {
    const page = document.body.dataset.page;
    render = { cluster: renderCluster, topology: renderTopology, component: renderComponent }[page];
    if (!render) return;
    windowSelector();
    if (page === "topology") {
      document.addEventListener("click", (ev) => {
        const b = ev.target.closest("button[data-action]");
        if (!b) return;
        runAction(b.dataset.action).catch((e) => message(e.message, true));
      });
      const form = document.getElementById("logsearch");
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const text = document.getElementById("logsearch-text").value.trim();
        if (text) logSearch(text).catch((e) => put("logsearch-results", '<p class="failed">' + esc(e.message) + "</p>"));
      });
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshNow(); });
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
