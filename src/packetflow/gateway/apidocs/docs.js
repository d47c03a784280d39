// Renders /openapi.json as a list of endpoints: parameters, request body and responses,
// with $ref schemas expanded on demand. Plain DOM, text only (no innerHTML), no network
// besides the document itself.
"use strict";

function el(tag, text, children) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const child of children || []) node.appendChild(child);
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

// One schema as a nested list; a $ref becomes a <details> opened on click, so cycles
// and large envelopes cost nothing until read.
function renderSchema(schema, doc, depth) {
  if (!schema || depth > 12) return el("span", "…");
  if (schema.$ref) {
    const name = refName(schema.$ref);
    const details = el("details", null, [el("summary", name)]);
    details.addEventListener("toggle", () => {
      if (details.open && details.childNodes.length === 1) {
        details.appendChild(renderSchema(doc.components.schemas[name], doc, depth + 1));
      }
    }, { once: false });
    return details;
  }
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    if (schema[key]) {
      return el("div", null, [el("em", key),
        el("ul", null, schema[key].map((s) => el("li", null, [renderSchema(s, doc, depth + 1)])))]);
    }
  }
  const box = el("div");
  const type = schema.type ? [].concat(schema.type).join(" | ") : (schema.enum ? "enum" : "any");
  const facts = [type];
  if (schema.enum) facts.push("one of " + schema.enum.map((v) => JSON.stringify(v)).join(", "));
  for (const k of ["minimum", "maximum", "minLength", "maxLength", "pattern", "format"]) {
    if (schema[k] !== undefined) facts.push(k + " " + schema[k]);
  }
  if (schema.default !== undefined) facts.push("default " + JSON.stringify(schema.default));
  box.appendChild(el("code", facts.join("; ")));
  if (schema.description) box.appendChild(el("p", schema.description));
  if (schema.properties) {
    const required = new Set(schema.required || []);
    box.appendChild(el("ul", null, Object.entries(schema.properties).map(([name, sub]) =>
      el("li", null, [el("strong", name + (required.has(name) ? " (required)" : "")),
        renderSchema(sub, doc, depth + 1)]))));
  }
  if (schema.items) box.appendChild(el("div", null, [el("em", "items:"), renderSchema(schema.items, doc, depth + 1)]));
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    box.appendChild(el("div", null, [el("em", "values:"),
      renderSchema(schema.additionalProperties, doc, depth + 1)]));
  }
  return box;
}

function renderContent(content, doc) {
  return el("ul", null, Object.entries(content || {}).map(([type, media]) =>
    el("li", null, [el("code", type), renderSchema(media.schema, doc, 0)])));
}

function renderOperation(path, method, op, doc) {
  const open = Array.isArray(op.security) && op.security.length === 0;
  const section = el("section", null, [
    el("h2", method.toUpperCase() + " " + path + (open ? " (no credentials)" : "")),
    el("p", op.summary || ""),
  ]);
  if (op.parameters && op.parameters.length) {
    section.appendChild(el("h3", "Parameters"));
    section.appendChild(el("ul", null, op.parameters.map((p) => el("li", null, [
      el("strong", p.name + " (" + p.in + (p.required ? ", required" : "") + ")"),
      el("span", " " + (p.description || "")), renderSchema(p.schema, doc, 0)]))));
  }
  if (op.requestBody) {
    section.appendChild(el("h3", "Request body"));
    section.appendChild(renderContent(op.requestBody.content, doc));
  }
  section.appendChild(el("h3", "Responses"));
  section.appendChild(el("ul", null, Object.entries(op.responses).map(([status, r]) =>
    el("li", null, [el("strong", status + " "), el("span", r.description || ""),
      renderContent(r.content, doc)]))));
  return section;
}

async function main() {
  const main = document.getElementById("endpoints");
  let doc;
  try {
    const response = await fetch("/openapi.json");
    doc = await response.json();
  } catch (err) {
    main.replaceChildren(el("p", "Could not load /openapi.json: " + err));
    return;
  }
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("description").textContent = doc.info.description || "";
  const sections = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) sections.push(renderOperation(path, method, op, doc));
  }
  main.replaceChildren(...sections);
}

main();
