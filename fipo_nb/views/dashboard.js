// Dashboard: live training metrics, redrawn in place after every step.

const FIPO_PANELS = [
  ["reward and accuracy", [["reward/mean", "#1f77b4"], ["accuracy/mean", "#2ca02c"]]],
  ["response length", [["length/min", "#c7c7c7"], ["length/q25", "#9ecae1"], ["length/median", "#3182bd"], ["length/mean", "#111"], ["length/q75", "#9ecae1"], ["length/max", "#c7c7c7"]]],
  ["influence weights", [["fipo/weight_mean", "#d62728"], ["fipo/weight_max", "#ff9896"], ["fipo/weight_min", "#9467bd"]]],
  ["clipping", [["policy/clip_frac", "#ff7f0e"], ["policy/dual_clip_frac", "#8c564b"], ["fipo/weight_clip_frac_upper", "#e377c2"]]],
  ["approx. KL, grad norm", [["policy/approx_kl", "#17becf"], ["grad_norm", "#7f7f7f"]]],
  ["mean weight per segment", "weight_mean"],
  ["mean Future-KL per segment", "future_kl_mean"],
];
const FIPO_CRITIC_PANEL = ["critic (PPO)", [["critic/vf_loss", "#9467bd"], ["critic/vf_explained_var", "#2ca02c"], ["critic/values/mean", "#1f77b4"], ["critic/returns/mean", "#111"]]];

function renderDashboard({ model, el }) {
  el.classList.add("fipo-view", "fipo-dashboard");
  const status = fipoElement("div", "fipo-head");
  const charts = fipoElement("div", "fipo-charts");
  el.replaceChildren(status, charts);

  function draw() {
    const rows = model.get("history");
    const xs = rows.map((r) => r.step);
    const value = (key) => rows.map((r) => (key in r ? r[key] : null));
    const panels = rows.some((r) => "critic/vf_loss" in r) ? [...FIPO_PANELS, FIPO_CRITIC_PANEL] : FIPO_PANELS;
    charts.replaceChildren(...panels.map(([title, keys]) => fipoChart({
      title, xs, width: 260, height: 150,
      series: typeof keys === "string"  // a per-segment statistic: one line per segment group
        ? FIPO_SEGMENT_GROUPS.map((g) => ({ ...g, values: value(`segment/${g.name}/${keys}`) }))
        : keys.map(([key, colour]) => ({ name: key.split("/").pop(), colour, values: value(key) })),
    })));
    const last = rows[rows.length - 1];
    status.textContent = last
      ? `step ${last.step} · reward ${Number(last["reward/mean"]).toFixed(3)} · accuracy ${Number(last["accuracy/mean"]).toFixed(3)} · length ${Number(last["length/mean"]).toFixed(1)} · weight max ${Number(last["fipo/weight_max"]).toFixed(3)} · ${Number(last["time/step_s"]).toFixed(1)} s/step`
      : "no steps yet";
  }

  model.on("change:history", draw);
  draw();
  return () => model.off("change:history", draw);
}

export default { render: renderDashboard };
