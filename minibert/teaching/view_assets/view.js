/* minibert view: one forward pass of a BERT encoder, drawn from the numbers embedded in this page.

   minibert (Python) ran the text through the model and embedded, in the JSON element #minibert-data, the tokens,
   the trace's arrays (packed: see decodeArrays) and the float64 checks of `minibert explain`. This script
   only reads them, derives a few exact sums, and draws tables and SVG. No library, no request.

   The views, one function each:
     1. tokensView      the tokens, their ids, and word + position + type -> LayerNorm
     2. headView        bertviz's head view: lines from each token to the tokens it attends to
        modelView       bertviz's model view: every layer x head as a thumbnail; click one to open it
     3. stepsView       each formula of the chosen layer, head and token, with shapes, numbers and checks
     4. layersView      per layer: vector norms, cosine to the previous layer, each token's nearest tokens
     5. errataView      where the article this project grew from departs from BERT
   A number is printed with DIGITS decimals in a <span class="n">, inside an element whose data-key names
   the trace array and data-layer / data-head / data-token / data-start the slice: the browser test
   (tests/test_view_browser.py) compares every one with the trace read in Python. */
"use strict";

const DATA = JSON.parse(document.getElementById("minibert-data").textContent);
const CFG = DATA.config; // L layers, H hidden size, h heads of d = H / h, I intermediate size, E embedding size
const TOKENS = DATA.tokens;
const S = TOKENS.length;
const DIGITS = 4; // decimals printed, as `minibert explain` prints them
const SHOW = 8; // numbers of a vector shown before its "all N" button
// A float32 sum as NumPy computes it: two float32 added in float64 and rounded once to float32 is the correctly
// rounded float32 sum, bit for bit. The page's derived sums therefore equal the trace's exactly.
const round = DATA.dtype === "float32" ? Math.fround : (x) => x;

let A = null; // the trace's arrays by name (Tensor), once decoded
const state = {
  layer: DATA.initial.layer, // encoder layer 1..L of the head view and the formula steps
  head: DATA.initial.head, // head 0..h-1 of the formula steps
  token: DATA.initial.token, // token position 0..S-1: the query of the formula steps
  shown: new Set([DATA.initial.head]), // heads drawn in the head view ("all" draws every one, as bertviz does)
  open: new Set(), // vectors shown in full (their data-key)
};

// ------------------------------------------------------------------ the numbers

/** An n-dimensional array over a flat typed array: at(i, j) is the sub-array at those leading indices. */
class Tensor {
  constructor(data, shape) {
    this.data = data;
    this.shape = shape;
  }

  at(...index) {
    let offset = 0;
    let size = this.data.length;
    index.forEach((i, axis) => {
      size /= this.shape[axis];
      offset += i * size;
    });
    return this.data.subarray(offset, offset + size);
  }
}

/** The arrays of DATA.blob: base-85 text of deflated byte planes (every number's first byte, then every second
    byte, ...) of little-endian float32 (or float64) numbers; DATA.arrays gives each array's offset and shape. */
async function decodeArrays() {
  const packed = fromBase85(DATA.blob, DATA.blob_bytes);
  const inflated = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
  const planes = new Uint8Array(await new Response(inflated).arrayBuffer());
  const size = DATA.itemsize;
  const count = planes.length / size;
  const bytes = new Uint8Array(planes.length);
  for (let b = 0; b < size; b++) {
    for (let i = 0; i < count; i++) bytes[i * size + b] = planes[b * count + i];
  }
  // typed arrays use the machine's byte order: little-endian on every platform browsers run on today
  const numbers = size === 4 ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
  const arrays = {};
  for (const [name, { offset, shape }] of Object.entries(DATA.arrays)) {
    const n = shape.reduce((a, b) => a * b, 1);
    arrays[name] = new Tensor(numbers.subarray(offset, offset + n), shape);
  }
  return arrays;
}

