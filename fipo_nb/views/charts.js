// Small dependency-free SVG charts for the fipo_nb views.

const FIPO_SVG = "http://www.w3.org/2000/svg";

function fipoSvg(tag, attributes) {
  const node = document.createElementNS(FIPO_SVG, tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
  return node;
}

// xs: step numbers; series: [{name, values, colour, dashed}] or, with `stacked`, shares drawn as stacked bars.
// `selected` (an index into xs) is marked; a click calls onPick(index of the nearest x). Series names
// label the chart below its axis, on as many lines as they need (the chart grows to keep its plot).
function fipoChart({ title, xs, series, stacked = false, selected = null, onPick = null, width = 300, height = 170 }) {
  const labels = [];
  let lineX = 38;
  let line = 0;
  for (const s of series) {
    const w = 7 * s.name.length + 10;
    if (lineX + w > width && lineX > 38) { line += 1; lineX = 38; }
    labels.push({ s, x: lineX, line });
    lineX += w;
  }
  height += 11 * line;
  const pad = { left: 38, right: 8, top: 18, bottom: 30 + 11 * line };
  const svg = fipoSvg("svg", { width, height, class: "fipo-chart" });
  const inner = { w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  const all = stacked ? [0, 1] : series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  let low = Math.min(...all, stacked ? 0 : Infinity);
  let high = Math.max(...all, stacked ? 1 : -Infinity);
  if (!Number.isFinite(low) || !Number.isFinite(high)) { low = 0; high = 1; }
  if (high === low) { high += 0.5; low -= 0.5; }
  const n = xs.length;
  const xAt = (i) => pad.left + (n > 1 ? (i / (n - 1)) * inner.w : inner.w / 2);
  const yAt = (v) => pad.top + inner.h - ((v - low) / (high - low)) * inner.h;
  svg.append(fipoSvg("text", { x: pad.left, y: 12 }));
  svg.lastChild.textContent = title;
  svg.append(fipoSvg("rect", { x: pad.left, y: pad.top, width: inner.w, height: inner.h, fill: "none", stroke: "#ccc" }));
  for (const [v, y] of [[high, pad.top + 8], [low, pad.top + inner.h]]) {
    const label = fipoSvg("text", { x: 2, y });
    label.textContent = Number(v.toPrecision(3));
    svg.append(label);
  }
  if (n) {
    for (const [i, anchor] of [[0, "start"], [n - 1, "end"]]) {
      const label = fipoSvg("text", { x: xAt(i), y: pad.top + inner.h + 14, "text-anchor": anchor });
      label.textContent = `step ${xs[i]}`;
      svg.append(label);
    }
  }
  if (stacked) {
    const barWidth = Math.max(inner.w / Math.max(n, 1) - 2, 1);
    xs.forEach((_, i) => {
      let base = 0;
      for (const s of series) {
        const v = s.values[i] || 0;
        svg.append(fipoSvg("rect", { x: xAt(i) - barWidth / 2, y: yAt(base + v), width: barWidth, height: Math.max(yAt(base) - yAt(base + v), 0), fill: s.colour }));
        base += v;
      }
    });
  } else {
    for (const s of series) {
      const points = s.values.map((v, i) => (v === null || !Number.isFinite(v) ? null : `${xAt(i)},${yAt(v)}`)).filter(Boolean);
      const dash = s.dashed ? { "stroke-dasharray": "4,3" } : {};
      if (points.length) svg.append(fipoSvg("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 1.5, ...dash }));
    }
  }
  for (const { s, x, line: row } of labels) {
    const label = fipoSvg("text", { x, y: height - 3 - 11 * (line - row), fill: s.colour });
    label.textContent = s.name;
    label.style.fill = s.colour;
    svg.append(label);
  }
  if (selected !== null && n) {
    svg.append(fipoSvg("line", { x1: xAt(selected), x2: xAt(selected), y1: pad.top, y2: pad.top + inner.h, stroke: "#000", "stroke-dasharray": "3,2" }));
  }
  if (onPick && n) {
    const hit = fipoSvg("rect", { x: pad.left, y: pad.top, width: inner.w, height: inner.h, fill: "transparent", class: "fipo-hit" });
    hit.style.cursor = "pointer";
    hit.addEventListener("click", (event) => {
      const box = svg.getBoundingClientRect();
      const fraction = (event.clientX - box.left - pad.left) / inner.w;
      onPick(Math.min(n - 1, Math.max(0, Math.round(fraction * (n - 1)))));
    });
    svg.append(hit);
  }
  return svg;
}
