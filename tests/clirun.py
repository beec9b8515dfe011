# SPDX-License-Identifier: GPL-2.0-or-later
"""Run the real command line in a subprocess, as users and kbuild do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def vmpatch(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Run:
    """``python -m vmpatch ARGS`` with the repository on the path."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full_env.pop("FORCE_COLOR", None)  # colour only where a test asks for it
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "vmpatch", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)
