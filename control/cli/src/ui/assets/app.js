// The Lattice dashboard: polls the API (every request is the operator's signed ctl request),
// draws the hosts, apps (with each app's link graph), queues and events, and reads the event
// stream. Plain JavaScript, no library; every value from the lattice is set as text, never as HTML.
"use strict";

const REFRESH_MS = 1500;
const MAX_EVENTS = 200;
let selectedApp = null;
let lastGraph = "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function badge(text) { return el("span", { class: "badge " + text, text }); }
function short(id) { return id ? id.slice(0, 12) : "-"; }
function ago(secs) {
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + (secs % 60) + "s";
  if (secs < 86400) return Math.floor(secs / 3600) + "h" + Math.floor((secs % 3600) / 60) + "m";
  return Math.floor(secs / 86400) + "d" + Math.floor((secs % 86400) / 3600) + "h";
}
function when(ms) { return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"); }

function notice(text, ok) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = ok ? "ok" : "error";
  n.hidden = false;
}

// GET a JSON API; a refusal or failure throws an Error with the control plane's message.
async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fill(tableId, rows, emptyId) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
  if (emptyId) document.getElementById(emptyId).hidden = rows.length > 0;
}

function hostRow(h) {
  const skew = (h.clock_offset_ms >= 0 ? "+" : "") + (h.clock_offset_ms / 1000).toFixed(1) + "s";
  const outbox = h.outbox_pending > 0
    ? h.outbox_pending + " waiting" + (h.outbox_oldest_age_ms != null ? ", oldest " + ago(Math.floor(h.outbox_oldest_age_ms / 1000)) : "")
    : "empty";
  const labels = Object.entries(h.labels).map(([k, v]) => el("span", { class: "label", text: k + "=" + v }));
  return el("tr", { "data-host": h.name, "data-state": h.state },
    el("td", { text: h.name }),
    el("td", { class: "mono", title: h.id, text: short(h.id) }),
    el("td", { class: "state" }, badge(h.state), h.admission ? el("div", { class: "empty", text: h.admission }) : null),
    el("td", { text: ago(h.last_seen_secs) + " ago" }),
    el("td", { text: ago(h.uptime_secs) }),
    el("td", { text: String(h.workloads) }),
    el("td", { text: outbox }),
    el("td", { class: Math.abs(h.clock_offset_ms) >= 2000 ? "skew-warn" : "", text: skew }),
    el("td", { text: h.version }),
    el("td", {}, ...labels));
}

async function refreshHosts() {
  const hosts = await getJson("/api/hosts");
  fill("hosts-table", hosts.map(hostRow), "hosts-empty");
  document.getElementById("hosts-count").textContent = hosts.length + " host(s)";
}

function appRow(a) {
  const pct = a.placed ? Math.round(100 * a.running / a.placed) : 0;
  const history = a.history.map(v => el("span", {
    class: v.current ? "current" : "", title: "deployed " + when(v.deployed_at * 1000),
    text: v.version + (v.current ? " (current)" : "") + " ",
  }));
  return el("tr", { "data-app": a.name, "data-status": a.status, class: a.name === selectedApp ? "selected" : "",
                    onclick: () => { selectedApp = a.name; lastGraph = ""; refreshApps(); } },
    el("td", { text: a.name }),
    el("td", { text: a.version }),
    el("td", { class: "status" }, badge(a.status)),
    el("td", {}, el("span", { class: "bar" }, el("i", { style: "width:" + pct + "%" })),
      el("span", { text: a.running + "/" + a.placed + " running" })),
    el("td", { text: a.message }),
    el("td", {}, ...history));
}