// RFC 1924's base-85 digits (Python's base64.b85encode), with . , : in place of & < > (no escaping in HTML).
const BASE85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%.()*+-;,=:?@^_`{|}~";

/** Base-85 text -> bytes: every 5 digits are one 32-bit big-endian number; the first `length` bytes. */
function fromBase85(text, length) {
  const digit = new Uint8Array(128);
  for (let i = 0; i < 85; i++) digit[BASE85.charCodeAt(i)] = i;
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let n = 0;
    for (let c = 0; c < 5; c++) n = n * 85 + digit[text.charCodeAt(i + c)];
    out[o] = n >>> 24;
    out[o + 1] = (n >>> 16) & 255;
    out[o + 2] = (n >>> 8) & 255;
    out[o + 3] = n & 255;
  }
  return out.subarray(0, length);
}

function range(n) {
  return Array.from({ length: n }, (_, i) => i);
}

const fmt = (x) => x.toFixed(DIGITS);
const fmtErr = (e) => (typeof e === "number" ? e.toExponential(1) : String(e));
const add = (a, b) => Array.from(a, (x, i) => round(x + b[i])); // elementwise, in the trace's float rounding
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
const norm = (a) => Math.sqrt(dot(a, a));
const cosine = (a, b) => dot(a, b) / (norm(a) * norm(b));
const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length;
const variance = (a) => {
  const m = mean(a);
  return a.reduce((s, x) => s + (x - m) * (x - m), 0) / a.length;
};
// neighbouring heads get far-apart hues (the golden angle), so any two shown together are told apart
const headColour = (j) => `hsl(${Math.round((j * 137.5) % 360)}, 75%, 36%)`;
const tokenName = (t) => `${t} "${TOKENS[t]}"`;

// The quantities the page derives from the embedded arrays (exactly, see `round`).
const X = (l, t) => A.hidden.at(l - 1, t); // the input of encoder layer l: hidden_states[l - 1]
const embSum = (t) => {
  const s = add(A["embeddings.word"].at(t), A["embeddings.position"].at(t));
  return A["embeddings.token_type"] ? add(s, A["embeddings.token_type"].at(t)) : s;
};
// e = LayerNorm(sum); without a projection (BERT) it is hidden_states[0] itself, embedded once
const embOutput = (t) => (A["embeddings.output"] ? A["embeddings.output"].at(t) : A.hidden.at(0, t));
const concat = (l, t) => range(CFG.h).flatMap((j) => Array.from(A.context.at(l - 1, j, t)));
const residual1 = (l, t) => add(X(l, t), A.attention_output.at(l - 1, t));
const residual2 = (l, t) => add(A.ln_1.at(l - 1, t), A.ffn_output.at(l - 1, t));
const relu = (a) => Array.from(a, (x) => Math.max(0, x));

// ------------------------------------------------------------------ building blocks

const SVGNS = "http://www.w3.org/2000/svg";

function setAttributes(node, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  return node;
}

/** An HTML element; strings among the children become text, never HTML. */
function el(tag, attrs = {}, ...children) {
  const node = setAttributes(document.createElement(tag), attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An SVG element. */
function svg(tag, attrs = {}, ...children) {
  const node = setAttributes(document.createElementNS(SVGNS, tag), attrs);
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** data-layer, data-head, ... from {layer, head, token, start}: which slice of which array a row shows. */
function dataAttrs(where) {
  const out = {};
  for (const [k, v] of Object.entries(where)) out[`data-${k}`] = v;
  return out;
}

/** One vector as a row: a label, its first SHOW numbers (from `first`, default 0) and an "all N" button.
    `key` is the trace's name of the array, `where` the slice (data attributes read by the browser test). */
function vector(label, values, key, where = {}, { first = 0, mark = null } = {}) {
  const id = `${key}:${label}`;
  const open = state.open.has(id);
  const row = el("div", { class: open ? "vec open" : "vec", "data-key": key, ...dataAttrs(where) });
  const nums = el("span", { class: "nums" });
  Array.from(values).forEach((x, i) => {
    const cls = ["n"];
    if (i < first || i >= first + SHOW) cls.push("more");
    if (mark && mark(i)) cls.push("mark");
    nums.append(el("span", { class: cls.join(" "), title: `[${i}]` }, fmt(x)));
  });
  row.append(el("span", { class: "label" }, math(label)), nums);
  if (values.length > 1) nums.before(el("span", { class: "dim" }, `(${values.length})`));
  if (values.length > SHOW) {
    const toggle = () => {
      if (state.open.has(id)) state.open.delete(id);
      else state.open.add(id);
      row.classList.toggle("open");
      button.textContent = row.classList.contains("open") ? "fewer" : `all ${values.length}`;
    };
    const button = el("button", { class: "all", onclick: toggle }, open ? "fewer" : `all ${values.length}`);
    row.append(button);
  }
  return row;
}

/** Vectors over the S keys (scores, mask, probabilities) as a table under the key tokens; `bars` draws each
    number as a bar too (for probabilities). */
function keyTable(rows) {
  const head = el("tr", {}, el("th", {}, "key →"), TOKENS.map((tok, s) => el("th", { title: `key ${s}` }, tok)));
  const body = rows.map(({ label, values, key, where, bars }) =>
    el(
      "tr",
      { class: "vec", "data-key": key, ...dataAttrs(where) },
      el("th", {}, math(label)),
      Array.from(values).map((x) => {
        const text = Number.isFinite(x) && Math.abs(x) < 1e30 ? fmt(x) : x.toExponential(1);
        // a probability is drawn as a bar standing on its number, 40 px for 1
        const bar = bars ? el("div", { class: "bar", style: `height: ${(40 * x).toFixed(1)}px` }) : null;
        return el("td", { class: bars ? "n bars" : "n" }, bar, text);
      }),
    ),
  );
  return el("div", { class: "scroll" }, el("table", { class: "keys" }, head, body));
}

/** A statistic the page computes (a mean, a norm, a cosine), marked for the browser test. */
function stat(name, value, where = {}) {
  return el("span", { class: "stat", "data-stat": name, ...dataAttrs(where) }, fmt(value));
}

/** explain's float64 checks that belong to `step`. */
function checkList(checks, step, where = {}) {
  const mine = checks.filter((c) => c.step === step);
  if (!mine.length) return null;
  return el(
    "ul",
    { class: "checks" },
    mine.map((c) =>
      el(
        "li",
        { class: c.ok ? "check ok" : "check fail", "data-step": step, "data-what": c.what, ...dataAttrs(where) },
        c.ok ? "✓ " : "✗ FAIL ",
        el("span", { class: "what" }, c.what),
        ": max error ",
        el("span", { class: "err" }, fmtErr(c.error)),
        ` (tolerance ${fmtErr(c.tol)})`,
      ),
    ),
  );
}

/** Formula text with x^Q and d_k written as superscripts and subscripts (one or two letters or digits). */
function math(text) {
  const span = el("span", {});
  let last = 0;
  for (const m of text.matchAll(/([\^_])(\w{1,2})\b/g)) {
    span.append(text.slice(last, m.index), el(m[1] === "^" ? "sup" : "sub", {}, m[2]));
    last = m.index + m[0].length;
  }
  span.append(text.slice(last));
  return span;
}

/** One step of the forward pass: title, formula, shapes, numbers (body), explain's checks and, where the
    article departs, a link to the erratum. */
function card({ id, title, formula, shapes, body, checks = null, erratum = null }) {
  const link = erratum ? el("a", { href: `#${ERRATA[erratum].id}` }, ERRATA[erratum].title) : null;
  return el(
    "article",
    { class: "step", id: `step-${id}`, "data-step": id },
    el("h3", {}, title),
    el("div", { class: "formula" }, math(formula)),
    el("div", { class: "shapes" }, "shapes: ", math(shapes)),
    body,
    checks,
    link ? el("p", { class: "erratum" }, "Where the article differs: ", link) : null,
  );
}

