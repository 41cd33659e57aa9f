"""Blend and render speed on the shipped rig, against the bounds set by memory and arithmetic.

    python benchmarks/bench_blend.py [--batch 1024] [--json results.json]
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_blend.py   # huge pages for torch's allocator

THP_MEM_ALLOC_ENABLE must be in the environment before torch starts (the script prints
whether it is); ``BlendLayer`` allocates its CPU outputs through numpy, which asks for huge
pages itself, so it matters only to the other torch allocations here.

Blending B faces reads the basis once ((K + 1) x 3V float32: the deltas and the
neutral) and writes B x 3V floats; at the machine's streaming bandwidth (measured
here with a large array copy) that traffic sets one lower bound on the time. It
also costs 2 (K + 1) 3V flops a face; at the machine's matrix-multiply peak
(measured with a square float32 GEMM) that sets another. The ratio printed is the
larger bound / the time taken (1.0 = as fast as the machine allows; above 1 when
the 17 MB basis already sits in the CPU's cache, which the memory bound ignores).

The machine may be shared, so the CPU figures of one batch size, and the two peaks, are
timed in rounds that call each in turn: a change of load falls on all of them alike, and
their ratios (torch / numpy above all) hold even when the absolute times do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bsviz.rig.blend import blend
from bsviz.rig.colours import vertex_colours
from bsviz.rig.export import save_mesh
from bsviz.rig.layer import BlendLayer
from bsviz.rig.rig import load_rig


def interleaved_seconds(fns: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 2) -> dict[str, float]:
    """The median wall time of each of ``fns`` over ``repeats`` rounds, each round calling
    every one of them in turn, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs, after 2 warm-up runs."""
    return interleaved_seconds({"": fn}, repeats)[""]


def synced_call(fn):
    """``fn`` followed by a CUDA synchronize, so that timing it times the GPU work."""
    return lambda: (fn(), torch.cuda.synchronize())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--render-frames", type=int, default=30)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    t0 = time.perf_counter()
    rig = load_rig()
    load_s = time.perf_counter() - t0
    k, v = rig.n_shapes, rig.n_vertices
    basis_bytes = (k + 1) * 3 * v * 4
    mesh_bytes = 3 * v * 4
    mesh_flops = 2 * (k + 1) * 3 * v
    rng = np.random.default_rng(0)
    w1 = rng.random((1, k), dtype=np.float32)
    wb = rng.random((args.batch, k), dtype=np.float32)
    rig.basis  # built once, at first use; not timed
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "torch_threads": torch.get_num_threads(), "rig_load_s": load_s,
               "vertices": v, "shapes": k,
               "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE")}

    # The machine's peaks, timed in the same rounds as the batched blends: a 512 MB copy (read
    # + write, the streaming bound) and a square float32 GEMM (the arithmetic bound).
    copy_bytes, square = 512 << 20, rng.random((2048, 2048), dtype=np.float32)
    src = np.ones(copy_bytes // 4, np.float32)
    dst = np.empty_like(src)
    # The product alone, [w, 1] @ [D; b0] into a reused array, by each library's BLAS.
    coeffs = np.concatenate([wb, np.ones((args.batch, 1), np.float32)], axis=1)
    basis = rig.basis[: k + 1]
    product = np.empty((args.batch, 3 * v), np.float32)
    tc, tbasis, tproduct = map(torch.from_numpy, (coeffs, basis, product))
    reused = np.empty((args.batch, v, 3), np.float32)
    reused_t = torch.empty((args.batch, v, 3))
    layer = BlendLayer(rig)
    t1, tb = torch.from_numpy(w1), torch.from_numpy(wb)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores; other work "
          f"skews the figures); THP_MEM_ALLOC_ENABLE={results['THP_MEM_ALLOC_ENABLE']}")
    with torch.no_grad():
        single = interleaved_seconds({"numpy": lambda: blend(rig, w1),
                                      "torch cpu": lambda: layer(t1)}, args.repeats * 10)
        batched = interleaved_seconds({
            "copy": lambda: np.copyto(dst, src), "square gemm": lambda: square @ square,
            "numpy": lambda: blend(rig, wb), "numpy out=": lambda: blend(rig, wb, out=reused),
            "torch cpu": lambda: layer(tb), "torch out=": lambda: layer(tb, out=reused_t),
            "gemm numpy": lambda: np.matmul(coeffs, basis, out=product),
            # last: its OpenMP threads spin on after it, which would slow the next one timed
            "gemm torch": lambda: torch.matmul(tc, tbasis, out=tproduct)},
            args.repeats)
    del src, dst, product, tproduct, reused, reused_t
    bandwidth = 2 * copy_bytes / batched.pop("copy")
    flops = 2 * square.shape[0] ** 3 / batched.pop("square gemm")
    results.update(stream_bandwidth_GBps=bandwidth / 1e9, gemm_GFLOPs=flops / 1e9)

    def record(name: str, batch: int, seconds: float, bandwidth=bandwidth, flops=flops) -> None:
        memory = (basis_bytes + batch * mesh_bytes) / bandwidth
        compute = batch * mesh_flops / flops
        bound = max(memory, compute)
        results[f"{name} batch {batch}"] = {
            "ms_per_call": seconds * 1e3, "meshes_per_s": batch / seconds,
            "memory_bound_ms": memory * 1e3, "compute_bound_ms": compute * 1e3,
            "ratio_to_bound": bound / seconds}
        print(f"{name:<11} batch {batch:>5}: {seconds * 1e3:8.3f} ms/call {batch / seconds:9,.0f} "
              f"meshes/s | bounds: memory {memory * 1e3:7.3f} ms, compute {compute * 1e3:7.3f} ms"
              f" ({batch / bound:,.0f} meshes/s) | ratio {bound / seconds:.2f}")

    print(f"rig: {v} vertices, {k} shapes, basis {basis_bytes / 1e6:.1f} MB, "
          f"mesh {mesh_bytes / 1e3:.0f} kB; loaded in {load_s * 1e3:.0f} ms")
    print(f"streaming bandwidth (array copy): {bandwidth / 1e9:.1f} GB/s; float32 GEMM "
          f"{flops / 1e9:.0f} GFLOP/s; {mesh_flops / 1e6:.2f} MFLOP a mesh")
    for batch, timed in ((1, single), (args.batch, batched)):
        for name, seconds in timed.items():
            record(name, batch, seconds)
        speed = timed["numpy"] / timed["torch cpu"]
        results[f"torch_over_numpy_speed_batch_{batch}"] = speed
        print(f"  batch {batch}: torch cpu runs at {speed:.2f}x numpy's speed (same rounds)")
    with torch.no_grad():
        if torch.cuda.is_available():
            gpu = layer.cuda()
            g1, gb = t1.cuda(), tb.cuda()

            big = torch.ones(128 << 20, device="cuda")  # 512 MB
            square = torch.rand(8192, 8192, device="cuda")
            gpu_bw = 2 * big.nbytes / best_seconds(synced_call(lambda: big.clone()), 10)
            gpu_flops = 2 * 8192**3 / best_seconds(synced_call(lambda: square @ square), 10)
            print(f"cuda: copy {gpu_bw / 1e9:.0f} GB/s, float32 GEMM {gpu_flops / 1e12:.1f} TFLOP/s")
            for x in (g1, gb):
                record("torch cuda", len(x), best_seconds(synced_call(lambda: gpu(x)),
                                                          args.repeats * 10), gpu_bw, gpu_flops)
            reused = torch.empty((args.batch, v, 3), device="cuda")
            record("cuda out=", args.batch, best_seconds(synced_call(
                lambda: gpu(gb, out=reused)), args.repeats * 10), gpu_bw, gpu_flops)
            results["cuda_peak_mem_MB"] = torch.cuda.max_memory_allocated() / 2**20
            results["cuda_device"] = torch.cuda.get_device_name()
    results["peak_rss_after_blend_MB"] = peak_rss_mb()

    from bsviz.rig.render import Renderer

    face = blend(rig, {"jawOpen": 0.4, "mouthSmile_L": 0.8, "mouthSmile_R": 0.8})
    with Renderer(rig, size=512) as renderer:
        seconds = best_seconds(lambda: renderer.render(face), args.render_frames)
    results["render_512"] = {"ms_per_frame": seconds * 1e3, "fps": 1 / seconds,
                             "platform": os.environ.get("PYOPENGL_PLATFORM")}
    print(f"render 512x512 ({os.environ.get('PYOPENGL_PLATFORM')}): {seconds * 1e3:.1f} ms/frame, "
          f"{1 / seconds:.1f} fps")
    with tempfile.TemporaryDirectory() as tmp:
        glb = Path(tmp) / "face.glb"
        glb_args = (glb, face, rig.visible_triangles(), vertex_colours(rig))
        for compact in (False, True):
            seconds = best_seconds(lambda: save_mesh(*glb_args, compact=compact),
                                   args.render_frames)
            name = "glb_compact" if compact else "glb_full"
            results[name] = {"bytes": glb.stat().st_size, "ms": seconds * 1e3}
            print(f"GLB of one face (save_mesh, rig colours, compact={compact}): "
                  f"{results[name]['bytes'] / 1e6:.3f} MB, written in {seconds * 1e3:.1f} ms")
    results["peak_rss_MB"] = peak_rss_mb()
    print(f"peak memory (RSS): {results['peak_rss_MB']:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
