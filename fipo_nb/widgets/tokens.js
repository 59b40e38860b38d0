// Shared by every fipo_nb view: the colour scale (the same as records.py) and token rendering.
// One span per token, one delegated listener per box: 16k-token responses stay responsive.

const FIPO_NEUTRAL = { weight: 1, ratio: 1 };
const FIPO_POSITIVE = [214, 39, 40];
const FIPO_NEGATIVE = [31, 119, 180];

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

// Replace the contents of `box` with one span per token; returns the spans.
function fipoRenderTokens(box, record) {
  const fragment = document.createDocumentFragment();
  const spans = new Array(record.tokens.length);
  record.tokens.forEach((piece, i) => {
    const span = document.createElement("span");
    span.className = piece.includes("\n") ? "fipo-tok fipo-nl" : "fipo-tok";
    span.textContent = piece;
    span.dataset.i = String(i);
    spans[i] = span;
    fragment.appendChild(span);
  });
  box.replaceChildren(fragment);
  return spans;
}

// Colour the spans by `metric`; returns {neutral, scale} for the legend.
function fipoRecolour(spans, record, metric, gamma) {
  const values = (record.metrics && record.metrics[metric]) || [];
  const neutral = fipoNeutral(metric);
  const scale = fipoScale(values, neutral);
  for (let i = 0; i < spans.length; i++) {
    spans[i].style.backgroundColor = fipoColour(values[i], neutral, scale, gamma);
  }
  return { neutral, scale };
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
  ticks.textContent = ` ${n(range.neutral - range.scale)} · ${n(range.neutral)} · ${n(range.neutral + range.scale)}`;
  el.append(label, bar, ticks);
}

function fipoTooltipText(record, i) {
  const lines = [`#${i} ${JSON.stringify(record.tokens[i])}`];
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
