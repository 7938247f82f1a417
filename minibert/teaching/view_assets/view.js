/* minibert view: one forward pass of a BERT encoder, drawn from the numbers embedded in this page.

   minibert (Python) ran the text through the model and embedded, in the JSON element #minibert-data, the tokens,
   the trace's arrays at the printed precision (packed: see decodePart and minibert/teaching/view_pack.py), the
   statistics it prints (computed in float64 when the page was built) and the float64 checks of `minibert
   explain`. This script reads them, rebuilds the predictable arrays exactly, and draws tables, SVG and canvas.
   No library, no request.

   The views, one function each:
     1. tokensView      the tokens, their ids, and word + position + type -> LayerNorm
     2. headView        bertviz's head view: lines from each token to the tokens it attends to
        modelView       bertviz's model view: every layer x head as a thumbnail; click one to open it
        neuronView      bertviz's neuron view: q, k and q*k for the chosen query and key, summing to the score
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
const DIGITS = DATA.digits; // decimals printed, as `minibert explain` prints them, and stored
const SCALE = 10 ** DIGITS; // an array element n is the number n / SCALE
const NUM = DATA.numbers; // explain's step numbers, by page step: one numbering for both

let COMMON = null; // the arrays every layer shares (Tensor of integers), once decoded
let PREVIEW = null; // every layer's probabilities in 16 levels, for the model view
const LAYERS = []; // LAYERS[l - 1]: encoder layer l's arrays, decoded the first time layer l is shown
const state = {
  layer: DATA.initial.layer, // encoder layer 1..L of the head view and the formula steps
  head: DATA.initial.head, // head 0..h-1 of the formula steps
  token: DATA.initial.token, // token position 0..S-1: the query of the formula steps
  key: DATA.initial.token, // token position 0..S-1: the key of the neuron view
  shown: new Set([DATA.initial.head]), // heads drawn in the head view ("all" draws every one, as bertviz does)
  filter: "all", // with a sentence pair, bertviz's filter of the head and model views: all, AA, AB, BA, BB
  open: new Set(), // vectors whose numbers are shown (their data-key and label)
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

/** The integer arrays of one part: base-85 text of deflated byte planes (every number's first byte, then
    every second byte, ...) of little-endian uint32 zigzag numbers (2n for n >= 0, -2n - 1 for n < 0). */
async function decodePart(part) {
  const packed = fromBase85(part.blob, part.blob_bytes);
  const inflated = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
  const planes = new Uint8Array(await new Response(inflated).arrayBuffer());
  const count = planes.length / 4;
  const numbers = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const z = (planes[i] | (planes[count + i] << 8) | (planes[2 * count + i] << 16) | (planes[3 * count + i] << 24)) >>> 0;
    numbers[i] = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }
  const arrays = {};
  for (const [name, { offset, shape }] of Object.entries(part.arrays)) {
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

// ---- the predictions of minibert/teaching/view_pack.py, operation for operation: + - * / floor and sqrt only,
// so that they give the same double as NumPy there, and prediction + stored correction is the stored truth.
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
const INV_FACT = [];
for (let n = 0, f = 1; n <= 12; n++, f *= Math.max(n, 1)) INV_FACT.push(1 / f);
const ERF_P = 0.3275911;
const [A1, A2, A3, A4, A5] = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];
const roundUnits = (x) => Math.floor(x * SCALE + 0.5);

/** 2^-k for k = 0..200, exactly (halving a power of two is exact). */
const HALVES = [1];
for (let k = 1; k <= 200; k++) HALVES.push(HALVES[k - 1] * 0.5);
const pow2 = (k) => HALVES[-k]; // k <= 0 here: exp of x <= 0 only

/** exp(x) for x <= 0: x = k ln 2 + r, Taylor series of exp(r), times 2^k; exp(-80) below -80. */
function expDet(x) {
  x = Math.max(x, -80);
  const k = Math.floor(x * LOG2E + 0.5);
  const r = x - k * LN2;
  let p = INV_FACT[12];
  for (let n = 11; n >= 0; n--) p = p * r + INV_FACT[n];
  return p * pow2(k);
}

/** erf(z) to 1.5e-7 (Abramowitz and Stegun 7.1.26). */
function erfDet(z) {
  const az = Math.abs(z);
  const t = 1 / (1 + ERF_P * az);
  const poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
  const y = 1 - poly * expDet(-az * az);
  return z < 0 ? -y : y;
}

/** The stored array `name`, or its prediction plus the stored correction `name.fix`. */
function restore(part, name, predict) {
  if (part[name]) return part[name];
  const fix = part[`${name}.fix`];
  const pred = predict();
  const out = new Int32Array(fix.data.length);
  for (let i = 0; i < out.length; i++) out[i] = pred[i] + fix.data[i];
  return new Tensor(out, fix.shape);
}

function predictScores(q, k) {
  const [h, , d] = q.shape;
  const out = new Float64Array(h * S * S);
  const den = SCALE * CFG.divisor; // √d; DeBERTa: √(d (1 + #terms)), its float32 root
  const Q = q.data;
  const K = k.data;
  for (let j = 0; j < h; j++)
    for (let a = 0; a < S; a++) {
      const qa = (j * S + a) * d;
      for (let b = 0; b < S; b++) {
        const kb = (j * S + b) * d;
        let dot = 0;
        for (let i = 0; i < d; i++) dot += Q[qa + i] * K[kb + i]; // exact: integers below 2^53 (checked in Python)
        out[(j * S + a) * S + b] = Math.floor(dot / den + 0.5);
      }
    }
  return out;
}

/** The softmax of the (masked) scores over the keys each query may see (`seen(a, b)`; every key when null). */
function predictProbs(scores, seen = null) {
  const out = new Float64Array(scores.data.length);
  const e = new Float64Array(S);
  for (let row = 0; row < out.length / S; row++) {
    const s = scores.data.subarray(row * S, row * S + S);
    const a = row % S; // the query
    const sees = (b) => seen === null || seen(a, b);
    let max = -Infinity;
    for (let b = 0; b < S; b++) if (sees(b)) max = Math.max(max, s[b] / SCALE);
    let total = 0;
    for (let b = 0; b < S; b++) {
      e[b] = sees(b) ? expDet(s[b] / SCALE - max) : 0;
      total = total + e[b];
    }
    for (let b = 0; b < S; b++) out[row * S + b] = roundUnits(e[b] / total);
  }
  return out;
}

/** A gated FFN's act(pre) × gate, element by element, in exact integers over SCALE. */
function predictProduct(a, g) {
  return Float64Array.from(a.data, (x, i) => Math.floor((x * g.data[i]) / SCALE + 0.5));
}

function predictContext(probs, v) {
  const [h, , d] = v.shape;
  const out = new Float64Array(h * S * d);
  const sum = new Float64Array(d);
  const P = probs.data;
  const V = v.data;
  for (let j = 0; j < h; j++)
    for (let a = 0; a < S; a++) {
      sum.fill(0);
      for (let b = 0; b < S; b++) {
        const p = P[(j * S + a) * S + b];
        if (p === 0) continue; // adds 0: the exact integer sum is the same
        const vb = (j * S + b) * d;
        for (let i = 0; i < d; i++) sum[i] += p * V[vb + i]; // exact integers, in key order
      }
      for (let i = 0; i < d; i++) out[(j * S + a) * d + i] = Math.floor(sum[i] / SCALE + 0.5);
    }
  return out;
}

function predictAct(pre) {
  const out = new Float64Array(pre.data.length);
  const relu = CFG.act === "relu";
  for (let i = 0; i < out.length; i++) {
    if (relu) out[i] = Math.max(pre.data[i], 0);
    else {
      const x = pre.data[i] / SCALE;
      out[i] = roundUnits(0.5 * x * (1 + erfDet(x / Math.SQRT2)));
    }
  }
  return out;
}

function predictLayerNorm(x, gamma, beta) {
  const H = x.shape[1];
  const out = new Float64Array(x.data.length);
  const dev = new Float64Array(H);
  for (let a = 0; a < S; a++) {
    const row = x.at(a);
    let total = 0;
    for (let i = 0; i < H; i++) total = total + row[i] / SCALE;
    const mu = total / H;
    let sq = 0;
    for (let i = 0; i < H; i++) {
      dev[i] = row[i] / SCALE - mu;
      sq = sq + dev[i] * dev[i];
    }
    const root = Math.sqrt(sq / H + CFG.eps);
    for (let i = 0; i < H; i++) out[a * H + i] = roundUnits(gamma[i] * (dev[i] / root) + beta[i]);
  }
  return out;
}

const plus = (...ts) => Float64Array.from(ts[0].data, (_, i) => ts.reduce((s, t) => s + t.data[i], 0));

/** The keys query a may see in layer l: every key, or within the window on a local (sliding) layer. */
const seenIn = (l) => (CFG.kinds && CFG.kinds[l - 1] === "sliding_attention" ? (a, b) => Math.abs(a - b) <= CFG.window : null);

/** Encoder layer l's arrays, decoded and rebuilt the first time it is needed (its input is layer l - 1's
    output, so that layer comes first). The same predictions as minibert/teaching/view.py's _layer_part. */
