// The Weir console: a client of /api/v1 and nothing more. Every element is built with DOM
// calls and every piece of data enters as text (never as markup), so a name like
// <img src=x onerror=...> shows as those characters. No framework, no build step (ADR 0013).

import { control, openapi, placeErrors } from "/console/forms.js";

const state = { session: null, timers: [] };

// ---------------------------------------------------------------- DOM helpers

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

let fieldSeq = 0;
// A labelled input with its help text, wired for assistive technology.
function field(label, input, help) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  const helpEl = help ? h("p", { class: "help", id: `${id}-help` }, help) : null;
  if (helpEl) input.setAttribute("aria-describedby", helpEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, helpEl);
}

function when(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleString();
}

function errorBox(err) {
  const e = err && err.error ? err.error : { message: String(err) };
  return h("div", { class: "error", role: "alert" },
    e.message || "the request failed",
    e.errors && e.errors.length ? h("ul", {}, e.errors.map((x) => h("li", {}, x))) : null);
}

function canWrite() {
  const s = state.session;
  return s && s.mode === "database" && (s.role === "editor" || s.role === "admin");
}

function isAdmin() {
  return state.session && state.session.role === "admin";
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body, opts = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && state.session) headers["x-csrf-token"] = state.session.csrf_token;
  if (opts.ifMatch) headers["if-match"] = opts.ifMatch;
  // Timed refreshes say so: they do not keep an unattended session alive.
  if (opts.background) headers["x-weir-background"] = "1";
  const rsp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await rsp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { error: { message: text } }; }
  if (rsp.status === 401 && !opts.anonymous) {
    state.session = null;
    location.hash = "#/login";
    throw new ApiError(401, json);
  }
  if (!rsp.ok) throw new ApiError(rsp.status, json);
  return { json, etag: rsp.headers.get("etag") };
}

// ---------------------------------------------------------------- routing

const pages = {
  overview: { title: "Overview", render: overviewPage },
  routes: { title: "Routes", render: (m, a) => objectsPage("routes", a) },
  upstreams: { title: "Upstreams", render: (m, a) => objectsPage("upstreams", a) },
  consumers: { title: "Consumers", render: (m, a) => objectsPage("consumers", a) },
  certificates: { title: "Certificates", render: (m, a) => objectsPage("certificates", a) },
  defaults: { title: "Policy defaults", render: defaultsPage },
  events: { title: "Events", render: eventsPage },
  topics: { title: "Topics", render: (m, a) => objectsPage("topics", a) },
  subscriptions: { title: "Subscriptions", render: (m, a) => objectsPage("subscriptions", a) },
  ai: { title: "AI usage", render: aiPage },
  "ai-providers": { title: "AI providers", render: (m, a) => objectsPage("ai-providers", a) },
  "ai-models": { title: "AI models", render: (m, a) => objectsPage("ai-models", a) },
  audit: { title: "Audit log", render: auditPage },
  status: { title: "Status", render: statusPage },
  users: { title: "Users and tokens", render: usersPage },
};

function clearTimers() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

