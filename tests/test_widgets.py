"""The views on the Python side: only the selected record is synced, selection and metric changes,
static fallbacks that are self-contained, and phase examples."""

from __future__ import annotations

import re

import pytest

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.analysis.runs import read_jsonl
from fipo_nb.trace import load_traces
from fipo_nb.trainer import FIPOTrainer
from fipo_nb.widgets import Dashboard, PhaseView, TokenView
from fipo_nb.models import token_pieces
from fipo_nb.analysis.segments import OPENING, segment_metrics
from fipo_nb.views.colours import colour
from fipo_nb.views.records import (record_note, reweighted_first, segment_summary, spread, view_record,
                                   view_records)
from fipo_nb.views.static import token_html


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={out}", "trace_post_update=true",
                                                       "save_every=-1"])
    trainer = FIPOTrainer(config, reward_fn=lambda p, r, s: float(sum(map(ord, r)) % 2))
    trainer.train(3, progress=False)
    return out, trainer


def test_token_view_sends_only_the_selected_record(run):
    out, _ = run
    view = TokenView.from_run(out)
    assert view.steps == [1, 2, 3] and view.step_index == 2  # the newest step first
    assert len(view.samples) == 4 and isinstance(view.record, dict)
    state = view.get_state()
    assert isinstance(state["record"], dict) and "tokens" in state["record"]  # one record, not all twelve
    assert state["record"]["step"] == 3
    view.step_index = 0  # another step opens on its most re-weighted response too
    rows = [r for r in view._all if r["step"] == 1]
    assert view.record is reweighted_first(rows)[0] and view.sample_index == rows.index(view.record)
    view.sample_index = 2
    assert view.record is not None and view.record["step"] == 1


def test_first_mini_batch_records_say_why_their_weights_are_one(run):
    out, _ = run
    frame = load_traces(out)
    first = frame[frame["mini_batch"] == 0].iloc[0]
    view = TokenView([view_record(first)])
    assert "first mini-batch" in view.note
    page = token_html(view_record(first))  # the report's static card: its scale says there is nothing to colour
    assert "every token 1: nothing to colour" in page and "0 · 1 · 2" not in page and "choose" not in page
    view.metric = "post_update_future_kl"
    assert view.note == ""


def test_unknown_metric_lists_the_valid_ones(run):
    out, _ = run
    with pytest.raises(ValueError, match="choose one of weight, future_kl, post_update_future_kl, log_ratio, ratio"):
        TokenView.from_run(out, metric="entropy")


def test_static_html_is_self_contained_with_tooltips(run):
    out, _ = run
    view = TokenView.from_run(out)
    page = view.to_html()
    record = view.record
    assert page.count('class="fipo-tok') == len(record["tokens"])
    assert "<script" not in page and "http://" not in page and "https://" not in page
    titles = re.findall(r'<span class="fipo-tok[^"]*" data-i="\d+" style="[^"]*" title="([^"]*)"', page)
    assert len(titles) == len(record["tokens"]) and "weight" in titles[0] and "future_kl" in titles[0]
    assert all("\nsegment " in t for t in titles)
    bundle, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["text/html"] == page


def test_colour_scale_is_diverging_around_the_neutral_value():
    assert colour(1.0, 1.0, 0.2) == "rgb(255,255,255)"
    assert colour(1.2, 1.0, 0.2) == "rgb(214,39,40)"  # full red at +scale
    assert colour(0.8, 1.0, 0.2) == "rgb(31,119,180)"  # full blue at -scale
    assert colour(1.1, 1.0, 0.2, gamma=1.0) != colour(1.1, 1.0, 0.2, gamma=2.0)  # contrast
    assert colour(None, 1.0, 0.2) == "transparent"


def test_newlines_and_spaces_survive_in_the_static_view():
    record = {"step": 1, "sample": 0, "mini_batch": 1, "reward": 1.0, "advantage": 0.5, "finish_reason": "stop",
              "tokens": ["a", "  b", "\n\n", "<c>"], "metrics": {"weight": [1.0, 1.1, 1.2, 1.0]}}
    page = token_html(record)
    assert ">  b</span>" in page and "fipo-nl" in page and "&lt;c&gt;" in page


