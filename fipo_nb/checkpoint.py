"""Checkpoints that are complete or absent: written under a temporary name, checked, renamed.

RUN_DIR/checkpoints/step-N/ holds
    trainable.safetensors   every trainable parameter by name (LoRA adapters, or all weights)
    adapter/                the LoRA adapter in PEFT's own format, for use outside fipo_nb (LoRA modes)
    optimizer.pt, scheduler.pt, rng.pt (python, numpy, torch states)
    trainer_state.json      step, data-order position
    config.json             the run's resolved TrainConfig
    manifest.json           size and sha256 of every file above; written last
A folder without a manifest, or whose files do not match it, is not a checkpoint: loading it
raises CheckpointError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupted; the message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(run_dir, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def write_checkpoint(run_dir, step: int, write: Callable[[Path], None]) -> Path:
    """Call write(folder) on a temporary folder, add the manifest, then rename it into place."""
    final = checkpoint_dir(run_dir, step)
    temporary = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    write(temporary)
    files = sorted(p for p in temporary.rglob("*") if p.is_file())
    manifest = {
        "step": step,
        "files": {str(p.relative_to(temporary)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
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
                raise CheckpointError(f"{err} (resume with fallback to use the previous complete checkpoint)") from err
            warnings.warn(f"skipping checkpoint step {step}: {err}", stacklevel=2)
    return None


def save_training_state(folder: Path, *, policy, optimizer, scheduler, sampler, step: int, config) -> None:
    """Write everything a run needs to continue exactly into `folder` (see the module doc)."""
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file

    trainable = {n: p.detach().cpu().contiguous() for n, p in policy.model.named_parameters() if p.requires_grad}
    save_file(trainable, folder / "trainable.safetensors")
    if policy.mode in ("lora", "qlora"):
        policy.model.save_pretrained(folder / "adapter")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, folder / "rng.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "sampler": sampler.state_dict()}, indent=1))
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))


def load_training_state(folder, *, policy, optimizer, scheduler, sampler, verified: bool = False) -> int:
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
