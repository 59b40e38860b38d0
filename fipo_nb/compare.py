"""FIPO against DAPO (or any of the losses) from the same start: one run per loss, then one page.

    from fipo_nb.compare import compare
    comparison = compare("demo", steps=10, out="runs/compare")      # losses=("fipo", "dapo")
    comparison.html                                                 # runs/compare/compare.html
    print(comparison.markdown())                                    # the numbers, as a table

    fipo-nb compare --preset demo --steps 10 --out runs/compare [--losses fipo,dapo]

Every loss trains from the same initial policy (the seed initialises the model and its adapters;
compare.json records a hash of the trainable weights of each run before its first step), the
same prompt order and the same sampling seeds, into OUT/<loss>/, a normal run directory
(metrics.jsonl, eval.jsonl, traces/, report.html). So step 1 samples the same rollouts for every
loss (compare.json records their hash too, and every later step's). From then on the policies
part, but what they sample parts only once their weights differ enough to flip a sampled token:
with the same random numbers, the first steps often draw identical samples, and the comparison
says at which steps they did (`Comparison.identical_steps`). OUT/compare.html shows, per step, one figure per quantity with one line per loss (length
quantiles, reward, accuracy, evaluation avg@k, phase shares, weight and Future-KL per reasoning
segment) and a table.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from .analysis.files import write_atomic
from .analysis.segments import GROUPS
from .analysis.runs import read_jsonl

LOSSES = ("fipo", "dapo", "grpo", "ppo")  # ppo: GAE advantages from a critic, the DAPO loss
METHODS = {  # what each compared run sets: its loss, and where its advantages come from
    "fipo": ["fipo.loss=fipo", "advantage_estimator=grpo"], "dapo": ["fipo.loss=dapo", "advantage_estimator=grpo"],
    "grpo": ["fipo.loss=grpo", "advantage_estimator=grpo"], "ppo": ["fipo.loss=dapo", "advantage_estimator=gae"],
}
CREDIT = ("fipo", "ppo")  # the two methods whose per-token credit compare.html puts side by side
LINE_STYLES = {"fipo": ("#d62728", "-", "o"), "dapo": ("#1f77b4", "--", "s"), "grpo": ("#2ca02c", ":", "^"),
               "ppo": ("#9467bd", "-.", "D")}
QUANTITIES = [  # (title, metrics.jsonl key); eval avg@k is added from eval.jsonl
    *[(f"response length {q} (tokens)", f"length/{q}") for q in ("min", "q25", "median", "mean", "q75", "max")],
    ("reward", "reward/mean"), ("accuracy", "accuracy/mean"),
    *[(f"share of phase {p} ({name})", f"phase/{p}_frac") for p, name in
      ((1, "superficial planning"), (2, "linear execution"), (3, "self-reflection"), (4, "multi-pass verification"))],
    *[(f"mean weight: {g}", f"segment/{g}/weight_mean") for g in GROUPS],
    *[(f"mean Future-KL: {g}", f"segment/{g}/future_kl_mean") for g in GROUPS],
    ("share of tokens in verification", "segment/verification/token_frac"),
    ("mean influence weight (all tokens)", "fipo/weight_mean"),
    ("critic: value loss", "critic/vf_loss"), ("critic: explained variance", "critic/vf_explained_var"),
    ("critic: mean value", "critic/values/mean"),
]
TABLE = [("reward", "reward/mean", "+.3f"), ("accuracy", "accuracy/mean", ".3f"), ("mean length", "length/mean", ".1f"),
         ("median length", "length/median", ".1f"), ("phase 1", "phase/1_frac", ".2f"),
         ("phase 2", "phase/2_frac", ".2f"),
         ("phase 3", "phase/3_frac", ".2f"), ("phase 4", "phase/4_frac", ".2f"),
         ("weight: working", "segment/working/weight_mean", ".4f"),
         ("weight: verification", "segment/verification/weight_mean", ".4f"),
         ("weight: verify_open", "segment/verify_open/weight_mean", ".4f"),
         ("Future-KL: verify_open", "segment/verify_open/future_kl_mean", "+.4f")]


@dataclass
class Comparison:
    """The runs of a comparison, read back from OUT (see `load`)."""

    out: Path
    losses: list[str]
    metrics: dict[str, list[dict]]  # loss -> metrics.jsonl rows
    evals: dict[str, list[dict]]  # loss -> eval.jsonl rows
    info: dict = field(default_factory=dict)  # compare.json
    credit: dict | None = None  # credit.json: FIPO's and PPO's per-token credit on the step-1 responses

    @property
    def html(self) -> Path:
        return self.out / "compare.html"

    def run_dir(self, loss: str) -> Path:
        return self.out / loss

    def identical_steps(self) -> list[int]:
        """Steps at which every loss trained on exactly the same samples (compare.json's rollout hashes)."""
        hashes = self.info.get("rollouts") or {}
        if len(hashes) < 2 or set(hashes) != set(self.losses):
            return []
        return [step for step, same in enumerate(zip(*hashes.values()), start=1) if len(set(same)) == 1]

    def parting_note(self) -> str:
        """One line on which steps drew identical samples, and why."""
        same = self.identical_steps()
        if not same:
            return "The losses drew different samples from step 1 on." if self.info.get("rollouts") else ""
        steps = len(next(iter(self.metrics.values()), []))
        when = "at every step" if len(same) == steps else f"at step(s) {', '.join(map(str, same))}"
        return (f"The losses drew identical samples {when}: same initial weights, prompts and random numbers, and "
                "updates too small yet to flip a sampled token, so their rewards, lengths and phases are equal "
                "there; only the weights, the gradients and what they do to the policy differ. Runs part once the "
                "policies differ enough (more steps, a larger lr or more updates per step)."
                + (" Each step draws its own random numbers, the same in every run, so a later step can coincide "
                   "again while the policies are still close: the runs have not merged, their weights still differ."
                   if same != list(range(1, len(same) + 1)) else ""))

    def eval_key(self) -> str | None:
        keys = sorted({k for rows in self.evals.values() for r in rows for k in r if k.startswith("eval/avg@")})
        return keys[0] if keys else None

    def rows(self) -> list[dict]:
        """One row per step and loss: step, loss, and TABLE's quantities (and eval avg@k where evaluated)."""
        key, out = self.eval_key(), []
        for loss in self.losses:
            evals = {int(r["step"]): r for r in self.evals.get(loss, [])}
            for row in self.metrics[loss]:
                step = int(row["step"])
                item = {"step": step, "loss": loss, **{k: row.get(k) for _, k, _ in TABLE}}
                if key:
                    item[key] = evals.get(step, {}).get(key)
                out.append(item)
        return sorted(out, key=lambda r: (r["step"], self.losses.index(r["loss"])))

    def summary(self) -> list[dict]:
        """Per loss: the mean over steps of TABLE's quantities, and the last evaluation's avg@k."""
        key, out = self.eval_key(), []
        for loss in self.losses:
            item = {"loss": loss, "steps": len(self.metrics[loss])}
            for _, k, _ in TABLE:
                values = [r[k] for r in self.metrics[loss] if r.get(k) is not None]
                item[k] = sum(values) / len(values) if values else None
            if key:
                evals = self.evals.get(loss, [])
                item[key] = evals[-1][key] if evals else None
            out.append(item)
        return out

    def markdown(self) -> str:
        """summary() as a Markdown table (means over the steps; the last evaluation), and the parting note."""
        key = self.eval_key()
        columns = list(TABLE) + ([(f"last {key.removeprefix('eval/')}", key, ".3f")] if key else [])
        head = "| loss | steps | " + " | ".join(name for name, _, _ in columns) + " |"
        rule = "|" + "---|" * (len(columns) + 2)
        lines = [head, rule]
        for item in self.summary():
            cells = [_cell(item.get(k), f) for _, k, f in columns]
            lines.append(f"| {item['loss']} | {item['steps']} | " + " | ".join(cells) + " |")
        note = self.parting_note()
        return "\n".join(lines) + (f"\n\n{note}" if note else "")


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fingerprint(policy) -> str:
    """sha256 of the trainable weights (names and values): equal for equal initial policies."""
    digest = hashlib.sha256()
    for name, param in sorted(policy.model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rollout_hash(result) -> str:
    """sha256 of a step's sampled token ids (as trained on) and lengths."""
    digest = hashlib.sha256()
    digest.update(result.rollout.response_ids.cpu().numpy().tobytes())
    digest.update(result.rollout.response_lengths.cpu().numpy().tobytes())
    return digest.hexdigest()


def _losses(losses) -> list[str]:
    losses = [s.strip() for s in losses.split(",")] if isinstance(losses, str) else list(losses)
    unknown = [loss for loss in losses if loss not in LOSSES]
    if not losses or unknown:
        raise ValueError(f"compare: losses must be some of {', '.join(LOSSES)}; got {', '.join(losses) or 'none'}")
    if len(set(losses)) != len(losses):
        raise ValueError(f"compare: a loss is named twice in {', '.join(losses)}")
    return losses


def compare(config, steps: int | None = None, out=None, *, losses=("fipo", "dapo"), overrides=(),
            overwrite: bool = False, progress: bool = True, report: bool = True, callback=None) -> Comparison:
    """Train each loss from the same start into OUT/<loss>/ and write OUT/compare.html.

    config: a preset name or a TrainConfig; steps: default the config's; out: default
    runs/compare; overrides: "key=value" strings as `--set`; callback(loss, StepResult) after
    every step. A run directory that holds an earlier run's metrics raises ValueError unless
    overwrite=True.
    """
    from .config.presets import apply_overrides, get_preset
    from .train.trainer import FIPOTrainer

    losses = _losses(losses)
    base = get_preset(config) if isinstance(config, str) else config
    base = apply_overrides(base, list(overrides) + ([f"steps={steps}"] if steps is not None else []))
    out = Path(out if out is not None else "runs/compare")
    for loss in losses:
        if (out / loss / "metrics.jsonl").exists() and not overwrite:
            raise ValueError(f"compare: {out / loss} holds an earlier run; pass overwrite=True (--overwrite) "
                             "to replace it")
    info = {"preset": config if isinstance(config, str) else None, "steps": base.steps, "seed": base.seed,
            "losses": losses, "overrides": list(overrides), "model": base.model, "fingerprints": {},
            "step1_rollouts": {}, "rollouts": {}}
    step1, tokenizer = {}, None  # FIPO's and PPO's step-1 results: their credit, side by side
    (out / "credit.json").unlink(missing_ok=True)
    for loss in losses:
        run = apply_overrides(base, [*METHODS[loss], f"output_dir={out / loss}"])
        trainer = FIPOTrainer(run)
        info["fingerprints"][loss] = fingerprint(trainer.policy)

        def after_step(result, loss=loss):
            info["rollouts"].setdefault(loss, []).append(rollout_hash(result))
            if result.step == 1:
                info["step1_rollouts"][loss] = rollout_hash(result)
                if loss in CREDIT:
                    step1[loss] = result
            if callback is not None:
                callback(loss, result)

        trainer.train(run.steps, progress=progress, callback=after_step)
        tokenizer = trainer.policy.tokenizer
        del trainer
        gc.collect()  # one model in memory at a time
        if report:
            from .views.report import write_report

            write_report(out / loss)
    info["same_initial_policy"] = len(set(info["fingerprints"].values())) == 1
    info["same_step1_rollouts"] = len(set(info["step1_rollouts"].values())) == 1
    if set(step1) == set(CREDIT) and len({info["step1_rollouts"][m] for m in CREDIT}) == 1:
        write_credit(out, {m: step1[m] for m in CREDIT}, tokenizer)
    write_atomic(out / "compare.json", json.dumps(info, indent=2) + "\n")
    comparison = load(out)
    write_html(comparison)
    return comparison


def write_credit(out: Path, results: dict, tokenizer) -> Path:
    """OUT/credit.json: each method's per-token credit on the step-1 responses both trained on (the
    rows of later mini-batches), their rank correlation, and the mean rank per reasoning segment."""
    from .analysis.credit import credit_rows, group_ranks

    rows = credit_rows(results, tokenizer)
    rhos = sorted(r.rho for r in rows if r.rho is not None)
    data = {"methods": list(results), "responses": len(rows), "groups": group_ranks(rows),
            "rho_mean": sum(rhos) / len(rhos) if rhos else None,
            "rho_median": rhos[len(rhos) // 2] if rhos else None, "rows": [r.to_dict() for r in rows]}
    return write_atomic(out / "credit.json", json.dumps(data) + "\n")


def credit_note(credit: dict) -> str:
    """What the credit comparison shows, in words, from its numbers (whatever they are)."""
    a, b = credit["methods"]
    groups = credit["groups"]
    if not credit["responses"]:
        return "No response of a later mini-batch had a direction (every group's rewards were equal): nothing to rank."
    parts = [f"On {credit['responses']} step-1 responses of later mini-batches, the two methods' per-token credit "
             f"has a mean Spearman correlation of {_cell(credit['rho_mean'], '+.2f')} (median "
             f"{_cell(credit['rho_median'], '+.2f')})."]
    for method in (a, b):
        ranked = {g: r for g, r in groups[method].items() if r is not None and groups["tokens"][g] > 0}
        if ranked and max(ranked.values()) - min(ranked.values()) < 1e-9:
            parts.append(f"{method.upper()} ranks every segment kind alike ({next(iter(ranked.values())):.2f}): "
                         "ranks are taken within a response, and these responses each lie in one segment.")
        elif ranked:
            top, low = max(ranked, key=ranked.get), min(ranked, key=ranked.get)
            parts.append(f"{method.upper()} ranks {top} tokens highest (mean rank {ranked[top]:.2f}) and {low} "
                         f"lowest ({ranked[low]:.2f}).")
    verify = [groups[m].get("verify_open") for m in (a, b)]
    if all(v is not None for v in verify):
        more = a if verify[0] > verify[1] else b
        parts.append(f"The tokens that open a verification move rank {verify[0]:.2f} under {a.upper()} and "
                     f"{verify[1]:.2f} under {b.upper()}: {more.upper()} credits them more, relative to the rest.")
    return " ".join(parts)


def credit_html(credit: dict | None) -> str:
    """The credit section of compare.html (empty without credit.json): the note, the table, six responses."""
    if not credit:
        return ""
    from .views.colours import colour

    a, b = credit["methods"]
    groups = credit["groups"]
    head = f"<tr><th>group</th><th>tokens</th><th>{a.upper()} mean rank</th><th>{b.upper()} mean rank</th></tr>"
    body = "".join(f"<tr><td>{html.escape(g)}</td><td>{int(groups['tokens'][g])}</td>"
                   f"<td>{_cell(groups[a][g], '.3f')}</td><td>{_cell(groups[b][g], '.3f')}</td></tr>"
                   for g in groups["tokens"] if groups["tokens"][g])
    strips = []
    from .analysis.credit import percentile_ranks

    for row in credit["rows"][:6]:
        lines = []
        for method in (a, b):
            ranks = percentile_ranks([v * row["direction"] for v in row["credit"][method]])
            spans = "".join(f'<span style="background:{colour(float(r), 0.5, 0.5)}" title="{v:+.4f}">'
                            f"{html.escape(t)}</span>" for t, r, v in zip(row["tokens"], ranks, row["credit"][method]))
            lines.append(f"<div><b>{method.upper()}</b> <span style='white-space:pre-wrap'>{spans}</span></div>")
        strips.append(f"<p>row {row['row']} (mini-batch {row['mini_batch']}, reward {row['reward']:+g}, "
                      f"rho {_cell(row['rho'], '+.2f')}){''.join(lines)}</p>")
    return (f"<h2>Credit, token by token: {a.upper()} against {b.upper()}</h2>"
            f"<p>{html.escape(credit_note(credit))}</p><p>A token's credit is the advantage its loss used ("
            "A·f for FIPO, the critic's GAE advantage for PPO), read in the direction of the response's outcome and "
            "ranked within the response (0: least, 1: most; red above the middle, blue below; hover for the "
            "value). Both methods trained on the same step-1 tokens.</p>"
            f"<table>{head}{body}</table>{''.join(strips)}")


def load(out) -> Comparison:
    """A comparison read back from OUT (compare.json and each OUT/<loss>/'s logs)."""
    out = Path(out)
    path = out / "compare.json"
    if not path.exists():
        raise FileNotFoundError(f"no compare.json in {out}")
    info = json.loads(path.read_text())
    losses = info["losses"]
    metrics = {loss: read_jsonl(out / loss / "metrics.jsonl") for loss in losses}
    evals = {loss: read_jsonl(out / loss / "eval.jsonl") for loss in losses}
    credit = json.loads((out / "credit.json").read_text()) if (out / "credit.json").exists() else None
    return Comparison(out, losses, metrics, evals, info, credit)


def _figure_png(comparison: Comparison, title: str, key: str, source: str = "metrics") -> str | None:
    from matplotlib.figure import Figure  # no pyplot: a notebook's own backend stays as it is
    from matplotlib.ticker import MaxNLocator

    data = comparison.evals if source == "eval" else comparison.metrics
    lines = {loss: [(r["step"], r[key]) for r in data[loss] if r.get(key) is not None] for loss in comparison.losses}
    if not any(lines.values()):
        return None
    fig = Figure(figsize=(3.6, 2.4))
    ax = fig.subplots()
    for loss, points in lines.items():
        if points:
            xs, ys = zip(*points)
            colour, style, marker = LINE_STYLES[loss]
            ax.plot(xs, ys, marker=marker, ms=3, lw=1.5, color=colour, ls=style, label=loss.upper())
    steps = [r["step"] for rows in comparison.metrics.values() for r in rows] or [1]
    ax.set_xlim(min(steps) - 0.3, max(steps) + 0.3)  # every figure on the same steps, evaluations included
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(comparison: Comparison) -> str:
    """The comparison page: setup, checks, one figure per quantity (a line per loss), tables."""
    info, key = comparison.info, comparison.eval_key()
    quantities = list(QUANTITIES)
    if key:
        quantities.insert(8, (f"evaluation {key.removeprefix('eval/')}", key))
    figures = []
    for title, k in quantities:
        png = _figure_png(comparison, title, k, "eval" if k.startswith("eval/") else "metrics")
        if png is not None:
            figures.append(f'<img class="fig" alt="{html.escape(title)}" src="data:image/png;base64,{png}">')
    rows = comparison.rows()
    columns = [("step", "step", "d"), ("loss", "loss", "s"), *TABLE] + ([(key.removeprefix("eval/"), key, ".3f")]
                                                                         if key else [])
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k), f))}</td>" for _, k, f in columns) + "</tr>"
                   for r in rows)
    summary_columns = [("loss", "loss", "s"), ("steps", "steps", "d"), *TABLE] + (
        [(f"last {key.removeprefix('eval/')}", key, ".3f")] if key else [])
    summary = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k), f))}</td>" for _, k, f in summary_columns)
                      + "</tr>" for r in comparison.summary())
    checks = (f"same initial policy (hash of the trainable weights): <b>{_yes(info.get('same_initial_policy'))}</b> · "
              f"identical step-1 rollouts: <b>{_yes(info.get('same_step1_rollouts'))}</b>")
    runs = " · ".join(f'<a href="{loss}/report.html">{loss.upper()} report</a>' for loss in comparison.losses)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fipo_nb compare: {html.escape(' vs '.join(comparison.losses))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:12px;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{background:#f3f3f3}}.fig{{margin:2px}}</style>
</head><body>
<h1>{html.escape(' vs '.join(loss.upper() for loss in comparison.losses))}</h1>
<p>Model <code>{html.escape(str(info.get('model')))}</code>, preset <code>{html.escape(str(info.get('preset')))}</code>,
{info.get('steps')} step(s), seed {info.get('seed')}, overrides {html.escape(', '.join(info.get('overrides') or []) or 'none')}.
Each loss trained from the same initial policy, prompt order and sampling seeds. {checks}. {runs}.</p>
<p>{html.escape(comparison.parting_note())}</p>
<p>Per step: a line per loss. "verify_open" is the tokens that open a verification move ("Wait,", "Let me
double-check"); "rest" all other tokens. Weights and Future-KL are means over the tokens that entered the loss.</p>
<h2>Over the steps</h2>{''.join(figures)}
{credit_html(comparison.credit)}
<h2>Means over the steps</h2><table><tr>{''.join(f'<th>{html.escape(n)}</th>' for n, _, _ in summary_columns)}</tr>{summary}</table>
<h2>Per step</h2><table><tr>{head}</tr>{body}</table>
</body></html>
"""


def _yes(flag) -> str:
    return {True: "yes", False: "NO"}.get(flag, "not recorded")


def write_html(comparison: Comparison) -> Path:
    """OUT/compare.html, replaced all at once (a full disk: WriteError naming it, the old page kept)."""
    return write_atomic(comparison.html, render_html(comparison))
