# SPDX-License-Identifier: GPL-2.0-or-later
"""A short run of ``scripts/fuzz`` over every target: no crash, no hang, memory bounded.

Each target runs for a few seconds under atheris (libFuzzer), seeded with
the committed test data. libFuzzer exits non-zero on an exception that is
not a :class:`vmpatch.errors.VmpatchError` (or one a reader documents), on
an input slower than ``--timeout`` and past ``--rss-limit-mb``; its final
statistics give the inputs run and the peak RSS, which must stay under
:data:`RSS_BOUND_MB`. The long run of README "Guarantees" uses the same
script with ``--seconds`` in the minutes.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from clirun import python
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "scripts" / "fuzz"

#: Per target: 18 targets x (4 s + start-up) stays under the 3 minutes the suite allows.
SECONDS = 4
#: The memory bound asserted (libFuzzer's -rss_limit_mb is set to the same).
RSS_BOUND_MB = 512
#: The per-input time bound: an input slower than this is a hang.
TIMEOUT_S = 10


def targets() -> list[str]:
    run = python(FUZZ, "list", check=True)
    return [line.split()[0] for line in run.stdout.splitlines() if line.strip()]


TARGETS = [
    "elf", "locate-file", "boot-bzimage", "boot-zboot", "boot-arm64", "boot-riscv",
    "boot-zimage", "boot-s390", "boot-uki", "boot-compressed", "boot-model", "boot-codecs",
    "root", "root-file", "trailer", "modorder", "kdecompress", "compression",
]  # fmt: skip


def test_every_target_is_listed() -> None:
    assert targets() == TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run(target: str) -> None:
    require(importlib.util.find_spec("atheris") is not None, "atheris is not installed")
    run = python(
        FUZZ,
        target,
        "--seconds",
        str(SECONDS),
        "--timeout",
        str(TIMEOUT_S),
        "--rss-limit-mb",
        str(RSS_BOUND_MB),
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    peak = re.search(r"stat::peak_rss_mb:\s*(\d+)", output)
    assert executed and peak, output[-2000:]
    assert int(executed.group(1)) > 0
    assert int(peak.group(1)) <= RSS_BOUND_MB
    print(f"\nfuzz {target}: {executed.group(1)} inputs, peak RSS {peak.group(1)} MiB")
