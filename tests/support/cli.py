"""Running ``openmss`` as a real process in tests: settings come only from the environment given
(never from the developer's own ``OPENMSS_*`` variables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for one test: its data folder and ``OPENMSS_<NAME>`` for each setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMSS_")}
    env["OPENMSS_DATA_DIR"] = str(data_dir)
    env.update({f"OPENMSS_{name.upper()}": value for name, value in settings.items()})
    return env


def run_cli(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmss.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