async function refreshApps() {
  const apps = await getJson("/api/apps");
  if (!apps.some(a => a.name === selectedApp)) selectedApp = apps.length ? apps[0].name : null;
  fill("apps-table", apps.map(appRow), "apps-empty");
  document.getElementById("apps-count").textContent = apps.length + " app(s)";
  const app = apps.find(a => a.name === selectedApp);
  document.getElementById("app-detail").hidden = !app;
  if (!app) return;
  const components = (app.detail ? app.detail.components : []).map(c => el("tr", {},
    el("td", { text: c.name }),
    el("td", { class: "mono", text: short(c.host) }),
    el("td", { text: String(c.instances) }),
    el("td", {}, badge(c.state)),
    el("td", { text: c.state === "running" && c.endpoint ? "http://" + c.endpoint + "/" : (c.reason ? c.reason + ": " : "") + c.message })));
  fill("components-table", components);
  const graph = await getJson("/api/graph/" + encodeURIComponent(app.name));
  const key = JSON.stringify(graph);
  if (key !== lastGraph) { lastGraph = key; drawGraph(graph); }
}

// Columns by longest path from a source, so links point right; cycles stop at the node count.
function layers(nodes, edges) {
  const depth = Object.fromEntries(nodes.map(n => [n.name, 0]));
  for (let i = 0; i < nodes.length; i++) {
    for (const e of edges) {
      if (e.target in depth && e.source in depth && depth[e.target] < depth[e.source] + 1 && depth[e.source] + 1 < nodes.length) {
        depth[e.target] = depth[e.source] + 1;
      }
    }
  }
  return depth;
}

function drawGraph(g) {
  document.getElementById("graph-app").textContent = g.app;
  document.getElementById("graph-version").textContent = g.version;
  const depth = layers(g.nodes, g.edges);
  const W = 190, H = 44, GX = 90, GY = 26;
  const rows = {};
  const pos = {};
  for (const n of g.nodes) {
    const d = depth[n.name];
    rows[d] = (rows[d] || 0) + 1;
    pos[n.name] = { x: 20 + d * (W + GX), y: 20 + (rows[d] - 1) * (H + GY) };
  }
  const width = 40 + (Math.max(0, ...Object.keys(rows).map(Number)) + 1) * (W + GX) - GX;
  const height = 40 + Math.max(1, ...Object.values(rows)) * (H + GY) - GY;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b7a90" }))));
  for (const e of g.edges) {
    const a = pos[e.source], b = pos[e.target];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const path = b.x > a.x
      ? `M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}`
      : `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${a.y + H + 40} ${b.x + W / 2},${b.y + H + 40} ${b.x + W / 2},${b.y + H}`;
    root.append(svg("path", { class: "edge " + e.delivery, d: path, "marker-end": "url(#arrow)" },
      svg("title", {}, e.interfaces + " (" + e.delivery + ")")));
  }
  for (const n of g.nodes) {
    const p = pos[n.name];
    const name = svg("text", { x: p.x + 10, y: p.y + 18 }); name.textContent = n.name;
    const kind = svg("text", { x: p.x + 10, y: p.y + 34, fill: "#687385" }); kind.textContent = n.kind;
    root.append(svg("g", { class: "node " + n.kind, "data-node": n.name },
      svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }), name, kind,
      svg("title", {}, n.image)));
  }
  document.getElementById("graph").replaceChildren(root);
  const list = g.edges.map(e => el("li", { "data-edge": e.source + "->" + e.target,
    text: e.source + " \u2192 " + e.target + ": " + e.interfaces + " (" + e.delivery + ")" }));
  document.getElementById("graph-edges").replaceChildren(...(list.length ? list : [el("li", { text: "no links" })]));
}

async function requeue(link, ids) {
  try {
    const response = await fetch("/api/requeue", {
      method: "POST",
      headers: { "content-type": "application/json", "x-lattice-ui": "1" },
      body: JSON.stringify({ link, ids }),
    });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || response.statusText);
    const missing = body.not_found.length ? "; not found: " + body.not_found.join(", ") : "";
    notice("requeued " + body.requeued.length + " dead letter(s) of " + link + missing, !missing);
  } catch (e) {
    notice("requeue of " + link + " refused: " + e.message, false);
  }
  refreshQueues().catch(e => notice(e.message, false));
}