// ------------------------------------------------------------------ controls

/** The layer, head and token selectors at the top; every view follows them. */
function controls() {
  const select = (id, label, options, value, change) =>
    el(
      "label",
      {},
      label,
      el(
        "select",
        { id, onchange: (e) => change(Number(e.target.value)) },
        options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)),
      ),
    );
  return [
    select("layer", "Layer ", range(CFG.L).map((i) => [i + 1, `${i + 1} of ${CFG.L}`]), state.layer, (layer) =>
      update({ layer }),
    ),
    select("head", "Head ", range(CFG.h).map((j) => [j, `${j}`]), state.head, (head) =>
      update({ head, shown: new Set([head]) }),
    ),
    select("token", "Token ", TOKENS.map((tok, t) => [t, `${t} ${tok}`]), state.token, (token) => update({ token })),
  ];
}

function syncControls() {
  document.getElementById("layer").value = state.layer;
  document.getElementById("head").value = state.head;
  document.getElementById("token").value = state.token;
}

// ------------------------------------------------------------------ 1. tokens and embeddings

/** The tokens with their ids, then the embedding of the chosen token: word + position + type -> LayerNorm. */
function tokensView() {
  const t = state.token;
  const types = A["embeddings.token_type"]; // none for DistilBERT
  const projected = A["embeddings.output"] !== undefined; // ELECTRA, ALBERT: e is projected to H
  const E = CFG.E;
  const head = ["position", "token", "id", "position row", "type"].map((name) => el("th", {}, name));
  const table = el(
    "table",
    { class: "tokens" },
    el("tr", {}, head),
    TOKENS.map((tok, s) =>
      el(
        "tr",
        { class: s === t ? "chosen" : null, "data-token": s, onclick: () => update({ token: s }) },
        el("td", {}, s),
        el("td", { class: "tok" }, tok),
        el("td", {}, DATA.ids[s]),
        el("td", {}, DATA.positions[s]),
        el("td", {}, types ? DATA.types[s] : "none"),
      ),
    ),
  );
  const where = { token: t };
  const rows = [
    vector("word[id]", A["embeddings.word"].at(t), "embeddings.word", where),
    vector("position[pos]", A["embeddings.position"].at(t), "embeddings.position", where),
    types ? vector("type[type]", types.at(t), "embeddings.token_type", where) : null,
    vector("sum", embSum(t), "embeddings.sum", where),
    vector("e = LayerNorm(sum)", embOutput(t), "embeddings.output", where),
    projected ? vector("x = e W_proj + b_proj", A.hidden.at(0, t), "embeddings.projection", where) : null,
  ];
  const parts = types ? "word[id] + position[pos] + type[type]" : "word[id] + position[pos]   (no token-type table)";
  return [
    el("p", {}, `The text is split into ${S} tokens (special tokens included). Each token's id picks a row of `,
      `the word table, its place a row of the position table${types ? ", its segment a row of the type table" : ""}: `,
      "their sum, normalised, is hidden_states[0], the input of layer 1. Click a token to follow it."),
    table,
    card({
      id: "embeddings",
      title: `Token ${tokenName(t)}: its embedding`,
      formula: `e = LayerNorm(${parts})`,
      shapes: `ids (${S}) → each table's rows (${S}, ${E}) → sum (${S}, ${E}) → e (${S}, ${E})` +
        (projected ? ` → projected (${S}, ${CFG.H})` : ""),
      body: rows,
      checks: checkList(DATA.checks.embeddings, "embeddings"),
    }),
  ];
}

// ------------------------------------------------------------------ 2. attention: head view and model view

/** The head buttons: a click shows that head alone (and the formula steps follow it), Shift+click adds or
    removes a head, "all" shows every head. */
function headPicker() {
  const pick = (j, add) => {
    if (!add) return update({ head: j, shown: new Set([j]) });
    const shown = new Set(state.shown);
    if (shown.has(j) && shown.size > 1) shown.delete(j);
    else shown.add(j);
    return update({ shown });
  };
  return el(
    "div",
    { class: "heads" },
    "Heads: ",
    range(CFG.h).map((j) =>
      el(
        "button",
        {
          class: state.shown.has(j) ? "head on" : "head",
          style: `--c: ${headColour(j)}`,
          "data-head": j,
          title: `head ${j}: click to show it alone, Shift+click to add it`,
          onclick: (e) => pick(j, e.shiftKey),
        },
        String(j),
      ),
    ),
    el("button", { class: "head-all", onclick: () => update({ shown: new Set(range(CFG.h)) }) }, "all"),
  );
}

/** bertviz's head view for the chosen layer: each token on the left (the query) attends to the tokens on the
    right (the keys); a line's opacity is the probability P[query, key], its colour the head's. The chosen
    token's lines are strong; other queries' lines are faint, and left out below 1%. */