async function route() {
  clearTimers();
  const app = document.getElementById("app");
  const [name, ...rest] = decodeURIComponent(location.hash.replace(/^#\/?/, "")).split("/");
  if (!state.session) {
    try {
      const s = await api("GET", "/api/v1/session", undefined, { anonymous: true });
      state.session = s.json;
    } catch {
      const setup = await api("GET", "/api/v1/setup", undefined, { anonymous: true }).catch(() => null);
      app.replaceChildren(setup && setup.json.needed ? setupPage(setup.json) : loginPage());
      return;
    }
  }
  if (name === "login" || name === "setup") { location.hash = "#/overview"; return; }
  const page = pages[name] || pages.overview;
  const main = h("main", { id: "main" });
  app.replaceChildren(layout(name in pages ? name : "overview", main));
  document.title = `${page.title} · Weir console`;
  try {
    await page.render(main, rest);
  } catch (e) {
    if (e.status !== 401) main.append(errorBox(e.body || e));
  }
}

function layout(current, main) {
  const s = state.session;
  const nav = h("nav", { class: "side", "aria-label": "Sections" },
    Object.entries(pages).map(([k, p]) =>
      h("a", { href: `#/${k}`, "aria-current": k === current ? "page" : null }, p.title)));
  const banners = [];
  if (s.mode === "file") {
    banners.push(h("div", { class: "banner", role: "status" },
      "File mode: this node's configuration file is the truth, so everything here is read-only. Edit the file (it reloads on change), or set store: to manage the configuration here."));
  }
  for (const w of s.warnings || []) banners.push(h("div", { class: "banner", role: "alert" }, w));
  main.append(...banners);
  return h("div", {},
    h("header", { class: "top" },
      h("span", { class: "brand" }, "Weir"),
      h("span", { class: "who" }, `${s.username} (${s.role})`),
      h("button", { type: "button", onclick: logout }, "Log out")),
    h("div", { class: "shell" }, nav, main));
}

async function logout() {
  try { await api("POST", "/api/v1/logout"); } catch { /* the session is gone either way */ }
  state.session = null;
  location.hash = "#/login";
  route();
}

// ---------------------------------------------------------------- login and first run

// A form that opens a session: posts its values, then loads the session and the overview.
function sessionForm(title, intro, fields, path, values, submit) {
  const msg = h("div", { "aria-live": "assertive" });
  const form = h("form", {
    class: "panel login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      msg.replaceChildren();
      try {
        const r = await api("POST", path, values(), { anonymous: true });
        await startSession(r.json);
      } catch (e) { msg.replaceChildren(errorBox(e.body || e)); }
    },
  }, h("h1", {}, title), intro, fields, msg,
  h("div", { class: "actions" }, h("button", { type: "submit" }, submit)));
  return h("main", { id: "main" }, form);
}

function loginPage() {
  const user = h("input", { name: "username", autocomplete: "username", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  return sessionForm("Log in to Weir", null, [field("User name", user), field("Password", pass)],
    "/api/v1/login", () => ({ username: user.value, password: pass.value }), "Log in");
}

function setupPage(info) {
  const token = h("input", { name: "token", autocomplete: "off", required: true });
  const user = h("input", { name: "username", autocomplete: "username", value: "admin", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const intro = [
    h("p", {}, "No account exists yet. Weir wrote a one-time setup token to a file only its own user can read:"),
    h("pre", {}, info.token_file || "setup-token in data_dir"),
  ];
  return sessionForm("Create the first admin", intro,
    [field("Setup token", token, "Paste the file's content. It works once."), field("User name", user), field("Password", pass, "At least 12 characters.")],
    "/api/v1/setup", () => ({ token: token.value.trim(), username: user.value, password: pass.value }), "Create and log in");
}

async function startSession(login) {
  state.session = { csrf_token: login.csrf_token };
  const s = await api("GET", "/api/v1/session");
  state.session = s.json;
  location.hash = "#/overview";
  await route();
}

// ---------------------------------------------------------------- overview

const RANGES = [["15 minutes", 900, 15], ["1 hour", 3600, 60], ["6 hours", 21600, 300], ["24 hours", 86400, 900], ["7 days", 604800, 3600]];

async function overviewPage(main) {
  main.append(h("h1", {}, "Overview"));
  const picker = h("select", { id: "range" }, RANGES.map(([label, s], i) => h("option", { value: i, selected: i === 1 }, label)));
  const statusBox = h("div", { class: "grid", id: "status" });
  const charts = h("div", { id: "charts" });
  const tops = h("div", { class: "grid", id: "tops" });
  main.append(statusBox, h("div", { class: "actions" }, h("label", { for: "range" }, "Time range"), picker), charts, tops);
  const refresh = async (background) => {
    const [label, since, bucket] = RANGES[Number(picker.value)];
    const opts = { background };
    await Promise.all([renderStatus(statusBox, opts), renderTraffic(charts, tops, since, bucket, label, opts)]);
  };
  picker.addEventListener("change", () => refresh(false));
  await refresh(false);
  state.timers.push(setInterval(() => refresh(true).catch(() => {}), 5000));
}

function stat(label, value, id) {
  return h("div", { class: "panel stat", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

async function renderStatus(box, opts) {
  const [st, health] = await Promise.all([
    api("GET", "/api/v1/status", undefined, opts),
    fetch("/readyz", { credentials: "same-origin" }).then(async (r) => ({ ok: r.ok, json: await r.json().catch(() => ({})) })),
  ]);
  const s = st.json;
  const checks = health.json.checks || {};
  const reload = s.last_reload;
  box.replaceChildren(
    stat("Node", `${s.node} · Weir ${s.version}`, "node"),
    stat("Mode", s.mode === "file" ? "file (read-only)" : "database"),
    stat("Configuration version", String(s.serving_version) + (s.store_version !== null && s.store_version !== s.serving_version ? ` (store has ${s.store_version})` : "")),
    stat("Store", s.store + (s.store_error ? `: ${s.store_error}` : "")),
    stat("Ready", health.ok ? "yes" : "no"),
    ...Object.entries(checks).map(([k, v]) => stat(`Check: ${k}`, typeof v === "string" ? v : JSON.stringify(v))),
    reload ? h("div", { class: `panel stat`, id: "last-reload" },
      h("div", { class: "label" }, "Last reload"),
      h("div", { class: "value" }, `${reload.ok ? "applied" : "refused"} (${reload.cause}), ${when(reload.at * 1000)}`),
      reload.ok ? null : h("ul", { class: "error" }, reload.errors.map((e) => h("li", {}, e))))
      : stat("Last reload", "none since start"),
  );
}

async function renderTraffic(charts, tops, since, bucket, label, opts) {
  let byRoute;
  try {
    byRoute = (await api("GET", `/api/v1/analytics?by=route&since=${since}&bucket=${bucket}`, undefined, opts)).json;
  } catch (e) {
    charts.replaceChildren(h("div", { class: "panel" }, "Traffic analytics: ", e.message));
    tops.replaceChildren();
    return;
  }
  const [byConsumer, byUpstream] = await Promise.all([
    api("GET", `/api/v1/analytics?by=consumer&since=${since}&bucket=${bucket}`, undefined, opts).then((r) => r.json),
    api("GET", `/api/v1/analytics?by=upstream&since=${since}&bucket=${bucket}`, undefined, opts).then((r) => r.json),
  ]);
  const series = new Map();
  for (const g of byRoute.groups) {
    for (const b of g.buckets) {
      const s = series.get(b.start) || { requests: 0, errors: 0, p50: 0, p99: 0 };
      s.requests += b.requests;
      s.errors += b.errors;
      s.p50 = Math.max(s.p50, b.p50_ms);
      s.p99 = Math.max(s.p99, b.p99_ms);
      series.set(b.start, s);
    }
  }
  const points = [];
  // Buckets count from the range's start (`from`), not from the epoch.
  for (let t = byRoute.from; t <= byRoute.to; t += bucket) {
    const s = series.get(t) || { requests: 0, errors: 0, p50: 0, p99: 0 };
    points.push({ t, rps: s.requests / bucket, err: s.requests ? (100 * s.errors) / s.requests : 0, p50: s.p50, p99: s.p99 });
  }
  charts.replaceChildren(
    h("h2", {}, `Traffic, last ${label}`),
    h("div", { class: "grid" },
      chart("Requests per second", points, [["rps", ""]]),
      chart("Server errors (%)", points, [["err", "err"]]),
      chart("Latency p50 and p99 of the slowest route (ms)", points, [["p50", ""], ["p99", "err"]])));
  tops.replaceChildren(
    topTable("Top routes", "route", byRoute.groups),
    topTable("Top consumers", "consumer", byConsumer.groups),
    topTable("Top upstreams", "upstream", byUpstream.groups));
}

function chart(title, points, lines) {
  const W = 400, H = 120, pad = 4;
  const max = Math.max(1e-9, ...points.flatMap((p) => lines.map(([k]) => p[k])));
  const el = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H + 16}`, role: "img", "aria-label": `${title}: peak ${max.toFixed(2)}` });
  el.append(svg("line", { class: "axis", x1: 0, y1: H, x2: W, y2: H }));
  for (const [k, cls] of lines) {
    const pts = points.map((p, i) => {
      const x = points.length > 1 ? (i * W) / (points.length - 1) : 0;
      const y = H - pad - ((H - 2 * pad) * p[k]) / max;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    el.append(svg("polyline", { class: `line ${cls}`, points: pts }));
  }
  el.append(svg("text", { x: 2, y: H + 13 }, `peak ${max.toFixed(2)}`));
  return h("div", { class: "panel" }, h("h2", {}, title), el);
}

function topTable(title, what, groups) {
  const rows = [...groups].sort((a, b) => b.requests - a.requests).slice(0, 10);
  return h("div", { class: "panel" }, h("h2", {}, title),
    rows.length === 0 ? h("p", { class: "help" }, "No traffic in this range.") :
      h("table", { "data-top": what },
        h("thead", {}, h("tr", {}, h("th", {}, what), h("th", {}, "requests"), h("th", {}, "errors"), h("th", {}, "p99 ms"))),
        h("tbody", {}, rows.map((g) => h("tr", {},
          h("td", {}, g.key), h("td", { "data-requests": g.key }, String(g.requests)), h("td", {}, String(g.errors)), h("td", {}, g.p99_ms.toFixed(1)))))));
}

// ---------------------------------------------------------------- configuration objects

// A kind's name in the singular, for buttons and headings.
function singular(kind) {
  return kind.replace(/ies$/, "y").replace(/s$/, "");
}

function summary(kind, o) {
  if (kind === "routes") return [(o.match && o.match.paths || []).join(" "), o.upstream ? `→ ${o.upstream}` : o.topic ? `→ topic ${o.topic}` : o.ai ? "→ AI" : ""].join(" ");
  if (kind === "upstreams") return (o.targets || []).map((t) => t.address).join(", ");
  if (kind === "consumers") return `${(o.credentials || []).length} credential(s)`;
  return "";
}

async function objectsPage(kind, args) {
  return args.length && args[0] ? objectPage(kind, args[0]) : listPage(kind);
}

// The list of one kind, with a search box and (for writers) "New".
async function listPage(kind) {
  const main = document.getElementById("main");
  main.append(h("h1", {}, pages[kind].title));
  const items = [];
  let after = null;
  do {
    const r = await api("GET", `/api/v1/${kind}?limit=500${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...r.json.items);
    after = r.json.next;
  } while (after);
  const search = h("input", { type: "search", id: "search", placeholder: "Filter by name or content" });
  const body = h("tbody");
  const draw = () => {
    const q = search.value.toLowerCase();
    body.replaceChildren(...items.filter((o) => !q || JSON.stringify(o).toLowerCase().includes(q)).map((o) =>
      h("tr", {}, h("td", {}, h("a", { href: `#/${kind}/${encodeURIComponent(o.name)}` }, o.name)), h("td", {}, summary(kind, o)))));
  };
  search.addEventListener("input", draw);
  draw();
  main.append(
    h("div", { class: "actions" },
      h("label", { for: "search", class: "sr-only" }, "Filter"), search,
      canWrite() ? h("button", { type: "button", id: "new", onclick: () => { location.hash = `#/${kind}/+new`; } }, `New ${singular(kind)}`) : null),
    items.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Summary"))), body)
      : h("p", { class: "help" }, `No ${kind} yet.`));
}

// The schema an operation documents for its JSON body.
function bodySchemaOf(doc, path, method) {
  const op = (doc.paths[path] || {})[method] || {};
  const content = ((op.requestBody || {}).content || {})["application/json"];
  return content && content.schema;
}

// One value edited two ways: a form made from `schema` (writers' default) or the same value
// as JSON (viewers' default, read-only for them). `out` shows what a switch cannot parse.
function editorPair(schema, value, out) {
  const editor = h("textarea", { class: "code", id: "editor", spellcheck: "false", readonly: !canWrite() }, JSON.stringify(value, null, 2));
  const formBox = h("div", { id: "form" });
  const jsonBox = field("Definition (JSON)", editor);
  let form = null;
  const drawForm = (v) => {
    form = control(h, schema, v, "", "", true);
    formBox.replaceChildren(canWrite() ? form.el : h("fieldset", { disabled: true }, form.el));
  };
  let mode = canWrite() && schema ? "form" : "json";
  const buttons = h("div", { class: "actions", role: "group", "aria-label": "Edit as" });
  const press = () => { for (const b of buttons.children) b.setAttribute("aria-pressed", String(b.dataset.mode === mode)); };
  const setMode = (m) => {
    if (m === mode) return;
    try {
      if (m === "json") editor.value = JSON.stringify(form.get(), null, 2);
      else drawForm(JSON.parse(editor.value));
    } catch (e) {
      out.replaceChildren(errorBox({ error: { message: e.message } }));
      return;
    }
    (m === "form" ? jsonBox : formBox).replaceWith(m === "form" ? formBox : jsonBox);
    mode = m;
    press();
  };
  if (schema) {
    buttons.append(
      h("button", { type: "button", class: "secondary", id: "mode-form", "data-mode": "form", onclick: () => setMode("form") }, "Form"),
      h("button", { type: "button", class: "secondary", id: "mode-json", "data-mode": "json", onclick: () => setMode("json") }, "JSON"));
    drawForm(value);
    press();
  }
  return {
    el: h("div", {}, buttons, mode === "form" ? formBox : jsonBox),
    mode: () => mode,
    value: () => (mode === "form" ? form.get() : JSON.parse(editor.value)),
    placeErrors: (errors) => placeErrors(h, formBox, errors),
  };
}

// One object: its configuration shape as JSON, edited, reviewed as a diff, applied with
// If-Match so a concurrent edit shows as a conflict.
async function objectPage(kind, name) {
  const main = document.getElementById("main");
  const creating = name === "+new";
  // A new object starts empty but for its name: the form shows every field with its
  // documentation and an example.
  let original = { name: "" };
  let etag = null;
  if (!creating) {
    const r = await api("GET", `/api/v1/${kind}/${encodeURIComponent(name)}`);
    original = r.json;
    etag = r.etag;
  }
  const text = JSON.stringify(original, null, 2);
  const out = h("div", { id: "result", "aria-live": "polite" });
  const doc = await openapi();
  const edit = editorPair(bodySchemaOf(doc, `/api/v1/${kind}`, "post"), original, out);
  main.append(
    h("h1", {}, creating ? `New ${singular(kind)}` : `${pages[kind].title}: `, creating ? null : h("span", { id: "object-name" }, name)),
    h("p", { class: "help" }, "The object in its configuration shape (as in weir.yaml). Every field is documented in docs/configuration.md and in the API's OpenAPI document."),
    edit.el, out);
  if (kind === "consumers" && !creating) await credentialsPanel(main, name);
  if (kind === "upstreams" && !creating) await healthPanel(main, name);
  if (!canWrite()) return;
  const current = edit.value;
  const apply = async (value) => {
    out.replaceChildren();
    try {
      if (creating) await api("POST", `/api/v1/${kind}`, value);
      else await api("PUT", `/api/v1/${kind}/${encodeURIComponent(name)}`, value, { ifMatch: etag });
      location.hash = `#/${kind}/${encodeURIComponent(value.name)}`;
      if (!creating) route();
    } catch (e) {
      if (e.status === 412) {
        out.replaceChildren(h("div", { class: "error", role: "alert", id: "conflict" },
          "Conflict: someone changed this object since you opened it. Your edit was not applied. Reload to see their version, then make your change again.",
          h("div", { class: "actions" }, h("button", { type: "button", onclick: route }, "Reload"))));
        return;
      }
      const body = e.body || { error: { message: e.message } };
      const errors = (body.error && body.error.errors) || [];
      if (edit.mode() === "form" && errors.length) {
        const left = edit.placeErrors(errors);
        out.replaceChildren(errorBox({ error: { message: `${body.error.message}: see the fields marked in the form${left.length ? ", and these" : ""}`, errors: left } }));
      } else out.replaceChildren(errorBox(body));
    }
  };
  const review = () => {
    out.replaceChildren();
    let value;
    try { value = current(); } catch (e) {
      out.replaceChildren(errorBox({ error: { message: edit.mode() === "json" ? `not valid JSON: ${e.message}` : e.message } }));
      return;
    }
    const after = JSON.stringify(value, null, 2);
    out.append(h("h2", {}, "Review the change"), diffView(creating ? "" : text, after),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "apply", onclick: () => apply(value) }, creating ? "Create" : "Apply"),
        h("button", { type: "button", class: "secondary", onclick: () => out.replaceChildren() }, "Cancel")));
  };
  const remove = async () => {
    if (!confirm(`Delete ${singular(kind)} ${name}?`)) return;
    try {
      await api("DELETE", `/api/v1/${kind}/${encodeURIComponent(name)}`, undefined, { ifMatch: etag });
      location.hash = `#/${kind}`;
    } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
  };
  main.insertBefore(h("div", { class: "actions" },
    h("button", { type: "button", id: "review", onclick: review }, "Review change"),
    creating ? null : h("button", { type: "button", class: "danger", id: "delete", onclick: remove }, "Delete")), out);
}

// An upstream's endpoints as this node's balancer sees them, refreshed every 5 s.
async function healthPanel(main, upstream) {
  const body = h("tbody");
  const draw = async (background) => {
    const r = await api("GET", `/api/v1/upstreams/${encodeURIComponent(upstream)}/health`, undefined, { background });
    body.replaceChildren(...r.json.map((t) => h("tr", {}, h("td", {}, t.address), h("td", {}, String(t.weight)),
      h("td", {}, h("span", { class: `badge ${t.healthy ? "good" : "bad"}` }, t.healthy ? "healthy" : "unhealthy")),
      h("td", {}, t.active_check_up ? "up" : "down"), h("td", {}, t.circuit.replace("_", "-")),
      h("td", {}, String(t.failures)), h("td", {}, String(t.in_flight)))));
  };
  await draw(false);
  state.timers.push(setInterval(() => draw(true).catch(() => {}), 5000));
  main.append(h("section", { class: "panel", "aria-labelledby": "targets-title" },
    h("h2", { id: "targets-title" }, "Targets, live on this node"),
    h("table", { id: "targets" }, h("thead", {}, h("tr", {}, ["Address", "Weight", "State", "Active check", "Circuit", "Failures", "In flight"].map((c) => h("th", {}, c)))), body)));
}

// A consumer's credentials: listed as stored (keys only as digests), an API key issued by
// Weir and shown this once, and revocation.
async function credentialsPanel(main, consumer) {
  const path = `/api/v1/consumers/${encodeURIComponent(consumer)}/credentials`;
  const r = await api("GET", path);
  const out = h("div", { id: "credential-result", "aria-live": "polite" });
  const describe = (c) => c.type === "key" ? `key ${c.name || ""} ${c.key_sha256 ? `sha256:${c.key_sha256.slice(0, 12)}…` : c.key || ""}`
    : c.type === "basic" ? `basic ${c.username}` : `jwt ${c.issuer || ""} ${c.subject || ""}`;
  const panel = h("section", { class: "panel", "aria-labelledby": "credentials-title" },
    h("h2", { id: "credentials-title" }, "Credentials"), out,
    r.json.length === 0 ? h("p", { class: "help" }, "None.") :
      h("table", { id: "credentials" }, h("thead", {}, h("tr", {}, ["#", "Credential", "Models", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, r.json.map((c) => h("tr", {}, h("td", {}, String(c.index)), h("td", {}, describe(c)),
          h("td", {}, (c.models || []).join(", ") || "any"),
          h("td", {}, canWrite() ? h("button", { type: "button", class: "danger", onclick: async () => {
            if (!confirm(`Revoke credential ${c.index} of ${consumer}?`)) return;
            try { await api("DELETE", `${path}/${c.index}`, undefined, { ifMatch: r.etag }); route(); } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
          } }, "Revoke") : null))))));
  if (canWrite()) {
    const name = h("input", { id: "key-name", autocomplete: "off" });
    const models = h("input", { id: "key-models", autocomplete: "off" });
    panel.append(h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      const body = { type: "key" };
      if (name.value.trim()) body.name = name.value.trim();
      const m = models.value.split(",").map((x) => x.trim()).filter(Boolean);
      if (m.length) body.models = m;
      try {
        const t = await api("POST", path, body, { ifMatch: r.etag });
        await route();
        document.getElementById("credential-result").replaceChildren(h("div", { class: "panel" },
          h("p", {}, "The new key. Copy it now: it is shown only once; Weir keeps only its digest."),
          h("div", { class: "secret", id: "issued-key" }, t.json.issued_key)));
      } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
    } }, h("h2", {}, "Issue an API key"),
    field("Key name", name, "What call records and per-key limits call it (letters, digits, '.', '_', '-'); optional."),
    field("AI models", models, "Comma-separated models the key may use; empty for any."),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "issue-key" }, "Issue key"))));
  }
  main.append(panel);
}

