"""Run a script under ``accelerate launch`` with N CPU processes (DDP over gloo), as a user would shard a job."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def launch(script: Path, *args: str, processes: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch`` ``script`` with ``args`` on ``processes`` local processes, the repository on the
    path; returns the finished process (the caller asserts its return code, with its stderr)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "the accelerate launcher is not installed next to this python"
    with socket.socket() as sock:  # a port the OS says is free now (a pid-derived one can still be taken)
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, str(script), *args]
    return subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=timeout)