async function layer(l) {
  if (LAYERS[l - 1]) return LAYERS[l - 1];
  const X = l === 1 ? COMMON.hidden0 : (await layer(l - 1)).ln_2;
  const p = await decodePart(DATA.layers[l - 1]);
  const ln = DATA.layer_norms[l - 1];
  const a = { ...p };
  if (CFG.pre_ln) // what the attention reads: LayerNorm_1(X), or X itself (no norm in the first layer)
    a.attention_input = restore(p, "attention_input", () => (ln.ln_0_gamma ? predictLayerNorm(X, ln.ln_0_gamma, ln.ln_0_beta) : X.data));
  a.scores = restore(p, "scores", () => predictScores(p.q, p.k));
  if (p.c2p || p.p2c) a.bias = restore(p, "bias", () => plus(...[p.c2p, p.p2c].filter(Boolean))); // DeBERTa
  else if (COMMON.bias) a.bias = COMMON.bias; // MPNet: the same B in every layer
  a.masked_scores = a.bias ? restore(p, "masked_scores", () => plus(a.scores, a.bias)) : a.scores;
  a.probs = restore(p, "probs", () => predictProbs(a.masked_scores, seenIn(l)));
  a.context = restore(p, "context", () => predictContext(a.probs, p.v));
  a.residual_1 = restore(p, "residual_1", () => plus(X, p.attention_output));
  a.ln_1 = restore(p, "ln_1", () => predictLayerNorm(a.residual_1, ln.ln_1_gamma, ln.ln_1_beta));
  a.ffn_act = restore(p, "ffn_act", () => (CFG.gated ? predictProduct(p.ffn_activated, p.ffn_gate) : predictAct(p.ffn_pre)));
  a.residual_2 = restore(p, "residual_2", () => plus(CFG.pre_ln ? a.residual_1 : a.ln_1, p.ffn_output));
  a.ln_2 = restore(p, "ln_2", () => (CFG.pre_ln ? a.residual_2.data : predictLayerNorm(a.residual_2, ln.ln_2_gamma, ln.ln_2_beta)));
  if (p.final_ln || p["final_ln.fix"]) a.final_ln = restore(p, "final_ln", () => predictLayerNorm(a.ln_2, DATA.final_norm.gamma, DATA.final_norm.beta));
  LAYERS[l - 1] = a;
  return a;
}

function range(n) {
  return Array.from({ length: n }, (_, i) => i);
}

const fmt = (n) => (n / SCALE).toFixed(DIGITS); // an element of a stored array
const fmtStat = (x) => (typeof x === "number" ? x.toFixed(DIGITS) : String(x)); // a statistic, stored rounded
const fmtErr = (e) => (typeof e === "number" ? e.toExponential(1) : String(e));
// neighbouring heads get far-apart hues (the golden angle), so any two shown together are told apart
const headColour = (j) => `hsl(${Math.round((j * 137.5) % 360)}, 75%, 36%)`;
const tokenName = (t) => `${t} "${TOKENS[t]}"`;
// Sentence pairs, as bertviz splits them: sentence A is [CLS] A [SEP], sentence B the rest (B and its [SEP]).
const B_START = DATA.b_start; // null without a pair
const sentence = (t) => (B_START !== null && t >= B_START ? "B" : "A");
/** Whether the line from query q to key k is drawn under the chosen filter ("AB": A's queries, B's keys). */
const shownPair = (q, k) => state.filter === "all" || (state.filter[0] === sentence(q) && state.filter[1] === sentence(k));
const FILTERS = [["all", "All"], ["AA", "Sentence A → Sentence A"], ["AB", "Sentence A → Sentence B"],
  ["BA", "Sentence B → Sentence A"], ["BB", "Sentence B → Sentence B"]];

// The quantities the page shows, by layer (the trace's own names).
const X = (l, t) => (l === 1 ? COMMON.hidden0.at(t) : LAYERS[l - 2].ln_2.at(t)); // hidden_states[l - 1]
// hidden_states[L] of a pre-LN encoder is its last layer's output after the final norm
const hiddenAt = (i, t) => (i === 0 ? COMMON.hidden0.at(t) : (LAYERS[i - 1].final_ln ?? LAYERS[i - 1].ln_2).at(t));
const embSum = () => restore(COMMON, "embeddings.sum", () =>
  plus(...["embeddings.word", "embeddings.position", "embeddings.token_type"].filter((k) => COMMON[k]).map((k) => COMMON[k])));
// e = LayerNorm(sum); without a projection (BERT) it is hidden_states[0] itself, embedded once
const embOutput = (t) => (COMMON["embeddings.output"] ? COMMON["embeddings.output"].at(t) : COMMON.hidden0.at(t));
const concat = (a, t) => Int32Array.from(range(CFG.h).flatMap((j) => Array.from(a.context.at(j, t))));
const relu = (a) => Int32Array.from(a, (x) => Math.max(0, x));

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
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An SVG element. */
function svg(tag, attrs = {}, ...children) {
  const node = setAttributes(document.createElementNS(SVGNS, tag), attrs);
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** data-layer, data-head, ... from {layer, head, token, start}: which slice of which array a row shows. */
function dataAttrs(where) {
  const out = {};
  for (const [k, v] of Object.entries(where)) out[`data-${k}`] = v;
  return out;
}

/** Enter or Space on a focusable element that is not a button does what a click does. */
function activate(action) {
  return (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      action(e);
    }
  };
}

/** A diverging colour for x against the largest |x| of its vector: blue negative, white 0, red positive. */
function colour(x, max) {
  const v = Math.max(-1, Math.min(1, x / (max || 1)));
  const a = Math.abs(v);
  const [r, g, b] = v < 0 ? [33, 102, 172] : [178, 24, 43];
  const mix = (c) => Math.round(255 + (c - 255) * Math.sqrt(a));
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

/** A vector drawn as a colour strip, one cell per number (a canvas; hover tells the index and the number). */
function strip(values, { max = null, mark = null, width = 1, height = 16, title = "" } = {}) {
  const n = values.length;
  const m = max ?? Math.max(1, ...Array.from(values, (x) => Math.abs(x)));
  const cell = Math.max(width, n <= 64 ? 6 : n <= 512 ? 1 : 0.5);
  const canvas = el("canvas", { class: "strip", width: Math.ceil(n * cell), height, "aria-hidden": "true" });
  const ctx = canvas.getContext("2d");
  Array.from(values).forEach((x, i) => {
    ctx.fillStyle = colour(x, m);
    ctx.fillRect(i * cell, mark && mark(i) ? 0 : 2, Math.max(cell, 1), mark && mark(i) ? height : height - 4);
  });
  canvas.addEventListener("mousemove", (e) => {
    const i = Math.min(n - 1, Math.floor((e.offsetX / canvas.clientWidth) * n));
    canvas.title = `${title}[${i}] = ${fmt(values[i])}`;
  });
  return canvas;
}

/** One vector as a row: a label, its colour strip, and its numbers on demand ("numbers" shows them all).
    `key` is the trace's name of the array, `where` the slice (data attributes read by the browser test). */
function vector(label, values, key, where = {}, { mark = null, max = null } = {}) {
  const id = `${key}:${label}`;
  const open = state.open.has(id);
  const row = el("div", { class: open ? "vec open" : "vec", "data-key": key, ...dataAttrs(where) });
  const nums = el("div", { class: "nums" });
  Array.from(values).forEach((x, i) => {
    nums.append(el("span", { class: mark && mark(i) ? "n mark" : "n", title: `[${i}]` }, fmt(x)));
  });
  const toggle = () => {
    if (state.open.has(id)) state.open.delete(id);
    else state.open.add(id);
    row.classList.toggle("open");
    button.setAttribute("aria-expanded", row.classList.contains("open"));
  };
  const n = values.length;
  const button = el("button", { class: "all", onclick: toggle, "aria-expanded": open,
    title: `show the ${n} numbers` }, n === 1 ? fmt(values[0]) : `${n} numbers`);
  row.append(el("span", { class: "label" }, math(label)),
    n > 1 ? strip(values, { mark, max, title: label }) : el("span", {}), button, nums);
  return row;
}

/** Vectors over the S keys (scores, mask, probabilities) as a table under the key tokens, in a box that
    scrolls sideways on its own; `bars` draws each number as a bar too (for probabilities). A key's column
    header chooses that key for the neuron view. */
function keyTable(rows) {
  const head = el("tr", {}, el("th", {}, "key →"), TOKENS.map((tok, s) =>
    el("th", { title: `key ${s}: choose it for the neuron view`, class: s === state.key ? "key chosen" : "key",
      tabindex: 0, "data-key-token": s, onclick: () => update({ key: s }), onkeydown: activate(() => update({ key: s })) },
    tok)));
  const body = rows.map(({ label, values, key, where, bars, plain }) =>
    el(
      "tr",
      plain ? { class: "derived" } : { class: "vec", "data-key": key, ...dataAttrs(where) },
      el("th", {}, math(label)),
      Array.from(values).map((x, s) => {
        const text = plain ? x : Number.isFinite(x) && Math.abs(x) < 1e30 ? fmt(x) : x.toExponential(1);
        // a probability is drawn as a bar standing on its number, 40 px for 1
        const bar = bars ? el("div", { class: "bar", style: `height: ${((40 * x) / SCALE).toFixed(1)}px` }) : null;
        return el("td", { class: `${plain ? "d" : "n"}${bars ? " bars" : ""}${s === state.key ? " chosen" : ""}` },
          bar, text);
      }),
    ),
  );
  return el("div", { class: "scroll" }, el("table", { class: "keys" }, head, body));
}

/** A statistic the page prints (a mean, a norm, a cosine), computed in float64 when the page was built,
    marked for the browser test. */
function stat(name, value, where = {}) {
  return el("span", { class: "stat", "data-stat": name, ...dataAttrs(where) }, fmtStat(value));
}

/** explain's float64 checks that belong to `step`, their text typeset like the formulas. */
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
        el("span", { class: "what" }, math(typeset(c.what))),
        ": max error ",
        el("span", { class: "err" }, fmtErr(c.error)),
        ` (tolerance ${fmtErr(c.tol)})`,
      ),
    ),
  );
}

