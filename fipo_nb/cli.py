"""The `fipo-nb` command: train, demo, compare, presets, report, config, launch, plan."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .analysis.files import WriteError
from .config import FIPOConfig


class CLIError(Exception):
    """Bad input found before any work starts: printed as one line, exit status 2."""


def _checked(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError, ImportError) as err:  # ImportError: an optional extra is missing
        raise CLIError(str(err)) from err


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(FIPOConfig(loss=args.loss).validate().to_dict(), indent=2))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from .config.presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for name, preset in PRESETS.items():
        print(f"{name:<{width}}  {preset.description}")
    return 0


def _resolve(preset: str, overrides: list[str], steps: int | None, out: str | None):
    from .config.presets import apply_overrides, get_preset

    config = _checked(get_preset, preset)
    extra = list(overrides or []) + _own_data(config, overrides or [])
    if steps is not None:
        extra.append(f"steps={steps}")
    if out is not None:
        extra.append(f"output_dir={out}")
    config = _checked(apply_overrides, config, extra)
    _check_folder(config.output_dir)
    return config


OWN_DATA_HOLDOUT = 0.1  # share of a user's own problems held out for evaluation when a preset evaluated on its own


def _own_data(preset, overrides: list[str]) -> list[str]:
    """When --set data replaces a preset's problems: evaluate on held-out problems of the new data instead
    of the preset's built-in eval_data (unless eval_data or eval_holdout is set too), and say so once; say
    too when the preset's instruction was written for its built-in task."""
    keys = {item.partition("=")[0].strip() for item in overrides}
    if "data" not in keys:
        return []
    extra = []
    if preset.eval_data is not None and not keys & {"eval_data", "eval_holdout"}:
        extra = ["eval_data=none", f"eval_holdout={OWN_DATA_HOLDOUT}"]
        print(f"note: evaluation holds out {OWN_DATA_HOLDOUT:.0%} of your data's problems (never trained on), not "
              f"the preset's eval_data {preset.eval_data!r}; --set eval_data=FILE evaluates on a file of yours, "
              "--set eval_data=none turns evaluation off", file=sys.stderr)
    if preset.instruction not in ("dapo", "none") and "instruction" not in keys:
        shown = preset.instruction if len(preset.instruction) <= 90 else preset.instruction[:87] + "..."
        print(f"note: problem/answer rows are wrapped in the preset's instruction, written for its built-in task: "
              f"{shown!r}; --set instruction=dapo asks for an 'Answer:' line (answer_mode=auto reads it), or "
              "--set instruction='...{problem}...' gives your own (DAPO rows keep their own prompt)", file=sys.stderr)
    return extra


