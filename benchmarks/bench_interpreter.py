"""The same work on each CPython 3.11 of this machine, side by side: the build `make install` prefers
(/usr/bin/python3.11: Debian's optimised, statically linked build) and the one `python3` finds first (here
pyenv's default build), both importing from this project's virtual environment.

Each sample is a fresh process of one interpreter, and the interpreters alternate, so that the machine's
drift falls on both alike. Its CPU (user + system, from RUSAGE_CHILDREN once it is reaped) is recorded.
- imports: torch, MLflow, Prefect, scikit-learn and pandas, what every `trackflow` process, flow run and
  pool worker pays before its first line of work (most of the test suite's CPU is such processes);
- python: plain Python (dicts, strings, JSON, regular expressions, method calls), the kind of work the
  Prefect and MLflow servers do for each request.

Usage: python benchmarks/bench_interpreter.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import children_cpu  # noqa: E402

WORKLOADS = {
    "imports": "import torch, mlflow, prefect, sklearn, pandas",
    "python": """
import json, re
d = {str(i): [i, i * 2, {"a": i}] for i in range(300_000)}
json.loads(json.dumps(d))
pattern = re.compile(r"(\\d+)-(\\w+)")
n = sum(1 for i in range(300_000) if pattern.match(f"{i}-abc"))
class A:
    def __init__(self, x): self.x = x
    def f(self): return self.x + 1
assert sum(A(i).f() for i in range(300_000)) > n
""",
}


def interpreters() -> dict[str, str]:
    """label -> path of each distinct CPython of this venv's minor version: /usr/bin/python3.11 and `python3`."""
    found: dict[str, str] = {}
    for label, cmd in (("/usr/bin/python3.11", "/usr/bin/python3.11"), ("python3 on PATH", "python3")):
        try:
            p = subprocess.run([cmd, "-c", "import sys; print(sys.version_info[:2] == (3, 11), sys.executable)"],
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        same_minor, _, path = p.stdout.strip().partition(" ")
        if p.returncode == 0 and same_minor == "True" and os.path.realpath(path) not in map(os.path.realpath,
                                                                                          found.values()):
            found[label] = path
    return found


def cpu_of(python: str, code: str, env: dict) -> float:
    before = children_cpu()
    subprocess.run([python, "-s", "-c", code], env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return children_cpu() - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()

    found = interpreters()
    if len(found) < 2:
        print(f"one CPython 3.11 here ({', '.join(found.values()) or 'none'}): nothing to compare")
        return
    # Both read this venv's packages (compiled for CPython 3.11, whichever build) and this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO)])
    print(f"{args.repeats} fresh processes each, alternating; median CPU seconds (user + system)")
    for label, path in found.items():
        print(f"  {label}: {path}")
    for name, code in WORKLOADS.items():
        for path in found.values():
            cpu_of(path, code, env)  # warm the page cache and the bytecode caches for both alike
        samples: dict[str, list[float]] = {label: [] for label in found}
        for _ in range(args.repeats):
            for label, path in found.items():
                samples[label].append(cpu_of(path, code, env))
        medians = {label: statistics.median(s) for label, s in samples.items()}
        first, *others = found
        line = "  ".join(f"{label} {m:.2f}" for label, m in medians.items())
        ratios = "  ".join(f"{label} / {first} = {medians[label] / medians[first]:.2f}" for label in others)
        print(f"{name:8s} {line}  ->  {ratios}")


if __name__ == "__main__":
    sys.exit(main())
