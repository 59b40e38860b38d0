// TokenView: one response, each token coloured by a per-token metric. Needs tokens.js before it.

function renderTokenView({ model, el }) {
  el.classList.add("fipo-view", "fipo-tokenview");
  const controls = fipoElement("div", "fipo-controls");
  const metricSelect = fipoElement("select", "fipo-metric");
  const gammaInput = Object.assign(fipoElement("input", "fipo-gamma"), { type: "range", min: "0.2", max: "3", step: "0.05" });
  const stepInput = Object.assign(fipoElement("input", "fipo-step"), { type: "range", min: "0", step: "1" });
  const stepLabel = fipoElement("span", "fipo-step-label");
  const sampleSelect = fipoElement("select", "fipo-sample");
  controls.append(
    fipoElement("label", null, "metric "), metricSelect,
    fipoElement("label", null, " contrast "), gammaInput,
    fipoElement("span", "fipo-step-box"), sampleSelect,
  );
  const stepBox = controls.querySelector(".fipo-step-box");
  stepBox.append(fipoElement("label", null, " step "), stepInput, stepLabel);
  const head = fipoElement("div", "fipo-head");
  const note = fipoElement("div", "fipo-note");
  const legend = fipoElement("div", "fipo-legend");
  const segmentLegend = fipoElement("div", "fipo-seg-legend");
  const box = fipoElement("div", "fipo-text");
  const bands = fipoElement("div", "fipo-bands");
  const table = fipoElement("div", "fipo-seg-summary");
  const tip = fipoTooltip();
  fipoSegmentLegend(segmentLegend);
  el.replaceChildren(controls, head, note, legend, segmentLegend, box, bands, table);

  let spans = [];
  const record = () => model.get("record");

  function recolour() {
    const metric = model.get("metric");
    const gamma = model.get("gamma");
    metricSelect.value = metric;
    gammaInput.value = String(gamma);
    const range = fipoRecolour(spans, record(), metric, gamma);
    fipoLegend(legend, metric, range, gamma);
  }

  function drawControls() {
    const metrics = model.get("metrics");
    metricSelect.replaceChildren(...metrics.map((m) => Object.assign(document.createElement("option"), { value: m, textContent: m })));
    metricSelect.value = model.get("metric");
    const steps = model.get("steps");
    stepBox.style.display = steps.length > 1 ? "" : "none";
    stepInput.max = String(Math.max(steps.length - 1, 0));
    stepInput.value = String(model.get("step_index"));
    stepLabel.textContent = ` ${steps[model.get("step_index")] ?? ""}`;
    const samples = model.get("samples");
    sampleSelect.style.display = samples.length > 1 ? "" : "none";
    sampleSelect.replaceChildren(...samples.map((s, i) => Object.assign(document.createElement("option"), { value: String(i), textContent: s })));
    sampleSelect.value = String(model.get("sample_index"));
  }

  function draw() {
    const current = record();
    if (!current || !current.tokens) {
      box.replaceChildren();
      bands.replaceChildren();
      table.replaceChildren();
      spans = [];
      return;
    }
    head.textContent = fipoHeader(current);
    spans = fipoRenderTokens(box, current);
    fipoSegmentBands(bands, current, spans, box);
    fipoSegmentTable(table, current);
    drawControls();
    recolour();
  }

  function drawNote() {
    const text = model.get("note");
    note.textContent = text;
    note.style.display = text ? "" : "none";
  }

  metricSelect.addEventListener("change", () => {
    model.set("metric", metricSelect.value);
    model.save_changes();
  });
  gammaInput.addEventListener("input", () => {
    model.set("gamma", Number(gammaInput.value));
    model.save_changes();
  });
  stepInput.addEventListener("input", () => {
    stepLabel.textContent = ` ${model.get("steps")[Number(stepInput.value)] ?? ""}`;
    model.set("step_index", Number(stepInput.value));
    model.save_changes();
  });
  sampleSelect.addEventListener("change", () => {
    model.set("sample_index", Number(sampleSelect.value));
    model.save_changes();
  });
  fipoAttachTooltip(box, tip, record);

  const handlers = [
    ["change:record", draw], ["change:metric", recolour], ["change:gamma", recolour], ["change:note", drawNote],
    ["change:steps", drawControls], ["change:samples", drawControls], ["change:metrics", drawControls],
    ["change:step_index", drawControls], ["change:sample_index", drawControls],
  ];
  for (const [name, handler] of handlers) model.on(name, handler);
  draw();
  drawNote();
  return () => {
    for (const [name, handler] of handlers) model.off(name, handler);
    tip.remove();
  };
}

export default { render: renderTokenView };
