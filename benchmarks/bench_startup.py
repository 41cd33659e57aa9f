"""How long ``bsviz predict IMAGE`` takes from a cold process to its first result, and where.

    python benchmarks/bench_startup.py [--runs 5] [--image PATH]

1. Wall time, over ``--runs`` fresh processes: from starting ``python -m bsviz.ui.cli predict
   IMAGE --json`` to its first line on stdout (the first result), and to its exit.
2. For scale: a bare interpreter, ``import torch`` (which predict no longer imports: the
   networks run in numpy) and a plain ``import mediapipe`` (predict's defers its pyplot
   import), each the median of ``--runs`` fresh processes.
3. One run under ``-X importtime``: the import time summed by top-level package (each
   module's own time), and the slowest imports the program asks for itself.
4. One run timed phase by phase in one process: importing the CLI, building its parser,
   ``Predictor()``, its ``FaceFinder``, the first image, and the same image again.

The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bsviz.assets import example_paths

PHASES = """
import json, sys, time
start = time.perf_counter()
marks = {}
def mark(name):
    marks[name] = time.perf_counter() - start - sum(marks.values())
from bsviz.ui import cli; mark("import bsviz.ui.cli")
cli.build_parser(); mark("build the parser")
from bsviz.fer.predict import Predictor; mark("import bsviz.fer.predict")
predictor = Predictor(); mark("Predictor()")
predictor.finder; mark("its FaceFinder")
predictor.predict_all(sys.argv[1]); mark("first image")
predictor.predict_all(sys.argv[1]); mark("the same image again")
print(json.dumps(marks))
"""


def first_line_seconds(command: list[str]) -> tuple[float, float]:
    """Seconds from starting ``command`` to its first stdout line, and to its exit."""
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        proc.stdout.readline()
        first = time.perf_counter() - start
        proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}")
    return first, time.perf_counter() - start


def median_seconds(command: list[str], runs: int) -> float:
    """The median wall time of ``command`` over ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def import_times(command: list[str]) -> tuple[Counter, list[tuple[float, str]]]:
    """From one ``-X importtime`` run: seconds of import per top-level package (own times
    summed), and (cumulative seconds, name) of the imports the program itself asks for."""
    stderr = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], check=True,
                            capture_output=True, text=True).stderr
    by_package: Counter = Counter()
    direct = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        by_package[name.strip().split(".")[0]] += int(own) / 1e6
        if not name[1:].startswith(" "):  # not nested: asked for by the program itself
            direct.append((int(cumulative) / 1e6, name.strip()))
    return by_package, sorted(direct, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default=str(example_paths()[0]))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    predict = [sys.executable, "-m", "bsviz.ui.cli", "predict", args.image, "--json"]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores; other work "
          f"skews the figures); {' '.join(predict[1:])}")

    runs = np.array([first_line_seconds(predict) for _ in range(args.runs)])
    first, total = np.median(runs, axis=0)
    print(f"bsviz predict, {args.runs} cold runs: first result p50 {first:.2f} s "
          f"(min {runs[:, 0].min():.2f}, max {runs[:, 0].max():.2f}), exit p50 {total:.2f} s")
    floors = {what: median_seconds([sys.executable, "-c", what], args.runs)
              for what in ("pass", "import torch", "import mediapipe")}
    print("for scale, p50: " + ", ".join(f"python -c '{what}' {s:.2f} s" for what, s in floors.items()))

    by_package, direct = import_times(predict)
    print(f"imports under -X importtime: {sum(by_package.values()):.2f} s in all; by package: "
          + ", ".join(f"{name} {s:.2f}" for name, s in by_package.most_common(10)))
    print("slowest imports asked for by the program (cumulative): "
          + ", ".join(f"{name} {s:.2f}" for s, name in direct[:8]))

    phases = json.loads(subprocess.run([sys.executable, "-c", PHASES, args.image], check=True,
                                       capture_output=True, text=True).stdout)
    print("one process, phase by phase: " + ", ".join(f"{name} {s:.2f} s"
                                                       for name, s in phases.items()))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"first_result_p50_s": first, "exit_p50_s": total, "runs_s": runs.tolist(),
             "floors_p50_s": floors, "imports_by_package_s": dict(by_package.most_common()),
             "phases_s": phases, "image": args.image}, indent=1))


if __name__ == "__main__":
    main()