/** explain's ASCII math as the page writes formulas: sqrt(d_k) -> √d_k, K^T -> Kᵀ, * -> ·. */
function typeset(text) {
  return text.replace(/sqrt\(([^()]*)\)/g, "√$1").replace(/\^T\b/g, "ᵀ").replace(/ \* /g, " · ")
    .replace(/\.\.\./g, "…").replace(/->/g, "→");
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

/** One step of the forward pass: explain's number and a title, formula, shapes, numbers (body), explain's
    checks and, where the article departs, a link to the erratum. */
function card({ id, title, formula, shapes, body, checks = null, erratum = null }) {
  const link = erratum ? el("a", { href: `#${ERRATA[erratum].id}` }, ERRATA[erratum].title) : null;
  const number = NUM[id] ? `${NUM[id]} ` : "";
  return el(
    "article",
    { class: "step", id: `step-${id}`, "data-step": id },
    el("h3", {}, number, math(title)),
    el("div", { class: "formula" }, math(formula)),
    el("div", { class: "shapes" }, "shapes: ", math(shapes)),
    body,
    checks,
    link ? el("p", { class: "erratum" }, "Where the article differs: ", link) : null,
  );
}

// ------------------------------------------------------------------ controls

/** The layer, head, query and key selectors at the top; every view follows them. */
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
  const tokens = TOKENS.map((tok, t) => [t, `${t} ${tok}`]);
  return [
    select("layer", "Layer ", range(CFG.L).map((i) => [i + 1, `${i + 1} of ${CFG.L}`]), state.layer, (layer) =>
      update({ layer }),
    ),
    select("head", "Head ", range(CFG.h).map((j) => [j, `${j}`]), state.head, (head) =>
      update({ head, shown: new Set([head]) }),
    ),
    select("token", "Query ", tokens, state.token, (token) => update({ token })),
    select("key", "Key ", tokens, state.key, (key) => update({ key })),
  ];
}

function syncControls() {
  for (const name of ["layer", "head", "token", "key"]) document.getElementById(name).value = state[name];
}

// ------------------------------------------------------------------ 1. tokens and embeddings

/** Up/Down (and Home/End) on a list of token rows moves the chosen token. */
function tokenKeys(t, choose) {
  return (e) => {
    const to = { ArrowUp: t - 1, ArrowDown: t + 1, Home: 0, End: S - 1 }[e.key];
    if (to !== undefined && to >= 0 && to < S) {
      e.preventDefault();
      choose(to);
      requestAnimationFrame(() => document.querySelector(`[data-focus="${e.target.dataset.focus}"][data-token="${to}"]`)?.focus());
    } else activate(() => choose(t))(e);
  };
}

/** The tokens with their ids, then the embedding of the chosen token: word + position + type -> LayerNorm. */
function tokensView() {
  const t = state.token;
  const types = COMMON["embeddings.token_type"]; // none for DistilBERT
  const projected = COMMON["embeddings.output"] !== undefined; // ELECTRA, ALBERT: e is projected to H
  const E = CFG.E;
  const head = ["position", "token", "id", "position row", "type"].map((name) => el("th", {}, name));
  const choose = (s) => update({ token: s });
  const table = el(
    "table",
    { class: "tokens" },
    el("tr", {}, head),
    TOKENS.map((tok, s) =>
      el(
        "tr",
        { class: s === t ? "chosen" : null, "data-token": s, "data-focus": "tokens", tabindex: 0,
          "aria-selected": s === t, onclick: () => choose(s), onkeydown: tokenKeys(s, choose) },
        el("td", {}, s),
        el("td", { class: "tok" }, tok),
        el("td", {}, DATA.ids[s]),
        el("td", {}, DATA.positions[s]),
        el("td", {}, types ? DATA.types[s] : "none"),
      ),
    ),
  );
  const where = { token: t };
  const positions = COMMON["embeddings.position"]; // none for DeBERTa-v3, ModernBERT, NomicBERT
  const rows = [
    vector("word[id]", COMMON["embeddings.word"].at(t), "embeddings.word", where),
    positions ? vector("position[pos]", positions.at(t), "embeddings.position", where) : null,
    types ? vector("type[type]", types.at(t), "embeddings.token_type", where) : null,
    vector("sum", embSum().at(t), "embeddings.sum", where),
    vector("e = LayerNorm(sum)", embOutput(t), "embeddings.output", where),
    projected ? vector("x = e W_proj + b_proj", COMMON.hidden0.at(t), "embeddings.projection", where) : null,
  ];
  const parts = ["word[id]", positions ? "position[pos]" : null, types ? "type[type]" : null].filter(Boolean).join(" + ") +
    (types ? "" : "   (no token-type table)") + (positions ? "" : "   (no position table: positions enter in the attention)");
  return [
    el("p", {}, `The text is split into ${S} tokens (special tokens included). Each token's id picks a row of `,
      `the word table${positions ? ", its place a row of the position table" : ""}` +
      `${types ? ", its segment a row of the type table" : ""}: `,
      "their sum, normalised, is hidden_states[0], the input of layer 1. Click a token (or Tab to it, then ",
      "↑ ↓ or Enter) to follow it. Each vector is drawn as a strip, one cell per number (blue negative, red ",
      "positive); its button shows the numbers."),
    el("div", { class: "scroll tokens-box" }, table),
    card({
      id: "embeddings",
      title: `Embeddings of token ${tokenName(t)}`,
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
          "aria-pressed": state.shown.has(j),
          title: `head ${j}: click to show it alone, Shift+click to add it`,
          onclick: (e) => pick(j, e.shiftKey),
        },
        String(j),
      ),
    ),
    el("button", { class: "head-all", onclick: () => update({ shown: new Set(range(CFG.h)) }) }, "all"),
  );
}

/** bertviz's sentence filter (a pair only): which queries (A or B) and keys (A or B) the head view and the
    model view draw; probabilities stay the model's (not renormalised over the shown keys). */
function pairFilter(id) {
  if (B_START === null) return null;
  return el(
    "label",
    { class: "filter" },
    "Attention: ",
    el(
      "select",
      { id, class: "pair-filter", onchange: (e) => update({ filter: e.target.value }) },
      FILTERS.map(([v, text]) => el("option", { value: v, selected: v === state.filter }, text)),
    ),
  );
}

/** bertviz's head view for the chosen layer: each token on the left (the query) attends to the tokens on the
    right (the keys); a line's opacity is the probability P[query, key], its colour the head's. The chosen
    query's lines are strong; other queries' lines are faint, and left out below 1%. Hovering a token
    highlights its lines (a query's, or a key's incoming ones); a click (or Enter) chooses it. */
