"""Freed memory stays in the process: a big buffer allocated again faults its pages in once, not every time."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from search.allocator import keep_freed_memory
from tests.helpers import ROOT

# Allocate and fill a 128 MB tensor ten times (as a batch's activations are, every batch), then ten
# times more, and print the page faults the second ten took. A fresh process each: the setting is
# per process and cannot be undone.
ALLOCATE_AGAIN_AND_AGAIN = """
import resource, sys
import torch
from search.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()

def allocate_ten_times():
    for _ in range(10):
        buffer = torch.ones(16_000_000, dtype=torch.float64)
        del buffer

allocate_ten_times()  # the heap grows to its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate_ten_times()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", ALLOCATE_AGAIN_AND_AGAIN, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists in glibc only")
def test_a_buffer_allocated_again_reuses_its_pages() -> None:
    pages = 16_000_000 * 8 // 4096
    as_shipped, kept = page_faults("ship"), page_faults("keep")
    assert as_shipped > 8 * pages, "glibc as shipped maps and faults each big buffer anew"
    assert kept < pages, (kept, as_shipped)


def test_elsewhere_it_says_it_changed_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory() is False
