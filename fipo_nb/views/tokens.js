// Shared by every fipo_nb view: the colour scale (the same as colours.py) and token rendering.
// One span per token, one delegated listener per box: 16k-token responses stay responsive.
// FIPO_NEUTRAL, FIPO_POSITIVE, FIPO_NEGATIVE, FIPO_SEGMENT_COLOURS, FIPO_GROUP_COLOURS, FIPO_SEGMENT_GROUPS
// and FIPO_PHASE_COLOURS come first in every view's module, generated from colours.py (assets.esm).

function fipoNeutral(metric) {
  return metric in FIPO_NEUTRAL ? FIPO_NEUTRAL[metric] : 0;
}

function fipoScale(values, neutral) {
  let largest = 0;
  for (const v of values) {
    if (v !== null && v !== undefined && Number.isFinite(v)) largest = Math.max(largest, Math.abs(v - neutral));
  }
  return largest > 0 ? largest : 1;
}

function fipoColour(value, neutral, scale, gamma) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "transparent";
  const d = (value - neutral) / scale;
  const strength = Math.pow(Math.min(Math.abs(d), 1), gamma);
  const target = d >= 0 ? FIPO_POSITIVE : FIPO_NEGATIVE;
  const [r, g, b] = target.map((c) => Math.round(255 + strength * (c - 255)));
  return `rgb(${r},${g},${b})`;
}

function fipoFormat(value) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(4);
}

// Per token: its segment kind and whether it opens a verification move (from record.segments), cached.
const fipoSegmentCache = new WeakMap();
function fipoTokenSegments(record) {
  let cached = fipoSegmentCache.get(record);
  if (cached) return cached;
  const n = record.tokens.length;
  cached = { kinds: new Array(n).fill("working"), cue: new Uint8Array(n) };
  for (const s of record.segments || []) {
    for (let i = s.start; i < s.end && i < n; i++) {
      cached.kinds[i] = s.kind;
      cached.cue[i] = i < s.opening ? 1 : 0;
    }
  }
  fipoSegmentCache.set(record, cached);
  return cached;
}

// Replace the contents of `box` with one span per token, each with the band of its segment; returns the spans.
function fipoRenderTokens(box, record) {
  const fragment = document.createDocumentFragment();
  const spans = new Array(record.tokens.length);
  const segments = fipoTokenSegments(record);
  record.tokens.forEach((piece, i) => {
    const span = document.createElement("span");
    span.className = `${piece.includes("\n") ? "fipo-tok fipo-nl" : "fipo-tok"} fipo-seg-${segments.kinds[i]}${segments.cue[i] ? " fipo-cue" : ""}`;
    span.textContent = piece;
    span.dataset.i = String(i);
    spans[i] = span;
    fragment.appendChild(span);
  });
  box.replaceChildren(fragment);
  return spans;
}

// Colour the spans by `metric`; returns {neutral, scale, flat} for the legend (flat: every value neutral).
function fipoRecolour(spans, record, metric, gamma) {
  const values = (record.metrics && record.metrics[metric]) || [];
  const neutral = fipoNeutral(metric);
  const scale = fipoScale(values, neutral);
  for (let i = 0; i < spans.length; i++) {
    spans[i].style.backgroundColor = fipoColour(values[i], neutral, scale, gamma);
  }
  const flat = values.every((v) => v === null || v === undefined || v === neutral);
  return { neutral, scale, flat };
}

function fipoLegend(el, metric, range, gamma) {
  const stops = [];
  for (let x = -4; x <= 4; x++) stops.push(fipoColour(range.neutral + (range.scale * x) / 4, range.neutral, range.scale, gamma));
  el.replaceChildren();
  const label = document.createElement("span");
  label.textContent = `colour: ${metric} `;
  const bar = document.createElement("span");
  bar.className = "fipo-legend-bar";
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const ticks = document.createElement("span");
  const n = (v) => Number(v.toPrecision(3));
  ticks.textContent = range.flat ? ` every token ${n(range.neutral)}: nothing to colour`
    : ` ${n(range.neutral - range.scale)} · ${n(range.neutral)} · ${n(range.neutral + range.scale)}`;
  el.append(label, bar, ticks);
}

// The segment kinds and their band colours.
function fipoSegmentLegend(el) {
  el.replaceChildren(document.createTextNode("segments (band under each token):"));
  for (const [kind, colour] of Object.entries(FIPO_SEGMENT_COLOURS)) {
    const swatch = fipoElement("span", "fipo-swatch");
    swatch.style.background = colour;
    el.append(swatch, fipoElement("span", null, kind));
  }
}