def _check_folder(path) -> None:
    """An output folder must be a folder (or not exist yet): found before any model is loaded."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                raise CLIError(f"output folder {path}: {part} is a file, not a folder")
            return


# what --resume may change; the rest is the run's (the reward workers change where scoring runs, not what it gives)
RESUMABLE = ("steps", "output_dir", "save_every", "eval_every", "reward_workers", "reward_timeout")


def _resume_config(config, overrides: list[str], steps: int | None, folder):
    """The run's own config (from its checkpoint), with --steps and the --set settings that may change.

    --resume continues a run as it was configured (the preset's defaults do not replace its
    settings); a --set that would change what the run trains on or how is refused by name."""
    from .config import TrainConfig
    from .config.presets import apply_overrides

    saved = TrainConfig(**json.loads((folder / "config.json").read_text()))
    extra = [*overrides, f"output_dir={config.output_dir}"] + ([f"steps={steps}"] if steps is not None else [])
    wanted = _checked(apply_overrides, saved, extra)
    before, after = _flat(saved.to_dict()), _flat(wanted.to_dict())
    changed = [f"{key} {before[key]!r} -> {after[key]!r}" for key in after
               if key not in RESUMABLE and after[key] != before.get(key)]
    if changed:
        raise CLIError(f"--resume continues {config.output_dir} with its own settings; --set would change "
                       f"{', '.join(changed)} (only {', '.join(RESUMABLE)} may change): --overwrite starts a new run")
    return wanted


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _trainer(config, *, resume: bool, fallback: bool, overwrite: bool, resume_from=None):
    from .train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
    from .train.trainer import FIPOTrainer

    out = config.output_dir
    if resume:
        if list_checkpoints(out):
            folder = latest_checkpoint(out, fallback=fallback)  # verified once, here
            if folder is None:  # every one is incomplete or corrupted, and fallback skipped them all
                raise CheckpointError(f"no complete checkpoint in {Path(out) / 'checkpoints'}")
            if resume_from is not None:
                config = _resume_config(config, *resume_from, folder)
            trainer = _checked(FIPOTrainer.resume, out, fallback=fallback, config=config, checkpoint=folder)
            print(f"resuming {out} after step {trainer.step_count}, with the settings it was started with", flush=True)
            return trainer
        print(f"no checkpoint in {out}: starting at step 0", flush=True)
    elif list_checkpoints(out) and not overwrite:
        raise CLIError(f"{out} holds checkpoints of an earlier run: --out DIR writes this run elsewhere, --resume "
                       "continues that one, --overwrite replaces it")
    return _checked(FIPOTrainer, config)


def _run(config, *, report: bool, resume: bool = False, fallback: bool = False, overwrite: bool = False,
         resume_from=None) -> int:
    from .train.checkpoint import CheckpointError
    from .views.report import write_report

    started = time.perf_counter()
    try:
        trainer = _trainer(config, resume=resume, fallback=fallback, overwrite=overwrite, resume_from=resume_from)
    except (CheckpointError, WriteError) as err:
        raise CLIError(str(err)) from err
    config = trainer.config
    if trainer.step_count >= config.steps:
        print(f"{trainer.out_dir} is already at step {trainer.step_count} (steps={config.steps}): nothing to do")
        return 0
    print(f"model {config.model} ({config.mode}), {config.method}, steps {trainer.step_count + 1}..{config.steps} of "
          f"{config.prompts_per_step} prompts x {config.samples_per_prompt} samples, "
          f"{config.prompts_per_step // config.mini_batch_size} update(s) per step -> {trainer.out_dir}", flush=True)
    try:
        trainer.train(until=config.steps, table=True)
    except KeyboardInterrupt:
        return _interrupted(trainer)
    except (CheckpointError, WriteError) as err:  # a full disk while saving or logging: the steps before are kept
        raise CLIError(f"after step {trainer.step_count}: {err}") from err
    finally:
        trainer.close()  # its reward worker processes (after _interrupted has finished the step)
    print(f"metrics: {trainer.out_dir / 'metrics.jsonl'}")
    if report:
        print(f"report:  {write_report(trainer.out_dir)}")
    print(f"wall time: {time.perf_counter() - started:.0f} s")
    return 0


def _interrupted(trainer) -> int:
    """Ctrl-C: finish the step in progress (a second Ctrl-C stops at once), then save a checkpoint."""
    from .train.checkpoint import latest_checkpoint

    if trainer.step_in_progress is not None:
        print(f"finishing step {trainer.step_count + 1} so that it can be saved (Ctrl-C again: stop without it)",
              file=sys.stderr, flush=True)
        try:
            trainer.step()
        except KeyboardInterrupt:
            last = latest_checkpoint(trainer.out_dir)
            where = f"`--resume` continues after {last.name}" if last else "no checkpoint: `--resume` starts over"
            print(f"stopped in step {trainer.step_count + 1}, which is dropped; {where}", file=sys.stderr)
            return 130
    if trainer.config.save_every < 0:
        print(f"interrupted after step {trainer.step_count}; no checkpoint (save_every=-1)", file=sys.stderr)
    else:
        print(f"interrupted after step {trainer.step_count}; checkpoint {_saved(trainer)}; `--resume` continues",
              file=sys.stderr)
    return 130


def _saved(trainer):
    from .train.checkpoint import CheckpointError

    try:
        return trainer.save()
    except CheckpointError as err:
        raise CLIError(f"after step {trainer.step_count}: {err}") from err


def _cmd_train(args: argparse.Namespace) -> int:
    config = _resolve(args.preset, args.set, args.steps, args.out)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    return _run(config, report=args.report, resume=args.resume, fallback=args.resume_fallback,
                overwrite=args.overwrite, resume_from=(args.set, args.steps))


def _cmd_demo(args: argparse.Namespace) -> int:
    config = _resolve("demo", args.set, args.steps, args.out)
    earlier = Path(config.output_dir) / "config.json"
    if earlier.exists() and not args.overwrite:  # a demo run is replaced; anything else needs --overwrite
        model = json.loads(earlier.read_text()).get("model")
        if model != config.model:
            raise CLIError(f"{config.output_dir} holds a run of {model}, not a demo: --overwrite replaces it")
    return _run(config, report=True, overwrite=True)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    _check_folder(args.out)
    try:
        comparison = _checked(compare, args.preset, args.steps, args.out, losses=args.losses, overrides=args.set,
                              overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"compare stopped: {args.out} holds a partial comparison; run it again with --overwrite",
              file=sys.stderr)
        return 130
    print(comparison.markdown())
    print(f"compare: {comparison.html}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .views.report import write_report

    print(_checked(write_report, args.run_dir, args.out))
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from .integrations.verl import LaunchError, launch, write_launch

    config = _resolve(args.preset, args.set, None, args.out)
    try:
        job = launch(config, nodes=args.nodes, gpus_per_node=args.gpus_per_node, out=args.out, extra=args.verl)
    except LaunchError as err:
        raise CLIError(str(err)) from err
    if args.print_overrides:
        print("\n".join(job.overrides))
        for note in job.notes:
            print(f"# not used under verl: {note}", file=sys.stderr)
        for warning in job.warnings:
            print(f"# check before launching: {warning}", file=sys.stderr)
        if job.conversions and args.out is None:
            print("# --out DIR also writes the converted data files named above", file=sys.stderr)
    if args.out is not None or not args.print_overrides:
        paths = _checked(write_launch, job, args.argv)
        plan = job.plan()
        print(f"{'fits' if plan.fits else 'DOES NOT FIT'}: see {job.out / 'plan.txt'}", file=sys.stderr)
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .integrations.verl import default_cluster
    from .integrations.verl.plan import Hardware, plan

    config = _resolve(args.preset, args.set, None, None)
    nodes, gpus = default_cluster(config, args.nodes, args.gpus_per_node)  # as `fipo-nb launch verl`
    print(_checked(plan, config, nodes, gpus, args.gpu_memory, engine=args.engine,
                   mean_response=args.mean_response, hardware=Hardware(cpu_memory_gib=args.cpu_memory)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `fipo-nb` parser: one sub-parser per command, each built by its own function below."""
    parser = argparse.ArgumentParser(prog="fipo-nb", description="FIPO training toolkit")
    parser.add_argument("--version", action="version", version=f"fipo_nb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (_train_parser, _demo_parser, _compare_parser, _presets_parser, _report_parser,
                        _launch_parser, _plan_parser, _config_parser):  # the order `fipo-nb --help` lists them in
        add_command(commands)
    return parser


