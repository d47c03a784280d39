// The PacketFlow dashboard: signs in with an API key kept in sessionStorage, polls the
// gateway's GET /v1/dashboard snapshot once a second, and draws it with plain DOM and SVG.
// Every value from the gateway is inserted as text (textContent, SVG attributes), never
// as markup: packet ids, topics and reactor ids are chosen by clients.
"use strict";

const SNAPSHOT_URL = "/v1/dashboard";
const CREDENTIAL_KEY = "packetflow.credential"; // sessionStorage: this tab only
const POLL_MS = 1000;
const HIDDEN_POLL_MS = 10000; // a tab in the background costs the gateway little
const FETCH_TIMEOUT_MS = 8000; // a gateway that hangs must not stop the polling loop
const STALE_MS = 5000; // "stale" after this long without a fresh snapshot
const SVG_NS = "http://www.w3.org/2000/svg";

const HEALTH = ["healthy", "degraded", "recovery", "failed", "unknown"];
const PACKET_STATES = ["pending", "ready", "running", "succeeded", "failed", "skipped", "aborted"];
const BOND_STYLES = {
  ionic: { dash: "", width: 2, label: "ionic (waits, gets result)" },
  covalent: { dash: "", width: 4, label: "covalent (waits, same reactor)" },
  metallic: { dash: "6 4", width: 2, label: "metallic (ordering hint)" },
  vdw: { dash: "2 4", width: 2, label: "van der Waals (observer)" },
};
// Distinct, colour-blind-friendly hues for error codes (Okabe-Ito, then a few more).
const PALETTE = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00",
  "#cc79a7", "#9ca3af", "#a3e635", "#f472b6", "#818cf8", "#fb7185"];

const ui = {};
const app = {
  credential: null, timer: null, molecule: null, lastOk: 0, codes: {},
  busy: false, again: false, againSigningIn: false,
};

// ---------------------------------------------------------------- small DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, String(value));
    else node[name] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function titled(node, text) {
  node.append(svg("title", { text }));
  return node;
}

function replaceChildren(node, children) {
  node.replaceChildren(...children.filter((c) => c != null));
}

function fmt(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString(undefined, {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  });
}

function clock(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function pill(kind, value) {
  return el("span", { class: `pill ${kind}-${value}`, text: value, "data-value": value });
}

function empty(cols, text) {
  return el("tr", { class: "empty" }, el("td", { colSpan: cols, text }));
}

// ---------------------------------------------------------------- sign-in

function credentialHeaders(credential) {
  // A JWT is three base64url parts; anything else is an API key (DESIGN §8).
  const jwt = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(credential)
    && !credential.startsWith("pf_");
  return jwt ? { Authorization: `Bearer ${credential}` } : { "X-PacketFlow-API-Key": credential };
}

function showSignIn(message) {
  stopPolling();
  app.credential = null;
  sessionStorage.removeItem(CREDENTIAL_KEY);
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.signin.hidden = false;
  ui.submit.disabled = false;
  ui.submit.textContent = "Sign in";
  ui.signinError.hidden = !message;
  ui.signinError.textContent = message || "";
  setConn("idle", "not signed in");
  ui.credential.focus();
}

function signIn(credential) {
  app.credential = credential;
  ui.submit.disabled = true;
  ui.submit.textContent = "Signing in…";
  ui.signinError.hidden = true;
  poll(true);
}

function signedIn() {
  sessionStorage.setItem(CREDENTIAL_KEY, app.credential);
  ui.credential.value = "";
  ui.signin.hidden = true;
  ui.dashboard.hidden = false;
  ui.signOut.hidden = false;
}

// ---------------------------------------------------------------- polling

function stopPolling() {
  if (app.timer !== null) clearTimeout(app.timer);
  app.timer = null;
}

function setConn(state, text) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = text;
}

