"""Latency of the web app on this machine: a face image in -> probabilities + GLB out.

1. In process, per stage (p50 / p95 over example renders and CK+ faces): face finding
   (MediaPipe), the networks, blending, GLB export, and the whole photo handler
   (``app.on_photo``: these plus the face box and the two charts); the rendered still,
   which the browser asks for once the GLB has arrived, is timed too.
2. Over HTTP to ``bsviz app`` on 127.0.0.1 through Gradio's REST API, as a browser does
   it: upload the image, call ``/analyse``, read the result stream (probabilities, charts,
   the GLB written and its URL; files not downloaded). One client in turn, then a bounded
   load test for each N of ``--clients`` (1, 4 and 8): N clients for S seconds, each sending
   its next request when one returns.
   Each client keeps one Gradio session over its calls, as a browser tab and
   ``gradio_client.Client`` do (``--new-sessions``: a new one for each call, as bare REST
   calls without a session hash get; Gradio then builds each session's state afresh).
   The server runs with Gradio's own profiler (``GRADIO_PROFILING=1``), whose phases are
   printed after each part: waiting in the queue, Gradio's pre-processing (the upload
   moved into its cache), our handler, its post-processing (61 outputs: the images and GLB
   moved into the cache, the charts and sliders serialised) and their total; the rest of
   the end-to-end time is the three HTTP requests themselves (upload, call, result stream).

The machine may be shared: run it nice'd; the load average is printed before and after.

    nice python benchmarks/bench_app.py [--model PATH] [--clients 1 4 8] [--seconds 30] [--new-sessions]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from bsviz.assets import example_paths
from bsviz.rig.blend import blend
from bsviz.rig.export import save_mesh
from bsviz.ui import app

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ck+48"


def images() -> list[Path]:
    """The example renders and, when ../shared is there, two CK+ faces of each class."""
    ck = [p for d in sorted(SHARED.iterdir()) for p in sorted(d.glob("*.png"))[:2]] \
        if SHARED.is_dir() else []
    return example_paths() + ck


def percentiles(seconds: list[float]) -> str:
    ms = 1000 * np.asarray(seconds)
    return f"{np.percentile(ms, 50):7.1f} {np.percentile(ms, 95):7.1f}"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def stages(paths: list[Path], rounds: int) -> None:
    """Per-stage latency in this process, the serving thread count."""
    engine = app.engine()
    predictor, finder = engine.predictor, engine.predictor.finder
    times: dict[str, list[float]] = {k: [] for k in (
        "face finding (MediaPipe)", "networks (two-stream CNN)", "blending (53 shapes)",
        "GLB export (compact)", "whole handler (on_photo)", "rendered still (after the GLB)")}
    tmp = engine.out_dir / "bench"
    tmp.mkdir(exist_ok=True)
    app.on_photo(str(paths[0]))  # warm up
    for _ in range(rounds):
        for path in paths:
            face, t = timed(finder.find, str(path), predictor.image_size)
            times["face finding (MediaPipe)"].append(t)
            (_, weights), t = timed(predictor.run, face.crop[None])
            times["networks (two-stream CNN)"].append(t)
            vertices, t = timed(blend, engine.rig, weights[0])
            times["blending (53 shapes)"].append(t)
            _, t = timed(save_mesh, tmp / "face.glb", vertices, engine.triangles, engine.colours,
                         compact=True)
            times["GLB export (compact)"].append(t)
            _, t = timed(app.on_photo, str(path))
            times["whole handler (on_photo)"].append(t)
            _, t = timed(engine.still, weights[0])
            times["rendered still (after the GLB)"].append(t)
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    print(f"\nin process, {len(paths)} images x {rounds} rounds, OpenCV threads "
          f"{cv2.getNumThreads()}, BLAS threads {blas}\n{'stage':<34} {'p50 ms':>7} {'p95 ms':>7}")
    for name, seconds in times.items():
        print(f"{name:<34} {percentiles(seconds)}")


def serve(model: str | None, env: dict[str, str] | None = None, log: Path | None = None
          ) -> tuple[str, subprocess.Popen]:
    """``bsviz app`` on a free localhost port, started and answering; its output to ``log``
    (else discarded). Also used by ``soak_app.py``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "bsviz.ui.cli", "app", "--port", str(port)]
    with open(log or os.devnull, "w") as out:
        process = subprocess.Popen(command + (["--model", model] if model else []), env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1)
            return url, process
        except OSError:
            if process.poll() is not None:
                sys.exit(f"the app exited with status {process.returncode}"
                         + (f" (see {log})" if log else ""))
            time.sleep(0.5)
    process.terminate()
    sys.exit("the app did not answer within 2 minutes")


