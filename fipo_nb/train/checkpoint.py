"""Checkpoints that are complete or absent: written under a temporary name, checked, renamed.

RUN_DIR/checkpoints/step-N/ holds
    trainable.safetensors   every trainable parameter by name (LoRA adapters, or all weights)
    adapter/                the LoRA adapter in PEFT's own format, for use outside fipo_nb (LoRA modes)
    optimizer.pt, scheduler.pt, rng.pt (python, numpy, torch states)
    critic.safetensors, critic_optimizer.pt   with a critic (PPO): its adapter or weights, head, AdamW
    trainer_state.json      step, data-order position
    config.json             the run's resolved TrainConfig
    manifest.json           size and sha256 of every file above; written last
A folder without a manifest, or whose files do not match it, is not a checkpoint: loading it
raises CheckpointError naming the file. A save that fails (a full disk, no permission) removes
its temporary folder and raises CheckpointError naming the checkpoint, the folder and the cause;
the checkpoints written before are untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"
LOW_SPACE = 1 << 20  # bytes free under which a failed write is blamed on a full disk


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupted, or could not be written; the message names the file."""


class _FileWriteError(Exception):
    """A checkpoint file could not be written: carries its name to the message of write_checkpoint."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@contextlib.contextmanager
def writing(path: Path):
    """Use around the write of one checkpoint file, so that a failure names it."""
    try:
        yield path
    except Exception as err:
        raise _FileWriteError(path.name) from err


def _cause(error: BaseException, folder: Path) -> str:
    """The reason a save failed, in words: the operating system's error where there is one (torch
    and safetensors wrap it in their own), and the free space when the disk looks full."""
    chain, seen = error, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if isinstance(chain, OSError) and chain.errno:
            return f"{os.strerror(chain.errno)} [errno {chain.errno}]"
        chain = chain.__cause__ or chain.__context__
    root = next((e for e in seen if not isinstance(e, _FileWriteError)), error)
    message = " ".join(f"{type(root).__name__}: {root}".split())  # one line
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return message
    return f"{message} ({free} bytes free there: the disk is probably full)" if free < LOW_SPACE else message


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(run_dir, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def write_checkpoint(run_dir, step: int, write: Callable[[Path], None]) -> Path:
    """Call write(folder) on a temporary folder, add the manifest, then rename it into place.

    Any failure removes the temporary folder; an error (a full disk, ...) becomes a CheckpointError
    naming the checkpoint, its folder, the file being written and the cause."""
    final = checkpoint_dir(run_dir, step)
    temporary = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        write(temporary)
        files = sorted(p for p in temporary.rglob("*") if p.is_file())
        manifest = {
            "step": step,
            "files": {str(p.relative_to(temporary)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
        }
        with writing(temporary / MANIFEST) as path:
            path.write_text(json.dumps(manifest, indent=1))
        if final.exists():
            shutil.rmtree(final)
        temporary.rename(final)
    except BaseException as err:
        cause = _cause(err, final.parent) if isinstance(err, Exception) else ""
        shutil.rmtree(temporary, ignore_errors=True)
        if not isinstance(err, Exception):  # KeyboardInterrupt: nothing half-written stays behind
            raise
        during = f" while writing {err.name}" if isinstance(err, _FileWriteError) else ""
        earlier = [s for s, f in list_checkpoints(run_dir) if s != step and (f / MANIFEST).is_file()]
        last = f"the last complete one is step-{earlier[0]}" if earlier else "there is no earlier checkpoint"
        full = f"[errno {errno.ENOSPC}]" in cause or "disk is probably full" in cause
        then = "free some space, then save again or resume from it" if full else \
            "save again or resume from it once that is fixed"
        raise CheckpointError(
            f"could not save checkpoint step-{step} in {final.parent}: {cause}{during}; its partial folder "
            f"was removed, {last} ({then})"
        ) from err
    return final


def verify_checkpoint(folder) -> dict:
    """The manifest of a complete checkpoint; CheckpointError naming the first bad file otherwise."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing; {folder} is a partial checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable ({err})") from err
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        if path.stat().st_size != expected["size"]:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes, the manifest says {expected['size']}")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: contents differ from the manifest (corrupted)")
    return manifest


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every step-N folder, newest first (complete or not)."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("step-*"):
        suffix = path.name.removeprefix("step-")
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found, reverse=True)


def latest_checkpoint(run_dir, *, fallback: bool = False) -> Path | None:
    """The newest checkpoint, verified. A bad newest one raises CheckpointError, unless `fallback`:
    then it is skipped with a warning for the previous complete one. None when there is none."""
    for step, folder in list_checkpoints(run_dir):
        try:
            verify_checkpoint(folder)
            return folder
        except CheckpointError as err:
            if not fallback:
                raise CheckpointError(f"{err} (`--resume-fallback`, or resume(..., fallback=True), uses the previous "
                                      "complete checkpoint)") from err
            warnings.warn(f"skipping checkpoint step {step}: {err}", stacklevel=2)
    return None


def save_training_state(folder: Path, *, policy, optimizer, scheduler, sampler, step: int, config, critic=None,
                        critic_optimizer=None) -> None:
    """Write everything a run needs to continue exactly into `folder` (see the module doc)."""
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file

    trainable = {n: p.detach().cpu().contiguous() for n, p in policy.model.named_parameters() if p.requires_grad}
    with writing(folder / "trainable.safetensors") as path:
        save_file(trainable, path)
    if policy.mode in ("lora", "qlora"):
        with writing(folder / "adapter") as path:
            policy.model.save_pretrained(path)
    if critic is not None:
        with writing(folder / "critic.safetensors") as path:
            save_file(critic.named_state(), path)
        with writing(folder / "critic_optimizer.pt") as path, path.open("wb") as handle:
            torch.save(critic_optimizer.state_dict(), handle)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    for name, state in (("optimizer.pt", optimizer.state_dict()), ("scheduler.pt", scheduler.state_dict()),
                        ("rng.pt", rng)):
        # through a Python file object: a full disk is then an OSError, not torch's "unexpected pos"
        with writing(folder / name) as path, path.open("wb") as handle:
            torch.save(state, handle)
    with writing(folder / "trainer_state.json") as path:
        path.write_text(json.dumps({"step": step, "sampler": sampler.state_dict()}, indent=1))
    with writing(folder / "config.json") as path:
        path.write_text(json.dumps(config.to_dict(), indent=2))


def load_training_state(folder, *, policy, optimizer, scheduler, sampler, verified: bool = False, critic=None,
                        critic_optimizer=None) -> int:
    """Restore a checkpoint written by save_training_state (verified first, unless the caller just
    did: hashing full weights takes a while); returns its step."""
    import random

    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    if not verified:
        verify_checkpoint(folder)
    weights_path = folder / "trainable.safetensors"
    saved = load_file(weights_path)
    params = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
        raise CheckpointError(f"{weights_path}: does not fit this model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name].to(param.device))
    if critic is not None:
        critic_path = folder / "critic.safetensors"
        if not critic_path.is_file():
            raise CheckpointError(f"{critic_path}: missing; this run trains a critic (advantage_estimator='gae'), "
                                  "the checkpoint has none")
        try:
            critic.load_named_state(load_file(critic_path))
        except KeyError as err:
            raise CheckpointError(f"{critic_path}: {err.args[0]}") from None
        critic_optimizer.load_state_dict(torch.load(folder / "critic_optimizer.pt", weights_only=True))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=False)  # python and numpy states are not tensors
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((folder / "trainer_state.json").read_text())
    sampler.load_state_dict(state["sampler"])
    return int(state["step"])