def test_phase_view_shows_each_phase_of_the_chosen_step(run):
    out, _ = run
    view = PhaseView.from_run(out)
    assert [d["step"] for d in view.steps_data] == [1, 2, 3] and view.selected_step == 3
    assert abs(sum(view.steps_data[0]["phases"]) - 1.0) < 1e-9
    assert [e["phase"] for e in view.examples] == [1, 2, 3, 4]
    shown = [e for e in view.examples if e["record"]]
    assert shown and all(e["record"]["step"] == 3 for e in shown)
    view.selected_step = 1
    assert all(e["record"]["step"] == 1 for e in view.examples if e["record"])
    page = view.to_html()
    assert "data:image/png;base64," in page and "superficial planning" in page and "<script" not in page


def test_dashboard_grows_by_one_row_per_step(run):
    out, trainer = run
    dash = Dashboard(trainer)
    assert len(dash.history) == 3
    dash.update(read_jsonl(out / "metrics.jsonl")[-1])
    assert len(dash.history) == 4 and set(dash.history[-1]) <= set(dash._pick(trainer.history[-1]))
    assert "data:image/png;base64," in dash.to_html()


CHECKED = ("Tom has 3 bags of 4 apples, so he has 3 * 4 = 12 apples.\nLet me double-check: 3 * 4 = 12 and 12 - 5 = 7."
           "\nAnswer: 7")


def checked_record():
    """A hand-written DAPO-format response with its real Qwen token pieces and made-up weights."""
    from fipo_nb.models import qwen_tokenizer

    tok = qwen_tokenizer("qwen2.5")
    pieces = token_pieces(tok, tok.encode(CHECKED, add_special_tokens=False))
    n = len(pieces)
    weight = [1.0 + 0.2 * (i / n) for i in range(n)]
    future_kl = [0.01 * i for i in range(n)]
    return {"step": 2, "sample": 1, "mini_batch": 1, "reward": 1.0, "advantage": 0.5, "finish_reason": "stop",
            "loss": "fipo", "tokens": pieces, "metrics": {"weight": weight, "future_kl": future_kl}}


def test_view_records_carry_token_spans_of_the_segments():
    record = view_records([checked_record()])[0]
    spans = record["segments"]
    assert [s["kind"] for s in spans] == ["working", "result", "verification", "answer"]
    assert spans[0]["start"] == 0 and spans[-1]["end"] == len(record["tokens"])
    verification = spans[2]
    text = "".join(record["tokens"][verification["start"]:verification["opening"]])
    assert text.strip() == "Let me double-check"  # the tokens that open the move
    assert "".join(record["tokens"][spans[3]["start"]:]) == "Answer: 7"


def test_segment_summary_averages_weights_and_future_kl_per_kind_by_hand():
    tokens = ["3", " +", " 4", " =", " 7", ".", " Wait", ",", " 7", ".", "\n", "Answer", ":", " 7"]
    record = view_records([{"tokens": tokens, "metrics": {"weight": [1.0] * 6 + [1.2, 1.1, 1.0, 1.0] + [1.0] * 4,
                                                          "future_kl": [0.0] * 6 + [0.4, 0.2, 0.0, 0.2] + [0.0] * 4}}])[0]
    rows = {r["kind"]: r for r in segment_summary(record)}
    assert set(rows) == {"working", "verification", "answer", OPENING}
    # verification: tokens 6..10 (" Wait" "," " 7" "." "\n"): weights 1.2 1.1 1 1 1 -> 5.3 / 5
    assert rows["verification"]["tokens"] == 5 and rows["verification"]["weight_mean"] == pytest.approx(5.3 / 5)
    assert rows["verification"]["future_kl_mean"] == pytest.approx(0.8 / 5)
    # the cue "Wait," is tokens 6 and 7: (1.2 + 1.1) / 2, (0.4 + 0.2) / 2
    assert rows[OPENING]["tokens"] == 2
    assert rows[OPENING]["weight_mean"] == pytest.approx(1.15)
    assert rows[OPENING]["future_kl_mean"] == pytest.approx(0.3)
    assert rows["working"]["tokens"] == 6 and rows["working"]["weight_mean"] == 1.0


def test_static_token_view_shows_bands_legend_and_summary():
    view = TokenView([checked_record()])
    page = view.to_html()
    assert "fipo-seg-legend" in page and all(k in page for k in ("planning", "working", "result", "verification"))
    assert page.count('class="fipo-band"') == 5  # one track per kind
    assert page.count('class="fipo-band-seg"') == 4  # one block per segment
    assert 'class="fipo-tok fipo-seg-verification fipo-cue"' in page
    table = page[page.index('<table class="fipo-seg-table">'):]
    assert "<td>+" in table and f"{OPENING}</td>" in table
    assert view.record["segment_summary"][0]["kind"] == "working"