function headView() {
  const l = state.layer;
  const a = LAYERS[l - 1];
  const rowH = 20;
  const top = 26;
  const longest = Math.max(...TOKENS.map((tok) => tok.length));
  const xq = Math.min(170, 14 + 7.8 * longest);
  const xk = xq + 150;
  const width = xk + Math.min(170, 14 + 7.8 * longest) + 50;
  const height = top + S * rowH + 6;
  const y = (s) => top + s * rowH + rowH / 2;
  const root = svg("svg", { id: "head-view", width, height, viewBox: `0 0 ${width} ${height}`, "data-layer": l,
    "data-heads": [...state.shown].join(","), role: "group", "aria-label": "head view" });
  root.append(
    svg("text", { x: xq, y: 14, "text-anchor": "end", class: "axis" }, "query"),
    svg("text", { x: xk, y: 14, class: "axis" }, "key"),
  );
  const lines = svg("g", { class: "lines" });
  const one = state.shown.size === 1 ? [...state.shown][0] : null;
  const weights = [];
  /** The lines, strong for the chosen query or for the hovered token ({side: "q" | "k", t}); the keys'
      labels give the weights of the query shown strong. Only these are redrawn on hover. */
  const paint = (hover = null) => {
    // faint lines (other queries) as one path per head and opacity level (8 levels): a few elements, not S x S
    const faint = [];
    const strong = [];
    for (const j of state.shown) {
      const levels = Array.from({ length: 8 }, () => []);
      for (let q = 0; q < S; q++) {
        const P = a.probs.at(j, q);
        const isStrong = hover ? hover.side === "q" && q === hover.t : q === state.token;
        for (let k = 0; k < S; k++) {
          if (!shownPair(q, k)) continue;
          const lit = isStrong || (hover && hover.side === "k" && k === hover.t);
          const p = P[k] / SCALE;
          if (!lit) {
            if (p >= 0.01) levels[Math.min(7, Math.floor(p * 8))].push(`M${xq + 6} ${y(q)}L${xk - 6} ${y(k)}`);
            continue;
          }
          strong.push(svg("line", {
            x1: xq + 6, y1: y(q), x2: xk - 6, y2: y(k), stroke: headColour(j),
            "stroke-width": 1.5 + 6 * p, // the chosen token's lines: wider for more weight
            "stroke-opacity": p.toFixed(DIGITS),
            "data-head": j, "data-q": q, "data-k": k, "data-p": fmt(P[k]), class: "strong",
          }));
        }
      }
      levels.forEach((d, v) => {
        if (d.length) faint.push(svg("path", { d: d.join(""), stroke: headColour(j), "stroke-width": 1.5,
          "stroke-opacity": ((0.25 * (v + 0.5)) / 8).toFixed(3), fill: "none", class: "faint" }));
      });
    }
    lines.replaceChildren(...faint, ...strong);
    // with one head shown, each key is labelled with the weight the query shown strong gives it
    const query = hover && hover.side === "q" ? hover.t : state.token;
    if (one !== null) weights.forEach((w, s) => (w.textContent = fmt(a.probs.at(one, query)[s])));
  };
  root.append(lines);
  const choose = (side, s) => update(side === "q" ? { token: s } : { key: s });
  TOKENS.forEach((tok, s) => {
    for (const side of ["q", "k"]) {
      const chosen = (side === "q" ? state.token : state.key) === s;
      const weight = side === "k" && one !== null ? svg("tspan", { class: "p", dx: 8, "data-k": s }) : null;
      if (weight) weights.push(weight);
      // outside the filter's sentence on this side: dimmed (still a token to choose)
      const out = state.filter !== "all" && sentence(s) !== state.filter[side === "q" ? 0 : 1];
      root.append(svg("text", {
        x: side === "q" ? xq : xk, y: y(s) + 4, "text-anchor": side === "q" ? "end" : "start",
        class: `tok${chosen ? " chosen" : ""}${out ? " out" : ""}`, "data-token": s, "data-sentence": sentence(s), "data-side": side, "data-focus": `head-${side}`,
        tabindex: 0, role: "button", "aria-label": `${side === "q" ? "query" : "key"} ${tokenName(s)}`,
        onclick: () => choose(side, s), onmouseenter: () => paint({ side, t: s }), onmouseleave: () => paint(),
        onfocus: () => paint({ side, t: s }), onblur: () => paint(),
        onkeydown: tokenKeys(s, (to) => choose(side, to)),
      }, tok, weight));
    }
  });
  paint();
  const names = [...state.shown].sort((x, z) => x - z).join(", ");
  return el(
    "div",
    { class: "panel" },
    el("h3", {}, `Head view: layer ${l}, head${state.shown.size > 1 ? "s" : ""} ${names}`),
    el("p", { class: "note" }, "Each line joins a query (left) to a key (right); its opacity is the attention ",
      "probability. Hover a token to see its lines; click it (or Tab to it, then Enter, ↑ ↓) to choose it as ",
      "the query (left) or the key of the neuron view (right)."),
    headPicker(),
    pairFilter("filter-head"),
    el("div", { class: "scroll view-box" }, root),
  );
}

/** bertviz's model view: every layer (rows) x head (columns) as a small head view, drawn on a canvas from the
    probabilities in 16 levels; a click (or Enter; arrow keys move) opens that layer and head. */
