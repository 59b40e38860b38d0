"""A real small filesystem for the full-disk tests (tests/test_checkpoint.py, tests/test_files.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def mount_tmpfs(folder: Path, size: str) -> bool:
    """A tmpfs of `size` at `folder`; False where mounting is impossible (not root, no CAP_SYS_ADMIN, no mount)."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0
