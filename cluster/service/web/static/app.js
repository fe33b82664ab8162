// StreamVision's web page: plain JS over the service's HTTP JSON API (no framework, no build step).
// Pages are hash routes: #/search, #/patch/ID, #/live, #/sql, #/models.
"use strict";

const PAGE = 24;            // results per page of the search grid
const SQL_PAGE = 50;        // rows per page of an SQL result
const LIVE_EVERY_MS = 1500; // refresh of the live page

const view = document.getElementById("view");
const errorBox = document.getElementById("error");
let stopPage = () => {};    // what the current page must stop (timers) when another opens

// ------------------------------------------------------------------ helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c.nodeType ? c : String(c));
  return el;
}

// Patch ids are 64-bit: beyond 2^53 they are read as BigInt (from the JSON text itself) and
// written back as JSON integers, so an id never loses digits (needs JSON.rawJSON: Chromium 114+).
function parseJSON(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? BigInt(context.source) : value);
}
function toJSON(value) {
  return JSON.stringify(value, (key, v) => typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v);
}
function asId(text) { const n = BigInt(text); return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n; }
function sameId(a, b) { return String(a) === String(b); }

// Replace an element's children, leaving out the null and undefined of conditional parts.
function put(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function token() { return localStorage.getItem("sv-token") || ""; }

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function request(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method: options.body !== undefined ? "POST" : "GET", headers,
                                   body: options.body !== undefined ? toJSON(options.body) : undefined });
  } catch (exc) {
    throw new ApiError(`the service does not answer (${exc.message}); is it still running?`, 0);
  }
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new ApiError("this service wants a bearer token: enter it at the top right", 401);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = parseJSON(await response.text()).error || message; } catch (_) { /* not JSON */ }
    throw new ApiError(message, response.status);
  }
  return response;
}

async function api(path, body) { return parseJSON(await (await request(path, { body })).text()); }

const images = new Map(); // path -> object URL (images need the token too, so they are fetched)
async function imageURL(path) {
  if (!images.has(path)) {
    images.set(path, request(path).then(async (r) => URL.createObjectURL(await r.blob())));
  }
  try { return await images.get(path); } catch (exc) { images.delete(path); throw exc; }
}

function img(path, alt, attrs = {}) {
  const el = h("img", { alt: "", ...attrs }); // the alt text once loaded: no half-drawn alt while it loads
  imageURL(path).then((url) => { el.src = url; el.alt = alt; })
    .catch((exc) => { el.alt = `${alt}: ${exc.message}`; el.title = exc.message; el.classList.add("broken"); });
  return el;
}

function crop(pid, alt) { return img(`/v1/patches/${pid}/pixels`, alt || `patch ${pid}`, { loading: "lazy" }); }

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "–";
  if (ts > 1e9) return new Date(ts * 1000).toLocaleString();
  return `${Number(ts).toFixed(1)} s`;
}

function fmtSource(src) {
  if (!src) return "–";
  if (src.topic !== undefined) return `${src.topic}/${src.partition}@${src.offset}` + (src.index_in_message ? `#${src.index_in_message}` : "");
  if (src.file !== undefined) return `${src.file.split("/").pop()} frame ${src.frame_no ?? src.row}`;
  return JSON.stringify(src);
}

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

