"""fipo_nb on verl: the launch of a preset, the loss plugin, and verl's actor config with it.

    fipo-nb launch verl --preset paper-fipo-32b --out runs/fipo32b     # launch.sh, overrides.txt, plan.txt
    actor_rollout_ref.model.external_lib=fipo_nb.integrations.verl      # what the launch tells verl's workers

This module imports verl only when verl is already loaded (inside verl's workers, where
importing it registers the loss "fipo_nb" and the trace hook: see `verl_plugin`) or when asked
(`register()`, `actor_config()`, `FIPOPolicyLossConfig`), so `fipo-nb launch` runs without verl.

`launch(config)` maps every TrainConfig field to verl 0.9.1 Hydra overrides through `FIELDS`, one
entry per field, derived from the verl mapping each field declares (config/fields.py): a field
missing there, or a value verl cannot express, is an error naming it.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...config import FIPOConfig, TrainConfig
from .fields import (  # noqa: F401
    CONSTANT, FIELDS, PLUGIN, POLICY_LOSS_TARGET, LaunchError, _Context, _value, loss_fields,
)

ENTRY_POINT = "verl.trainer.main_ppo"
VERL_VERSION = "0.9.1"
OFFICIAL_CLUSTER = (16, 8)  # nodes x GPUs of the official FIPO / DAPO 32B scripts
_LAZY = ("FIPOPolicyLossConfig", "fipo_nb_policy_loss", "traced_ppo_loss", "install_trace_hook", "TraceHook",
         "verl_metrics", "fipo_config_of")


def register():
    """Import the worker-side plugin: registers loss "fipo_nb" with verl and installs the trace hook."""
    import importlib.util

    if importlib.util.find_spec("verl") is None:
        raise ImportError(f"fipo_nb's loss inside verl needs verl {VERL_VERSION} in this environment "
                          "(`make verl-venv` builds .venv-verl; `fipo-nb launch verl` and `fipo-nb plan` need no verl)")
    from . import plugin

    return plugin


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(register(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def actor_config(fipo: FIPOConfig, **actor_fields):
    """verl's FSDP ActorConfig with fipo_nb's loss and `fipo`'s settings; `actor_fields` are further
    ActorConfig fields (ppo_mini_batch_size, use_dynamic_bsz, policy_loss trace settings via
    `trace_dir=` / `trace_samples=`, model_config, ...).

    "fipo" runs verl loss "fipo_nb"; "dapo" and "grpo" run it too (FIPOConfig semantics), with
    token-mean or seq-mean-token-mean aggregation as the loss needs.
    """
    plugin = register()  # first: it names what is missing when verl is not installed
    from verl.workers.config import FSDPActorConfig

    fipo = dataclasses.replace(fipo).validate()
    trace = {k: actor_fields.pop(k) for k in ("trace_dir", "trace_samples") if k in actor_fields}
    actor, settings = loss_fields(fipo)
    loss = plugin.FIPOPolicyLossConfig(loss_mode=plugin.LOSS_NAME, **settings, **trace)
    fields = dict(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=fipo.clip_low, **actor,
                  policy_loss=loss, entropy_coeff=0.0, use_kl_loss=False)
    fields.update(actor_fields)
    return FSDPActorConfig(**fields)


# ------------------------------------------------------------------------------------------ launch


@dataclass
class Launch:
    """verl overrides for one TrainConfig on one cluster, and what the launch writes."""

    config: TrainConfig
    nodes: int
    gpus_per_node: int
    out: Path
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fields that have no meaning under verl, and why
    warnings: list[str] = field(default_factory=list)  # what to check before launching
    conversions: dict[str, tuple[str, str]] = field(default_factory=dict)  # "train"/"val" -> (source, parquet path)
    by_field: dict[str, list[str]] = field(default_factory=dict)  # TrainConfig field -> the overrides it wrote

    def command(self) -> str:
        return " \\\n    ".join([f"python3 -m {ENTRY_POINT}"] + [shlex.quote(o) for o in self.overrides])

    def _where(self) -> str:
        """Header lines on the paths the script holds: Ray's workers run in folders of their own, on other nodes."""
        lines = [f"# Checkpoints, traces and verl's metrics go to {self.out.resolve()} (absolute: Ray's workers run in\n"
                 "#   folders of their own), which every node must reach: write the launch on the shared filesystem.\n"]
        for override in self.overrides:
            key, _, value = override.partition("=")
            if key in ("data.train_files", "data.val_files") and not Path(value).is_absolute():
                source = DAPO_FILES.get(Path(value).name)
                lines.append(f"# {key}={value} is relative: give it as a path every node reads "
                             f"(--set {'data' if key == 'data.train_files' else 'eval_data'}=/shared/{Path(value).name})"
                             + (f"; DAPO's file: wget -O {Path(value).name} '{source}'" if source else "")
                             + (", then write the launch again where it is (its repeated rows are read once)"
                                if source and key == "data.val_files" else "") + "\n")
        return "".join(lines)

    def script(self, argv: list[str] | None = None) -> str:
        made = " ".join(shlex.quote(a) for a in (argv or []))
        notes = "".join(f"#   {n}\n" for n in self.notes)
        steps = self.config.steps
        length = ("one pass over the data (trainer.total_epochs=1), as the official scripts; to cap it, add\n"
                  "#   trainer.total_training_steps=N to this script's arguments (they go last)" if steps == 0 else
                  f"{steps} steps (trainer.total_training_steps); change it with trainer.total_training_steps=N")
        return (f"#!/usr/bin/env bash\n# verl {VERL_VERSION} launch of {self.config.model} ({self.config.method}), "
                f"{self.nodes} node(s) x {self.gpus_per_node} GPU(s), written by fipo_nb"
                + (f": fipo-nb {made}" if made else "") + "\n"
                "# Start Ray on every node first (ray start --head / ray start --address=HEAD:6379), with fipo_nb\n"
                "# installed on each (pip install a clone or wheel of fipo_nb, not on PyPI: the workers import\n"
                "# fipo_nb.integrations.verl). Then run this script on the head node, or submit it:\n"
                f"# ray job submit --address http://HEAD:8265 --working-dir {self.out.resolve()} -- bash launch.sh\n"
                "# It runs verl with the python3 first on PATH: activate verl's environment first (source\n"
                f"# .venv-verl/bin/activate, made by `make verl-venv`, or the cluster's own with verl {VERL_VERSION}).\n"
                f"# Run length: {length}.\n"
                + self._where()
                + (f"# TrainConfig fields with no meaning under verl:\n{notes}" if notes else "")
                + "".join(f"# check before launching: {w}\n" for w in self.warnings)
                + "set -euo pipefail\n" + VERL_CHECK + self.command() + ' "$@"\n')

    def plan(self):
        from .plan import plan

        return plan(self.config, self.nodes, self.gpus_per_node, engine="verl")