// One track per segment kind, each segment drawn where its tokens are; a click scrolls to its first token.
function fipoSegmentBands(el, record, spans, box) {
  const n = Math.max(record.tokens.length, 1);
  el.replaceChildren();
  for (const [kind, colour] of Object.entries(FIPO_SEGMENT_COLOURS)) {
    const row = fipoElement("div", "fipo-band");
    row.dataset.kind = kind;
    const track = fipoElement("span", "fipo-band-track");
    for (const s of record.segments || []) {
      if (s.kind !== kind) continue;
      const block = fipoElement("span", "fipo-band-seg");
      Object.assign(block.style, { left: `${(100 * s.start) / n}%`, width: `${(100 * (s.end - s.start)) / n}%`, background: colour });
      block.dataset.start = String(s.start);
      block.title = `${kind}: tokens ${s.start}-${s.end - 1}`;
      track.append(block);
    }
    row.append(fipoElement("span", "fipo-band-label", kind), track);
    el.append(row);
  }
  el.onclick = (event) => {
    const block = event.target.closest(".fipo-band-seg");
    const span = block && spans[Number(block.dataset.start)];
    if (span) box.scrollTop = span.offsetTop - box.clientHeight / 3;
  };
}

// Per segment kind, then the tokens that open a verification move: token count, mean weight, mean
// Future-KL (record.segment_summary, from records.py).
function fipoSegmentTable(el, record) {
  const table = fipoElement("table", "fipo-seg-table");
  const head = document.createElement("tr");
  for (const name of ["segment", "tokens", "mean weight", "mean Future-KL"]) head.append(fipoElement("th", null, name));
  table.append(head);
  const number = (v, f) => (v === null || v === undefined ? "-" : f(Number(v)));
  for (const row of record.segment_summary || []) {
    const tr = document.createElement("tr");
    const name = fipoElement("td", "fipo-seg-name");
    const swatch = fipoElement("span", "fipo-swatch");
    swatch.style.background = FIPO_GROUP_COLOURS[row.kind];
    name.append(swatch, document.createTextNode(row.kind));
    tr.append(name, fipoElement("td", null, String(row.tokens)),
      fipoElement("td", null, number(row.weight_mean, (v) => v.toFixed(4))),
      fipoElement("td", null, number(row.future_kl_mean, (v) => `${v >= 0 ? "+" : ""}${Number(v.toPrecision(4))}`)));
    table.append(tr);
  }
  el.replaceChildren(table);
}

function fipoTooltipText(record, i) {
  const segments = fipoTokenSegments(record);
  const lines = [`#${i} ${JSON.stringify(record.tokens[i])}`, `segment ${segments.kinds[i]}${segments.cue[i] ? " (opens the move)" : ""}`];
  for (const [name, values] of Object.entries(record.metrics || {})) lines.push(`${name} ${fipoFormat(values[i])}`);
  return lines.join("\n");
}

// A tooltip that lives on document.body (position: fixed): notebook outputs clip their contents
// and transform them, which would hide or displace a tooltip kept inside the view.
function fipoTooltip() {
  const tip = fipoElement("div", "fipo-tip");
  document.body.appendChild(tip);
  return tip;
}

// One delegated hover listener on `box`; `getRecord` returns the record shown now.
function fipoAttachTooltip(box, tip, getRecord) {
  box.addEventListener("mouseover", (event) => {
    const span = event.target.closest(".fipo-tok");
    if (!span || !box.contains(span)) return;
    tip.textContent = fipoTooltipText(getRecord(), Number(span.dataset.i));
    tip.style.display = "block";
  });
  box.addEventListener("mousemove", (event) => {
    tip.style.left = `${event.clientX + 14}px`;
    tip.style.top = `${event.clientY + 14}px`;
  });
  box.addEventListener("mouseleave", () => {
    tip.style.display = "none";
  });
}

function fipoHeader(record) {
  const parts = [`step ${record.step}`, `sample ${record.sample}`, `mini-batch ${record.mini_batch}`];
  if (record.reward !== null && record.reward !== undefined) parts.push(`reward ${record.reward >= 0 ? "+" : ""}${Number(record.reward).toPrecision(3)}`);
  if (record.advantage !== null && record.advantage !== undefined) parts.push(`advantage ${record.advantage >= 0 ? "+" : ""}${Number(record.advantage).toFixed(3)}`);
  parts.push(`${record.tokens.length} tokens (${record.finish_reason})`);
  return parts.join(" · ");
}

function fipoElement(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
