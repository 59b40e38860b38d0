// PhaseView: response lengths, the share of each reasoning phase, accuracy, and the share, mean weight and
// mean Future-KL of each reasoning segment over training steps; choosing a step shows example responses
// of each phase, coloured like TokenView, with their segment bands.

const FIPO_LENGTH_KEYS = [["min", "#c7c7c7"], ["q25", "#9ecae1"], ["median", "#3182bd"], ["mean", "#111"], ["q75", "#9ecae1"], ["max", "#c7c7c7"]];

function renderPhaseView({ model, el }) {
  el.classList.add("fipo-view", "fipo-phaseview");
  const controls = fipoElement("div", "fipo-controls");
  const stepSelect = fipoElement("select", "fipo-step");
  const metricSelect = fipoElement("select", "fipo-metric");
  controls.append(fipoElement("label", null, "step "), stepSelect, fipoElement("label", null, " colour tokens by "), metricSelect);
  const charts = fipoElement("div", "fipo-charts");
  const examples = fipoElement("div", "fipo-examples");
  const tip = fipoTooltip();
  el.replaceChildren(controls, charts, examples);

  const data = () => model.get("steps_data");
  const selectedIndex = () => data().findIndex((d) => d.step === model.get("selected_step"));

  function pick(index) {
    const row = data()[index];
    if (!row) return;
    model.set("selected_step", row.step);
    model.save_changes();
  }

  function drawCharts() {
    const rows = data();
    const xs = rows.map((d) => d.step);
    const chosen = selectedIndex();
    const lengths = FIPO_LENGTH_KEYS.map(([key, colour]) => ({ name: key, colour, values: rows.map((d) => d.length[key]) }));
    const phases = [1, 2, 3, 4].map((p) => ({ name: `phase ${p}`, colour: FIPO_PHASE_COLOURS[p - 1], values: rows.map((d) => d.phases[p - 1]) }));
    const accuracy = [{ name: "accuracy", colour: "#2ca02c", values: rows.map((d) => d.accuracy) }];
    const segment = (group, key) => rows.map((d) => (d.segments && d.segments[group] ? d.segments[group][key] : null));
    const shares = FIPO_SEGMENT_GROUPS.slice(0, 5).map((g) => ({ ...g, values: segment(g.name, "share") }));
    const weights = FIPO_SEGMENT_GROUPS.map((g) => ({ ...g, values: segment(g.name, "weight") }));
    const futureKl = FIPO_SEGMENT_GROUPS.map((g) => ({ ...g, values: segment(g.name, "future_kl") }));
    charts.replaceChildren(
      fipoChart({ title: "response length (tokens)", xs, series: lengths, selected: chosen, onPick: pick }),
      fipoChart({ title: "share of each phase", xs, series: phases, stacked: true, selected: chosen, onPick: pick }),
      fipoChart({ title: "accuracy", xs, series: accuracy, selected: chosen, onPick: pick }),
      fipoChart({ title: "share of tokens per segment", xs, series: shares, stacked: true, selected: chosen, onPick: pick }),
      fipoChart({ title: "mean weight per segment", xs, series: weights, selected: chosen, onPick: pick }),
      fipoChart({ title: "mean Future-KL per segment", xs, series: futureKl, selected: chosen, onPick: pick }),
    );
    stepSelect.replaceChildren(...xs.map((s) => Object.assign(document.createElement("option"), { value: String(s), textContent: String(s) })));
    stepSelect.value = String(model.get("selected_step"));
  }

  function drawExamples() {
    const metric = model.get("metric");
    const gamma = model.get("gamma");
    metricSelect.replaceChildren(...model.get("metrics").map((m) => Object.assign(document.createElement("option"), { value: m, textContent: m })));
    metricSelect.value = metric;
    const blocks = model.get("examples").map((example, index) => {
      const block = fipoElement("div", "fipo-example");
      block.append(fipoElement("h4", null, `phase ${example.phase}: ${example.name}`));
      if (!example.record) {
        block.append(fipoElement("div", "fipo-head", example.missing));
        return block;
      }
      const features = Object.entries(example.features).map(([k, v]) => `${k} ${v}`).join(" · ");
      block.append(fipoElement("div", "fipo-head", fipoHeader(example.record)), fipoElement("div", "fipo-head", features));
      const legend = fipoElement("div", "fipo-legend");
      const segmentLegend = fipoElement("div", "fipo-seg-legend");
      const box = fipoElement("div", "fipo-text");
      const bands = fipoElement("div", "fipo-bands");
      const table = fipoElement("div", "fipo-seg-summary");
      block.append(legend, segmentLegend, box, bands, table);
      fipoSegmentLegend(segmentLegend);
      const spans = fipoRenderTokens(box, example.record);
      fipoSegmentBands(bands, example.record, spans, box);
      fipoSegmentTable(table, example.record);
      fipoLegend(legend, metric, fipoRecolour(spans, example.record, metric, gamma), gamma);
      fipoAttachTooltip(box, tip, () => model.get("examples")[index].record);
      return block;
    });
    examples.replaceChildren(...blocks);
  }

  stepSelect.addEventListener("change", () => {
    model.set("selected_step", Number(stepSelect.value));
    model.save_changes();
  });
  metricSelect.addEventListener("change", () => {
    model.set("metric", metricSelect.value);
    model.save_changes();
  });
  const handlers = [
    ["change:steps_data", drawCharts], ["change:selected_step", drawCharts], ["change:examples", drawExamples],
    ["change:metric", drawExamples], ["change:gamma", drawExamples],
  ];
  for (const [name, handler] of handlers) model.on(name, handler);
  drawCharts();
  drawExamples();
  return () => {
    for (const [name, handler] of handlers) model.off(name, handler);
    tip.remove();
  };
}

export default { render: renderPhaseView };
