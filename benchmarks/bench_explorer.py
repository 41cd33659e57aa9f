"""Slider update rate of the blendshape explorer: the Python-side cost of one slider change.

One update = a slider's value set (as the front end's message sets it) -> blend the face ->
move the FigureWidget's mesh in place, which serialises the new x, y, z arrays into the
widget's comm message. A preset (``set_weights`` of all 53 shapes, each snapped to its slider's
step) is one update too. Not counted: the socket send and the browser's WebGL redraw.

    python benchmarks/bench_explorer.py [--n 200]

With another process busy on the CPU, numpy's threaded BLAS stalls for milliseconds per
blend; ``OPENBLAS_NUM_THREADS=1`` shows the cost without those stalls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from bsviz.ui.explorer import BlendshapeExplorer


def timings(step: Callable[[float], object], n: int) -> np.ndarray:
    """Seconds taken by each of ``n`` calls of ``step(value)``, with a new value every call."""
    values = [(i % 19 + 1) / 20 for i in range(n + 1)]
    step(values[-1])  # warm-up
    seconds = np.empty(n)
    for i, value in enumerate(values[:n]):
        start = time.perf_counter()
        step(value)
        seconds[i] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="updates per case")
    n = parser.parse_args().n

    explorer = BlendshapeExplorer(presets={})
    rig = explorer.rig
    print(f"rig: {rig.n_vertices} vertices, {len(explorer.triangles)} triangles drawn, "
          f"{rig.n_shapes} + {len(rig.identity_names)} sliders; {n} updates per case")

    def slider(name: str) -> Callable[[float], None]:
        return lambda value: setattr(explorer.sliders[name], "value", value)

    cases = [
        ("blend only: current_vertices(), no figure", lambda value: explorer.current_vertices()),
        ("slider jawOpen: blend + figure update", slider("jawOpen")),
        ("slider mouthSmile_L, L/R linked: 2 sliders, 1 update", slider("mouthSmile_L")),
        ("slider jawOpen, heatmap on", slider("jawOpen")),
        ("preset: set_weights of all 53 shapes, 1 update",
         lambda value: explorer.set_weights(dict.fromkeys(rig.names, value / 3))),
    ]
    # the median is robust to another process sharing the CPU; p95 shows the stalls
    print(f"{'case':56s} {'median ms':>9s} {'p95 ms':>7s} {'updates/s':>9s}")
    for label, step in cases:
        explorer.heatmap.value = "heatmap" in label
        ms = 1e3 * timings(step, n)
        median, p95 = np.median(ms), np.percentile(ms, 95)
        print(f"{label:56s} {median:9.2f} {p95:7.2f} {1e3 / median:9.0f}")


if __name__ == "__main__":
    main()