function outboxes(q) {
  if (!q.hosts.length) return "-";
  return q.hosts.map(h => h.name + ": " + h.stats.pending + " waiting").join(", ");
}

async function refreshQueues() {
  const queues = await getJson("/api/queues");
  fill("queues-table", queues.map(q => el("tr", { "data-link": q.link },
    el("td", { class: "mono", text: q.link }),
    el("td", { text: q.in_flight == null ? "-" : String(q.in_flight) }),
    el("td", { class: "dead", text: String(q.dead_lettered) }),
    el("td", { text: outboxes(q) + (q.note ? " (" + q.note + ")" : "") }),
    // A role that may not list the link's dead letters may not requeue them either (both
    // need the right to change the app): the button is disabled, with the control plane's reason.
    el("td", {}, q.dead_lettered > 0 ? el("button", { class: "requeue-all", onclick: () => requeue(q.link, []),
      disabled: Boolean(q.dead_letters_error), title: q.dead_letters_error, text: "Requeue all" }) : null))),
    "queues-empty");
  const dead = [];
  for (const q of queues) {
    if (q.dead_letters_error) {
      dead.push(el("tr", { class: "refused", "data-link": q.link },
        el("td", { class: "mono", text: q.link }),
        el("td", { colspan: "6", text: q.dead_lettered + " dead letter(s), not listed: " + q.dead_letters_error })));
    }
    for (const d of q.dead_letters) {
      dead.push(el("tr", { "data-call": d.call_id },
        el("td", { class: "mono", text: q.link }),
        el("td", { class: "mono", text: d.call_id }),
        el("td", { text: when(d.at_ms) }),
        el("td", { text: String(d.attempts) }),
        el("td", { class: "mono", text: d.function }),
        el("td", { text: d.error }),
        el("td", {}, el("button", { class: "requeue", onclick: () => requeue(q.link, [d.call_id]), text: "Requeue" }))));
    }
  }
  fill("dead-table", dead, "dead-empty");
  document.getElementById("queues-count").textContent = queues.length + " link(s)";
}

function watchEvents() {
  const state = document.getElementById("events-state");
  const source = new EventSource("/api/events");
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting\u2026"; };
  source.addEventListener("problem", m => { state.textContent = JSON.parse(m.data).error; });
  source.onmessage = m => {
    const e = JSON.parse(m.data);
    const body = document.querySelector("#events-table tbody");
    if (body.querySelector(`tr[data-seq="${e.seq}"]`)) return;
    body.prepend(el("tr", { "data-seq": String(e.seq), "data-kind": e.kind },
      el("td", { class: "mono", text: "seq:" + e.seq }),
      el("td", { text: when(e.at_ms) }),
      el("td", {}, badge(e.kind)),
      el("td", { text: e.message })));
    while (body.children.length > MAX_EVENTS) body.lastChild.remove();
  };
}

function showView() {
  const view = (location.hash || "#hosts").slice(1);
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("active", s.id === "view-" + view);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
}

async function refresh() {
  const results = await Promise.allSettled([refreshHosts(), refreshApps(), refreshQueues()]);
  const failed = results.find(r => r.status === "rejected");
  if (failed) notice(failed.reason.message, false);
  else if (document.getElementById("notice").className !== "ok" && !document.getElementById("notice").textContent.includes("refused")) {
    document.getElementById("notice").hidden = true;
  }
  document.getElementById("refreshed").textContent = "Last refresh " + new Date().toLocaleTimeString();
  setTimeout(refresh, REFRESH_MS);
}

async function start() {
  window.addEventListener("hashchange", showView);
  showView();
  try {
    const me = await getJson("/api/whoami");
    document.getElementById("lattice").textContent = me.lattice;
    document.getElementById("whoami").textContent = "signed as " + me.user.slice(0, 12) + "\u2026";
  } catch (e) { notice(e.message, false); }
  watchEvents();
  refresh();
}

start();
