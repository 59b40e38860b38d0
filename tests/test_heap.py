"""fipo_nb.train.heap: freed heap memory goes back to the system, nothing else changes."""

from __future__ import annotations

import ctypes.util
import platform

import pytest
import torch

from fipo_nb.train.heap import release_freed_memory


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or not ctypes.util.find_library("c"),
                    reason="malloc_trim is glibc's")
def test_freed_heap_blocks_go_back_to_the_system():
    # 64 KiB blocks come from the heap (below glibc's mmap threshold); one live block above them keeps glibc
    # from trimming the heap's top on its own, so the freed blocks stay resident until they are released
    blocks = [torch.ones(16 * 1024) for _ in range(1024)]  # 64 MiB, touched
    guard = torch.ones(16)
    before = resident_kib()
    del blocks
    freed = resident_kib()
    release_freed_memory()
    after = resident_kib()
    assert freed - after > 32 * 1024, (before, freed, after)  # at least half of the 64 MiB back
    assert guard.sum().item() == 16  # live memory untouched


def test_it_can_be_called_any_time():
    x = torch.arange(10.0)
    release_freed_memory()
    release_freed_memory()
    assert torch.equal(x, torch.arange(10.0))