async function guarded(fn) {
  try { showError(""); await fn(); } catch (exc) { showError(exc.message); }
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// ------------------------------------------------------------------ search
const search = { query: null, label: "", preview: null, where: {}, k: PAGE, t: 0.9 };

function whereOf(form) {
  const where = {};
  for (const name of ["label", "camera"]) if (form[name].value.trim()) where[name] = form[name].value.trim();
  for (const name of ["start", "end"]) if (form[name].value.trim() !== "") where[name] = Number(form[name].value);
  return where;
}

function matchCard(match, rank) {
  const lin = match.lineage || {};
  const what = lin.label || "whole frame";
  return h("li", { class: "card", "data-patch-id": match.patch_id },
    h("a", { class: "thumb", href: `#/patch/${match.patch_id}`, "aria-label": `patch ${match.patch_id}: ${what}` },
      crop(match.patch_id, `${what}, ${lin.camera || ""} ${fmtTime(lin.ts)}`)),
    h("div", { class: "facts" },
      h("span", { class: "score" }, h("span", { class: "rank" }, `#${rank} `), typeof match.score === "number" ? match.score.toFixed(4) : ""),
      h("span", {}, what),
      h("span", { class: "muted" }, `${lin.camera ?? "–"} · ${fmtTime(lin.ts)}`),
      h("span", { class: "muted mono" }, fmtSource(lin.source))),
    h("button", { class: "plain", type: "button", onclick: () => searchBy({ patch_id: match.patch_id }, `patch ${match.patch_id}`) },
      "Similar"));
}

function searchBy(query, label) {
  search.query = query; search.label = label; search.k = PAGE; search.preview = query.patch_id !== undefined ? query.patch_id : search.preview;
  if (location.hash !== "#/search") location.hash = "#/search"; else renderSearch();
}

async function renderSearch() {
  const results = h("section", { "aria-label": "Results" });
  const count = h("output", { id: "threshold-count" }, "–");
  const tValue = h("output", {}, search.t.toFixed(2));
  const preview = h("div", { id: "preview" });
  const file = h("input", { id: "file", type: "file", accept: "image/*", "aria-label": "Query image" });
  const form = h("form", { class: "filters panel", onsubmit: (e) => { e.preventDefault(); search.k = PAGE; run(); } },
    h("label", {}, "Label", h("input", { name: "label", placeholder: "person, car…", value: search.where.label || "" })),
    h("label", {}, "Camera", h("input", { name: "camera", value: search.where.camera || "" })),
    h("label", {}, "From (s)", h("input", { name: "start", type: "number", step: "any", value: search.where.start ?? "" })),
    h("label", {}, "To (s)", h("input", { name: "end", type: "number", step: "any", value: search.where.end ?? "" })),
    h("label", { class: "wide threshold" },
      h("span", {}, "Threshold: score > ", tValue, " matches ", count),
      h("input", { id: "threshold", type: "range", min: "0", max: "1", step: "0.01", value: search.t,
                   oninput: (e) => { search.t = Number(e.target.value); tValue.textContent = search.t.toFixed(2); counted(); } })),
    h("button", { class: "wide", type: "submit" }, "Search"));
  const drop = h("label", { class: "drop", for: "file" },
    preview, h("span", {}, "Drop an image here, or pick one:"), file);
  put(view, h("h1", {}, "Search by image"),
    h("div", { class: "search" }, h("aside", {}, drop, form), results));

  function showPreview() {
    put(preview);
    if (search.query && search.query.image) preview.append(h("img", { src: `data:image/*;base64,${search.query.image}`, alt: "query image" }));
    else if (search.query && search.query.patch_id !== undefined) preview.append(crop(search.query.patch_id, search.label));
  }
  async function useFile(f) {
    if (!f) return;
    if (!f.type.startsWith("image/")) { showError(`${f.name} is not an image`); return; }
    search.query = { image: await readBase64(f) }; search.label = f.name; search.k = PAGE;
    showPreview(); run();
  }
  file.addEventListener("change", () => useFile(file.files[0]));
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); useFile(e.dataTransfer.files[0]); });

  const counted = debounce(() => guarded(async () => {
    if (!search.query) { count.textContent = "–"; return; }
    const doc = await api("/v1/threshold", { query: search.query, t: search.t, where: whereOf(form), limit: 1 });
    count.textContent = `${doc.counts[0]} patches`;
  }), 250);

  async function run() {
    await guarded(async () => {
      search.where = whereOf(form);
      if (!search.query) { await recent(results); return; }
      put(results, h("p", { class: "muted" }, "searching…"));
      const doc = await api("/v1/similar", { query: search.query, k: search.k, where: search.where });
      const matches = doc.results[0];
      put(results,
        h("p", { class: "summary" }, `${matches.length} most similar to ${search.label}`),
        h("ol", { class: "grid", id: "results" }, matches.map((m, i) => matchCard(m, i + 1))),
        matches.length >= search.k && search.k < 10000
          ? h("div", { class: "pager" }, h("button", { type: "button", class: "plain",
              onclick: () => { search.k += PAGE; run(); } }, `Show ${PAGE} more`)) : null);
      counted();
    });
  }
  showPreview();
  run();
}