function headView() {
  const l = state.layer;
  const rowH = 20;
  const top = 26;
  const xq = 190;
  const xk = 390;
  const height = top + S * rowH + 6;
  const y = (s) => top + s * rowH + rowH / 2;
  const root = svg("svg", {
    id: "head-view",
    width: 560,
    height,
    viewBox: `0 0 560 ${height}`,
    "data-layer": l,
    "data-heads": [...state.shown].join(","),
  });
  root.append(
    svg("text", { x: xq, y: 14, "text-anchor": "end", class: "axis" }, "query"),
    svg("text", { x: xk, y: 14, class: "axis" }, "key"),
  );
  for (const j of state.shown) {
    for (let q = 0; q < S; q++) {
      const P = A.probs.at(l - 1, j, q);
      const strong = q === state.token;
      for (let k = 0; k < S; k++) {
        if (!strong && P[k] < 0.01) continue;
        root.append(
          svg(
            "line",
            {
              x1: xq + 6, y1: y(q), x2: xk - 6, y2: y(k),
              stroke: headColour(j),
              "stroke-width": strong ? 1.5 + 6 * P[k] : 1.5, // the chosen token's lines: wider for more weight
              "stroke-opacity": (strong ? P[k] : 0.25 * P[k]).toFixed(DIGITS),
              "data-head": j, "data-q": q, "data-k": k, "data-p": fmt(P[k]),
              class: strong ? "strong" : null,
            },
            svg("title", {}, `layer ${l}, head ${j}: ${TOKENS[q]} → ${TOKENS[k]}: ${fmt(P[k])}`),
          ),
        );
      }
    }
  }
  // with one head shown, each key is labelled with the weight the chosen token gives it
  const one = state.shown.size === 1 ? A.probs.at(l - 1, [...state.shown][0], state.token) : null;
  TOKENS.forEach((tok, s) => {
    const chosen = s === state.token ? "tok chosen" : "tok";
    root.append(
      svg("text", { x: xq, y: y(s) + 4, "text-anchor": "end", class: chosen, "data-token": s,
        onclick: () => update({ token: s }) }, tok),
      svg("text", { x: xk, y: y(s) + 4, class: "tok" }, tok,
        one ? svg("tspan", { class: "p", dx: 8, "data-k": s }, fmt(one[s])) : null),
    );
  });
  const names = [...state.shown].sort((a, b) => a - b).join(", ");
  return el(
    "div",
    { class: "panel" },
    el("h3", {}, `Head view: layer ${l}, head${state.shown.size > 1 ? "s" : ""} ${names}`),
    el("p", { class: "note" }, "Each line joins a query (left) to a key (right); its opacity is the attention ",
      "probability. Click a token on the left to follow it."),
    headPicker(),
    root,
  );
}

/** bertviz's model view: every layer (rows) x head (columns) as a small head view, drawn on a canvas; a click
    opens that layer and head in the head view and in the formula steps. */
function modelView() {
  const grid = el("div", { id: "model-view", style: `grid-template-columns: auto repeat(${CFG.h}, 1fr)` });
  const columns = range(CFG.h).map((j) => el("span", { class: "col", style: `color: ${headColour(j)}` }, `head ${j}`));
  grid.append(el("span", {}), ...columns);
  const w = 64;
  const hgt = Math.max(40, Math.min(120, 4 * S + 8));
  for (let l = 1; l <= CFG.L; l++) {
    grid.append(el("span", { class: "row" }, `layer ${l}`));
    for (let j = 0; j < CFG.h; j++) {
      const canvas = el("canvas", {
        width: w, height: hgt, class: "thumb", "data-layer": l, "data-head": j,
        title: `layer ${l}, head ${j}: click to open`,
        onclick: () => {
          update({ layer: l, head: j, shown: new Set([j]) });
          document.getElementById("head-view").scrollIntoView({ block: "center" });
        },
      });
      const ctx = canvas.getContext("2d");
      ctx.strokeStyle = headColour(j);
      const y = (s) => 4 + ((hgt - 8) * (s + 0.5)) / S;
      for (let q = 0; q < S; q++) {
        const P = A.probs.at(l - 1, j, q);
        for (let k = 0; k < S; k++) {
          ctx.globalAlpha = P[k];
          ctx.beginPath();
          ctx.moveTo(6, y(q));
          ctx.lineTo(w - 6, y(k));
          ctx.stroke();
        }
      }
      grid.append(canvas);
    }
  }
  return el(
    "div",
    { class: "panel" },
    el("h3", {}, `Model view: ${CFG.L} layers × ${CFG.h} heads`),
    el("p", { class: "note" }, "Each thumbnail is one head's attention (queries left, keys right). ",
      "Click one to open it."),
    grid,
  );
}

function markCurrentThumbnail() {
  for (const c of document.querySelectorAll("#model-view .thumb")) {
    c.classList.toggle("current", Number(c.dataset.layer) === state.layer && Number(c.dataset.head) === state.head);
  }
}

// ------------------------------------------------------------------ 3. one formula at a time

/** Every formula of encoder layer l for head j and token t, in the order the forward pass runs them: one
    function per step below, each returning a card. */
function stepsView() {
  const l = state.layer;
  const j = state.head;
  const t = state.token;
  const checks = DATA.checks.layers[l - 1];
  const c = {
    l, j, t,
    at: { layer: l, head: j, token: t }, // where a per-head row comes from
    lt: { layer: l, token: t }, // where a per-token row comes from
    checks: (step) => checkList(checks, step, { layer: l }),
  };
  const steps = [inputStep, qkvStep, scoresStep, maskStep, softmaxStep, contextStep, concatStep,
    residual1Step, layerNorm1Step, ffnStep, residual2Step, layerNorm2Step];
  const other = c.checks("other");
  return [
    el("p", {}, `Encoder layer ${l} of ${CFG.L}, head ${j}, token ${tokenName(t)}. `,
      "Each step: its formula, the shapes, ",
      `the numbers (first ${SHOW}; "all" shows the rest) and the checks of minibert explain, which recomputes the `,
      "step in float64 from the traced inputs, independently of minibert's formula functions."),
    steps.map((step) => step(c)),
    other ? el("div", {}, el("h3", {}, "Other checks"), other) : null,
  ];
}