def test_a_response_summary_is_the_step_metrics_of_that_response_alone():
    record = checked_record()
    metrics = segment_metrics([(record["tokens"], record["metrics"]["weight"], record["metrics"]["future_kl"], True)])
    rows = segment_summary(view_records([record])[0])
    assert [r["kind"] for r in rows] == ["working", "result", "verification", "answer", OPENING]
    for row in rows:  # the same numbers, to the last digit: one computation
        assert row["weight_mean"] == metrics[f"segment/{row['kind']}/weight_mean"]
        assert row["future_kl_mean"] == metrics[f"segment/{row['kind']}/future_kl_mean"]


def test_a_summary_leaves_missing_values_out_of_its_means():
    tokens = ["3", " +", " 4", " =", " 7", ".", " Wait", ",", " 7", ".", "\n", "Answer", ":", " 7"]
    weight = [1.0] * 6 + [None, 1.1, 1.0, 1.0, 1.0] + [1.0] * 3
    rows = {r["kind"]: r for r in segment_summary(view_records([{"tokens": tokens, "metrics": {"weight": weight}}])[0])}
    assert rows[OPENING]["tokens"] == 2 and rows[OPENING]["weight_mean"] == 1.1  # " Wait" has no weight
    assert rows["verification"]["weight_mean"] == pytest.approx(4.1 / 4)
    assert rows["working"]["future_kl_mean"] is None  # no Future-KL in the record at all


def test_segment_colours_and_group_names_are_defined_once_for_python_and_js():
    from pathlib import Path

    from fipo_nb.analysis.segments import GROUPS
    from fipo_nb.views import assets, colours

    for view in ("token_view", "phase_view", "dashboard"):
        assert assets.esm(view).startswith(colours.js_constants())
    assert f'"name": "{OPENING}"' in colours.js_constants() and all(f'"{g}"' in colours.js_constants() for g in GROUPS)
    assert colours.band_css(".fipo-view") in assets.stylesheet()
    shipped = "".join(p.read_text() for p in Path(assets.HERE).glob("*.js")) + (assets.HERE / "views.css").read_text()
    generated = [line.split(" = ")[0] for line in colours.js_constants().splitlines() if line.startswith("const ")]
    for value in (*generated, *colours.GROUP_COLOURS.values(), "verification cue", '"verify_open"'):
        assert value not in shipped, value  # the JS and the CSS read them from colours.py


def test_views_read_runs_without_train_and_no_view_imports_the_report():
    import ast
    from pathlib import Path

    from fipo_nb.views import assets

    for path in Path(assets.HERE).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert not module.startswith("..train"), (path.name, module)
                assert path.name == "report.py" or module != ".report", (path.name, module)


def test_views_open_on_the_response_fipo_reweighted_most(run):
    out, _ = run
    records = view_records(load_traces(out))
    ordered = reweighted_first(records)
    later = [r for r in records if r["mini_batch"] > 0 and r["in_loss"] and r["advantage"] != 0]
    assert later and ordered[0]["mini_batch"] > 0  # never a first-mini-batch response (all weights 1) first
    assert spread(ordered[0], "weight") == max(spread(r, "weight") for r in later)
    assert len(later) < len(records) and all(r["mini_batch"] == 0 or not r["in_loss"] or r["advantage"] == 0
                                             for r in ordered[len(later):])  # they come last, still there
    flat = dict(ordered[0], advantage=0.0, step=99)  # its group all scored alike: its weights move nothing
    assert reweighted_first([flat, *later])[0] is not flat and reweighted_first([flat, *later])[-1] is flat
    assert "advantage is 0" in record_note(flat, "weight")
    view = TokenView.from_run(out)  # the newest step, its most re-weighted response
    newest = [r for r in later if r["step"] == 3]
    assert view.record["step"] == 3 and view.record["mini_batch"] > 0
    assert spread(view.record, "weight") == max(spread(r, "weight") for r in newest)
    assert TokenView.from_run(out, step=1, sample=0).record["sample"] == min(r["sample"] for r in records
                                                                          if r["step"] == 1)  # asked: as asked
    with pytest.raises(ValueError, match="no traced response of step 9"):
        TokenView.from_run(out, step=9)