async function recent(results) {
  const doc = await api("/v1/sql", { sql: `SELECT patch_id, camera, frame_no, ts, label, score FROM patches ORDER BY ts DESC, patch_id LIMIT ${PAGE}` });
  const rows = doc.rows.map((r) => Object.fromEntries(doc.columns.map((c, i) => [c, r[i]])));
  put(results,
    h("p", { class: "summary" }, `Newest patches of ${doc.collection}: pick an image, or click “Similar” on any of these`),
    h("ol", { class: "grid", id: "results" }, rows.map((r, i) => matchCard(
      { patch_id: r.patch_id, lineage: { camera: r.camera, ts: r.ts, label: r.label } }, i + 1))));
}

// ------------------------------------------------------------------ patch
function frameWithBoxes(frameDoc, mine) {
  const [height, width] = frameDoc.shape;
  const boxes = frameDoc.boxes.filter((b) => b.lineage.bbox && b.lineage.label);
  return h("div", { class: "frame" },
    img(`/v1/patches/${frameDoc.patch_id}/frame.png`, `whole frame ${fmtSource(frameDoc.frame)}`, { id: "frame-image" }),
    boxes.map((b) => {
      const [x0, y0, x1, y1] = b.lineage.bbox;
      const style = `left:${100 * x0 / width}%;top:${100 * y0 / height}%;width:${100 * (x1 - x0) / width}%;height:${100 * (y1 - y0) / height}%`;
      return h("a", { class: `box${[].concat(mine).some((m) => sameId(b.patch_id, m)) ? " mine" : ""}`, href: `#/patch/${b.patch_id}`, style,
                      "aria-label": `${b.lineage.label} ${b.score.toFixed(2)}: patch ${b.patch_id}` },
        h("span", {}, `${b.lineage.label} ${b.score.toFixed(2)}`));
    }));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) =>
    [h("dt", {}, k), h("dd", { "data-field": k }, v === null ? "–" : String(v))]));
}

async function renderPatch(pid) {
  put(view, h("h1", {}, `Patch ${pid}`), h("p", { class: "muted" }, "loading…"));
  const [lineage, frameDoc] = await Promise.all([
    api(`/v1/lineage/${pid}`),
    api(`/v1/patches/${pid}/frame`).catch((exc) => ({ error: exc.message })),
  ]);
  const chain = lineage.chain;
  const me = chain[0];
  const steps = chain.map((link) => link.frame
    ? h("li", {}, h("strong", {}, "frame "), h("span", { class: "mono", id: "frame-source" }, fmtSource(link.frame)),
        facts([...Object.entries(link.frame), ["pixels", link.pixels ?? null]]))
    : h("li", {}, h("a", { href: `#/patch/${link.patch_id}` }, `patch ${link.patch_id}`),
        ` ${link.label || "whole frame"} by ${link.model || "?"}`, link.bbox ? h("span", { class: "muted mono" }, ` bbox ${link.bbox.map((v) => Math.round(v)).join(", ")}`) : null));
  const left = h("section", { class: "panel crop", "aria-label": "The crop" },
    crop(pid, `crop of patch ${pid}`),
    facts([["label", me.label || "whole frame"], ["score", typeof me.score === "number" ? me.score.toFixed(4) : me.score], ["camera", me.camera], ["time", fmtTime(me.ts)],
           ["frame_no", me.frame_no], ["model", me.model], ["track", me.track_id]]),
    h("div", { class: "row" }, h("button", { type: "button", onclick: () => searchBy({ patch_id: pid }, `patch ${pid}`) }, "Find similar")));
  const right = h("section", { "aria-label": "The frame" },
    frameDoc.error ? h("p", { class: "error" }, `The frame's pixels: ${frameDoc.error}`)
      : frameWithBoxes(frameDoc, chain.filter((link) => !link.frame).map((link) => link.patch_id)),
    h("h2", {}, "Lineage"), h("ol", { class: "chain", id: "lineage" }, steps));
  put(view, h("h1", {}, `Patch ${pid}`), h("div", { class: "patch" }, left, right));
  if (me.track_id !== undefined && me.track_id !== null) {
    const doc = await api("/v1/sql", { sql: "SELECT patch_id FROM patches WHERE camera = :camera AND track_id = :track ORDER BY ts LIMIT 200",
                                        params: { camera: me.camera, track: me.track_id } });
    right.append(h("h2", {}, `Track ${me.track_id} (${doc.count} patches)`),
      h("div", { class: "strip" }, doc.rows.map(([id]) => h("a", { href: `#/patch/${id}` }, crop(id)))));
  }
}

