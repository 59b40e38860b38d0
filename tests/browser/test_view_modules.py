"""(b) The views' ES modules in a page, against a small fake model object (anywidget's model API:
get / set / on / off / save_changes): recolouring, the step slider, hover tooltips, charts, and the
render time of a 16k-token response."""

from __future__ import annotations

import itertools
import json
import random

from fipo_nb.analysis.segments import GROUPS, OPENING, REST
from fipo_nb.widgets import Dashboard, PhaseView, TokenView
from fipo_nb.views.assets import esm, stylesheet

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><style>{css}</style></head>
<body><div id="root"></div>
<script>window.INITIAL = {initial}; window.RESPONSES = {responses};</script>
<script type="module">
import view from "./view.js";
class FakeModel {{
  constructor(state) {{ this.state = state; this.handlers = {{}}; this.saved = 0; }}
  get(name) {{ return this.state[name]; }}
  set(name, value) {{ this.state[name] = value; (this.handlers["change:" + name] || []).forEach((h) => h()); }}
  on(event, handler) {{ (this.handlers[event] ||= []).push(handler); }}
  off(event, handler) {{ this.handlers[event] = (this.handlers[event] || []).filter((h) => h !== handler); }}
  save_changes() {{ this.saved += 1; }}
}}
const model = new FakeModel(window.INITIAL);
// play the Python side: answer a new step index or selected step the way the widget class does
model.on("change:step_index", () => model.set("record", window.RESPONSES[model.get("step_index")]));
model.on("change:selected_step", () => model.set("examples", window.RESPONSES[model.get("selected_step")] || []));
window.model = model;
window.renderView = () => {{
  const t0 = performance.now();
  view.render({{ model, el: document.getElementById("root") }});
  document.getElementById("root").offsetHeight;  // include layout
  return performance.now() - t0;
}};
window.ready = true;
</script></body></html>"""

KEYS = {
    "token_view": ("record", "metric", "metrics", "gamma", "steps", "step_index", "samples", "sample_index", "note"),
    "phase_view": ("steps_data", "selected_step", "examples", "metric", "metrics", "gamma"),
    "dashboard": ("history",),
}


OPENED = itertools.count()


def open_view(page, server, name, widget, responses):
    folder, base = server
    (folder / "view.js").write_text(esm(name))
    state = {key: getattr(widget, key) for key in KEYS[name]}
    (folder / "index.html").write_text(HARNESS.format(css=stylesheet(), initial=json.dumps(state),
                                                      responses=json.dumps(responses)))
    page.goto(f"{base}/index.html?{next(OPENED)}")  # a new address each time: never the cached page of an earlier view
    page.wait_for_function("window.ready === true")
    return page.evaluate("window.renderView()")


def colours(page):
    return page.locator(".fipo-text .fipo-tok").evaluate_all("s => s.map(x => getComputedStyle(x).backgroundColor)")


def test_token_view_recolours_moves_steps_and_shows_tooltips(page, static_server, smoke_run, artifacts):
    widget = TokenView.from_run(smoke_run)
    per_step = []
    for index in range(len(widget.steps)):
        widget.step_index = index
        per_step.append(widget.record)
    widget.step_index = len(widget.steps) - 1
    widget.sample_index = next(i for i, s in enumerate(widget.samples) if "mini-batch 1" in s)
    open_view(page, static_server, "token_view", widget, per_step)
    spans = page.locator(".fipo-text .fipo-tok")
    assert spans.count() == len(widget.record["tokens"])
    assert "".join(spans.all_inner_texts()) == "".join(widget.record["tokens"])
    by_weight = colours(page)
    page.select_option(".fipo-metric", "post_update_future_kl")
    assert page.evaluate("window.model.get('metric')") == "post_update_future_kl"
    by_post = colours(page)
    assert by_post != by_weight and page.evaluate("window.model.saved") >= 1
    page.locator(".fipo-gamma").evaluate("(e) => { e.value = '2.5'; e.dispatchEvent(new Event('input')); }")
    assert colours(page) != by_post  # the contrast changed the shades
    # the step slider: the record of step 1 replaces the one of step 3
    page.locator(".fipo-step").evaluate("(e) => { e.value = '0'; e.dispatchEvent(new Event('input')); }")
    assert page.locator(".fipo-head").first.inner_text().startswith("step 1 ")
    assert page.locator(".fipo-step-label").inner_text().strip() == "1"
    assert spans.count() == len(per_step[0]["tokens"])
    assert page.locator(".fipo-metric").input_value() == "post_update_future_kl"  # the choice survives
    # hover: one tooltip with the token's text, index, segment and metrics
    spans.nth(2).hover()
    tip = page.locator(".fipo-tip")
    assert tip.is_visible() and tip.inner_text().startswith("#2 ") and "weight" in tip.inner_text()
    assert "\nsegment " in tip.inner_text()
    page.screenshot(path=str(artifacts / "token_view_module.png"))


def test_token_view_shows_segment_bands_a_legend_and_the_summary(page, static_server, artifacts):
    from fipo_nb.models import qwen_tokenizer
    from fipo_nb.models import token_pieces

    text = ("The rectangle is 6 by 9, so its area is 6 * 9 = 54.\nLet me verify: 9 * 6 = 54 and 54 / 9 = 6.\n"
            "Wait, also 6 + 6 + 9 + 9 = 30 is the perimeter, not the area.\nAnswer: 54")
    tok = qwen_tokenizer("qwen2.5")
    pieces = token_pieces(tok, tok.encode(text, add_special_tokens=False))
    n = len(pieces)
    record = {"step": 4, "sample": 0, "mini_batch": 1, "reward": 1.0, "advantage": 0.8, "finish_reason": "stop",
              "tokens": pieces, "metrics": {"weight": [1 + 0.2 * i / n for i in range(n)],
                                            "future_kl": [0.002 * i for i in range(n)]}}
    widget = TokenView([record])
    open_view(page, static_server, "token_view", widget, [widget.record])
    legend = page.locator(".fipo-seg-legend")
    assert legend.is_visible()
    assert [t for t in ("planning", "working", "result", "verification", "answer") if t in legend.inner_text()] == \
        ["planning", "working", "result", "verification", "answer"]
    blocks = page.locator(".fipo-bands .fipo-band-seg")
    assert blocks.count() == len(widget.record["segments"]) >= 4
    for i in range(blocks.count()):  # every block is drawn, with a width, on its kind's track
        box = blocks.nth(i).bounding_box()
        assert box is not None and box["width"] >= 1 and box["height"] >= 4
    kinds = page.locator(".fipo-band").evaluate_all(
        "rows => rows.map(r => [r.dataset.kind, r.querySelectorAll('.fipo-band-seg').length])")
    counted = {k: c for k, c in kinds}
    assert counted["verification"] == 2 and counted["answer"] == 1 and counted["result"] == 1
    # the band under a token has its segment's colour; tokens of the cue have the thicker one
    bands = page.locator(".fipo-text .fipo-tok").evaluate_all("s => s.map(x => getComputedStyle(x).boxShadow)")
    first_verification = next(s for s in widget.record["segments"] if s["kind"] == "verification")
    assert "255, 127, 0" in bands[first_verification["start"]] and "-5px" in bands[first_verification["start"]]
    assert "77, 175, 74" in bands[0] or "152, 78, 163" in bands[0]  # working (green) or result (purple)
    # the per-response summary: one row per kind present and the row of the tokens that open a verification move
    rows = page.locator(".fipo-seg-table tr")
    assert rows.count() == 1 + len(widget.record["segment_summary"])
    assert OPENING in page.locator(".fipo-seg-table").inner_text()
    cue_swatch = page.locator(".fipo-seg-table tr").filter(has_text=OPENING).locator(".fipo-swatch")
    assert cue_swatch.evaluate("s => getComputedStyle(s).backgroundColor") == "rgb(255, 127, 0)"
    # the tooltip names the token's segment
    page.locator(".fipo-text .fipo-tok").nth(first_verification["start"]).hover()
    assert "segment verification (opens the move)" in page.locator(".fipo-tip").inner_text()
    page.screenshot(path=str(artifacts / "token_view_segments.png"))
    assert page.locator(".fipo-legend").inner_text().endswith(" · 1 · 1.2")
    flat = TokenView([dict(record, mini_batch=0, metrics={"weight": [1.0] * n})])  # a first mini-batch's weights
    open_view(page, static_server, "token_view", flat, [flat.record])
    assert page.locator(".fipo-legend").inner_text().endswith("every token 1: nothing to colour")


def test_a_16k_token_response_renders_and_recolours(page, static_server):
    n = 16384
    rng = random.Random(0)
    words = ["The", " answer", " is", " 42", ".", "\n", " Let", " me", " check", ":", " 6", " *", " 7", " =", "  "]
    record = {"step": 5, "sample": 0, "mini_batch": 1, "reward": 1.0, "advantage": 0.7, "finish_reason": "length",
              "tokens": [rng.choice(words) for _ in range(n)],
              "metrics": {"weight": [1 + 0.2 * rng.random() for _ in range(n)],
                          "future_kl": [rng.gauss(0, 0.1) for _ in range(n)]}}
    widget = TokenView([record])
    render_ms = open_view(page, static_server, "token_view", widget, [record])
    assert page.locator(".fipo-text .fipo-tok").count() == n
    colours = """() => Array.from(document.querySelectorAll('.fipo-text .fipo-tok'), t => getComputedStyle(t).backgroundColor)"""
    by_weight = page.evaluate(colours)
    recolour_ms = page.evaluate("""() => {
        const select = document.querySelector('.fipo-metric');
        const t0 = performance.now();
        select.value = 'future_kl';
        select.dispatchEvent(new Event('change'));
        document.getElementById('root').offsetHeight;
        return performance.now() - t0;
    }""")
    page.locator(".fipo-text .fipo-tok").nth(n - 1).hover()
    assert page.locator(".fipo-tip").inner_text().startswith(f"#{n - 1} ")
    by_future_kl = page.evaluate(colours)
    assert len(by_future_kl) == n and sum(a != b for a, b in zip(by_weight, by_future_kl)) > n // 2  # recoloured
    # timings are printed, not asserted: a loaded machine may take longer, the view is no less right
    print(f"\n16384-token TokenView in chromium: render {render_ms:.0f} ms, recolour {recolour_ms:.0f} ms")


def test_phase_view_charts_pick_a_step_and_show_examples(page, static_server, smoke_run):
    widget = PhaseView.from_run(smoke_run)
    examples = {}
    for step in (1, 2, 3):
        widget.selected_step = step
        examples[step] = widget.examples
    open_view(page, static_server, "phase_view", widget, examples)
    assert page.locator("svg.fipo-chart").count() == 6  # lengths, phases, accuracy; segment share, weight, Future-KL
    assert page.locator(".fipo-example h4").count() == 4
    shares = page.locator("svg.fipo-chart").filter(has_text="share of tokens per segment")
    assert shares.locator("rect[fill='#9e9e9e']").count() == 3  # planning: one bar per step (random text)
    assert page.locator("svg.fipo-chart").filter(has_text="mean Future-KL per segment").locator("polyline").count() >= 2
    assert page.locator(".fipo-example .fipo-seg-legend").count() == len([e for e in examples[3] if e["record"]])
    page.locator("svg.fipo-chart .fipo-hit").first.click(position={"x": 2, "y": 20})  # the left edge: step 1
    assert page.evaluate("window.model.get('selected_step')") == 1
    assert page.locator(".fipo-step").input_value() == "1"
    shown = [e for e in examples[1] if e["record"]]
    assert page.locator(".fipo-example .fipo-tok").count() == sum(len(e["record"]["tokens"]) for e in shown)


def test_dashboard_redraws_in_place(page, static_server, smoke_run):
    from fipo_nb.analysis.runs import read_jsonl

    rows = read_jsonl(smoke_run / "metrics.jsonl")
    widget = Dashboard()
    widget.update(rows[0])
    open_view(page, static_server, "dashboard", widget, [])
    assert page.locator("svg.fipo-chart").count() == 7
    assert page.locator(".fipo-head").inner_text().startswith("step 1 ")
    later = [Dashboard._pick(r) for r in rows]
    page.evaluate("(rows) => window.model.set('history', rows)", later)
    assert page.locator("svg.fipo-chart").count() == 7  # the same charts, redrawn
    assert page.locator(".fipo-head").inner_text().startswith("step 3 ")
    points = page.locator("svg.fipo-chart polyline").first.get_attribute("points")
    assert len(points.split()) == 3
    # the per-segment weight chart: a line for every segment group that has tokens in the loss
    weights = page.locator("svg.fipo-chart").filter(has_text="mean weight per segment")
    drawn = [k for k in GROUPS if any(f"segment/{k}/weight_mean" in r for r in rows)]
    assert drawn and weights.locator("polyline").count() == len(drawn)
    names = weights.locator("text").all_text_contents()
    assert OPENING in names and REST in names