# options that several commands take, each with that command's help


def _add_preset(parser: argparse.ArgumentParser, help_text: str | None = "see `fipo-nb presets`") -> None:
    parser.add_argument("--preset", required=True, help=help_text)


def _add_set(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, help="nodes (default: 16 for the paper presets, else 1)")
    parser.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: 8 for the paper presets, else 1)")


# one parser per command


def _train_parser(commands) -> argparse.ArgumentParser:
    train = commands.add_parser("train", help="train from a preset")
    _add_preset(train)
    train.add_argument("--steps", type=int, help="number of steps (default: the preset's)")
    train.add_argument("--out", help="output directory (default: the preset's)")
    _add_set(train, "override a setting, e.g. --set lr=1e-5 --set fipo.decay_rate=64 (repeatable)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                       help="write OUT/report.html at the end (default; --no-report: don't)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest complete checkpoint in OUT (--steps is the run's total)")
    train.add_argument("--resume-fallback", action="store_true",
                       help="with --resume: if the newest checkpoint is partial or corrupted, use the previous one")
    train.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds checkpoints")
    train.set_defaults(func=_cmd_train)
    return train


def _demo_parser(commands) -> argparse.ArgumentParser:
    demo = commands.add_parser("demo", help="a few FIPO steps on SmolLM2-135M, offline, then OUT/report.html")
    demo.add_argument("--out", help="output directory (default runs/demo)")
    demo.add_argument("--steps", type=int, help="number of steps (default: the preset's, 5)")
    _add_set(demo, "override a setting, e.g. --set samples_per_prompt=4 (repeatable)")
    demo.add_argument("--overwrite", action="store_true", help="replace a run in OUT that is not an earlier demo")
    demo.set_defaults(func=_cmd_demo)
    return demo


def _compare_parser(commands) -> argparse.ArgumentParser:
    compare = commands.add_parser("compare", help="train each loss from the same start, then OUT/compare.html")
    _add_preset(compare)
    compare.add_argument("--steps", type=int, help="steps per loss (default: the preset's)")
    compare.add_argument("--out", default="runs/compare", help="output directory: OUT/<loss>/ and OUT/compare.html")
    compare.add_argument("--losses", default="fipo,dapo",
                         help="comma-separated: fipo, dapo, grpo, ppo (GAE and a critic, DAPO loss); default fipo,dapo")
    _add_set(compare, "override a setting for every loss (repeatable)")
    compare.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in OUT")
    compare.set_defaults(func=_cmd_compare)
    return compare


def _presets_parser(commands) -> argparse.ArgumentParser:
    presets = commands.add_parser("presets", help="list the presets")
    presets.set_defaults(func=_cmd_presets)
    return presets


def _report_parser(commands) -> argparse.ArgumentParser:
    report = commands.add_parser("report", help="write a static HTML report of a run")
    report.add_argument("run_dir")
    report.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    report.set_defaults(func=_cmd_report)
    return report


def _launch_parser(commands) -> argparse.ArgumentParser:
    launch = commands.add_parser("launch", help="write a launch of a preset for a distributed engine")
    engines = launch.add_subparsers(dest="engine", required=True)
    verl = engines.add_parser("verl", help="verl 0.9.1 Hydra overrides, launch.sh and the memory plan")
    _add_preset(verl)
    _add_cluster(verl)
    _add_set(verl, "override a TrainConfig setting")
    verl.add_argument("--verl", action="append", default=[], metavar="KEY=VALUE",
                      help="a raw verl Hydra override, appended last (repeatable)")
    verl.add_argument("--out", help="write OUT/launch.sh, overrides.txt, plan.txt (default: the preset's output_dir)")
    verl.add_argument("--print-overrides", action="store_true", help="print one override per line")
    verl.set_defaults(func=_cmd_launch)
    return launch


def _plan_parser(commands) -> argparse.ArgumentParser:
    plan = commands.add_parser("plan", help="per-GPU memory and step time of a preset on a cluster")
    _add_preset(plan, help_text=None)
    _add_cluster(plan)
    plan.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB", help="memory of one GPU in GiB "
                      "(default 80)")
    plan.add_argument("--cpu-memory", type=float, default=1024.0, metavar="GIB",
                      help="CPU memory of one node in GiB, for offloaded states (default 1024)")
    plan.add_argument("--engine", choices=["verl", "fipo_nb"], help="default: fipo_nb for single-device presets")
    plan.add_argument("--mean-response", type=int, help="mean response tokens for the step time (default: max / 2)")
    _add_set(plan)
    plan.set_defaults(func=_cmd_plan)
    return plan


def _config_parser(commands) -> argparse.ArgumentParser:
    config = commands.add_parser("config", help="print the default (official FIPO 32B) algorithm config as JSON")
    config.add_argument("--loss", default="fipo", choices=["fipo", "dapo", "grpo"])
    config.set_defaults(func=_cmd_config)
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (CLIError, WriteError) as err:  # bad preset, --set key or value, data file, a full disk: one clear line
        print(f"fipo-nb: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fipo-nb config | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