// One request at a time: a poll asked for while one is in flight (a click, the tab
// coming back) runs right after it instead of starting a second polling loop.
async function poll(signingIn = false) {
  if (app.busy) {
    app.again = true;
    app.againSigningIn ||= signingIn;
    return;
  }
  stopPolling();
  app.busy = true;
  try {
    await pollOnce(signingIn);
  } finally {
    app.busy = false;
  }
  if (app.again) {
    const again = app.againSigningIn;
    app.again = false;
    app.againSigningIn = false;
    poll(again);
  } else if (app.credential) {
    app.timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
}

async function pollOnce(signingIn) {
  const credential = app.credential;
  if (!credential) return;
  const url = app.molecule ? `${SNAPSHOT_URL}?molecule=${encodeURIComponent(app.molecule)}`
    : SNAPSHOT_URL;
  try {
    const response = await fetch(url, {
      headers: credentialHeaders(credential), cache: "no-store", credentials: "omit",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    if (credential !== app.credential) return; // signed out meanwhile
    if (response.status === 401 || response.status === 403) {
      const why = response.status === 401 ? "the gateway did not accept this key"
        : "this key may not read the dashboard";
      showSignIn(`Sign-in failed: ${why} (HTTP ${response.status}).`);
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const snapshot = await response.json();
    if (signingIn || ui.dashboard.hidden) signedIn();
    app.lastOk = Date.now();
    render(snapshot);
    setConn("live", `live · ${clock(app.lastOk)}`);
  } catch (err) {
    if (signingIn) {
      showSignIn(`Sign-in failed: the gateway could not be reached (${err.message}).`);
      return;
    }
    const stale = Date.now() - app.lastOk > STALE_MS;
    setConn(stale ? "stale" : "retrying",
      `${stale ? "stale" : "retrying"} · last update ${clock(app.lastOk)}`);
  }
}

// ---------------------------------------------------------------- rendering

function render(snap) {
  ui.gatewayId.textContent = snap.gateway.gateway_id;
  renderCards(snap);
  renderReactors(snap);
  renderMatrix(snap.affinity);
  renderAdjustments(snap);
  renderErrors(snap.errors);
  renderMolecules(snap);
  renderPackets(snap);
  renderEvents(snap.events);
}

function renderCards(snap) {
  const g = snap.gateway;
  const healthy = snap.reactors.filter((r) => r.health === "healthy").length;
  const failed = snap.reactors.filter((r) => r.health === "failed").length;
  const cards = [
    ["Reactors", `${healthy}/${snap.reactors_total}`, failed ? `${failed} failed` : "healthy / total",
      failed ? "bad" : healthy === snap.reactors_total && healthy ? "good" : ""],
    ["In flight", fmt(g.in_flight), `${fmt(g.queued)} queued`, ""],
    ["Accepted", fmt(g.accepted), `${fmt(g.completed)} completed`, ""],
    ["Errors", fmt(g.errors), `${fmt(g.retries)} retries · ${fmt(g.failovers)} failovers`,
      g.errors ? "warn" : ""],
    ["Molecules", fmt(snap.molecules_running), "running", ""],
    ["Uptime", duration(g.uptime_seconds), `PFAP ${g.protocol_version}`, ""],
  ];
  replaceChildren(ui.cards, cards.map(([label, value, sub, tone]) => el("div",
    { class: `card ${tone}` },
    el("div", { class: "card-label", text: label }),
    el("div", { class: "card-value", text: value }),
    el("div", { class: "card-sub", text: sub }))));
}

function loadBar(load) {
  const bar = el("span", { class: "bar" });
  const fill = el("span", { class: `bar-fill ${load > 0.85 ? "hot" : load > 0.6 ? "warm" : ""}` });
  fill.style.width = `${Math.round(Math.min(1, Math.max(0, load)) * 100)}%`;
  bar.append(fill);
  return el("span", { class: "load" }, bar, el("span", { class: "num", text: `${Math.round(load * 100)}%` }));
}

function renderReactors(snap) {
  ui.reactorsCount.textContent = snap.reactors_total > snap.reactors.length
    ? `(${snap.reactors.length} of ${snap.reactors_total})` : `(${snap.reactors_total})`;
  const sorted = [...snap.reactors].sort((a, b) => a.reactor_id.localeCompare(b.reactor_id));
  const rows = sorted.map((r) => el("tr", { "data-reactor-id": r.reactor_id, "data-health": r.health },
    el("td", {}, el("div", { class: "mono strong", text: r.reactor_id }),
      el("div", { class: "muted small", text: [`v${r.version}`, r.source, r.locality, r.endpoint].filter(Boolean).join(" · ") })),
    el("td", { text: r.implementation }),
    el("td", {}, ...r.specializations.map((s) => el("span", { class: "chip", text: s }))),
    el("td", {}, pill("health", r.health), r.linked ? null : el("span", { class: "muted small", text: " unlinked" })),
    el("td", {}, loadBar(r.load)),
    el("td", { class: "num", text: `${r.in_flight}/${r.capacity}` }),
    el("td", { class: "num", text: fmt(r.queue_depth) }),
    el("td", { class: "num", text: fmt(r.packets_per_second, 1) }),
    el("td", { class: "num", text: r.p99_ms === null ? "–" : `${fmt(r.p99_ms, 1)} ms` })));
  replaceChildren(ui.reactors, rows.length ? rows : [empty(9, "No reactors have announced yet.")]);
}

// Sequential scale for affinity 0..1: dark blue → teal → bright yellow-green.
function affinityColour(v) {
  const t = Math.min(1, Math.max(0, v));
  const hue = 220 - 150 * t;
  return `hsl(${hue}, ${45 + 35 * t}%, ${22 + 30 * t}%)`;
}

// Diverging scale for adjustments -0.2..+0.2: red ← slate → green.
function adjustmentColour(v) {
  const t = Math.min(1, Math.abs(v) / 0.2);
  if (Math.abs(v) < 0.0005) return "#1e293b";
  return v > 0 ? `hsl(142, ${30 + 40 * t}%, ${18 + 20 * t}%)` : `hsl(0, ${35 + 40 * t}%, ${20 + 22 * t}%)`;
}

function heatmap(rows, cols, value, colour, label, opts = {}) {
  const cell = opts.cell || 54;
  const left = opts.left || 46;
  const top = 44;
  const width = left + cols.length * cell + 4;
  const height = top + rows.length * 30 + 4;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "heatmap", role: "img" });
  cols.forEach((c, j) => root.append(titled(svg("text", {
    x: left + j * cell + cell / 2, y: top - 10, "text-anchor": "middle", class: "axis",
    text: opts.colLabel ? opts.colLabel(c) : c,
  }), c)));
  rows.forEach((r, i) => {
    root.append(titled(svg("text", {
      x: left - 8, y: top + i * 30 + 19, "text-anchor": "end", class: "axis",
      text: opts.rowLabel ? opts.rowLabel(r) : r,
    }), r));
    cols.forEach((c, j) => {
      const v = value(r, c);
      const g = svg("g", { "data-row": r, "data-col": c });
      g.append(titled(svg("rect", {
        x: left + j * cell + 1, y: top + i * 30 + 1, width: cell - 2, height: 28, rx: 4,
        fill: v === null || v === undefined ? "#0b1220" : colour(v),
      }), `${r} × ${c}: ${v === null || v === undefined ? "n/a" : label(v)}`));
      g.append(svg("text", {
        x: left + j * cell + cell / 2, y: top + i * 30 + 19, "text-anchor": "middle",
        class: "cell", text: v === null || v === undefined ? "" : label(v),
      }));
      root.append(g);
    });
  });
  return root;
}

const SHORT_SPEC = {
  cpu_intensive: "cpu", memory_bound: "memory", io_intensive: "io",
  network_heavy: "network", general_purpose: "general",
};

function renderMatrix(affinity) {
  ui.matrixVersion.textContent = `v${affinity.version}`;
  replaceChildren(ui.matrix, [heatmap(affinity.groups, affinity.specializations,
    (g, s) => affinity.matrix[g][s], affinityColour, (v) => v.toFixed(2),
    { colLabel: (s) => SHORT_SPEC[s] || s, cell: 78 })]);
}

function renderAdjustments(snap) {
  const groups = snap.affinity.groups;
  const reactors = snap.reactors.slice(0, 40);
  if (!reactors.length) {
    replaceChildren(ui.adjustments, [el("p", { class: "muted", text: "No reactors." })]);
    return;
  }
  const byId = Object.fromEntries(reactors.map((r) => [r.reactor_id, r]));
  const short = (id) => (id.length > 16 ? `${id.slice(0, 15)}…` : id);
  replaceChildren(ui.adjustments, [heatmap(reactors.map((r) => r.reactor_id), groups,
    (id, g) => byId[id].adjustments[g] ?? 0, adjustmentColour,
    (v) => (Math.abs(v) < 0.0005 ? "0" : `${v > 0 ? "+" : ""}${v.toFixed(3)}`),
    { left: 130, cell: 66, rowLabel: short })]);
}

function codeColour(code) {
  if (!(code in app.codes)) app.codes[code] = PALETTE[Object.keys(app.codes).length % PALETTE.length];
  return app.codes[code];
}

function renderErrors(errors) {
  const series = errors.series;
  const width = 560;
  const height = 150;
  const left = 34;
  const bottom = 20;
  const slots = 120;
  const slot = (width - left) / slots;
  const totals = series.map((p) => Object.values(p.counts).reduce((a, b) => a + b, 0));
  const max = Math.max(1, ...totals);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "errors-chart", role: "img" });
  root.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "grid" }));
  root.append(svg("line", { x1: left, y1: 8, x2: width, y2: 8, class: "grid faint" }));
  root.append(svg("text", { x: left - 6, y: 12, "text-anchor": "end", class: "axis", text: max }));
  root.append(svg("text", { x: left - 6, y: height - bottom, "text-anchor": "end", class: "axis", text: 0 }));
  root.append(svg("text", { x: left, y: height - 4, class: "axis", text: "−2 min" }));
  root.append(svg("text", { x: width, y: height - 4, "text-anchor": "end", class: "axis", text: "now" }));
  const offset = slots - series.length;
  const plot = height - bottom - 8;
  series.forEach((p, i) => {
    let y = height - bottom;
    for (const [code, n] of Object.entries(p.counts).sort()) {
      const h = (n / max) * plot;
      y -= h;
      root.append(titled(svg("rect", {
        x: left + (offset + i) * slot + 0.5, y, width: Math.max(1, slot - 1), height: h,
        fill: codeColour(code),
      }), `${clock(p.at)} ${code}: ${n}`));
    }
  });
  if (!totals.some((t) => t > 0)) {
    root.append(svg("text", {
      x: left + (width - left) / 2, y: height / 2, "text-anchor": "middle", class: "axis",
      text: "No errors in the last two minutes",
    }));
  }
  replaceChildren(ui.errors, [root]);
  const codes = Object.entries(errors.totals).sort((a, b) => b[1] - a[1]);
  replaceChildren(ui.errorsLegend, codes.length ? codes.map(([code, n]) => el("span",
    { class: "legend-item", "data-code": code },
    swatch(codeColour(code)), el("span", { class: "mono", text: code }),
    el("span", { class: "muted", text: ` ${fmt(n)} total` })))
    : [el("span", { class: "muted", text: "No error answered since the gateway started." })]);
}