const shapeSH = () => `(${S}, ${CFG.H})`;

function inputStep({ l, t }) {
  return card({
    id: "input",
    title: `Input X = hidden_states[${l - 1}]`,
    formula: `X: ${l === 1 ? "the embedding output" : `the output of layer ${l - 1}`}, one row per token`,
    shapes: `X ${shapeSH()}`,
    body: [vector(`X[${t}]`, X(l, t), "hidden", { layer: l - 1, token: t })],
  });
}

function qkvStep({ l, j, t, at, checks }) {
  const { h, d } = CFG;
  return card({
    id: "qkv",
    title: "3.1 Q, K, V: three projections of the same X, split into heads",
    formula: "Q = X W^Q + b^Q,  K = X W^K + b^K,  V = X W^V + b^V",
    shapes: `X ${shapeSH()} → Q, K, V ${shapeSH()} → split into ${h} heads (${h}, ${S}, ${d}); ` +
      `head ${j} is columns ${j * d}..${(j + 1) * d - 1}`,
    body: ["q", "k", "v"].map((name) => vector(`${name}  (head ${j}, token ${t})`, A[name].at(l - 1, j, t), name, at)),
    checks: checks("qkv"),
    erratum: "qkv",
  });
}

function scoresStep({ l, j, t, at, checks }) {
  const { h, d } = CFG;
  return card({
    id: "scores",
    title: "3.2 Scores: how well the query matches each key",
    formula: `scores = Q Kᵀ / √d_k,   d_k = ${d}, √d_k = ${Math.sqrt(d).toFixed(DIGITS)}`,
    shapes: `Q (${h}, ${S}, ${d}) × Kᵀ (${h}, ${d}, ${S}) → (${h}, ${S}, ${S}); ` +
      `here the row of query ${tokenName(t)}, head ${j}`,
    body: [keyTable([{ label: "q·k / √d_k", values: A.scores.at(l - 1, j, t), key: "scores", where: at }])],
    checks: checks("scores"),
    erratum: "example",
  });
}

function maskStep({ l, j, t, at, checks }) {
  const h = CFG.h;
  return card({
    id: "mask",
    title: "3.3 The mask",
    formula: "masked = scores + M,   M = 0 for a real key, the most negative float for padding",
    shapes: `M (${S}) broadcast over heads and queries → masked (${h}, ${S}, ${S})`,
    body: [
      el("p", { class: "note" }, "This page shows the text's real tokens only, so M is 0 for every key. With padding ",
        "(minibert explain --pad 2), padded keys get the most negative float: after the softmax, exactly 0."),
      keyTable([
        { label: "M", values: A.mask.data, key: "mask", where: { layer: l } },
        { label: "scores + M", values: add(A.scores.at(l - 1, j, t), A.mask.data), key: "masked_scores", where: at },
      ]),
    ],
    checks: checks("mask"),
    erratum: "mask",
  });
}

function softmaxStep({ l, j, t, at, checks }) {
  const h = CFG.h;
  const P = A.probs.at(l - 1, j, t);
  return card({
    id: "softmax",
    title: "3.4 Softmax: the attention weights",
    formula: "P = softmax(masked) along the keys: P[t, s] = exp(masked[t, s]) / Σ_s' exp(masked[t, s'])",
    shapes: `(${h}, ${S}, ${S}) → P (${h}, ${S}, ${S}); each row sums to 1`,
    body: [
      keyTable([{ label: "P", values: P, key: "probs", where: at, bars: true }]),
      el("p", {}, "Σ P = ", stat("sum", P.reduce((s, x) => s + x, 0), { key: "probs", ...at })),
    ],
    checks: checks("softmax"),
    erratum: "example",
  });
}

function contextStep({ l, j, t, at, checks }) {
  const { h, d } = CFG;
  const P = A.probs.at(l - 1, j, t);
  // one row per key s: its weight P[t, s] and its value row v_s
  const rows = TOKENS.map((tok, s) =>
    el("div", { class: "wrow" },
      vector(`P[${t}, ${s}]`, [P[s]], "probs", { ...at, start: s }),
      vector(`× v_${s} "${tok}"`, A.v.at(l - 1, j, s), "v", { layer: l, head: j, token: s })));
  return card({
    id: "context",
    title: "3.5 The weighted sum of V",
    formula: `head_${j}[t] = Σ_s P[t, s] v_s`,
    shapes: `P (${h}, ${S}, ${S}) × V (${h}, ${S}, ${d}) → head outputs (${h}, ${S}, ${d})`,
    body: [el("div", { class: "wsum" }, rows), vector(`= head_${j}[${t}]`, A.context.at(l - 1, j, t), "context", at)],
    checks: checks("context"),
  });
}

function concatStep({ l, j, t, lt, checks }) {
  const { H, h, d } = CFG;
  const ofHead = (i) => i >= j * d && i < (j + 1) * d;
  return card({
    id: "concat",
    title: "3.6 Concat(head_1..head_h) W^O + b^O",
    formula: "MultiHead(X) = Concat(head_1, ..., head_h) W^O + b^O",
    shapes: `${h} × (${S}, ${d}) → concat ${shapeSH()} → × W^O (${H}, ${H}) + b^O → ${shapeSH()}`,
    body: [
      vector(`concat[${t}] (head ${j}: columns ${j * d}..${(j + 1) * d - 1}, marked)`, concat(l, t), "concat", lt,
        { first: j * d, mark: ofHead }),
      vector(`MultiHead(X)[${t}]`, A.attention_output.at(l - 1, t), "attention_output", lt),
    ],
    checks: checks("concat"),
  });
}