def analyse(http: httpx.Client, url: str, path: Path, session: str | None = None) -> None:
    """One photo through the app: upload, call ``/analyse``, read the result stream.
    ``session``: the client's session hash, kept over its calls as a browser and
    ``gradio_client`` keep theirs; None: each call a new session (a bare REST call)."""
    with open(path, "rb") as f:
        uploaded = http.post(f"{url}gradio_api/upload", files={"files": f}).json()[0]
    data = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, False]
    request = {"data": data} if session is None else {"data": data, "session_hash": session}
    event = http.post(f"{url}gradio_api/call/analyse", json=request).json()["event_id"]
    with http.stream("GET", f"{url}gradio_api/call/analyse/{event}") as response:
        stream = "".join(response.iter_text())
    if "event: complete" not in stream or "face.glb" not in stream or '["Error' in stream:
        raise RuntimeError(stream[:300])


PHASES = {"queue_wait": "server: waiting in the queue", "preprocess": "server: pre-processing",
          "fn_call": "server: our handler", "postprocess": "server: post-processing",
          "total": "server: all of the event"}


def server_phases(http: httpx.Client, url: str) -> None:
    """Print the server's own per-phase p50 / p95 for the events since the last call (Gradio's
    profiler), then clear them."""
    summary = http.get(f"{url}gradio_api/profiling/summary").json()
    for phase, name in PHASES.items():
        ms = summary["phases"].get(phase)
        if ms:
            print(f"{name:<34} {ms['p50']:7.1f} {ms['p95']:7.1f}")
    http.post(f"{url}gradio_api/profiling/clear")


def load_test(url: str, paths: list[Path], clients: int, seconds: float, sessions: bool) -> None:
    """``clients`` threads, each its own client (with a session of its own if ``sessions``),
    sending requests back to back."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def run(k: int) -> None:
        http = httpx.Client(timeout=60)
        session = uuid.uuid4().hex if sessions else None
        i = k
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                analyse(http, url, paths[i % len(paths)], session)
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as e:  # noqa: BLE001 (any failure counts as an error)
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
            i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    print(f"\nload test: {clients} clients, {seconds:.0f} s on {url} "
          f"(concurrency limit {app.CONCURRENCY})\n"
          f"requests {len(latencies)}  errors {len(errors)}  throughput "
          f"{len(latencies) / wall:.1f}/s\n{'':<34} {'p50 ms':>7} {'p95 ms':>7}\n"
          f"{'end to end (HTTP, under load)':<34} {percentiles(latencies)}")
    with httpx.Client(timeout=60) as http:
        server_phases(http, url)
    for e in sorted(set(errors))[:5]:
        print(f"  error: {e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: $BSVIZ_MODEL, else the shipped one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=5, help="in-process passes over the images")
    parser.add_argument("--new-sessions", action="store_true",
                        help="a new Gradio session for each call (a bare REST call), not one a "
                             "client (a browser tab, a gradio_client.Client)")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs, niceness {os.nice(0)})")
    paths = images()
    app.load(args.model)
    cv2.setNumThreads(app.THREADS)  # as the server runs
    threadpool_limits(app.THREADS, user_api="blas")
    stages(paths, args.rounds)
    url, process = serve(args.model, env={**os.environ, "GRADIO_PROFILING": "1"})
    try:
        http = httpx.Client(timeout=60)
        session = None if args.new_sessions else uuid.uuid4().hex
        analyse(http, url, paths[0], session)  # warm up
        http.post(f"{url}gradio_api/profiling/clear")
        seconds = [timed(analyse, http, url, paths[i % len(paths)], session)[1]
                   for i in range(3 * len(paths))]
        print(f"\nsessions: {'a new one for each call' if args.new_sessions else 'one a client'}"
              f"\nover HTTP, one client, {len(seconds)} requests\n{'':<34} {'p50 ms':>7} "
              f"{'p95 ms':>7}\n{'end to end (HTTP, one at a time)':<34} {percentiles(seconds)}")
        server_phases(http, url)
        for clients in args.clients:
            load_test(url, paths, clients, args.seconds, not args.new_sessions)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
