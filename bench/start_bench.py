"""How long the README's first command takes: `bash scripts/start` (the demo, no
DATABASE_URL) from the command to /readyz answering 200, N times in a row.

    python3 bench/start_bench.py [--runs 5] [--port 19303] [--checkout DIR]

Run it in a fresh clone to see the first start (it makes .venv and installs the lock) and
the later ones (nothing to install, the demo cluster copied from the cache). PYTHON is
passed through to scripts/start (e.g. PYTHON=/usr/bin/python3). Prints one line per run
with the time of each phase as scripts/start prints it. Numbers: docs/performance.md,
"Start-up". Only 127.0.0.1 is contacted; each run is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = {"start: making": "venv", "start: installing": "install", "demo: PostgreSQL": "database",
          "listening on port": "listening"}


def one_start(checkout: Path, port: int, timeout: float = 600) -> dict[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(["bash", "scripts/start", "--listen", f"127.0.0.1:{port}"], cwd=checkout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marks: dict[str, float] = {}

    def read() -> None:
        for line in proc.stdout:
            for text, phase in PHASES.items():
                if text in line:
                    marks.setdefault(phase, time.monotonic() - started)

    threading.Thread(target=read, daemon=True).start()
    try:
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        marks["ready"] = time.monotonic() - started
                        break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"scripts/start exited with {proc.returncode}") from None
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=19303)
    parser.add_argument("--checkout", type=Path, default=REPO, help="the clone to start (default: this one)")
    args = parser.parse_args()
    print(f"python: {os.environ.get('PYTHON', 'python3')}, load average: {os.getloadavg()[0]:.1f}")
    for run in range(1, args.runs + 1):
        marks = one_start(args.checkout, args.port)
        print(f"run {run}: " + ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in marks.items()), flush=True)


if __name__ == "__main__":
    main()
