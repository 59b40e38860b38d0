"""The README and docs/ say what the code does: links and paths exist, names import, examples run as written."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
IMAGES = ("token_view.png", "report.png")
MAX_IMAGE_BYTES = 300_000

LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PACKAGE_PATH = re.compile(r"^fipo_nb/[\w/.]*$")
DOTTED = re.compile(r"^(fipo_nb(?:\.\w+)+)")


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks of a markdown text, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def section(text: str, heading: str) -> str:
    """A markdown section's text, from its heading to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    following = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, start + len(heading))
    return text[start: following.start() if following else len(text)]


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)}


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    for target in links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: link to {target!r}, which does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: no heading #{anchor} in {resolved.name}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert [page.name for page in DOCS if page not in linked] == []


def test_the_docs_index_lists_every_page():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    assert [page.name for page in DOCS if page != index and page not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_package_paths_in_code_spans_exist(page):
    for span in CODE_SPAN.findall(page.read_text(encoding="utf-8")):
        if PACKAGE_PATH.match(span):
            assert (ROOT / span).exists(), f"{page.relative_to(ROOT)}: `{span}` is not in the package (moved?)"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_dotted_names_in_code_spans_import(page):
    for span in CODE_SPAN.findall(page.read_text(encoding="utf-8")):
        match = DOTTED.match(span)
        if not match:
            continue
        parts = match.group(1).split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes below it
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for name in parts[cut:]:
                assert hasattr(obj, name), (f"{page.relative_to(ROOT)}: `{match.group(1)}` does not resolve "
                                            f"({name!r} is missing)")
                obj = getattr(obj, name)
            break


def test_readme_lists_every_notebook():
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    listed = sorted(Path(t).name for t in links(README) if t.startswith("notebooks/"))
    assert listed == notebooks


@pytest.mark.parametrize("name", IMAGES)
def test_readme_pictures_are_committed_pngs_small_enough(name):
    path = ROOT / "docs" / "images" / name
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 300, (width, height)
    assert len(data) < MAX_IMAGE_BYTES
    assert f"docs/images/{name}" in README.read_text(encoding="utf-8")


def test_own_data_examples_load_and_score_as_the_readme_says(tmp_path):
    from fipo_nb.data import config_problems
    from fipo_nb.presets import apply_overrides, get_preset
    from fipo_nb.rewards import MathReward

    text = section(README.read_text(encoding="utf-8"), "### Train on your own data")
    rows = [json.loads(block) for block in fenced(text, "json")]
    assert len(rows) == 2
    data = tmp_path / "my_problems.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    aime, dapo = config_problems(apply_overrides(get_preset("demo"), [f"data={data}"]), "train")
    assert aime.answer == dapo.answer == "2"
    assert rows[0]["problem"] in aime.text and "Solve it step by step" in aime.text  # the demo's instruction
    assert dapo.prompt == rows[1]["prompt"] and dapo.source == "math_dapo"  # kept as it is
    score = MathReward(mode="auto")
    assert score("", "2^10 = 1024 = 146 * 7 + 2.\nAnswer: 2", dapo) == 1.0
    assert score("", "2^10 = 1024 = 146 * 7 + 2.\nAnswer: 2.", dapo) == -1.0  # the official scorer: "2." is not 2


def test_core_api_example_runs_as_written():
    import torch

    (code,) = fenced((ROOT / "docs" / "core-api.md").read_text(encoding="utf-8"), "python")
    namespace: dict = {}
    exec(compile(code, "docs/core-api.md", "exec"), namespace)
    out = namespace["out"]
    assert math.isfinite(out.loss.item()) and namespace["log_prob"].grad is not None
    assert out.weights.shape == (6, 8) and torch.all((out.weights >= 1) & (out.weights <= 1.2))


@pytest.mark.slow
def test_trl_example_runs_offline_as_written(tmp_path):
    pytest.importorskip("trl", reason="TRL is not installed: pip install 'fipo_nb[trl]' (make test does)")
    code = fenced((ROOT / "docs" / "trl.md").read_text(encoding="utf-8"), "python")[0]
    report = "\nimport json\nprint('LOG ' + json.dumps(trainer.state.log_history))\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", code + report], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FutureWarning" not in done.stderr and "kernels-community" not in done.stderr, done.stderr[-3000:]
    log = json.loads(next(line[4:] for line in done.stdout.splitlines() if line.startswith("LOG ")))
    updates = [row for row in log if "loss" in row]
    assert len(updates) == 2  # one generation, two optimizer updates
    assert updates[0]["fipo/weight_max"] == 1.0  # the first update sees the policy that sampled
    assert updates[1]["fipo/weight_max"] > 1.0  # from the second, FIPO re-weights tokens
