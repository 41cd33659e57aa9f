"""Soak test of the web app: N clients send mixed requests to ``bsviz app`` for T minutes
while the server's memory and temp folder are sampled.

The mix, through Gradio's HTTP API as a page sends it (upload, call, read the result stream,
then fetch the GLB it names): good photos (the example renders and a few CK+ faces),
bad files (text, a truncated PNG, a 1x1 image: the app must answer with its message),
slider edits, exports and now and then a short video (2 s, 40 frames). Printed: requests, errors and p50 / p95 latency
per kind (upload to result, the file fetch not included), the server's RSS (VmRSS of
/proc/<pid>/status) after warm-up and at the end, and the temp folder's largest size and
file count against its cap ($BSVIZ_APP_CACHE_MB). Written to ``--out``: soak.png (RSS,
temp folder size and file count over time), soak.json (the samples, the figures) and
app.log (the server's output).

    nice python benchmarks/soak_app.py [--clients 4] [--minutes 10] [--out runs/soak]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from bench_app import serve  # benchmarks/ is on sys.path when run as a script
from matplotlib.figure import Figure
from PIL import Image

from bsviz.assets import example_paths
from bsviz.ui.app import cache_bytes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ck+48"
K = 53                   # blendshape weights, the edit and export inputs
# How often each kind is sent, relative; a video (40 frames) takes 5 s or more.
MIX = {"photo": 12, "edit": 12, "bad": 5, "export": 3, "video": 1}
MB = 2**20


@dataclass
class Inputs:
    """Files the clients send: good photos, bad files (name: message expected), one video."""

    photos: list[Path]
    bad: dict[Path, str]
    video: Path


@dataclass
class Tally:
    """Latencies (s) and errors per kind of request, shared by the client threads."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in MIX})
    errors: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in MIX})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> int:
        with self.lock:
            return sum(map(len, self.seconds.values())) + sum(map(len, self.errors.values()))


def make_inputs(folder: Path) -> Inputs:
    """The photos (examples, two CK+ faces per class when ../shared is there), the bad files
    and a 2 s, 20 fps WebM of the rig going from neutral to a smile and back."""
    ck = [p for d in sorted(SHARED.iterdir()) for p in sorted(d.glob("*.png"))[:2]] \
        if SHARED.is_dir() else []
    examples = example_paths()
    raw = examples[0].read_bytes()
    (folder / "notes.txt").write_text("not a photo\n")
    (folder / "truncated.png").write_bytes(raw[: len(raw) // 2])
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    bad = {folder / "notes.txt": "notes.txt is not an image file",
           folder / "truncated.png": "cannot decode truncated.png: the file is damaged or truncated",
           folder / "one_pixel.png": "one_pixel.png is too small: 1x1 px"}
    neutral, happy = (np.asarray(Image.open(examples[0].with_name(n)).convert("RGB"), np.float32)
                      for n in ("neutral.png", "happy.png"))
    video = folder / "clip.webm"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"VP80"), 20, neutral.shape[1::-1])
    for t in range(40):
        k = np.sin(np.pi * t / 39)
        frame = (neutral * (1 - k) + happy * k).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return Inputs(examples + ck, bad, video)


def upload(http: httpx.Client, url: str, path: Path) -> dict:
    """The file uploaded, as the FileData an API call takes."""
    with open(path, "rb") as f:
        response = http.post(f"{url}gradio_api/upload", files={"files": (path.name, f)})
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}


def call(http: httpx.Client, url: str, api: str, data: list) -> list:
    """Call ``/api`` and read its result stream; the output values of the complete event."""
    response = http.post(f"{url}gradio_api/call/{api}", json={"data": data})
    response.raise_for_status()
    event = response.json()["event_id"]
    with http.stream("GET", f"{url}gradio_api/call/{api}/{event}") as stream:
        body = "".join(stream.iter_text())
    _, sep, tail = body.partition("event: complete\ndata: ")
    if not sep:
        raise RuntimeError(f"/{api} did not complete: {body[-200:]!r}")
    return json.loads(tail.split("\n", 1)[0])


def first_file(output, suffix: str) -> dict:
    """The first FileData (a dict with a path) in ``output`` whose path ends with ``suffix``;
    empty if none."""
    if isinstance(output, dict):
        if str(output.get("path", "")).endswith(suffix):
            return output
        output = list(output.values())
    for value in output if isinstance(output, list) else []:
        if found := first_file(value, suffix):
            return found
    return {}