// ------------------------------------------------------------------ live
async function renderLive() {
  const total = h("span", { class: "big", id: "live-total" }, "–");
  const when = h("span", { class: "muted" });
  const cams = h("div", { class: "cameras", id: "cameras" });
  const parts = h("div", { class: "table-wrap" });
  const letters = h("div", { id: "dead-letters" });
  put(view, h("h1", {}, "Live"),
    h("div", { class: "stats panel" }, h("div", {}, h("small", {}, "patches indexed"), total), h("div", {}, h("small", {}, "updated"), when)),
    h("h2", {}, "Cameras"), cams, h("h2", {}, "Kafka partitions"), parts, h("h2", {}, "Dead letters"), letters);
  let previous = null;
  const shown = new Map(); // camera -> latest patch id drawn
  let timer = null;
  let stopped = false;
  stopPage = () => { stopped = true; clearTimeout(timer); };

  async function tick() {
    await guarded(async () => {
      const doc = await api("/v1/live");
      total.textContent = doc.ntotal;
      when.textContent = new Date(doc.time * 1000).toLocaleTimeString();
      const before = previous ? Object.fromEntries(previous.cameras.map((c) => [c.camera, c.patches])) : {};
      const dt = previous ? doc.time - previous.time : 0;
      const lag = Object.fromEntries(doc.partitions.map((p) => [`${p.topic}/${p.partition}`, p]));
      if (!doc.cameras.length) put(cams, h("p", { class: "muted" }, "Nothing ingested yet: start a pipeline that writes into this collection."));
      else {
        cams.querySelector("p.muted")?.remove();
        for (const cam of doc.cameras) {
          let card = cams.querySelector(`[data-camera="${CSS.escape(cam.camera)}"]`);
          if (!card) {
            card = h("article", { class: "camera panel", "data-camera": cam.camera },
              h("h2", {}, cam.camera), h("div", { class: "stats" }), h("div", { class: "latest" }));
            cams.append(card);
          }
          const rate = dt > 0 && before[cam.camera] !== undefined ? (cam.patches - before[cam.camera]) / dt : null;
          const src = cam.latest.lineage.source || {};
          const p = lag[`${src.topic}/${src.partition}`];
          put(card.querySelector(".stats"),
            h("div", {}, h("small", {}, "patches"), h("span", { class: "big count" }, cam.patches)),
            h("div", {}, h("small", {}, "ingest rate"), h("span", { class: "big rate" }, rate === null ? "–" : `${rate.toFixed(1)}/s`)),
            h("div", {}, h("small", {}, "Kafka lag"), h("span", { class: "big lag" }, p && p.lag !== null ? p.lag : "–")),
            h("div", {}, h("small", {}, "latest"), h("span", {}, fmtTime(cam.latest.lineage.ts)),
              h("a", { href: `#/patch/${cam.latest.patch_id}`, class: "mono" }, fmtSource(src))));
          if (shown.get(cam.camera) !== String(cam.latest.patch_id)) {
            shown.set(cam.camera, String(cam.latest.patch_id));
            const frameDoc = await api(`/v1/patches/${cam.latest.patch_id}/frame`).catch(() => null);
            if (frameDoc) put(card.querySelector(".latest"), frameWithBoxes(frameDoc, cam.latest.patch_id));
          }
        }
      }
      put(parts, doc.partitions.length ? h("table", {},
        h("tr", {}, ["topic", "partition", "offset done", "end", "lag"].map((c) => h("th", {}, c))),
        doc.partitions.map((p) => h("tr", {}, h("td", {}, p.topic), h("td", { class: "num" }, p.partition),
          h("td", { class: "num" }, p.done), h("td", { class: "num" }, p.end ?? "–"), h("td", { class: "num" }, p.lag ?? "–"))))
        : h("p", { class: "muted" }, "No Kafka input yet."));
      const dl = doc.dead_letters;
      put(letters, !doc.kafka ? h("p", { class: "muted" }, "Start the service with --bootstrap-servers to see lag and dead letters.")
        : !dl ? h("p", { class: "muted" }, "No Kafka input yet.")
        : h("div", {}, h("p", {}, h("strong", { id: "dead-letter-count" }, dl.count), " dead letters",
            Object.keys(dl.reasons).length ? `: ${Object.entries(dl.reasons).map(([r, n]) => `${n} ${r}`).join(", ")}` : ""),
          dl.recent.length ? h("table", {}, h("tr", {}, ["camera", "message", "reason", "error"].map((c) => h("th", {}, c))),
            dl.recent.map((l) => h("tr", {}, h("td", {}, l.camera || "–"), h("td", { class: "mono" }, `${l.topic}/${l.partition}@${l.offset}`),
              h("td", {}, l.reason), h("td", {}, l.error)))) : null));
      previous = doc;
    });
    if (!stopped) timer = setTimeout(tick, LIVE_EVERY_MS);
  }
  tick();
}