// A line diff (longest common subsequence; objects are small).
function diffView(a, b) {
  const x = a ? a.split("\n") : [], y = b.split("\n");
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(h("span", {}, `  ${x[i]}`)); i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { out.push(h("span", { class: "add" }, `+ ${y[j]}`)); j++; }
    else { out.push(h("span", { class: "del" }, `- ${x[i]}`)); i++; }
  }
  return h("pre", { class: "diff", id: "diff" }, out);
}

async function defaultsPage(main) {
  main.append(h("h1", {}, "Policy defaults"));
  const r = await api("GET", "/api/v1/policy-defaults");
  const out = h("div", { id: "result", "aria-live": "polite" });
  const edit = editorPair(bodySchemaOf(await openapi(), "/api/v1/policy-defaults", "put"), r.json, out);
  main.append(h("p", { class: "help" }, "Policies every route runs unless it has one of the same kind."), edit.el, out);
  if (!canWrite()) return;
  main.insertBefore(h("div", { class: "actions" }, h("button", {
    type: "button", id: "apply",
    onclick: async () => {
      out.replaceChildren();
      try {
        await api("PUT", "/api/v1/policy-defaults", edit.value(), { ifMatch: r.etag });
        out.replaceChildren(h("p", { class: "ok" }, "Applied."));
      } catch (e) { out.replaceChildren(errorBox(e.body || { error: { message: e.message } })); }
    },
  }, "Apply")), out);
}