def request(http: httpx.Client, url: str, kind: str, inputs: Inputs, rng: random.Random
            ) -> tuple[float, dict]:
    """One request of ``kind``: its latency (s, upload to result) and the GLB it names
    (empty for a bad file). Raises on a wrong answer."""
    weights = [round(rng.random(), 2) for _ in range(K)]
    heatmap = rng.random() < 0.2
    start = time.perf_counter()
    if kind in ("photo", "bad"):
        path = rng.choice(inputs.photos if kind == "photo" else list(inputs.bad))
        out = call(http, url, "analyse", [upload(http, url, path), heatmap])
        expected = f"Error: {inputs.bad[path]}" if kind == "bad" else None
        if out[0].startswith("Error") if expected is None else expected not in out[0]:
            raise RuntimeError(f"{path.name}: unexpected status {out[0][:120]!r}")
    elif kind == "video":
        out = call(http, url, "video", [upload(http, url, inputs.video)])
        if not out[0].startswith("40 frames"):
            raise RuntimeError(f"unexpected video status {out[0][:120]!r}")
    else:
        out = call(http, url, kind, [heatmap, *weights])
    seconds = time.perf_counter() - start
    glb = first_file(out, ".glb")
    if kind != "bad" and not glb:
        raise RuntimeError(f"/{kind} named no GLB file")
    return seconds, glb


def fetch(http: httpx.Client, url: str, glb: dict) -> None:
    """Download a file the app named, as the page's 3D viewer does."""
    link = glb.get("url") or f"gradio_api/file={glb['path']}"
    response = http.get(link if link.startswith("http") else url + link.lstrip("/"))
    if response.status_code != 200 or not response.content.startswith(b"glTF"):
        raise RuntimeError(f"GET {glb['path']}: status {response.status_code}")


def client(k: int, url: str, inputs: Inputs, deadline: float, tally: Tally) -> None:
    """One client: requests of random kinds (``MIX``) back to back until ``deadline``."""
    rng = random.Random(k)
    kinds, weights = list(MIX), list(MIX.values())
    with httpx.Client(timeout=300) as http:
        while time.perf_counter() < deadline:
            kind = rng.choices(kinds, weights)[0]
            try:
                seconds, glb = request(http, url, kind, inputs, rng)
                if glb:
                    fetch(http, url, glb)
                with tally.lock:
                    tally.seconds[kind].append(seconds)
            except Exception as e:  # noqa: BLE001 (any failure counts as an error)
                with tally.lock:
                    tally.errors[kind].append(f"{type(e).__name__}: {e}")


def rss_mb(pid: int) -> float:
    """VmRSS of process ``pid``, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def folder_usage(folder: Path) -> tuple[float, int]:
    """The size (MB) and file count of everything under ``folder``."""
    size, count = 0, 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                count += 1
            except FileNotFoundError:
                continue
    return size / MB, count


def sample(pid: int, tmp: Path, tally: Tally, start: float, stop: threading.Event,
           every: float, samples: list[dict]) -> None:
    """Every ``every`` s until ``stop``: time, requests done, the server's RSS and its temp
    folder (the ``bsviz-app-*`` folder it made under ``tmp``)."""
    while True:
        folders = list(tmp.glob("bsviz-app-*"))
        size, count = folder_usage(folders[0]) if folders else (0.0, 0)
        samples.append({"seconds": round(time.perf_counter() - start, 1),
                        "requests": tally.done(), "rss_mb": round(rss_mb(pid), 1),
                        "temp_mb": round(size, 1), "temp_files": count})
        if stop.wait(every):
            return


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p95, ms (NaN when there are none)."""
    if not seconds:
        return float("nan"), float("nan")
    ms = 1000 * np.asarray(seconds)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def summarise(tally: Tally, samples: list[dict], warmup: float, wall: float,
              cap_mb: float) -> dict:
    """The figures: per kind and in all; RSS after warm-up, at the end, its slope; the temp
    folder's largest size and count."""
    kinds = {}
    for kind in MIX:
        p50, p95 = percentiles(tally.seconds[kind])
        kinds[kind] = {"requests": len(tally.seconds[kind]) + len(tally.errors[kind]),
                       "errors": len(tally.errors[kind]), "p50_ms": p50, "p95_ms": p95}
    after = [s for s in samples if s["seconds"] >= warmup] or samples[-1:]
    requests = np.array([s["requests"] for s in after], float)
    rss = np.array([s["rss_mb"] for s in after])
    slope = float(np.polyfit(requests, rss, 1)[0] * 1000) if np.ptp(requests) > 0 else 0.0
    total = sum(k["requests"] for k in kinds.values())
    return {"kinds": kinds, "requests": total,
            "errors": sum(k["errors"] for k in kinds.values()),
            "throughput": total / wall, "warmup_s": warmup,
            "rss_mb": {"first": samples[0]["rss_mb"], "after_warmup": after[0]["rss_mb"],
                       "end": samples[-1]["rss_mb"], "max": max(s["rss_mb"] for s in samples),
                       "slope_mb_per_1000_requests": slope},
            "temp": {"cap_mb": cap_mb, "max_mb": max(s["temp_mb"] for s in samples),
                     "max_files": max(s["temp_files"] for s in samples),
                     "end_mb": samples[-1]["temp_mb"], "end_files": samples[-1]["temp_files"]},
            "error_messages": sorted({e for es in tally.errors.values() for e in es})[:10]}


