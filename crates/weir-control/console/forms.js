// Forms made from the admin API's OpenAPI schemas: each property becomes a labelled control
// with the schema's description as its help, so the console offers every field the API takes
// and cannot fall behind it. A value no control can express (an untagged union, a map of
// objects) stays editable as JSON in place. Errors the API reports with a path are shown
// at the control of that path.

let doc = null;

export async function openapi() {
  if (!doc) doc = await fetch("/api/v1/openapi.json", { credentials: "same-origin" }).then((r) => r.json());
  return doc;
}


// ---------------------------------------------------------------- schema shapes

function deref(s) {
  let seen = 0;
  while (s && s.$ref && seen++ < 32) s = doc.components.schemas[s.$ref.split("/").pop()];
  return s || {};
}

// A schema with $ref followed and allOf merged (serde's flatten), keeping the outermost
// description.
function norm(s) {
  const description = s && s.description;
  s = deref(s);
  if (s.allOf) {
    const out = { type: "object", properties: {}, required: [] };
    for (const part of s.allOf) {
      const p = norm(part);
      Object.assign(out.properties, p.properties || {});
      out.required.push(...(p.required || []));
      if (p.additionalProperties !== undefined) out.additionalProperties = p.additionalProperties;
      if (!out.description && p.description) out.description = p.description;
    }
    // The object's own name first, whatever part of the allOf declares it.
    if (out.properties.name) out.properties = { name: out.properties.name, ...out.properties };
    s = out;
  }
  return description ? { ...s, description } : s;
}

function types(s) {
  const t = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  return t.filter((x) => x !== "null");
}

// What kind of control a schema needs.
function shape(s) {
  if (s.oneOf || s.anyOf) {
    const vs = (s.oneOf || s.anyOf).map(norm).filter((v) => !(types(v).length === 0 && v.type === "null") && v.type !== "null");
    if (vs.length === 1) return { ...shape(vs[0]), schema: { ...vs[0], description: s.description || vs[0].description } };
    if (vs.every((v) => v.enum && types(v)[0] === "string")) return { kind: "enum", values: vs.flatMap((v) => v.enum) };
    const tagged = vs.every((v) => (v.enum && v.enum.length === 1) ||
      (types(v)[0] === "object" && v.properties && Object.keys(v.properties).length === 1));
    if (tagged) return { kind: "variants", variants: vs };
    return { kind: "json" };
  }
  const t = types(s)[0];
  if (s.enum) return { kind: "enum", values: s.enum };
  if (t === "string") return { kind: "string" };
  if (t === "integer" || t === "number") return { kind: "number" };
  if (t === "boolean") return { kind: "boolean" };
  if (t === "array") {
    const items = norm(s.items || {});
    const k = shape(items).kind;
    if (k === "string" || k === "enum" || k === "number") return { kind: "list", items };
    if (k === "object" || k === "variants") return { kind: "objects", items };
    return { kind: "json" };
  }
  if (t === "object" && s.properties && Object.keys(s.properties).length) return { kind: "object" };
  if (t === "object" && s.additionalProperties && shape(norm(s.additionalProperties)).kind === "string") return { kind: "map" };
  return { kind: "json" };
}

// ---------------------------------------------------------------- controls

let seq = 0;

// A labelled control with its documentation; `get` returns undefined for "not set".
function labelled(h, label, path, description, input, required) {
  const id = `fld${++seq}`;
  input.id = id;
  input.setAttribute("data-path", path);
  const help = h("p", { class: "help", id: `${id}-help` }, description || "");
  input.setAttribute("aria-describedby", help.id);
  if (required) input.setAttribute("aria-required", "true");
  return h("div", { class: "field", "data-field": path },
    h("label", { for: id }, label, required ? " (required)" : ""), input, help);
}

function jsonControl(h, label, path, s, value, required) {
  const area = h("textarea", { class: "code", rows: 4, spellcheck: "false" },
    value === undefined ? "" : JSON.stringify(value, null, 2));
  return {
    el: labelled(h, label, path, `${s.description || ""} (JSON)`, area, required),
    get: () => {
      if (!area.value.trim()) return undefined;
      try { return JSON.parse(area.value); } catch (e) { throw new Error(`${path}: not valid JSON (${e.message})`); }
    },
  };
}