DAPO_FILES = {  # the DAPO / FIPO scripts' data, as their prepare_dapo_data.sh fetches it
    "dapo-math-17k.parquet":
        "https://huggingface.co/datasets/BytedTsinghua-SIA/DAPO-Math-17k/resolve/main/data/dapo-math-17k.parquet",
    "aime-2024.parquet": "https://huggingface.co/datasets/BytedTsinghua-SIA/AIME-2024/resolve/main/data/aime-2024.parquet",
}
VERL_CHECK = ('if ! python3 -c "import verl" 2>/dev/null; then\n'
              '    echo "launch.sh: $(command -v python3 || echo python3) cannot import verl: activate verl\'s '
              'environment first (source .venv-verl/bin/activate, or the cluster\'s own)" >&2\n'
              '    exit 1\n'
              'fi\n')


def default_cluster(config: TrainConfig, nodes: int | None = None, gpus_per_node: int | None = None) -> tuple:
    """(nodes, gpus_per_node): those given, else the official 16 x 8 for strategy "verl" / "fsdp2", else 1 x 1."""
    default = OFFICIAL_CLUSTER if config.strategy != "single" else (1, 1)
    return default[0] if nodes is None else nodes, default[1] if gpus_per_node is None else gpus_per_node


def launch(config: TrainConfig, *, nodes: int | None = None, gpus_per_node: int | None = None, out=None,
           extra: list[str] | tuple = ()) -> Launch:
    """The verl launch of `config`; `extra` are raw Hydra overrides appended last (verl checks them).

    nodes / gpus_per_node default to the official 16 x 8 for strategy "verl" / "fsdp2" presets, else 1 x 1.
    """
    config.validate()
    nodes, gpus = default_cluster(config, nodes, gpus_per_node)
    for name, value in (("nodes", nodes), ("gpus_per_node", gpus)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LaunchError(f"launch: {name} must be an integer >= 1; got {value!r}")
    out = Path(out if out is not None else config.output_dir)
    x = _Context(config, nodes, gpus, out)
    x.launch = result = Launch(config, nodes, gpus, out)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise LaunchError(f"TrainConfig.{unknown[0]} has no verl mapping in {__name__}.FIELDS: the launch would "
                          "drop it, so it refuses")
    overrides = list(CONSTANT)
    order = [n for n in names if n not in ("eval_data", "eval_every")] + ["eval_data", "eval_every"]  # train file first
    for name in order:
        result.by_field[name] = FIELDS[name](x)
        overrides += result.by_field[name]
    overrides += [f"actor_rollout_ref.rollout.max_num_batched_tokens={x.tokens_per_gpu}",
                  f"trainer.nnodes={nodes}", f"trainer.n_gpus_per_node={gpus}"]
    for item in extra:
        if "=" not in item:
            raise LaunchError(f"--verl wants KEY=VALUE (a Hydra override); got {item!r}")
    result.overrides = overrides + list(extra)
    return result


def write_data(launch: Launch) -> list[Path]:
    """Convert each non-parquet data source into verl's parquet schema where the launch points to it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ...data import config_problems, unique_problems

    written = []
    c = launch.config
    for which, (_, target) in launch.conversions.items():  # the source is c.data or c.eval_data
        if which == "val":  # eval_k samples per distinct problem, as fipo_nb's own evaluation
            problems = unique_problems(config_problems(c, "eval"))
        else:
            problems = config_problems(c, "train")
        rows = [{"data_source": "math_dapo", "prompt": p.prompt, "ability": "math",
                 "reward_model": {"ground_truth": p.answer, "style": "rule"},
                 "extra_info": {"index": i, "id": p.id}} for i, p in enumerate(problems)]
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), target)
        written.append(Path(target))
    return written


def write_launch(launch: Launch, argv: list[str] | None = None) -> list[Path]:
    """Write OUT/launch.sh, OUT/overrides.txt, OUT/plan.txt, OUT/config.json and converted data; return the paths."""
    import json

    out = launch.out
    data = write_data(launch)  # first: bad data stops the launch before anything points at it
    out.mkdir(parents=True, exist_ok=True)
    files = {"launch.sh": launch.script(argv), "overrides.txt": "\n".join(launch.overrides) + "\n",
             "plan.txt": str(launch.plan()) + "\n", "config.json": json.dumps(launch.config.to_dict(), indent=2) + "\n"}
    paths = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    (out / "launch.sh").chmod(0o755)
    return paths + data


def _auto_register() -> None:
    """Inside verl (already imported: a worker importing external_lib), register the plugin at once."""
    if "verl.trainer.ppo.core_algos" in sys.modules or "verl.workers.engine_workers" in sys.modules:
        register()


_auto_register()