// ---------------------------------------------------------------- events

async function eventsPage(main, args) {
  if (args[0] === "event" && args[1]) return eventPage(main, args[1]);
  if (args[0]) return subscriptionPage(main, args[0]);
  main.append(h("h1", {}, "Events"));
  const r = await api("GET", "/api/v1/events/subscriptions");
  const subs = r.json.items || r.json;
  const lookup = h("input", { id: "event-id", placeholder: "event id" });
  main.append(
    h("form", { class: "actions", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/events/event/${encodeURIComponent(lookup.value.trim())}`; } },
      h("label", { for: "event-id" }, "Find an event"), lookup, h("button", { type: "submit" }, "Find")),
    h("h2", {}, "Subscriptions"),
    subs.length === 0 ? h("p", { class: "help" }, "No subscriptions.") :
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Topic", "State", "Pending", "Oldest (s)", "In flight", "Dead letters", "Last error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, subs.map((s) => h("tr", {},
          h("td", {}, h("a", { href: `#/events/${encodeURIComponent(s.name)}` }, s.name)),
          h("td", {}, s.topic),
          h("td", {}, h("span", { class: `badge ${s.state === "healthy" || s.state === "ok" ? "good" : "bad"}` }, s.state), s.reason ? h("p", { class: "help" }, s.reason) : null),
          h("td", {}, String(s.pending)), h("td", {}, s.oldest_age_seconds.toFixed(1)), h("td", {}, String(s.in_flight)),
          h("td", {}, String(s.dead_letters)),
          h("td", {}, s.last_error ? `${s.last_error.status || ""} ${s.last_error.detail}` : "—"))))),
    state.session.role !== "viewer" ? publishForm() : null);
}