// ------------------------------------------------------------------ SQL
const sqlState = { text: "SELECT label, count(*) AS n, count(DISTINCT frame_no) AS frames FROM patches GROUP BY label ORDER BY n DESC" };

async function renderSql() {
  const box = h("textarea", { class: "sql", id: "sql", "aria-label": "SQL query", spellcheck: "false" });
  box.value = sqlState.text;
  const out = h("section", { id: "sql-result", "aria-live": "polite" });
  const run = () => guarded(async () => {
    sqlState.text = box.value;
    put(out, h("p", { class: "muted" }, "running…"));
    const doc = await api("/v1/sql", { sql: box.value });
    showTable(out, doc, 0);
  });
  box.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  put(view, h("h1", {}, "SQL over patches"),
    h("p", { class: "muted" }, "One SELECT over patches(patch_id, camera, frame_no, ts, label, score, bbox, model, track_id, text, parent_id, pts, wall_time, vector). ",
      "DOT_PRODUCT(vector, :q) > t and ORDER BY DOT_PRODUCT(vector, :q) DESC LIMIT k run in the index."),
    box, h("div", { class: "row" }, h("button", { type: "button", id: "run-sql", onclick: run }, "Run"), h("span", { class: "muted" }, "Ctrl+Enter runs it")),
    out);
}

function showTable(out, doc, page) {
  const idColumns = new Set(doc.columns.filter((c) => c === "patch_id" || c.endsWith("_id") && c !== "track_id"));
  const rows = doc.rows.slice(page * SQL_PAGE, (page + 1) * SQL_PAGE);
  const pages = Math.max(1, Math.ceil(doc.rows.length / SQL_PAGE));
  const cell = (c, v) => {
    if (idColumns.has(c) && (typeof v === "number" || typeof v === "bigint")) return h("td", {}, h("a", { href: `#/patch/${v}` }, crop(v), String(v)));
    if (typeof v === "bigint") return h("td", { class: "num" }, String(v));
    if (typeof v === "number") return h("td", { class: "num" }, Number.isInteger(v) ? v : v.toFixed(4));
    if (v === null) return h("td", { class: "muted" }, "null");
    return h("td", {}, typeof v === "object" ? JSON.stringify(v) : v);
  };
  put(out,
    h("p", { class: "summary" }, `${doc.count} row${doc.count === 1 ? "" : "s"}`),
    h("div", { class: "table-wrap" }, h("table", { id: "sql-table" },
      h("tr", {}, doc.columns.map((c) => h("th", { scope: "col" }, c))),
      rows.map((r) => h("tr", {}, r.map((v, i) => cell(doc.columns[i], v)))))),
    pages > 1 ? h("div", { class: "pager" },
      h("button", { type: "button", class: "plain", disabled: page === 0, onclick: () => showTable(out, doc, page - 1) }, "Previous"),
      h("span", {}, `page ${page + 1} of ${pages}`),
      h("button", { type: "button", class: "plain", disabled: page + 1 >= pages, onclick: () => showTable(out, doc, page + 1) }, "Next")) : null,
    doc.plan ? h("details", {}, h("summary", {}, "Plan"), h("pre", {}, typeof doc.plan === "string" ? doc.plan : JSON.stringify(doc.plan, null, 2))) : null);
}

// ------------------------------------------------------------------ models
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a"];