function swatch(colour) {
  const s = el("span", { class: "swatch" });
  s.style.background = colour;
  return s;
}

function renderMolecules(snap) {
  ui.moleculesCount.textContent = `(${snap.molecules_running} running, ${snap.molecules.length} shown)`;
  const selected = snap.molecule ? snap.molecule.molecule_id : null;
  const items = snap.molecules.map((m) => {
    const done = (m.packet_states.succeeded || 0);
    const settled = done + (m.packet_states.failed || 0) + (m.packet_states.skipped || 0)
      + (m.packet_states.aborted || 0);
    const bar = el("span", { class: "bar" });
    const fill = el("span", { class: `bar-fill ${m.status === "failed" ? "hot" : ""}` });
    fill.style.width = `${m.packets ? Math.round((settled / m.packets) * 100) : 0}%`;
    bar.append(fill);
    const item = el("li", {
      class: `molecule-item${m.molecule_id === selected ? " selected" : ""}`,
      "data-molecule-id": m.molecule_id, "data-status": m.status, tabIndex: 0,
    },
    el("div", { class: "molecule-head" }, el("span", { class: "mono strong", text: m.molecule_id }),
      pill("molecule", m.status)),
    el("div", { class: "molecule-sub" }, bar,
      el("span", { class: "muted small", text: `${settled}/${m.packets} packets · ${clock(m.started_at)}` })));
    const choose = () => { app.molecule = m.molecule_id; poll(); };
    item.addEventListener("click", choose);
    item.addEventListener("keydown", (e) => { if (e.key === "Enter") choose(); });
    return item;
  });
  replaceChildren(ui.moleculeList, items.length ? items
    : [el("li", { class: "muted empty-item", text: "No molecules yet. Run one with: packetflow molecule run FILE" })]);
  renderDag(snap.molecule);
}