function residual1Step({ l, t, lt, checks }) {
  return card({
    id: "residual_1",
    title: "3.7 Residual: add the input back",
    formula: "residual_1 = X + MultiHead(X)",
    shapes: `${shapeSH()} + ${shapeSH()} → ${shapeSH()}`,
    body: [
      vector(`X[${t}]`, X(l, t), "hidden", { layer: l - 1, token: t }),
      vector(`+ MultiHead(X)[${t}]`, A.attention_output.at(l - 1, t), "attention_output", lt),
      vector(`= residual_1[${t}]`, residual1(l, t), "residual_1", lt),
    ],
    checks: checks("residual_1"),
    erratum: "postln",
  });
}

/** μ and σ² of the row a LayerNorm normalises. */
function layerNormStats(name, row, lt) {
  return el("p", {}, `over the ${CFG.H} numbers of token ${tokenName(lt.token)}: μ = `,
    stat("mean", mean(row), { key: name, ...lt }), ", σ² = ", stat("variance", variance(row), { key: name, ...lt }),
    `, ε = ${CFG.eps}`);
}

function layerNorm1Step({ l, t, lt, checks }) {
  return card({
    id: "ln_1",
    title: "3.8 LayerNorm after the sum (post-LN)",
    formula: "ln_1 = γ (x − μ) / √(σ² + ε) + β,  x = residual_1, over the H numbers of each token",
    shapes: `${shapeSH()} → ${shapeSH()}`,
    body: [layerNormStats("residual_1", residual1(l, t), lt), vector(`ln_1[${t}]`, A.ln_1.at(l - 1, t), "ln_1", lt)],
    checks: checks("ln_1"),
    erratum: "postln",
  });
}

function ffnStep({ l, t, lt, checks }) {
  const { I } = CFG;
  const act = CFG.act === "relu" ? "ReLU" : CFG.act === "gelu" ? "GELU" : `GELU (${CFG.act}: tanh approximation)`;
  const pre = A.ffn_pre.at(l - 1, t);
  const gelu = A.ffn_act.at(l - 1, t);
  const out = A.ffn_output.at(l - 1, t);
  const reluOut = A.ffn_relu_output.at(l - 1, t);
  const negatives = pre.filter((x) => x < 0).length;
  const maxDiff = Math.max(...Array.from(out, (x, i) => Math.abs(x - reluOut[i])));
  const relu_ = { key: "ffn_relu_output", ...lt };
  return card({
    id: "ffn",
    title: `3.9 The feed-forward network, with ${act}`,
    formula: `FFN(x) = ${act}(x W_1 + b_1) W_2 + b_2,  x = ln_1;  GELU(x) = ½ x (1 + erf(x / √2))`,
    shapes: `x ${shapeSH()} → x W_1 + b_1 (${S}, ${I}) → ${act} → × W_2 + b_2 → ${shapeSH()}`,
    body: [
      vector("x W_1 + b_1", pre, "ffn_pre", lt),
      vector(`${act}(x W_1 + b_1)`, gelu, "ffn_act", lt),
      vector("ReLU(x W_1 + b_1): the article's", relu(pre), "ffn_relu", lt),
      activationPlot(pre, gelu, act),
      el("p", {}, `${negatives} of ${I} pre-activations of token ${tokenName(t)} are negative: ReLU makes them 0, `,
        `${act} keeps them slightly negative (its minimum here: `,
        stat("min", Math.min(...gelu), { key: "ffn_act", ...lt }), ")."),
      vector(`FFN(x)[${t}] with ${act}`, out, "ffn_output", lt),
      vector("with ReLU instead (same weights)", reluOut, "ffn_relu_output", lt),
      el("p", {}, "With ReLU, this token's FFN output would have cosine ", stat("cosine", cosine(out, reluOut), relu_),
        " to the real one, and differ by up to ", stat("maxdiff", maxDiff, relu_), "."),
    ],
    checks: checks("ffn"),
    erratum: "gelu",
  });
}

function residual2Step({ l, t, lt, checks }) {
  return card({
    id: "residual_2",
    title: "3.10 Residual around the FFN",
    formula: "residual_2 = ln_1 + FFN(ln_1)",
    shapes: `${shapeSH()} + ${shapeSH()} → ${shapeSH()}`,
    body: [
      vector(`ln_1[${t}]`, A.ln_1.at(l - 1, t), "ln_1", lt),
      vector(`+ FFN[${t}]`, A.ffn_output.at(l - 1, t), "ffn_output", lt),
      vector(`= residual_2[${t}]`, residual2(l, t), "residual_2", lt),
    ],
    checks: checks("residual_2"),
    erratum: "postln",
  });
}

function layerNorm2Step({ l, t, lt, checks }) {
  const next = l < CFG.L ? `, the input of layer ${l + 1}` : ", the last layer's output";
  return card({
    id: "ln_2",
    title: `3.11 LayerNorm again: the output of layer ${l}`,
    formula: `ln_2 = γ₂ (x − μ) / √(σ² + ε) + β₂,  x = residual_2;  ln_2 = hidden_states[${l}]`,
    shapes: `${shapeSH()} → ${shapeSH()}${next}`,
    body: [
      layerNormStats("residual_2", residual2(l, t), lt),
      vector(`hidden_states[${l}][${t}]`, A.hidden.at(l, t), "hidden", { layer: l, token: t }),
    ],
    checks: checks("ln_2"),
    erratum: "postln",
  });
}

/** Every pre-activation of the token against its activation: the points trace the model's activation
    curve; the article's ReLU is drawn dashed beside it. */