export function control(h, s0, value, path, label, required) {
  const outer = norm(s0);
  const sh = shape(outer);
  // An optional value (`oneOf: [null, T]`) is built as T, with the outer documentation.
  const s = sh.schema || outer;
  const desc = outer.description || s.description || "";
  const example = Array.isArray(s.examples) && s.examples.length ? String(s.examples[0]) : null;
  switch (sh.kind) {
    case "string":
    case "number": {
      const input = h("input", { type: sh.kind === "number" ? "number" : "text", placeholder: example,
        value: value === undefined || value === null ? null : String(value) });
      return {
        el: labelled(h, label, path, desc, input, required),
        get: () => (input.value.trim() === "" ? undefined : sh.kind === "number" ? Number(input.value) : input.value),
      };
    }
    case "boolean":
    case "enum": {
      const values = sh.kind === "boolean" ? [true, false] : sh.values;
      const sel = h("select", {}, h("option", { value: "" }, required ? "(choose)" : "(default)"),
        values.map((v) => h("option", { value: JSON.stringify(v), selected: value === v }, String(v))));
      return { el: labelled(h, label, path, desc, sel, required), get: () => (sel.value ? JSON.parse(sel.value) : undefined) };
    }
    case "list": {
      const area = h("textarea", { rows: 3 }, Array.isArray(value) ? value.join("\n") : "");
      return {
        el: labelled(h, label, path, `${desc} One per line.`, area, required),
        get: () => {
          const items = area.value.split("\n").map((x) => x.trim()).filter(Boolean);
          const num = shape(sh.items).kind === "number";
          return items.length ? items.map((x) => (num ? Number(x) : x)) : undefined;
        },
      };
    }
    case "map": {
      const area = h("textarea", { rows: 3 }, value && typeof value === "object" ? Object.entries(value).map(([k, v]) => `${k}: ${v}`).join("\n") : "");
      return {
        el: labelled(h, label, path, `${desc} One "name: value" per line.`, area, required),
        get: () => {
          const out = {};
          for (const line of area.value.split("\n")) {
            const i = line.indexOf(":");
            if (line.trim() && i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
          }
          return Object.keys(out).length ? out : undefined;
        },
      };
    }
    case "object": return objectControl(h, s, value, path, label, required);
    case "objects": return listControl(h, sh.items, desc, value, path, label, required);
    case "variants": return variantControl(h, sh.variants, desc, value, path, label, required);
    default: return jsonControl(h, label, path, s, value, required);
  }
}

function objectControl(h, s, value, path, label, required) {
  const v = value && typeof value === "object" ? value : {};
  const req = new Set(s.required || []);
  const parts = Object.entries(s.properties).map(([k, ps]) =>
    [k, control(h, ps, v[k], path ? `${path}.${k}` : k, k, req.has(k))]);
  const known = new Set(Object.keys(s.properties));
  const rest = Object.fromEntries(Object.entries(v).filter(([k]) => !known.has(k)));
  const body = parts.map(([, c]) => c.el);
  const el = path
    ? h("fieldset", { "data-path": path, "data-field": path }, h("legend", {}, label, required ? " (required)" : ""),
      s.description ? h("p", { class: "help" }, s.description) : null, body)
    : h("div", { class: "form-fields" }, body);
  return {
    el,
    get: () => {
      const out = { ...rest };
      for (const [k, c] of parts) {
        const x = c.get();
        if (x !== undefined) out[k] = x;
      }
      return Object.keys(out).length || required || !path ? out : undefined;
    },
  };
}

function listControl(h, items, desc, value, path, label, required) {
  const rows = [];
  const box = h("div", { class: "rows" });
  const add = (v) => {
    const i = rows.length;
    const c = control(h, items, v, `${path}[${i}]`, `${label} ${i + 1}`, true);
    const row = { c, el: h("div", { class: "row panel" }, c.el) };
    row.el.append(h("button", { type: "button", class: "secondary", onclick: () => { rows.splice(rows.indexOf(row), 1); row.el.remove(); } }, `Remove ${label} ${i + 1}`));
    rows.push(row);
    box.append(row.el);
  };
  (Array.isArray(value) ? value : []).forEach(add);
  const el = h("fieldset", { "data-path": path, "data-field": path }, h("legend", {}, label, required ? " (required)" : ""),
    h("p", { class: "help" }, desc), box,
    h("button", { type: "button", class: "secondary", onclick: () => add(undefined) }, `Add ${label}`));
  return {
    el,
    get: () => {
      const out = rows.map((r) => r.c.get()).filter((x) => x !== undefined);
      return out.length ? out : undefined;
    },
  };
}

// An enum whose variants carry data ({"key_auth": {...}}) or none ("echo"): pick one, fill it.
function variantControl(h, variants, desc, value, path, label, required) {
  const names = variants.map((v) => (v.enum ? v.enum[0] : Object.keys(v.properties)[0]));
  const current = typeof value === "string" ? value : value && typeof value === "object" ? Object.keys(value)[0] : "";
  const sel = h("select", {}, h("option", { value: "" }, required ? "(choose)" : "(none)"),
    names.map((n) => h("option", { value: n, selected: n === current }, n)));
  const slot = h("div", {});
  let inner = null;
  const draw = () => {
    const i = names.indexOf(sel.value);
    inner = null;
    slot.replaceChildren();
    if (i < 0 || variants[i].enum) return;
    const v = value && typeof value === "object" ? value[sel.value] : undefined;
    inner = control(h, variants[i].properties[sel.value], v, `${path}.${sel.value}`, sel.value, true);
    slot.append(inner.el);
  };
  sel.addEventListener("change", () => { value = undefined; draw(); });
  draw();
  const el = h("div", { "data-field": path }, labelled(h, label, path, desc, sel, required), slot);
  return {
    el,
    get: () => {
      if (!sel.value) return undefined;
      return inner ? { [sel.value]: inner.get() || {} } : sel.value;
    },
  };
}

// ---------------------------------------------------------------- errors at their fields

// Puts each "kind[name].a.b[0]: message" at the control of "a.b[0]" (or its nearest
// parent); returns the messages no control took.
export function placeErrors(h, form, errors) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const old of form.querySelectorAll("[aria-invalid]")) old.removeAttribute("aria-invalid");
  const left = [];
  for (const e of errors) {
    const m = /^[a-z-]+\[[^\]]*\]\.?([^:]*): (.*)$/s.exec(e);
    let path = m ? m[1] : "";
    let target = null;
    while (m && path) {
      target = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
      if (target) break;
      path = path.replace(/(\[\d+\]|\.[^.[\]]+|^[^.[\]]+)$/, "");
    }
    if (!target) { left.push(e); continue; }
    const ctl = target.querySelector("[data-path]");
    if (ctl) ctl.setAttribute("aria-invalid", "true");
    target.append(h("p", { class: "field-error", role: "alert" }, m[2]));
  }
  return left;
}