function curve(results, models, field, title) {
  const W = 420, H = 240, L = 48, B = 30;
  const epochs = results.map((r) => r.epoch);
  const values = results.map((r) => r[field]).filter((v) => v !== null && v !== undefined);
  const [e0, e1] = [Math.min(...epochs), Math.max(...epochs)];
  let [v0, v1] = [Math.min(...values), Math.max(...values)];
  if (v0 === v1) { v0 -= 0.5; v1 += 0.5; }
  const x = (e) => L + (W - L - 10) * (e1 === e0 ? 0.5 : (e - e0) / (e1 - e0));
  const y = (v) => 10 + (H - B - 10) * (1 - (v - v0) / (v1 - v0));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("width", W); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title} per epoch`);
  const add = (tag, attrs, text) => { const el = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); if (text !== undefined) el.textContent = text; svg.append(el); };
  add("rect", { x: L, y: 10, width: W - L - 10, height: H - B - 10, fill: "#fff", stroke: "#dde1e8" });
  for (const v of [v0, (v0 + v1) / 2, v1]) add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5d6677" }, v.toFixed(3));
  for (const e of [...new Set(epochs)]) add("text", { x: x(e), y: H - 12, "text-anchor": "middle", "font-size": 11, fill: "#5d6677" }, e);
  models.forEach((m, i) => {
    const pts = results.filter((r) => r.model === m).sort((a, b) => a.epoch - b.epoch);
    add("polyline", { points: pts.map((r) => `${x(r.epoch)},${y(r[field])}`).join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 });
    for (const r of pts) add("circle", { cx: x(r.epoch), cy: y(r[field]), r: 3, fill: COLORS[i % COLORS.length] });
  });
  return h("figure", {}, svg, h("figcaption", {}, `${title} (x: epoch)`));
}

async function renderModels() {
  const doc = await api("/v1/models");
  if (!doc.runs.length) {
    put(view, h("h1", {}, "Models"), h("p", { class: "muted" },
      `No model selection run is recorded in ${doc.collection}. Record one before serving it: streamvision train --mst MST.yaml --data … --store DATA_DIR/lineage (the collection's store), then serve it again.`));
    return;
  }
  const sections = doc.runs.map((run) => {
    const models = [...new Set(run.results.map((r) => r.model))];
    const last = Math.max(...run.results.map((r) => r.epoch));
    const final = run.results.filter((r) => r.epoch === last).sort((a, b) => b.val_acc - a.val_acc);
    const config = Object.fromEntries(doc.mst.map((m) => [m.key, m]));
    return h("section", { class: "panel" },
      h("h2", {}, `Run ${run.run}`),
      facts([["best", run.best], ["val accuracy", run.val_acc], ["wall time", `${run.wall_s} s`], ["results", run.results_file]]),
      h("div", { class: "legend" }, models.map((m, i) => h("span", {}, h("i", { style: `background:${COLORS[i % COLORS.length]}` }), m))),
      h("div", { class: "curves" }, curve(run.results, models, "val_acc", "validation accuracy"),
        curve(run.results, models, "train_loss", "training loss"), curve(run.results, models, "val_loss", "validation loss")),
      h("h2", {}, `Model selection table, epoch ${last}`),
      h("div", { class: "table-wrap" }, h("table", {},
        h("tr", {}, ["model", "arch", "lr", "batch size", "val acc", "val loss", "train loss"].map((c) => h("th", {}, c))),
        final.map((r) => h("tr", {}, h("td", {}, r.model), h("td", {}, config[r.model]?.arch ?? "–"), h("td", { class: "num" }, config[r.model]?.lr ?? "–"),
          h("td", { class: "num" }, config[r.model]?.batch_size ?? "–"), h("td", { class: "num" }, r.val_acc.toFixed(4)),
          h("td", { class: "num" }, r.val_loss.toFixed(4)), h("td", { class: "num" }, r.train_loss.toFixed(4)))))));
  });
  put(view, h("h1", {}, "Models"), ...sections);
}

// ------------------------------------------------------------------ routing
async function route() {
  stopPage(); stopPage = () => {};
  showError("");
  const [, page = "search", arg] = location.hash.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === (page === "patch" ? "search" : page)) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  await guarded(async () => {
    if (page === "patch" && /^\d+$/.test(arg || "")) await renderPatch(asId(arg));
    else if (page === "live") await renderLive();
    else if (page === "sql") await renderSql();
    else if (page === "models") await renderModels();
    else await renderSearch();
  });
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("sv-token", document.getElementById("token").value);
  images.clear();
  document.getElementById("token-form").hidden = true;
  route();
});

window.addEventListener("hashchange", route);
fetch("/v1/health").then((r) => r.json()).then((doc) => {
  document.getElementById("collection").textContent = `collection: ${doc.collections.join(", ")}`;
}).catch(() => showError("the service does not answer /v1/health"));
route();