function activationPlot(pre, act, name) {
  const W = 420;
  const Ht = 220;
  const pad = 32;
  const xs = Array.from(pre);
  const lo = Math.min(...xs, -1);
  const hi = Math.max(...xs, 1);
  const ylo = Math.min(...act, -0.2);
  const yhi = Math.max(hi, ...act);
  const px = (x) => pad + ((x - lo) / (hi - lo)) * (W - 2 * pad);
  const py = (y) => Ht - pad - ((y - ylo) / (yhi - ylo)) * (Ht - 2 * pad);
  return svg(
    "svg",
    { class: "plot", width: W, height: Ht, viewBox: `0 0 ${W} ${Ht}` },
    svg("line", { x1: px(lo), y1: py(0), x2: px(hi), y2: py(0), class: "axis-line" }),
    svg("line", { x1: px(0), y1: py(ylo), x2: px(0), y2: py(yhi), class: "axis-line" }),
    svg("polyline", { points: `${px(lo)},${py(0)} ${px(0)},${py(0)} ${px(hi)},${py(hi)}`, class: "relu" }),
    xs.map((x, i) => svg("circle", { cx: px(x).toFixed(1), cy: py(act[i]).toFixed(1), r: 1.6, class: "pt" })),
    svg("text", { x: W - pad, y: Ht - 8, "text-anchor": "end", class: "axis" }, `x W₁ + b₁ (${xs.length} numbers)`),
    svg("text", { x: pad + 4, y: 14, class: "axis" },
      svg("tspan", { class: "pt-key" }, "●"), ` ${name}(x), this token   `,
      svg("tspan", { class: "relu-key" }, "- -"), " ReLU(x), the article's"),
    svg("text", { x: px(0) + 4, y: py(yhi) + 10, class: "tick" }, yhi.toFixed(1)),
    svg("text", { x: px(lo), y: py(0) - 4, class: "tick" }, lo.toFixed(1)),
    svg("text", { x: px(hi), y: py(0) + 12, "text-anchor": "end", class: "tick" }, hi.toFixed(1)),
  );
}

// ------------------------------------------------------------------ 4. layers