def report(summary: dict, clients: int, minutes: float, url: str) -> str:
    """The printed figures."""
    lines = [f"soak: {clients} clients for {minutes:g} min on {url}",
             f"{'kind':<8} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8}"]
    for kind, k in summary["kinds"].items():
        lines.append(f"{kind:<8} {k['requests']:>8} {k['errors']:>6} {k['p50_ms']:>8.1f} "
                     f"{k['p95_ms']:>8.1f}")
    r, t = summary["rss_mb"], summary["temp"]
    lines.append(f"{'all':<8} {summary['requests']:>8} {summary['errors']:>6}   "
                 f"({summary['throughput']:.1f} requests/s)")
    lines.append(f"server RSS: {r['first']:.0f} MB at start, {r['after_warmup']:.0f} MB after "
                 f"{summary['warmup_s']:.0f} s warm-up, {r['end']:.0f} MB at the end (max "
                 f"{r['max']:.0f} MB; {r['slope_mb_per_1000_requests']:+.2f} MB per 1000 "
                 "requests after warm-up)")
    lines.append(f"temp folder: at most {t['max_mb']:.0f} MB (cap {t['cap_mb']:.0f} MB) and "
                 f"{t['max_files']} files; {t['end_mb']:.0f} MB, {t['end_files']} files at the end")
    lines += [f"  error: {e}" for e in summary["error_messages"]]
    return "\n".join(lines)


def plot(samples: list[dict], cap_mb: float, path: Path) -> None:
    """RSS, and the temp folder's size (with its cap) and file count, over time."""
    minutes = [s["seconds"] / 60 for s in samples]
    fig = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(minutes, [s["rss_mb"] for s in samples], color="tab:blue")
    top.set_ylabel("server RSS (MB)")
    top.set_ylim(bottom=0)
    bottom.plot(minutes, [s["temp_mb"] for s in samples], color="tab:orange", label="size")
    bottom.axhline(cap_mb, color="tab:red", linestyle="--", label="cap")
    bottom.set_ylabel("temp folder (MB)")
    bottom.set_xlabel("minutes")
    bottom.set_ylim(bottom=0)
    files = bottom.twinx()
    files.plot(minutes, [s["temp_files"] for s in samples], color="tab:green", label="files")
    files.set_ylabel("files")
    files.set_ylim(bottom=0)
    fig.legend(loc="outside lower center", ncols=3)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: $BSVIZ_MODEL, else the shipped one)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="sampling interval")
    parser.add_argument("--out", default="runs/soak", help="folder for the plot, JSON and log")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cap_mb = cache_bytes() / MB  # the server reads the same $BSVIZ_APP_CACHE_MB
    tmp = Path(tempfile.mkdtemp(prefix="bsviz-soak-"))
    try:
        inputs = make_inputs(tmp)
        url, process = serve(args.model, {**os.environ, "TMPDIR": str(tmp)}, out / "app.log")
        try:
            tally, samples, stop = Tally(), [], threading.Event()
            start = time.perf_counter()
            sampler = threading.Thread(target=sample, args=(
                process.pid, tmp, tally, start, stop, args.sample_seconds, samples))
            sampler.start()
            deadline = start + 60 * args.minutes
            threads = [threading.Thread(target=client, args=(k, url, inputs, deadline, tally))
                       for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            stop.set()
            sampler.join()
        finally:
            process.terminate()
            process.wait(timeout=60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(tally, samples, min(60.0, 12 * args.minutes), wall, cap_mb)
    print(report(summary, args.clients, args.minutes, url))
    plot(samples, cap_mb, out / "soak.png")
    (out / "soak.json").write_text(json.dumps(
        {"clients": args.clients, "minutes": args.minutes, "date": time.strftime("%Y-%m-%d"),
         "summary": summary, "samples": samples}, indent=1))
    print(f"wrote {out / 'soak.png'}, {out / 'soak.json'} and {out / 'app.log'}")


if __name__ == "__main__":
    main()
