"""fipo_nb.compare: every loss from the same start (identical step-1 rollouts), and the comparison page."""

from __future__ import annotations

import json
import re
from html import escape as html_escape

import pytest
import torch

from fipo_nb.compare import QUANTITIES, compare, load

FAST = ["max_response_length=12", "prompts_per_step=2", "mini_batch_size=1", "trace_samples=2"]


@pytest.mark.slow
def test_every_loss_starts_alike_and_samples_identical_step_one_rollouts(tmp_path):
    seen = {}

    def keep(loss, result):
        seen[(loss, result.step)] = result

    comparison = compare("cpu-smoke", 2, tmp_path, losses=("fipo", "dapo"), overrides=FAST, progress=False,
                         report=False, callback=keep)
    fipo, dapo = seen[("fipo", 1)], seen[("dapo", 1)]
    assert torch.equal(fipo.rollout.response_ids, dapo.rollout.response_ids)  # the same tokens, row by row
    assert torch.equal(fipo.rollout.prompt_ids, dapo.rollout.prompt_ids)
    assert fipo.responses == dapo.responses and torch.equal(fipo.rewards, dapo.rewards)
    assert torch.equal(fipo.old_log_probs, dapo.old_log_probs)  # the same initial policy scores them alike
    # ... and the losses did differ: FIPO re-weights the 2nd mini-batch's tokens, DAPO never does
    later = fipo.mini_batch == 1
    assert (dapo.weights == 1).all() and not torch.equal(fipo.weights[later], dapo.weights[later])
    info = json.loads((tmp_path / "compare.json").read_text())
    assert info["same_initial_policy"] and info["same_step1_rollouts"]
    assert len(set(info["fingerprints"].values())) == 1 and info["losses"] == ["fipo", "dapo"]
    # each loss is a normal run directory
    for loss in ("fipo", "dapo"):
        config = json.loads((tmp_path / loss / "config.json").read_text())
        assert config["fipo"]["loss"] == loss and config["seed"] == 0
        assert [r["step"] for r in comparison.metrics[loss]] == [1, 2]
        assert (tmp_path / loss / "traces" / "step-000002.parquet").exists()
    # the page: one figure per quantity that has values, a line per loss, and a row per step and loss
    page = comparison.html.read_text()
    titles = re.findall(r'<img class="fig" alt="([^"]*)"', page)
    assert "reward" in titles and "response length q75 (tokens)" in titles
    assert "share of phase 4 (multi-pass verification)" in titles
    assert set(titles) <= {t for t, _ in QUANTITIES} and len(titles) >= 14
    assert page.count("<tr><td>1</td><td>fipo</td>") == 1 and page.count("<tr><td>2</td><td>dapo</td>") == 1
    assert "identical step-1 rollouts: <b>yes</b>" in page and "<script" not in page
    assert load(tmp_path).markdown().splitlines()[2].startswith("| fipo | 2 | ")
    # which steps drew identical samples is recorded and said, from each step's rollout hash
    same = [step for step in (1, 2) if torch.equal(seen[("fipo", step)].rollout.response_ids,
                                                   seen[("dapo", step)].rollout.response_ids)]
    assert comparison.identical_steps() == same and same[0] == 1
    note = comparison.parting_note()
    assert ("every step" if same == [1, 2] else "at step(s) 1") in note and html_escape(note) in page
    assert note in comparison.markdown()
    with pytest.raises(ValueError, match="holds an earlier run"):
        compare("cpu-smoke", 1, tmp_path, overrides=FAST, progress=False)


def test_a_step_that_coincides_again_after_the_runs_parted_is_explained(tmp_path):
    from fipo_nb.compare import Comparison

    rows = [{"step": step} for step in (1, 2, 3, 4, 5, 6)]
    hashes = {"fipo": list("aabcdf"), "dapo": list("aaxyzf")}
    comparison = Comparison(tmp_path, ["fipo", "dapo"], {"fipo": rows, "dapo": rows}, {}, {"rollouts": hashes})
    assert comparison.identical_steps() == [1, 2, 6]
    assert "at step(s) 1, 2, 6" in comparison.parting_note() and "coincide again" in comparison.parting_note()
    hashes["dapo"][5] = "g"  # parted for good: nothing to explain
    assert "coincide again" not in comparison.parting_note()


def test_bad_losses_are_named_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="losses must be some of fipo, dapo, grpo, ppo; got fipo, sac"):
        compare("cpu-smoke", 1, tmp_path, losses="fipo,sac")
    with pytest.raises(ValueError, match="named twice"):
        compare("cpu-smoke", 1, tmp_path, losses=("dapo", "dapo"))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ppo_starts_alike_and_its_credit_is_shown_beside_fipos(tmp_path):
    seen = {}
    comparison = compare("cpu-smoke", 1, tmp_path, losses=("fipo", "ppo"), overrides=["trace_samples=2"], progress=False,
                         report=False, callback=lambda loss, result: seen.setdefault(loss, result))
    assert comparison.info["same_initial_policy"] and comparison.info["same_step1_rollouts"]
    fipo, ppo = seen["fipo"], seen["ppo"]
    assert torch.equal(fipo.rollout.response_ids, ppo.rollout.response_ids)
    assert ppo.values is not None and "critic/vf_loss" in ppo.metrics and "critic/vf_loss" not in fipo.metrics
    credit = json.loads((tmp_path / "credit.json").read_text())
    assert credit["methods"] == ["fipo", "ppo"] and credit["responses"] == len(credit["rows"]) > 0
    row = credit["rows"][0]
    length = int(fipo.rollout.response_lengths[row["row"]])
    # FIPO's credit is A_i * f_t, PPO's the critic's GAE advantage, on the same tokens
    expected = (fipo.advantages[row["row"]] * fipo.weights[row["row"], :length]).double()
    assert torch.allclose(torch.tensor(row["credit"]["fipo"], dtype=torch.float64), expected, rtol=1e-6)
    assert torch.allclose(torch.tensor(row["credit"]["ppo"], dtype=torch.float64),
                          ppo.token_advantages[row["row"], :length].double())
    page = comparison.html.read_text()
    assert "Credit, token by token: FIPO against PPO" in page and 'alt="critic: value loss"' in page
    assert load(tmp_path).credit == credit