function publishForm() {
  const topic = h("input", { id: "publish-topic" });
  const body = h("textarea", { id: "publish-body", class: "code", rows: 4 }, '{"hello": "world"}');
  const out = h("div", { "aria-live": "polite" });
  return h("form", {
    class: "panel",
    onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      try {
        const r = await api("POST", `/api/v1/topics/${encodeURIComponent(topic.value)}/events`, JSON.parse(body.value));
        out.replaceChildren(h("p", { class: "ok" }, "Accepted as event ", h("a", { href: `#/events/event/${encodeURIComponent(r.json.id)}` }, r.json.id)));
      } catch (e) { out.replaceChildren(errorBox(e.body || { error: { message: e.message } })); }
    },
  }, h("h2", {}, "Publish a test event"), field("Topic", topic), field("Body (JSON)", body), out,
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Publish")));
}

async function subscriptionPage(main, name) {
  const enc = encodeURIComponent(name);
  const [sub, dead, attempts] = await Promise.all([
    api("GET", `/api/v1/events/subscriptions/${enc}`),
    api("GET", `/api/v1/events/subscriptions/${enc}/dead-letters`),
    api("GET", `/api/v1/events/subscriptions/${enc}/attempts?limit=50`),
  ]);
  const s = sub.json;
  const out = h("div", { id: "replay-result", "aria-live": "polite" });
  const replay = async (what) => {
    out.replaceChildren();
    try {
      const r = await api("POST", `/api/v1/events/subscriptions/${enc}/replay`, what);
      out.replaceChildren(h("p", { class: "ok" }, `${r.json.replayed} delivery(ies) due again.`));
    } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
  };
  // The selected dead letters, one replay each (the API replays one by its seq).
  const replaySelected = async () => {
    out.replaceChildren();
    const seqs = [...main.querySelectorAll("input.pick:checked")].map((c) => Number(c.value));
    let n = 0;
    try {
      for (const seq of seqs) n += (await api("POST", `/api/v1/events/subscriptions/${enc}/replay`, { seq })).json.replayed;
      out.replaceChildren(h("p", { class: "ok" }, `${n} delivery(ies) due again.`));
    } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
  };
  const deadItems = dead.json.items || dead.json;
  const attemptItems = attempts.json.items || attempts.json;
  const since = h("input", { id: "replay-since", type: "datetime-local" });
  const writer = state.session.role !== "viewer";
  main.append(
    h("h1", {}, "Subscription ", h("span", {}, s.name)),
    h("div", { class: "grid" }, stat("Topic", s.topic), stat("Endpoint", s.endpoint), stat("State", s.state + (s.reason ? ` (${s.reason})` : "")),
      stat("Pending", String(s.pending)), stat("In flight", String(s.in_flight)), stat("Dead letters", String(s.dead_letters))),
    h("h2", {}, "Dead letters"), out,
    deadItems.length === 0 ? h("p", { class: "help" }, "None.") :
      h("table", { id: "dead-letters" }, h("thead", {}, h("tr", {}, ["", "Seq", "Event", "Attempts", "Reason", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, deadItems.map((d) => h("tr", {},
          h("td", {}, writer ? h("input", { type: "checkbox", class: "pick", value: d.seq, "aria-label": `Select dead letter ${d.seq}` }) : null),
          h("td", {}, String(d.seq)),
          h("td", {}, h("a", { href: `#/events/event/${encodeURIComponent(d.event_id)}` }, d.event_id)),
          h("td", {}, String(d.attempts)), h("td", {}, d.reason),
          h("td", {}, writer ? h("button", { type: "button", class: "secondary", onclick: () => replay({ seq: d.seq }) }, "Replay") : null))))),
    writer ? h("div", { class: "actions" },
      h("button", { type: "button", id: "replay-selected", onclick: replaySelected }, "Replay selected"),
      h("button", { type: "button", id: "replay-all", onclick: () => replay({ dead_letters: true }) }, "Replay all dead letters"),
      h("label", { for: "replay-since" }, "or everything since"), since,
      h("button", { type: "button", class: "secondary", onclick: () => since.value && replay({ since: Math.floor(new Date(since.value).getTime() / 1000) }) }, "Replay since")) : null,
    h("h2", {}, "Recent attempts"), attemptsTable(attemptItems));
}

function attemptsTable(items) {
  if (!items.length) return h("p", { class: "help" }, "None.");
  return h("table", {}, h("thead", {}, h("tr", {}, ["When", "Event", "Attempt", "Status", "Latency ms", "Outcome", "Answer"].map((c) => h("th", {}, c)))),
    h("tbody", {}, items.map((a) => h("tr", {}, h("td", {}, when(a.at_ms)), h("td", {}, a.event_id), h("td", {}, String(a.attempt)),
      h("td", {}, a.status === null ? "—" : String(a.status)), h("td", {}, String(a.latency_ms)), h("td", {}, a.outcome), h("td", {}, h("code", {}, a.answer))))));
}

// One event: what was published, and each subscription's delivery attempts for it.
async function eventPage(main, id) {
  const r = await api("GET", `/api/v1/events/${encodeURIComponent(id)}`);
  const e = r.json;
  main.append(h("h1", {}, "Event ", h("span", {}, e.id || id)), h("pre", {}, JSON.stringify(e, null, 2)));
  const subs = await api("GET", "/api/v1/events/subscriptions");
  for (const s of (subs.json.items || subs.json).filter((x) => x.topic === e.topic)) {
    const a = await api("GET", `/api/v1/events/subscriptions/${encodeURIComponent(s.name)}/attempts?event_id=${encodeURIComponent(e.id || id)}&limit=100`);
    main.append(h("h2", {}, "Attempts for ", h("a", { href: `#/events/${encodeURIComponent(s.name)}` }, s.name)),
      attemptsTable(a.json.items || a.json));
  }
}

// ---------------------------------------------------------------- AI

async function aiPage(main) {
  main.append(h("h1", {}, "AI usage"));
  const picker = h("select", { id: "ai-range" }, RANGES.map(([label], i) => h("option", { value: i, selected: i === 3 }, label)));
  const box = h("div", { id: "ai-usage" });
  main.append(h("div", { class: "actions" }, h("label", { for: "ai-range" }, "Time range"), picker), box);
  const draw = async () => {
    const [label, since] = RANGES[Number(picker.value)];
    box.replaceChildren();
    await aiUsage(box, since, label);
  };
  picker.addEventListener("change", () => draw().catch((e) => box.replaceChildren(errorBox(e.body || e))));
  await draw();
}

async function aiUsage(main, since, label) {
  const [usage, calls] = await Promise.all([
    api("GET", `/api/v1/ai/usage?by=consumer,key,model&since=${since}`).catch((e) => ({ error: e })),
    api("GET", `/api/v1/ai/calls?limit=50&since=${since}`).catch((e) => ({ error: e })),
  ]);
  main.append(h("h2", {}, `Usage and cost, last ${label}, by consumer, key and model`));
  if (usage.error) main.append(errorBox(usage.error.body || usage.error));
  else {
    const rows = usage.json.rows;
    main.append(rows.length === 0 ? h("p", { class: "help" }, "No AI calls in this range.") :
      h("table", {}, h("thead", {}, h("tr", {}, ["Consumer", "Key", "Model", "Requests", "Errors", "Input tokens", "Output tokens", "Cost (USD)", "Avg latency ms"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((u) => h("tr", {}, h("td", {}, u.consumer || "—"), h("td", {}, u.key || "—"), h("td", {}, u.model || "—"), h("td", {}, String(u.requests)), h("td", {}, String(u.errors)),
          h("td", {}, String(u.input_tokens)), h("td", {}, String(u.output_tokens)), h("td", {}, u.cost_usd.toFixed(4)), h("td", {}, u.avg_latency_ms.toFixed(0)))))));
  }
  main.append(h("h2", {}, "Recent calls"));
  if (calls.error) main.append(errorBox(calls.error.body || calls.error));
  else {
    const items = calls.json;
    main.append(items.length === 0 ? h("p", { class: "help" }, "No calls yet.") :
      h("table", { id: "ai-calls" }, h("thead", {}, h("tr", {}, ["When", "Route", "Consumer", "Key", "Model", "Target", "Status", "Tokens in/out", "Cost (USD)", "Latency ms", "Fallbacks"].map((c) => h("th", {}, c)))),
        h("tbody", {}, items.map((c) => h("tr", {}, h("td", {}, when(c.at_ms)), h("td", {}, c.route), h("td", {}, c.consumer || "—"), h("td", {}, c.key || "—"),
          h("td", {}, c.model), h("td", {}, c.target), h("td", {}, String(c.status)), h("td", {}, `${c.usage.input}/${c.usage.output}${c.estimated ? " (est.)" : ""}`),
          h("td", {}, c.cost_usd.toFixed(4)), h("td", {}, String(c.latency_ms)), h("td", {}, String(c.fallbacks)))))));
  }
  main.append(h("p", { class: "help" }, "Providers and models are under AI providers and AI models (provider keys are never shown); virtual keys are issued on a consumer's page."));
}

// ---------------------------------------------------------------- status

// This node as the probes and the admin API see it.
async function statusPage(main) {
  main.append(h("h1", {}, "Status"));
  const [st, ready, health] = await Promise.all([
    api("GET", "/api/v1/status"),
    fetch("/readyz", { credentials: "same-origin" }).then(async (r) => ({ status: r.status, json: await r.json().catch(() => ({})) })),
    fetch("/healthz", { credentials: "same-origin" }).then((r) => r.json()).catch(() => ({})),
  ]);
  const s = st.json;
  const rows = [
    ["Node", s.node], ["Weir version", s.version], ["Mode", s.mode],
    ["Configuration version served", String(s.serving_version)],
    ["Store's newest version", s.store_version === null ? "unknown" : String(s.store_version)],
    ["Store", s.store + (s.store_error ? `: ${s.store_error}` : "")],
    ["Snapshot version (data plane)", String(health.config_version ?? "—")],
    ["Ready (/readyz)", `${ready.status === 200 ? "yes" : "no"} (HTTP ${ready.status})`],
    ...Object.entries(ready.json.checks || {}).map(([k, v]) => [`Check: ${k}`, typeof v === "string" ? v : JSON.stringify(v)]),
    ["Last reload", s.last_reload ? `${s.last_reload.ok ? "applied" : "refused"} (${s.last_reload.cause}) ${when(s.last_reload.at * 1000)}` : "none since start"],
  ];
  main.append(h("table", { id: "status-table" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v))))));
  if (s.last_reload && !s.last_reload.ok) main.append(errorBox({ error: { message: "The last reload was refused; the previous configuration stays.", errors: s.last_reload.errors } }));
  main.append(h("p", { class: "help" }, "Prometheus metrics: ", h("a", { href: "/metrics" }, "/metrics"), "; the API's OpenAPI document: ", h("a", { href: "/api/v1/openapi.json" }, "/api/v1/openapi.json"), "."));
}

// ---------------------------------------------------------------- audit

async function auditPage(main) {
  main.append(h("h1", {}, "Audit log"));
  const r = await api("GET", "/api/v1/audit?limit=100");
  const items = r.json.items;
  main.append(items.length === 0 ? h("p", { class: "help" }, "Nothing yet.") :
    h("table", {}, h("thead", {}, h("tr", {}, ["When", "Who", "What", "Object", "Version", "Change"].map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((a) => h("tr", {}, h("td", {}, when(a.at * 1000)), h("td", {}, a.actor), h("td", {}, a.action),
        h("td", {}, `${a.kind}/${a.name}`), h("td", {}, String(a.version)),
        h("td", {}, h("details", {}, h("summary", {}, "diff"), diffView(a.before ? JSON.stringify(a.before, null, 2) : "", a.after ? JSON.stringify(a.after, null, 2) : ""))))))));
}

// ---------------------------------------------------------------- users and tokens

async function usersPage(main) {
  main.append(h("h1", {}, "Users and tokens"));
  if (isAdmin()) await usersPanel(main);
  await tokensPanel(main);
}

async function usersPanel(main) {
  const r = await api("GET", "/api/v1/users");
  const out = h("div", { "aria-live": "polite" });
  const roleSelect = (value, id) => h("select", { id }, ["viewer", "editor", "admin"].map((x) => h("option", { value: x, selected: x === value }, x)));
  const rows = r.json.map((u) => {
    const sel = roleSelect(u.role, `role-${u.username}`);
    return h("tr", {}, h("td", {}, u.username),
      h("td", {}, h("label", { for: sel.id, class: "sr-only" }, `Role of ${u.username}`), sel,
        h("button", { type: "button", class: "secondary", onclick: async () => {
          try { await api("PUT", `/api/v1/users/${encodeURIComponent(u.username)}/role`, { role: sel.value }); route(); } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
        } }, "Change role")),
      h("td", {}, when(u.created_at * 1000)),
      h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete the account ${u.username}?`)) return;
        try { await api("DELETE", `/api/v1/users/${encodeURIComponent(u.username)}`); route(); } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
      } }, "Delete")));
  });
  const name = h("input", { id: "new-username", autocomplete: "off" });
  const pass = h("input", { id: "new-password", type: "password", autocomplete: "new-password" });
  const role = roleSelect("viewer", "new-role");
  main.append(h("h2", {}, "Accounts"), out,
    h("table", {}, h("thead", {}, h("tr", {}, ["User", "Role", "Created", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows)),
    h("form", { class: "panel", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await api("POST", "/api/v1/users", { username: name.value, password: pass.value, role: role.value }); route(); } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
    } }, h("h2", {}, "New account"), field("User name", name), field("Password", pass, "At least 12 characters."), field("Role", role,
      "viewer reads; editor also changes configuration and replays events; admin also manages accounts."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create account"))));
}

async function tokensPanel(main) {
  const r = await api("GET", "/api/v1/tokens");
  const out = h("div", { "aria-live": "polite", id: "token-result" });
  const name = h("input", { id: "token-name" });
  const days = h("input", { id: "token-days", type: "number", min: 1, max: 3650 });
  main.append(h("h2", {}, "My API tokens"), out,
    r.json.length === 0 ? h("p", { class: "help" }, "None.") :
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Created", "Expires", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, r.json.map((t) => h("tr", {}, h("td", {}, t.name), h("td", {}, when(t.created_at * 1000)), h("td", {}, t.expires_at ? when(t.expires_at * 1000) : "never"),
          h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
            try { await api("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`); route(); } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
          } }, "Revoke")))))),
    h("form", { class: "panel", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const body = { name: name.value };
        if (days.value) body.expires_in_days = Number(days.value);
        const t = await api("POST", "/api/v1/tokens", body);
        out.replaceChildren(h("div", { class: "panel" }, h("p", {}, "Your new token. Copy it now: it is shown only once."), h("div", { class: "secret", id: "new-token" }, t.json.token)));
      } catch (e) { out.replaceChildren(errorBox(e.body || e)); }
    } }, h("h2", {}, "New API token"), field("Name", name), field("Expires in days", days, "Empty: it does not expire."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create token"))));
}

window.addEventListener("hashchange", route);
route();