function renderDag(mol) {
  ui.dag.dataset.moleculeId = mol ? mol.molecule_id : "";
  ui.dag.dataset.status = mol ? mol.status : "";
  if (!mol) {
    replaceChildren(ui.dagTitle, []);
    replaceChildren(ui.dag, [el("p", { class: "muted", text: "Select a molecule to see its graph." })]);
    replaceChildren(ui.dagLegend, []);
    return;
  }
  replaceChildren(ui.dagTitle, [el("span", { class: "mono strong", text: mol.molecule_id }),
    pill("molecule", mol.status),
    mol.truncated ? el("span", { class: "muted small", text: ` first ${mol.nodes.length} of ${mol.packets_total} packets` }) : null]);
  const stages = {};
  for (const n of mol.nodes) (stages[n.stage] ||= []).push(n);
  const stageNumbers = Object.keys(stages).map(Number).sort((a, b) => a - b);
  const nodeW = 178;
  const nodeH = 42;
  const gapX = 60;
  const gapY = 14;
  const tallest = Math.max(1, ...stageNumbers.map((s) => stages[s].length));
  const width = stageNumbers.length * (nodeW + gapX) - gapX + 20;
  const height = tallest * (nodeH + gapY) - gapY + 36;
  const pos = {};
  stageNumbers.forEach((s, col) => {
    const column = stages[s];
    const offset = ((tallest - column.length) * (nodeH + gapY)) / 2;
    column.forEach((n, row) => {
      pos[n.id] = { x: 10 + col * (nodeW + gapX), y: 28 + offset + row * (nodeH + gapY) };
    });
  });
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "dag", role: "img" });
  const defs = svg("defs");
  defs.append(svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" })));
  root.append(defs);
  stageNumbers.forEach((s, col) => root.append(svg("text", {
    x: 10 + col * (nodeW + gapX) + nodeW / 2, y: 14, "text-anchor": "middle", class: "axis",
    text: `stage ${s}`,
  })));
  for (const b of mol.bonds) {
    const a = pos[b.from];
    const z = pos[b.to];
    if (!a || !z) continue;
    const style = BOND_STYLES[b.type] || BOND_STYLES.ionic;
    const x1 = a.x + nodeW;
    const y1 = a.y + nodeH / 2;
    const x2 = z.x;
    const y2 = z.y + nodeH / 2;
    const mid = (x1 + x2) / 2;
    root.append(titled(svg("path", {
      d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2 - 2} ${y2}`,
      class: `bond bond-${b.type}`, "stroke-width": style.width,
      "stroke-dasharray": style.dash || null, "marker-end": "url(#arrow)",
    }), `${b.from} → ${b.to}: ${b.type} (strength ${b.strength})`));
  }
  for (const n of mol.nodes) {
    const p = pos[n.id];
    const g = svg("g", { class: `node state-${n.state}`, "data-packet-id": n.id, "data-state": n.state });
    g.append(titled(svg("rect", { x: p.x, y: p.y, width: nodeW, height: nodeH, rx: 8 }),
      `${n.id} (${n.kind}): ${n.state}${n.reactor_id ? " on " + n.reactor_id : ""}`));
    const id = n.id.length > 22 ? `${n.id.slice(0, 21)}…` : n.id;
    g.append(svg("text", { x: p.x + 10, y: p.y + 17, class: "node-id", text: id }));
    g.append(svg("text", { x: p.x + 10, y: p.y + 33, class: "node-sub", text: `${n.kind} · ${n.state}` }));
    root.append(g);
  }
  replaceChildren(ui.dag, [root]);
  const states = PACKET_STATES.map((s) => el("span", { class: "legend-item" },
    el("span", { class: `swatch state-${s}` }), el("span", { text: s })));
  const bonds = Object.entries(BOND_STYLES).map(([type, st]) => {
    const line = svg("svg", { width: 26, height: 10, class: "bond-key" },
      svg("line", { x1: 0, y1: 5, x2: 26, y2: 5, class: `bond bond-${type}`, "stroke-width": st.width, "stroke-dasharray": st.dash || null }));
    return el("span", { class: "legend-item" }, line, el("span", { text: st.label }));
  });
  replaceChildren(ui.dagLegend, [...states, ...bonds]);
}

function renderPackets(snap) {
  ui.packetsCount.textContent = `(newest ${snap.packets.length} of ${fmt(snap.packets_total)} kept)`;
  const rows = snap.packets.map((p) => el("tr", { "data-packet-id": p.packet_id, "data-state": p.state },
    el("td", { class: "mono small", text: clock(p.accepted_at) }),
    el("td", { class: "mono ellipsis", text: p.packet_id, title: p.packet_id }),
    el("td", { class: "mono", text: p.kind }),
    el("td", {}, pill("packet", p.state)),
    el("td", { class: "mono", text: p.reactor_id ? `→ ${p.reactor_id}` : "–" }),
    el("td", { class: "num", text: scoreText(p), title: p.route || "" }),
    el("td", { class: "num", text: p.attempts }),
    el("td", { class: "mono bad-text", text: p.error_code || "" })));
  replaceChildren(ui.packets, rows.length ? rows : [empty(8, "No packets yet.")]);
}

// Packets sent by a rule other than the score (a covalent partner's reactor, a named
// destination) carry no score: say which rule instead of showing 0.
const ROUTE_WORDS = { preferred_reactor: "covalent pair", destination_id: "destination" };

function scoreText(p) {
  if (p.route && ROUTE_WORDS[p.route]) return ROUTE_WORDS[p.route];
  return p.score === null ? "–" : p.score.toFixed(3);
}

function renderEvents(events) {
  ui.eventsCount.textContent = `(${events.topics.length} topics, ${fmt(events.subscriptions_total)} subscriptions)`;
  const topics = events.topics.map((t) => el("tr", { "data-topic": t.topic },
    el("td", { class: "mono", text: t.topic }),
    el("td", { class: "num", text: fmt(t.published) }),
    el("td", { class: "num", text: fmt(t.subscribers) }),
    el("td", { class: "mono small", text: clock(t.last_published_at) })));
  replaceChildren(ui.topics, topics.length ? topics : [empty(4, "Nothing published yet.")]);
  const patterns = events.patterns.map((p) => el("tr", {},
    el("td", { class: "mono", text: p.pattern }),
    el("td", { class: "num", text: fmt(p.subscriptions) })));
  replaceChildren(ui.patterns, patterns.length ? patterns : [empty(2, "No subscriptions.")]);
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  const byId = (id) => document.getElementById(id);
  Object.assign(ui, {
    signin: byId("signin"), form: byId("signin-form"), credential: byId("credential"),
    submit: byId("signin-submit"), signinError: byId("signin-error"),
    dashboard: byId("dashboard"), signOut: byId("sign-out"), conn: byId("conn"),
    gatewayId: byId("gateway-id"), cards: byId("cards"),
    reactors: document.querySelector("#reactors tbody"), reactorsCount: byId("reactors-count"),
    matrix: byId("matrix"), matrixVersion: byId("matrix-version"), adjustments: byId("adjustments"),
    errors: byId("errors"), errorsLegend: byId("errors-legend"),
    moleculeList: byId("molecule-list"), moleculesCount: byId("molecules-count"),
    dag: byId("dag"), dagTitle: byId("dag-title"), dagLegend: byId("dag-legend"),
    packets: document.querySelector("#packets tbody"), packetsCount: byId("packets-count"),
    topics: document.querySelector("#topics tbody"), patterns: document.querySelector("#patterns tbody"),
    eventsCount: byId("events-count"),
  });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const credential = ui.credential.value.trim();
    if (credential) signIn(credential);
  });
  ui.signOut.addEventListener("click", () => showSignIn(""));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && app.credential && !ui.dashboard.hidden) poll();
  });
  const stored = sessionStorage.getItem(CREDENTIAL_KEY);
  if (stored) signIn(stored);
  else showSignIn("");
});