def test_step_axes_tick_whole_steps_only():
    from matplotlib.figure import Figure

    from fipo_nb.views.figures import step_axis

    ax = Figure().subplots()
    ax.plot([1, 2, 3], [0.1, 0.5, 0.2])
    step_axis(ax)
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    one = Figure().subplots()  # a run evaluated once: one point
    one.plot([5], [0.69], marker="o")
    step_axis(one)
    one.figure.canvas.draw()
    ticks = [t for t in one.get_xticks() if one.get_xlim()[0] <= t <= one.get_xlim()[1]]
    assert 5 in ticks and all(float(t).is_integer() for t in ticks)


def test_the_report_shows_evaluation_and_its_tables_fit_the_page(tmp_path):
    from fipo_nb.report import write_report

    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", "eval_data=single-digit?size=4&seed=3",
                                                       "eval_every=1", "eval_k=2", "save_every=-1"])
    FIPOTrainer(config).train(2, progress=False)
    page = write_report(tmp_path).read_text()
    evals = read_jsonl(tmp_path / "eval.jsonl")
    assert "<h2>Evaluation</h2>" in page and f"avg@2 <b>{evals[-1]['eval/avg@2']:.3f}</b>" in page
    assert page.count('<div class="table"><table>') == 2  # the evaluation and the per-step tables scroll sideways
    assert ".table{overflow-x:auto" in page and "img{max-width:100%}" in page
    first_view = page.index("fipo-tokenview", page.index("<h2>Token influence</h2>"))
    assert "mini-batch 0" not in page[first_view: page.index("</div>", first_view)]  # a re-weighted one first


def test_the_eval_line_under_a_step_row():
    from fipo_nb.train.runlog import format_eval_row

    assert format_eval_row({"step": 3, "reward/mean": 0.1}) is None
    line = format_eval_row({"eval/avg@4": 0.6875, "eval/pass@4": 1.0, "eval/reward_mean": 0.375,
                            "eval/length/mean": 25.7, "eval/length/median": 9.0, "eval/truncated_frac": 0.0625,
                            "eval/problems": 8.0})
    assert line == "  eval: avg@4 0.688 · pass@4 1.000 · reward +0.375 · length 25.7 (median 9) · truncated 0.06 · 8 problems"


def test_a_saved_notebook_keeps_the_dashboards_last_step():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("from fipo_nb.widgets import Dashboard\ndashboard = Dashboard()\ndashboard"),
        nbformat.v4.new_code_cell("for step in (1, 2, 3):\n    dashboard.update({'step': step, 'reward/mean': step / 10})"),
    ]
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    (output,) = notebook.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in output.data  # still the live widget in JupyterLab
    assert "step 3 · reward/mean 0.3" in output.data["text/html"] and "no steps yet" not in output.data["text/html"]


def test_the_dashboard_draws_the_critic_when_the_run_trains_one():
    from fipo_nb.views.dashboard import CRITIC_PANEL, PANELS

    plain = Dashboard()
    plain.update({"step": 1, "reward/mean": 0.0, "accuracy/mean": 0.5, "length/mean": 3.0})
    assert plain._panels() == PANELS
    ppo = Dashboard()
    ppo.update({"step": 1, "reward/mean": 0.0, "accuracy/mean": 0.5, "length/mean": 3.0, "critic/vf_loss": 0.4,
                "critic/vf_explained_var": 0.1})
    assert ppo._panels()[-1] == CRITIC_PANEL and ppo.history[-1]["critic/vf_loss"] == 0.4
    assert "training curves" in ppo.to_html()


def test_the_report_says_why_a_run_has_no_evaluation(tmp_path):
    from fipo_nb.views.report import _eval_section

    assert "no eval_data and no eval_holdout" in _eval_section(tmp_path, {"eval_data": None, "eval_holdout": 0.0})
    assert "eval_every=0" in _eval_section(tmp_path, {"eval_data": None, "eval_holdout": 0.1, "eval_every": 0})
    assert "eval_every=5: none was due yet" in _eval_section(tmp_path, {"eval_data": "x", "eval_every": 5})


def test_a_later_response_the_earlier_updates_did_not_move_says_why_its_weights_are_one():
    still = {"step": 1, "sample": 4, "mini_batch": 1, "loss": "fipo", "advantage": 0.5, "tokens": ["a", "b"],
             "metrics": {"weight": [1.0, 1.0], "log_ratio": [0.0, 0.0], "future_kl": [0.0, 0.0]}}
    assert "did not move the policy" in record_note(still, "weight")
    moved = dict(still, metrics={**still["metrics"], "log_ratio": [0.0, 0.01]})
    assert record_note(moved, "weight") == ""