function modelView() {
  const grid = el("div", { id: "model-view", style: `grid-template-columns: auto repeat(${CFG.h}, 1fr)`, role: "grid" });
  const columns = range(CFG.h).map((j) => el("span", { class: "col", style: `color: ${headColour(j)}` }, `head ${j}`));
  grid.append(el("span", {}), ...columns);
  const w = 64;
  const hgt = Math.max(40, Math.min(120, 4 * S + 8));
  const open = (l, j) => {
    update({ layer: l, head: j, shown: new Set([j]) });
    document.getElementById("attention-head").scrollIntoView({ block: "start" });
  };
  const move = (l, j) => (e) => {
    const to = { ArrowLeft: [l, j - 1], ArrowRight: [l, j + 1], ArrowUp: [l - 1, j], ArrowDown: [l + 1, j] }[e.key];
    if (to && to[0] >= 1 && to[0] <= CFG.L && to[1] >= 0 && to[1] < CFG.h) {
      e.preventDefault();
      grid.querySelector(`canvas[data-layer="${to[0]}"][data-head="${to[1]}"]`).focus();
    } else activate(() => update({ layer: l, head: j, shown: new Set([j]) }))(e);
  };
  for (let l = 1; l <= CFG.L; l++) {
    grid.append(el("span", { class: "row" }, `layer ${l}`));
    for (let j = 0; j < CFG.h; j++) {
      const canvas = el("canvas", {
        width: w, height: hgt, class: "thumb", "data-layer": l, "data-head": j, tabindex: 0, role: "button",
        title: `layer ${l}, head ${j}: click to open`, "aria-label": `open layer ${l}, head ${j}`,
        onclick: () => open(l, j), onkeydown: move(l, j),
      });
      const ctx = canvas.getContext("2d");
      ctx.strokeStyle = headColour(j);
      const y = (s) => 4 + ((hgt - 8) * (s + 0.5)) / S;
      for (let q = 0; q < S; q++) {
        const P = PREVIEW.at(l - 1, j, q);
        for (let k = 0; k < S; k++) {
          if (!P[k] || !shownPair(q, k)) continue;
          ctx.globalAlpha = P[k] / 15;
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
      "Click one (or Tab to it, arrows, Enter) to open it."),
    pairFilter("filter-model"),
    el("div", { class: "scroll view-box" }, grid),
  );
}

function markCurrentThumbnail() {
  for (const c of document.querySelectorAll("#model-view .thumb")) {
    c.classList.toggle("current", Number(c.dataset.layer) === state.layer && Number(c.dataset.head) === state.head);
  }
}

/** bertviz's neuron view for the chosen layer, head, query t and key k: q_t, k_k and their product element by
    element as colour strips; the products sum to q·k, which over √d is the score. */
function neuronView() {
  const l = state.layer;
  const j = state.head;
  const t = state.token;
  const k = state.key;
  const a = LAYERS[l - 1];
  const q = a.q.at(j, t);
  const kk = a.k.at(j, k);
  const prod = Array.from(q, (x, i) => (x * kk[i]) / SCALE); // in units, from the printed q and k
  const max = Math.max(...Array.from(q, Math.abs), ...Array.from(kk, Math.abs));
  const pmax = Math.max(...prod.map(Math.abs));
  const score = a.scores.at(j, t)[k];
  return el(
    "div",
    { class: "panel neuron", id: "neuron-view" },
    el("h3", {}, `Neuron view: layer ${l}, head ${j}, query ${tokenName(t)} · key ${tokenName(k)}`),
    el("p", { class: "note" }, `The ${CFG.d} numbers of the query and of the key, and their products: the products `,
      "sum to q·k, and q·k / √d", el("sub", {}, "k"), " is the score (then softmax over the keys). ",
      CFG.rotary ? "Here q and k are the turned ones (the rotary step). " : "",
      CFG.family === "mpnet" || CFG.family === "deberta-v2" ? "The position bias B is added to it after. " : "", "Red is positive, ",
      "blue negative; hover a strip for its numbers. Choose the key on the right of the head view or above the ",
      "score tables."),
    el("div", { class: "neuron-rows" },
      vector(`q (query ${t})`, q, "q", { layer: l, head: j, token: t }, { max }),
      vector(`k (key ${k})`, kk, "k", { layer: l, head: j, token: k }, { max }),
      el("div", { class: "dvec" }, el("span", { class: "label" }, "q ⊙ k"),
        strip(prod, { max: pmax, title: "q ⊙ k" }), el("span", {}, "Σ = ", (prod.reduce((x, z) => x + z, 0) / SCALE).toFixed(DIGITS)))),
    el("p", {}, `score = Σ(q ⊙ k) / ${CFG.family === "deberta-v2" ? CFG.divisor.toFixed(DIGITS) : `√${CFG.d}`} = `,
      el("span", { class: "vec inline", "data-key": "scores", "data-layer": l, "data-head": j, "data-token": t,
        "data-start": k }, el("span", { class: "n" }, fmt(score))),
      "; P = ", el("span", { class: "vec inline", "data-key": "probs", "data-layer": l, "data-head": j,
        "data-token": t, "data-start": k }, el("span", { class: "n" }, fmt(a.probs.at(j, t)[k])))),
  );
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
    l, j, t, a: LAYERS[l - 1],
    at: { layer: l, head: j, token: t }, // where a per-head row comes from
    lt: { layer: l, token: t }, // where a per-token row comes from
    checks: (step) => checkList(checks, step, { layer: l }),
  };
  // the family's own steps: pre-LN's first norm, the rotation of q and k, a position bias, a gated FFN
  const steps = [inputStep, CFG.pre_ln && attentionNormStep, qkvStep, CFG.rotary && rotaryStep, scoresStep,
    c.a.bias && biasStep, maskStep, softmaxStep, contextStep, concatStep, multiHeadStep, residual1Step,
    layerNorm1Step, CFG.gated ? gatedFfnStep : ffnStep, residual2Step, layerNorm2Step].filter(Boolean);
  const other = c.checks("other");
  return [
    el("p", {}, `Encoder layer ${l} of ${CFG.L}, head ${j}, token ${tokenName(t)}. `,
      "Each step has explain's number, its formula, the shapes, the numbers (a strip; its button shows them) ",
      "and the checks of minibert explain, which recomputes the step in float64 from the traced inputs, ",
      "independently of minibert's formula functions."),
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

function qkvStep({ l, j, t, a, at, checks }) {
  const { h, d } = CFG;
  // rotary families: q and k as projected, before the rotation of the next step
  const names = CFG.rotary ? ["q_unrotated", "k_unrotated", "v"] : ["q", "k", "v"];
  const max = Math.max(...names.flatMap((name) => Array.from(a[name].at(j, t), Math.abs)));
  const input = CFG.pre_ln ? "X here is LN_1(X), the step before (pre-LN). " : "";
  return card({
    id: "qkv",
    title: "Q, K, V: three projections of the same X, split into heads",
    formula: "Q = X W^Q + b^Q,  K = X W^K + b^K,  V = X W^V + b^V",
    shapes: `X ${shapeSH()} → Q, K, V ${shapeSH()} → split into ${h} heads (${h}, ${S}, ${d}); ` +
      `head ${j} is columns ${j * d}..${(j + 1) * d - 1}`,
    body: [
      input || CFG.rotary ? el("p", { class: "note" }, input, CFG.rotary ? "q and k before their rotation (next step)." : "") : null,
      names.map((name) => vector(`${name[0]}  (head ${j}, token ${t})`, a[name].at(j, t), name, at, { max })),
    ],
    checks: checks("qkv"),
    erratum: "qkv",
  });
}

/** Pre-LN (ModernBERT): the attention reads LayerNorm_1(X); X itself goes on to the residual sum. */
function attentionNormStep({ l, t, a, lt, checks }) {
  const identity = DATA.layer_norms[l - 1].ln_0_gamma === null;
  const st = (name) => DATA.stats[`${name}_input`][l - 1][t];
  return card({
    id: "attention_norm",
    title: "Pre-LN: the attention reads X normalised",
    formula: identity ? "LN_1 is the identity in this layer: its input, the embedding output, was normalised just before"
      : "LN_1(X) = γ₁ (X − μ) / √(σ² + ε) + β₁ over the H numbers of each token; X itself goes on to the residual",
    shapes: `${shapeSH()} → ${shapeSH()}`,
    body: [
      identity ? null : el("p", {}, `over the ${CFG.H} numbers of token ${tokenName(t)}: μ = `,
        stat("mean", st("mean"), { key: "input", ...lt }), ", σ² = ", stat("variance", st("variance"), { key: "input", ...lt }),
        `, ε = ${CFG.eps}`),
      vector(`LN_1(X)[${t}]`, a.attention_input.at(t), "attention_input", lt),
    ],
    checks: checks("attention_norm"),
  });
}

/** RoPE (ModernBERT, NomicBERT): each pair (x_i, x_i+d/2) of q and k turns by the angle p w_i, p the position;
    the angle table of the chosen token, and q and k before and after. */
function rotaryStep({ l, j, t, a, at, checks }) {
  const { h, d } = CFG;
  const { theta, freq } = CFG.rotary[l - 1];
  const kind = CFG.kinds[l - 1] === "sliding_attention" ? "local (sliding window)" : "global";
  const others = [...new Set(CFG.rotary.map((r) => r.theta))].filter((x) => x !== theta); // ModernBERT: the other kind's
  const other = others.length ? ` (${kind === "global" ? "local" : "global"} layers: θ = ${others[0]})` : "";
  const cos = a.cos.at(t);
  const sin = a.sin.at(t);
  const table = el("table", { class: "keys angles" },
    el("tr", {}, ["i", "w_i = θ^(−2i/d)", `p w_i, p = ${t}`, "cos(p w_i)", "sin(p w_i)"].map((x) => el("th", {}, x))),
    range(d / 2).map((i) => el("tr", { class: "derived" }, el("td", { class: "d" }, i),
      el("td", { class: "d" }, freq[i].toPrecision(6)), el("td", { class: "d" }, (t * freq[i]).toPrecision(6)),
      el("td", { class: "d" }, fmt(cos[i])), el("td", { class: "d" }, fmt(sin[i])))));
  const max = Math.max(...["q_unrotated", "q", "k_unrotated", "k"].flatMap((n) => Array.from(a[n].at(j, t), Math.abs)));
  return card({
    id: "rotary",
    title: "Rotary positions: q and k turned by their position",
    formula: `rotate(x) = x cos(p w) + [−x₂, x₁] sin(p w),  x = [x₁, x₂] its two halves;  w_i = θ^(−2i/d), θ = ${theta}`,
    shapes: `q, k (${h}, ${S}, ${d}) → turned, the same shape; cos, sin (${S}, ${d / 2}), one angle per pair`,
    body: [
      el("p", { class: "note" }, `Layer ${l} is ${kind}: θ = ${theta}${other}. Pair i, (x_i, x_i+${d / 2}), turns by `,
        "the angle p w_i: the first pairs fast, the last barely. Turning q by its position and k by its own ",
        "leaves q·k depending on the distance between the two only: this is how positions enter."),
      el("div", { class: "scroll" }, table),
      vector(`cos(p w_i), p = ${t}`, cos, "cos", { layer: l, token: t }),
      vector(`sin(p w_i), p = ${t}`, sin, "sin", { layer: l, token: t }),
      vector(`q before (head ${j}, token ${t})`, a.q_unrotated.at(j, t), "q_unrotated", at, { max }),
      vector("q turned", a.q.at(j, t), "q", at, { max }),
      vector(`k before (token ${t})`, a.k_unrotated.at(j, t), "k_unrotated", at, { max }),
      vector("k turned", a.k.at(j, t), "k", at, { max }),
    ],
    checks: checks("rotary"),
  });
}

function scoresStep({ j, t, a, at, checks }) {
  const { h, d } = CFG;
  const formula = CFG.family === "deberta-v2"
    ? `scores = Q Kᵀ / √(d_k (1 + #terms)),   d_k = ${d}, ${1 + CFG.terms.length} terms: ${CFG.divisor.toFixed(DIGITS)} (a float32 root)`
    : `scores = Q Kᵀ / √d_k,   d_k = ${d}, √d_k = ${Math.sqrt(d).toFixed(DIGITS)}`;
  return card({
    id: "scores",
    title: "Scores: how well the query matches each key",
    formula,
    shapes: `Q (${h}, ${S}, ${d}) × Kᵀ (${h}, ${d}, ${S}) → (${h}, ${S}, ${S}); ` +
      `here the row of query ${tokenName(t)}, head ${j}`,
    body: [keyTable([{ label: "q·k / √d_k", values: a.scores.at(j, t), key: "scores", where: at }]), neuronView()],
    checks: checks("scores"),
    erratum: "example",
  });
}

/** MPNet's bucket bias, DeBERTa's c2p and p2c with the positions they are gathered at: B, added to the scores. */
function biasStep({ l, j, t, a, at, checks }) {
  const h = CFG.h;
  const keys = range(S);
  const rows = [];
  if (CFG.family === "mpnet") {
    rows.push({ label: "j − i", values: keys.map((s) => s - t), plain: true },
      { label: "bucket(j − i)", values: COMMON["relative.bucket"].at(t), plain: true });
  } else {
    rows.push({ label: "δ(i, j)", values: COMMON["relative.delta"].at(t), plain: true });
    if (a.c2p) rows.push({ label: "c", values: COMMON["relative.c"].at(t), plain: true },
      { label: "c2p", values: a.c2p.at(j, t), key: "c2p", where: at });
    if (a.p2c) rows.push({ label: "c′", values: keys.map((s) => COMMON["relative.c_prime"].at(s)[t]), plain: true },
      { label: "p2c", values: a.p2c.at(j, t), key: "p2c", where: at });
  }
  rows.push({ label: "B", values: a.bias.at(j, t), key: "bias", where: at });
  const mpnet = CFG.family === "mpnet";
  return card({
    id: "bias",
    title: mpnet ? "Relative position bias: one learned number per distance bucket" : "Disentangled attention: c2p and p2c",
    formula: mpnet ? "B[h, i, j] = table[bucket(j − i), h]: buckets exact for small distances, log-spaced up to 128"
      : `B = c2p + p2c;  c2p[i, j] = Q_i · Kr_c / s, c = clip(δ(i, j) + K, 0, 2K − 1);  ` +
        `p2c[i, j] = K_j · Qr_c′ / s, c′ = clip(−δ(j, i) + K, 0, 2K − 1);  K = ${CFG.span}`,
    shapes: mpnet ? `table (32 buckets, ${h}) → B (${h}, ${S}, ${S}), computed once, added in every layer`
      : `Q (${h}, ${S}, ${CFG.d}) × Kr (${h}, ${2 * CFG.span}, ${CFG.d}) → (${h}, ${S}, ${2 * CFG.span}) → gathered at c → (${h}, ${S}, ${S})`,
    body: [
      el("p", { class: "note" }, mpnet ? `Query ${tokenName(t)}: the distance to each key, its bucket, and head ${j}'s number for it.`
        : `Query ${tokenName(t)}: δ is the (log-bucketed) relative position i − j; each term is one product with all ` +
          `${2 * CFG.span} relative embeddings, then a gather of the entries the pairs use.`),
      keyTable(rows),
    ],
    checks: checks("bias"),
  });
}

function maskStep({ l, j, t, a, at, checks }) {
  const h = CFG.h;
  const seen = seenIn(l);
  const local = seen !== null;
  const M = Int32Array.from(DATA.mask, (m) => (typeof m === "number" && Math.abs(m) < 1e5 ? m * SCALE : -2e9));
  const plusB = a.bias ? " + B" : "";
  // a local layer: M is a row per query, 0 within the window, the most negative float ("min") outside
  const row = local ? keysOf((s) => (seen(t, s) ? "0" : "min")) : null;
  const masked = a.masked_scores.at(j, t);
  return card({
    id: "mask",
    title: local ? "The mask: padding and the sliding window" : "The mask",
    formula: `masked = scores${plusB} + M,   M = 0 for a key the query may see, the most negative float otherwise`,
    shapes: local ? `M (${S}, ${S}), one row per query → masked (${h}, ${S}, ${S})`
      : `M (${S}) broadcast over heads and queries → masked (${h}, ${S}, ${S})`,
    body: [
      el("p", { class: "note" }, "This page shows the text's real tokens only, so no key is padding. With padding ",
        "(minibert explain --pad 2), padded keys get the most negative float: after the softmax, exactly 0.",
        local ? ` Layer ${l} is local: query i sees key j only if |i − j| ≤ ${CFG.window} (local_attention / 2); ` +
          `token ${tokenName(t)} sees keys ${Math.max(0, t - CFG.window)}..${Math.min(S - 1, t + CFG.window)}.` : "",
        CFG.kinds && !local ? ` Layer ${l} is global: every key (local layers: |i − j| ≤ ${CFG.window}).` : ""),
      keyTable(local ? [
        { label: "M", values: row, plain: true },
        { label: `scores${plusB} + M`, values: keysOf((s) => (seen(t, s) ? fmt(masked[s]) : "min")), plain: true },
      ] : [
        { label: "M", values: M, key: "mask", where: { layer: l } },
        { label: `scores${plusB} + M`, values: masked.map((x, s) => x + M[s]), key: "masked_scores", where: at },
      ]),
    ],
    checks: checks("mask"),
    erratum: "mask",
  });
}

const keysOf = (f) => range(S).map(f);

/** The softmax written out: exp(x − max) of every key (computed here from the printed scores), their sum, the
    denominator, and P = exp / Σ. */
function softmaxStep({ l, j, t, a, at, checks }) {
  const h = CFG.h;
  const P = a.probs.at(j, t);
  const seen = seenIn(l) ?? (() => true);
  const x = Array.from(a.masked_scores.at(j, t), (v) => v / SCALE);
  const max = Math.max(...x.filter((_, s) => seen(t, s)));
  const e = x.map((v, s) => (seen(t, s) ? Math.exp(v - max) : 0)); // outside a window: exp(min − m) = 0
  const total = e.reduce((u, v) => u + v, 0);
  const sum = DATA.stats.sum_probs[l - 1][j][t];
  return card({
    id: "softmax",
    title: "Softmax: the attention weights",
    formula: "P = softmax(masked) along the keys: P[t, s] = exp(masked[t, s] − m) / Σ_s' exp(masked[t, s'] − m)",
    shapes: `(${h}, ${S}, ${S}) → P (${h}, ${S}, ${S}); each row sums to 1`,
    body: [
      el("p", { class: "note" }, `m = max over the keys = ${max.toFixed(DIGITS)} (subtracting it changes nothing `,
        "but keeps exp from overflowing). exp(x − m) is computed here from the printed masked scores."),
      keyTable([
        { label: "exp(x − m)", values: e.map((v) => v.toFixed(DIGITS)), plain: true },
        { label: "P", values: P, key: "probs", where: at, bars: true },
      ]),
      el("p", {}, `denominator Σ exp(x − m) = ${total.toFixed(DIGITS)};  P = exp(x − m) / ${total.toFixed(DIGITS)};  `,
        "Σ P = ", stat("sum", sum, { key: "probs", ...at })),
    ],
    checks: checks("softmax"),
    erratum: "example",
  });
}

function contextStep({ l, j, t, a, at, checks }) {
  const { h, d } = CFG;
  const P = a.probs.at(j, t);
  const max = Math.max(...Array.from(a.v.at(j), Math.abs));
  // one row per key s: its weight P[t, s] and its value row v_s
  const rows = TOKENS.map((tok, s) =>
    el("div", { class: "wrow" },
      vector(`P[${t}, ${s}]`, [P[s]], "probs", { ...at, start: s }),
      vector(`× v_${s} "${tok}"`, a.v.at(j, s), "v", { layer: l, head: j, token: s }, { max })));
  return card({
    id: "context",
    title: "The weighted sum of V",
    formula: `head_${j}[t] = Σ_s P[t, s] v_s`,
    shapes: `P (${h}, ${S}, ${S}) × V (${h}, ${S}, ${d}) → head outputs (${h}, ${S}, ${d})`,
    body: [el("div", { class: "wsum" }, rows), vector(`= head_${j}[${t}]`, a.context.at(j, t), "context", at, { max })],
    checks: checks("context"),
  });
}

function concatStep({ j, t, a, lt, checks }) {
  const { h, d } = CFG;
  const ofHead = (i) => i >= j * d && i < (j + 1) * d;
  return card({
    id: "concat",
    title: "Concat(head_1, …, head_h): the heads side by side",
    formula: "Concat(head_1, …, head_h)",
    shapes: `${h} × (${S}, ${d}) → concat ${shapeSH()}`,
    body: [
      vector(`concat[${t}] (head ${j}: columns ${j * d}..${(j + 1) * d - 1}, marked)`, concat(a, t), "concat", lt,
        { mark: ofHead }),
    ],
    checks: checks("concat"),
  });
}

function multiHeadStep({ t, a, lt, checks }) {
  const H = CFG.H;
  return card({
    id: "multihead",
    title: "MultiHead(X) = Concat(head_1, …, head_h) W^O + b^O",
    formula: "MultiHead(X) = Concat(head_1, …, head_h) W^O + b^O",
    shapes: `concat ${shapeSH()} × W^O (${H}, ${H}) + b^O → ${shapeSH()}`,
    body: [vector(`MultiHead(X)[${t}]`, a.attention_output.at(t), "attention_output", lt)],
    checks: checks("multihead"),
  });
}

function residual1Step({ l, t, a, lt, checks }) {
  return card({
    id: "residual_1",
    title: "Residual: add the input back",
    formula: CFG.pre_ln ? "residual_1 = X + MultiHead(LN_1(X)): the input itself, not its norm (pre-LN)"
      : "residual_1 = X + MultiHead(X)",
    shapes: `${shapeSH()} + ${shapeSH()} → ${shapeSH()}`,
    body: [
      vector(`X[${t}]`, X(l, t), "hidden", { layer: l - 1, token: t }),
      vector(`+ MultiHead(X)[${t}]`, a.attention_output.at(t), "attention_output", lt),
      vector(`= residual_1[${t}]`, a.residual_1.at(t), "residual_1", lt),
    ],
    checks: checks("residual_1"),
    erratum: CFG.pre_ln ? null : "postln",
  });
}

/** μ and σ² of the row a LayerNorm normalises (float64, from the trace, when the page was built). */
function layerNormStats(name, l, lt) {
  const at = (stat) => DATA.stats[`${stat}_${name}`][l - 1][lt.token];
  return el("p", {}, `over the ${CFG.H} numbers of token ${tokenName(lt.token)}: μ = `,
    stat("mean", at("mean"), { key: name, ...lt }), ", σ² = ", stat("variance", at("variance"), { key: name, ...lt }),
    `, ε = ${CFG.eps}`);
}

function layerNorm1Step({ l, t, a, lt, checks }) {
  return card({
    id: "ln_1",
    title: CFG.pre_ln ? "LayerNorm before the FFN (pre-LN)" : "LayerNorm after the sum (post-LN)",
    formula: CFG.pre_ln ? "ln_1 = γ₂ (x − μ) / √(σ² + ε) + β₂,  x = residual_1: what the FFN reads; residual_1 goes on as it is"
      : "ln_1 = γ (x − μ) / √(σ² + ε) + β,  x = residual_1, over the H numbers of each token",
    shapes: `${shapeSH()} → ${shapeSH()}`,
    body: [layerNormStats("residual_1", l, lt), vector(`ln_1[${t}]`, a.ln_1.at(t), "ln_1", lt)],
    checks: checks("ln_1"),
    erratum: CFG.pre_ln ? null : "postln",
  });
}

function ffnStep({ l, t, a, lt, checks }) {
  const { I } = CFG;
  const act = CFG.act === "relu" ? "ReLU" : CFG.act === "gelu" ? "GELU" : `GELU (${CFG.act}: tanh approximation)`;
  const pre = a.ffn_pre.at(t);
  const gelu = a.ffn_act.at(t);
  const out = a.ffn_output.at(t);
  const reluOut = a.ffn_relu_output.at(t);
  const negatives = pre.filter((x) => x < 0).length;
  const relu_ = { key: "ffn_relu_output", ...lt };
  const st = (name) => DATA.stats[name][l - 1][t];
  const max = Math.max(...Array.from(out, Math.abs), ...Array.from(reluOut, Math.abs));
  const pmax = Math.max(...Array.from(pre, Math.abs));
  return card({
    id: "ffn",
    title: `The feed-forward network, with ${act}`,
    formula: `FFN(x) = ${act}(x W_1 + b_1) W_2 + b_2,  x = ln_1;  GELU(x) = ½ x (1 + erf(x / √2))`,
    shapes: `x ${shapeSH()} → x W_1 + b_1 (${S}, ${I}) → ${act} → × W_2 + b_2 → ${shapeSH()}`,
    body: [
      vector("x W_1 + b_1", pre, "ffn_pre", lt, { max: pmax }),
      vector(`${act}(x W_1 + b_1)`, gelu, "ffn_act", lt, { max: pmax }),
      vector("ReLU(x W_1 + b_1): the article's", relu(pre), "ffn_relu", lt, { max: pmax }),
      activationPlot(pre, gelu, act),
      el("p", {}, `${negatives} of ${I} pre-activations of token ${tokenName(t)} are negative: ReLU makes them 0, `,
        `${act} keeps them slightly negative (its minimum here: `, stat("min", st("min_ffn_act"), { key: "ffn_act", ...lt }),
        ")."),
      vector(`FFN(x)[${t}] with ${act}`, out, "ffn_output", lt, { max }),
      vector("FFN(x) with ReLU instead (same weights)", reluOut, "ffn_relu_output", lt, { max }),
      el("p", {}, "With ReLU, this token's FFN output would have cosine ", stat("cosine", st("cosine"), relu_),
        " to the real one, and differ by up to ", stat("maxdiff", st("maxdiff"), relu_), "."),
    ],
    checks: checks("ffn"),
    erratum: "gelu",
  });
}

function residual2Step({ t, a, lt, checks }) {
  const first = CFG.pre_ln ? "residual_1" : "ln_1"; // pre-LN: the stream, not the FFN's normalised input
  return card({
    id: "residual_2",
    title: "Residual around the FFN",
    formula: `residual_2 = ${first} + FFN(ln_1)`,
    shapes: `${shapeSH()} + ${shapeSH()} → ${shapeSH()}`,
    body: [
      vector(`${first}[${t}]`, a[first].at(t), first, lt),
      vector(`+ FFN[${t}]`, a.ffn_output.at(t), "ffn_output", lt),
      vector(`= residual_2[${t}]`, a.residual_2.at(t), "residual_2", lt),
    ],
    checks: checks("residual_2"),
    erratum: CFG.pre_ln ? null : "postln",
  });
}

function layerNorm2Step(c) {
  if (CFG.pre_ln) return c.a.final_ln ? finalNormStep(c) : preLnOutputStep(c);
  const { l, t, a, lt, checks } = c;
  const next = l < CFG.L ? `, the input of layer ${l + 1}` : ", the last layer's output";
  return card({
    id: "ln_2",
    title: `LayerNorm again: the output of layer ${l}`,
    formula: `ln_2 = γ₂ (x − μ) / √(σ² + ε) + β₂,  x = residual_2;  ln_2 = hidden_states[${l}]`,
    shapes: `${shapeSH()} → ${shapeSH()}${next}`,
    body: [
      layerNormStats("residual_2", l, lt),
      vector(`hidden_states[${l}][${t}]`, a.ln_2.at(t), "hidden", { layer: l, token: t }),
    ],
    checks: checks("ln_2"),
    erratum: "postln",
  });
}

/** Pre-LN: no LayerNorm after the sum; the next layer normalises its input itself. */
function preLnOutputStep({ l, t, a, checks }) {
  return card({
    id: "ln_2",
    title: `The output of layer ${l}: residual_2 itself (pre-LN)`,
    formula: `hidden_states[${l}] = residual_2: no LayerNorm after the sum; layer ${l + 1} normalises its input (LN_1)`,
    shapes: `${shapeSH()}, the input of layer ${l + 1}`,
    body: [vector(`hidden_states[${l}][${t}]`, a.ln_2.at(t), "hidden", { layer: l, token: t })],
    checks: checks("ln_2"),
  });
}

/** Pre-LN's last step: one more LayerNorm after the last layer (ModernBERT's final_norm). */
function finalNormStep({ l, t, a, lt, checks }) {
  return card({
    id: "ln_2",
    title: "The final LayerNorm: the encoder's output",
    formula: `hidden_states[${l}] = γ_f (x − μ) / √(σ² + ε) + β_f,  x = residual_2, after the last layer (pre-LN)`,
    shapes: `${shapeSH()} → ${shapeSH()}, the last hidden state`,
    body: [
      layerNormStats("residual_2", l, lt),
      vector(`hidden_states[${l}][${t}]`, a.final_ln.at(t), "hidden", { layer: l, token: t }),
    ],
    checks: checks("ln_2"),
  });
}

/** A gated FFN (ModernBERT's GeGLU, NomicBERT's SwiGLU): two products of x, the first activated, then multiplied
    by the second, number by number. */
function gatedFfnStep({ l, t, a, lt, checks }) {
  const { I } = CFG;
  const [act, glu] = CFG.act === "silu" ? ["SiLU", "SwiGLU"] : ["GELU", "GeGLU"];
  const pre = a.ffn_pre.at(t);
  const gate = a.ffn_gate.at(t);
  const activated = a.ffn_activated.at(t);
  const out = a.ffn_output.at(t);
  const reluOut = a.ffn_relu_output.at(t);
  const flips = gate.filter((x) => x < 0).length;
  const relu_ = { key: "ffn_relu_output", ...lt };
  const st = (name) => DATA.stats[name][l - 1][t];
  const pmax = Math.max(...Array.from(pre, Math.abs), ...Array.from(gate, Math.abs));
  const max = Math.max(...Array.from(out, Math.abs), ...Array.from(reluOut, Math.abs));
  const formula = act === "SiLU" ? "SiLU(x) = x / (1 + exp(−x))" : "GELU(x) = ½ x (1 + erf(x / √2))";
  return card({
    id: "ffn",
    title: `The feed-forward network, gated: ${glu}`,
    formula: `FFN(x) = (${act}(x W_1 + b_1) ⊙ (x W_gate + b_gate)) W_2 + b_2,  x = ln_1;  ${formula}`,
    shapes: `x ${shapeSH()} → two products (${S}, ${I}) → ${act} of the first, times the second → × W_2 + b_2 → ${shapeSH()}`,
    body: [
      vector("x W_1 + b_1", pre, "ffn_pre", lt, { max: pmax }),
      vector("gate: x W_gate + b_gate", gate, "ffn_gate", lt, { max: pmax }),
      vector(`${act}(x W_1 + b_1)`, activated, "ffn_activated", lt, { max: pmax }),
      vector(`${act}(x W_1 + b_1) ⊙ gate`, a.ffn_act.at(t), "ffn_act", lt, { max: pmax }),
      activationPlot(pre, activated, act),
      el("p", {}, `${flips} of ${I} gate values of token ${tokenName(t)} are negative: they flip the sign of `,
        math(`${act}(x W_1 + b_1)`), ". The article's FFN has ReLU and no gate."),
      vector(`FFN(x)[${t}] with ${glu}`, out, "ffn_output", lt, { max }),
      vector("FFN(x) with ReLU in place of " + act + " (same gate and weights)", reluOut, "ffn_relu_output", lt, { max }),
      el("p", {}, "With ReLU, this token's FFN output would have cosine ", stat("cosine", st("cosine"), relu_),
        " to the real one, and differ by up to ", stat("maxdiff", st("maxdiff"), relu_), "."),
    ],
    checks: checks("ffn"),
    erratum: "gelu",
  });
}

/** Ticks at round values covering [lo, hi]: about `n` of them, steps of 1, 2 or 5 times a power of ten. */
function ticks(lo, hi, n = 5) {
  const raw = (hi - lo) / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < 1e-12 ? 0 : v);
  return { values: out, digits: Math.max(0, -Math.floor(Math.log10(step))) };
}

/** Axes with ticks and grid lines for a plot of [x0, x1] × [y0, y1] mapped by px, py. */
function axes(px, py, [x0, x1], [y0, y1], xs = null) {
  const tx = xs ? { values: xs, digits: 0 } : ticks(x0, x1);
  const ty = ticks(y0, y1);
  return [
    ty.values.map((v) => [
      svg("line", { x1: px(x0), x2: px(x1), y1: py(v), y2: py(v), class: v === 0 ? "axis-line" : "grid" }),
      svg("text", { x: px(x0) - 5, y: py(v) + 4, "text-anchor": "end", class: "tick" }, v.toFixed(ty.digits)),
    ]),
    tx.values.map((v) => [
      svg("line", { x1: px(v), x2: px(v), y1: py(y0), y2: py(y1), class: v === 0 ? "axis-line" : "grid" }),
      svg("text", { x: px(v), y: py(y0) + 15, "text-anchor": "middle", class: "tick" }, v.toFixed(tx.digits)),
    ]),
  ];
}

/** Every pre-activation of the token against its activation: the points trace the model's activation
    curve; the article's ReLU is drawn dashed beside it. */
function activationPlot(pre, act, name) {
  const W = 560;
  const Ht = 320;
  const [padL, padR, padT, padB] = [48, 16, 34, 40];
  const xs = Array.from(pre, (x) => x / SCALE);
  const ys = Array.from(act, (x) => x / SCALE);
  const lo = Math.min(...xs, -1);
  const hi = Math.max(...xs, 1);
  const ylo = Math.min(...ys, -0.5);
  const yhi = Math.max(hi, ...ys);
  const px = (x) => padL + ((x - lo) / (hi - lo)) * (W - padL - padR);
  const py = (y) => Ht - padB - ((y - ylo) / (yhi - ylo)) * (Ht - padT - padB);
  return svg(
    "svg",
    { class: "plot", width: W, height: Ht, viewBox: `0 0 ${W} ${Ht}` },
    axes(px, py, [lo, hi], [ylo, yhi]),
    svg("polyline", { points: `${px(lo)},${py(0)} ${px(0)},${py(0)} ${px(hi)},${py(hi)}`, class: "relu" }),
    xs.map((x, i) => svg("circle", { cx: px(x).toFixed(1), cy: py(ys[i]).toFixed(1), r: 1.8, class: "pt" })),
    svg("text", { x: W - padR, y: Ht - 4, "text-anchor": "end", class: "axis" }, `x W₁ + b₁ (${xs.length} numbers)`),
    svg("text", { x: padL, y: 16, class: "axis" },
      svg("tspan", { class: "pt-key" }, "●"), ` ${name}(x), this token   `,
      svg("tspan", { class: "relu-key" }, "- -"), " ReLU(x), the article's"),
  );
}

// ------------------------------------------------------------------ 4. layers

/** A line chart: one grey line per token, the chosen token's in colour, the mean dashed, with a legend. */
function lineChart(title, xs, series, chosen, key) {
  const W = 520;
  const Ht = 300;
  const [padL, padR, padT, padB] = [52, 16, 52, 40];
  const all = series.flat();
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (hi - lo < 1e-9) [lo, hi] = [lo - 1, hi + 1];
  const px = (i) => padL + ((i - xs[0]) / Math.max(1, xs.length - 1)) * (W - padL - padR);
  const py = (y) => Ht - padB - ((y - lo) / (hi - lo)) * (Ht - padT - padB);
  const points = (ys) => ys.map((y, i) => `${px(xs[i]).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
  const line = (ys, cls) => svg("polyline", { points: points(ys), class: cls });
  const means = xs.map((_, i) => series.reduce((s, ys) => s + ys[i], 0) / series.length);
  const legend = [["faint", "each token"], ["mean", "mean over tokens"], ["chosen", `token ${tokenName(chosen)}`]];
  return svg(
    "svg",
    { class: "plot", width: W, height: Ht, viewBox: `0 0 ${W} ${Ht}`, "data-chart": key },
    svg("text", { x: padL, y: 16, class: "axis title" }, title),
    legend.map(([cls, text], i) => [
      svg("line", { x1: padL + i * 150, x2: padL + i * 150 + 24, y1: 34, y2: 34, class: cls }),
      svg("text", { x: padL + i * 150 + 30, y: 38, class: "tick" }, text),
    ]),
    axes(px, py, [xs[0], xs[xs.length - 1]], [lo, hi], xs),
    svg("text", { x: W - padR, y: Ht - 4, "text-anchor": "end", class: "axis" }, "hidden state i (0 = embeddings)"),
    series.map((ys, s) => (s === chosen ? null : line(ys, "faint"))),
    line(means, "mean"),
    line(series[chosen], "chosen"),
    series[chosen].map((y, i) =>
      svg("circle", { cx: px(xs[i]), cy: py(y), r: 3, class: "chosen-pt" }, svg("title", {}, `${xs[i]}: ${fmtStat(y)}`)),
    ),
  );
}

/** How each token's vector changes through the layers: its norm, its cosine to the previous layer, and the
    tokens nearest to it (cosine) in each hidden state; computed in float64 when the page was built. */
function layersView() {
  const t = state.token;
  const st = DATA.stats;
  const states = range(CFG.L + 1);
  const norms = TOKENS.map((_, s) => states.map((i) => st.norm[i][s]));
  const cos = TOKENS.map((_, s) => states.slice(1).map((i) => st.cos_prev[i - 1][s]));
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
        el("td", {}, st.nearest[i][t].map((u, r) =>
          el("span", { class: "near" }, `${TOKENS[u]} `, stat("nearest", st.nearest_cos[i][t][r], { layer: i, token: t, other: u })),
        )),
      ),
    ),
  );
  return [
    el("p", {}, "For every hidden state (0 = the embeddings, i = the output of layer i): each token's vector ",
      "length, how far it moved from the previous layer, and which other tokens of the text it is closest to. ",
      "Early on, a token is mostly itself; layer by layer it takes in its context."),
    el("div", { class: "charts" },
      lineChart("|x|: vector norm", states, norms, t, "norm"),
      lineChart("cosine to the previous layer", states.slice(1), cos, t, "cos_prev")),
    el("div", { class: "scroll" }, table),
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
      `config.json's hidden_act says; ReLU is the original Transformer's. Step ${NUM.ffn} shows both on the same ` +
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
  // docs/errata.md (and docs/article.md) of the minibert repository have every item; the page carries the
  // text itself, and names its source as a path in the repository (no link: where the page is opened from, a
  // link to the builder's files would leak their path and break when the page is shared).
  const source = (e) => el("span", { class: "ref", "data-file": "docs/errata.md", "data-anchor": e.anchor },
    `minibert's ${e.source}`);
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
      e === ERRATA.example ? el("div", { class: "scroll" }, example) : null,
      el("p", { class: "source" }, "Source: ", source(e), "."),
    ),
  );
}

// ------------------------------------------------------------------ wiring

let drawing = Promise.resolve();
let pending = 0; // updates not drawn yet: while there are any, body[data-busy] is set (the browser tests wait on it)

/** Change the chosen layer / head / token / key / shown heads and redraw what depends on them (decoding the
    layer first if it was never shown). Changes are drawn one after another, in order. */
function update(change) {
  Object.assign(state, change);
  const keys = Object.keys(change);
  const only = (...names) => keys.length > 0 && keys.every((k) => names.includes(k));
  pending += 1;
  document.body.dataset.busy = "true";
  drawing = drawing
    .then(async () => {
      await layer(state.layer);
      syncControls();
      fill("attention-head", headView());
      if (only("filter")) {
        fill("attention-model", modelView()); // the filter redraws both attention views, nothing else
        markCurrentThumbnail();
        return;
      }
      if (only("shown")) return; // the heads drawn in the head view: nothing else depends on them
      if (!only("key")) fill("tokens", tokensView());
      fill("steps", stepsView());
      if (!only("key")) fill("layers", layersView());
      markCurrentThumbnail();
    })
    .catch(failed)
    .finally(() => {
      pending -= 1;
      if (!pending) delete document.body.dataset.busy;
    });
  return drawing;
}

function fill(id, children) {
  const target = document.getElementById(id);
  (target.querySelector(":scope > .body") || target).replaceChildren(...[children].flat(2).filter(Boolean));
}

/** The header stays at the top; headings reached from its links are scrolled to just below it. */
function fitHeader() {
  const header = document.getElementById("top");
  const set = () => document.documentElement.style.setProperty("--header", `${header.offsetHeight + 8}px`);
  new ResizeObserver(set).observe(header);
  set();
  for (const a of header.querySelectorAll("nav a")) a.addEventListener("click", () => {
    const menu = document.getElementById("menu");
    if (menu && window.matchMedia("(max-width: 700px)").matches) menu.open = false;
  });
}

async function main() {
  COMMON = await decodePart(DATA.common);
  PREVIEW = (await decodePart(DATA.preview)).preview;
  const { L, H, h, d, I } = CFG;
  const pair = DATA.pair === null ? [] : [el("br"), el("span", { class: "text pair" }, DATA.pair),
    ` (sentence B: tokens ${B_START}..${S - 1})`];
  document.getElementById("summary").replaceChildren(
    el("span", { class: "text" }, DATA.text),
    ...pair,
    el("br"),
    `${DATA.model}, ${DATA.dtype}: L = ${L} layers, H = ${H}, h = ${h} heads of d = ${d}, I = ${I}, `,
    `activation ${CFG.act}; S = ${S} tokens. `,
    `Numbers to ${DIGITS} decimals, from the trace of model.encode(text, trace=True).`,
  );
  document.getElementById("controls").replaceChildren(...controls());
  const attention = document.querySelector("#attention > .body");
  attention.replaceChildren(el("div", { id: "attention-head" }), el("div", { id: "attention-model" }, modelView()));
  fill("errata", errataView());
  fitHeader();
  await update({});
  document.body.dataset.ready = "true"; // for the browser test and the screenshots: everything is drawn
}

function failed(e) {
  document.body.prepend(el("p", { class: "error" }, `minibert view could not draw this page: ${e}`));
  console.error(e);
}

main().catch(failed);