/** A small line chart: one faint line per token, the chosen token's in colour, the mean dashed. */
function lineChart(title, xs, series, chosen, key) {
  const W = 340;
  const Ht = 210;
  const padL = 44;
  const pad = 24;
  const all = series.flat();
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (hi - lo < 1e-9) [lo, hi] = [lo - 1, hi + 1];
  const px = (i) => padL + (i / Math.max(1, xs.length - 1)) * (W - padL - pad);
  const py = (y) => Ht - pad - ((y - lo) / (hi - lo)) * (Ht - 2 * pad);
  const points = (ys) => ys.map((y, i) => `${px(i).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
  const line = (ys, cls) => svg("polyline", { points: points(ys), class: cls });
  const means = xs.map((_, i) => mean(series.map((ys) => ys[i])));
  return svg(
    "svg",
    { class: "plot", width: W, height: Ht, viewBox: `0 0 ${W} ${Ht}`, "data-chart": key },
    svg("text", { x: padL, y: 14, class: "axis" }, title),
    svg("text", { x: padL - 4, y: py(hi) + 4, "text-anchor": "end", class: "tick" }, hi.toFixed(2)),
    svg("text", { x: padL - 4, y: py(lo) + 4, "text-anchor": "end", class: "tick" }, lo.toFixed(2)),
    xs.map((x, i) => svg("text", { x: px(i), y: Ht - 8, "text-anchor": "middle", class: "tick" }, String(x))),
    svg("text", { x: W - 4, y: Ht - 8, "text-anchor": "end", class: "tick" }, "i"),
    series.map((ys, s) => (s === chosen ? null : line(ys, "faint"))),
    line(means, "mean"),
    line(series[chosen], "chosen"),
    series[chosen].map((y, i) =>
      svg("circle", { cx: px(i), cy: py(y), r: 3, class: "chosen-pt" }, svg("title", {}, `${xs[i]}: ${fmt(y)}`)),
    ),
  );
}

/** How each token's vector changes through the layers: its norm, its cosine to the previous layer, and the
    tokens nearest to it (cosine) in each hidden state; the chosen token is in colour, the mean dashed. */
function layersView() {
  const t = state.token;
  const states = range(CFG.L + 1);
  const norms = TOKENS.map((_, s) => states.map((i) => norm(A.hidden.at(i, s))));
  const cos = TOKENS.map((_, s) => states.slice(1).map((i) => cosine(A.hidden.at(i, s), A.hidden.at(i - 1, s))));
  const nearest = (i) =>
    TOKENS.map((tok, u) => ({ u, tok, c: cosine(A.hidden.at(i, t), A.hidden.at(i, u)) }))
      .filter((x) => x.u !== t)
      .sort((a, b) => b.c - a.c)
      .slice(0, 3);
  const table = el(
    "table",
    { class: "layers" },
    el("tr", {}, ["hidden_states[i]", "|x|", "cosine to i − 1", `nearest tokens to ${tokenName(t)} (cosine)`].map(
      (name) => el("th", {}, name),
    )),
    states.map((i) =>
      el(
        "tr",
        { class: i === state.layer ? "chosen" : null },
        el("td", {}, i === 0 ? "0 (embeddings)" : `${i} (layer ${i})`),
        el("td", {}, stat("norm", norms[t][i], { layer: i, token: t })),
        el("td", {}, i === 0 ? "–" : stat("cos_prev", cos[t][i - 1], { layer: i, token: t })),
        el("td", {}, nearest(i).map(({ u, tok, c }) =>
          el("span", { class: "near" }, `${tok} `, stat("nearest", c, { layer: i, token: t, other: u })),
        )),
      ),
    ),
  );
  return [
    el("p", {}, "For every hidden state (0 = the embeddings, i = the output of layer i): each token's vector ",
      "length, how far it moved from the previous layer, and which other tokens of the text it is closest to. ",
      "Early on, a token is mostly itself; layer by layer it takes in its context. ",
      `The chosen token ${tokenName(t)} is drawn in colour, the mean over tokens dashed.`),
    el("div", { class: "charts" },
      lineChart("|x|: vector norm", states, norms, t, "norm"),
      lineChart("cosine to the previous layer", states.slice(1), cos, t, "cos_prev")),
    table,
  ];
}

// ------------------------------------------------------------------ 5. errata

/** Where the article this project grew from departs from BERT; docs/errata.md has every item. The steps
    above link here. */
const ERRATA = {
  gelu: {
    id: "errata-gelu",
    anchor: "the-formulas-section-4",
    source: "docs/errata.md, The formulas, item 1",
    title: "FFN: the article uses ReLU, BERT uses GELU",
    text:
      "The article writes FFN(x) = ReLU(xW₁ + b₁)W₂ + b₂. BERT uses GELU(x) = ½x(1 + erf(x/√2)), as " +
      "config.json's hidden_act says; ReLU is the original Transformer's. Step 3.9 shows both on the same " +
      "pre-activations: GELU keeps small negative values where ReLU writes 0.",
  },
  postln: {
    id: "errata-post-ln",
    anchor: "the-formulas-section-4",
    source: "docs/errata.md, The formulas, items 2 and 3",
    title: "LayerNorm: the article has one after each layer and no residual connections; BERT is post-LN",
    text:
      "The article puts a LayerNorm 'after each encoder layer' and no residual connections. BERT adds each " +
      "sub-layer's input back and normalises after the sum, twice in every layer: x₁ = LN(x + " +
      "MultiHead(x)), x₂ = LN(x₁ + FFN(x₁)) (post-LN). Pre-LN, x + Sublayer(LN(x)), is a different " +
      "function.",
  },
  qkv: {
    id: "errata-qkv",
    anchor: "the-formulas-section-4",
    source: "docs/errata.md, The formulas, item 6",
    title: "Q, K, V: the article uses one W on three inputs; BERT projects one X three ways",
    text:
      "The article writes Q = W X_Q, K = W X_K, V = W X_V. Self-attention projects the same X with three " +
      "different matrices and biases, Q = XW^Q + b^Q, K = XW^K + b^K, V = XW^V + b^V, each split into h " +
      "heads of d = H/h.",
  },
  mask: {
    id: "errata-mask",
    anchor: "the-formulas-section-4",
    source: "docs/errata.md, The formulas, item 7",
    title: "Mask: the article has none; BERT adds M before the softmax",
    text:
      "The article's attention is softmax(QKᵀ/√d_k)V. BERT's is softmax(QKᵀ/√d_k + M)V, with M = 0 for real" +
      " keys and the most negative float for padding, so padded tokens get zero weight.",
  },
  example: {
    id: "errata-example",
    anchor: "the-worked-example-section-43",
    source: "docs/errata.md, The worked example (section 4.3)",
    title: "The worked example of section 4.3: arithmetic errors",
    text:
      "Section 4.3 multiplies one 3×3 W by three vectors and gets Q, K and V wrong; it then takes the " +
      "softmax of one score as three weights. The softmax of a single score is exactly 1. minibert check-" +
      "article recomputes every number; here are its verdicts:",
  },
};

function errataView() {
  // docs/errata.md of the source checkout, when the page was made from one (see minibert/teaching/view.py)
  const link = (e) => (DATA.errata ? el("a", { href: `${DATA.errata}#${e.anchor}` }, e.source) : e.source);
  const example = el(
    "table",
    { class: "article" },
    el("tr", {}, ["", "quantity", "the article", "correct", "why"].map((name) => el("th", {}, name))),
    DATA.article.map((a) =>
      el("tr", { class: a.agree ? "agree" : "wrong" },
        [a.agree ? "agrees" : "wrong", a.quantity, a.article, a.correct, a.note].map((text) => el("td", {}, text))),
    ),
  );
  return Object.values(ERRATA).map((e) =>
    el(
      "div",
      { class: "erratum-item", id: e.id },
      el("h3", {}, e.title),
      el("p", {}, e.text),
      e === ERRATA.example ? example : null,
      el("p", { class: "source" }, "See ", link(e), "."),
    ),
  );
}

// ------------------------------------------------------------------ wiring

/** Change the chosen layer / head / token / shown heads and redraw what depends on them. */
function update(change) {
  Object.assign(state, change);
  syncControls();
  fill("tokens", tokensView());
  fill("attention-head", headView());
  fill("steps", stepsView());
  fill("layers", layersView());
  markCurrentThumbnail();
}

function fill(id, children) {
  const target = document.getElementById(id);
  (target.querySelector(":scope > .body") || target).replaceChildren(...[children].flat(2).filter(Boolean));
}

async function main() {
  A = await decodeArrays();
  const { L, H, h, d, I } = CFG;
  document.getElementById("summary").replaceChildren(
    el("span", { class: "text" }, DATA.text),
    el("br"),
    `${DATA.model}, ${DATA.dtype}: L = ${L} layers, H = ${H}, h = ${h} heads of d = ${d}, I = ${I}, `,
    `activation ${CFG.act}; S = ${S} tokens. `,
    `Numbers to ${DIGITS} decimals, from the trace of model.encode(text, trace=True).`,
  );
  document.getElementById("controls").replaceChildren(...controls());
  const attention = document.querySelector("#attention > .body");
  attention.replaceChildren(el("div", { id: "attention-head" }), el("div", { id: "attention-model" }, modelView()));
  fill("errata", errataView());
  update({});
  document.body.dataset.ready = "true"; // for the browser test and the screenshots: everything is drawn
}

main().catch((e) => {
  document.body.prepend(el("p", { class: "error" }, `minibert view could not draw this page: ${e}`));
  throw e;
});
