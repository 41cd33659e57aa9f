"""Training throughput (images/s) and inference latency (ms/image) of the three networks.

    python benchmarks/bench_train.py [--steps 10] [--json out.json]

Random 48x48 inputs at the default widths of ``TrainConfig``; each training step is one
forward, backward and AdamW update at batch 128, with augmentation, as ``train`` does it.
Runs on the CPU, and on CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bsviz.fer.augment import augment
from bsviz.fer.models import training_loss
from bsviz.fer.train import TrainConfig, _autocast, build_model

CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprise")


def train_speed(kind: str, device: torch.device, amp: str, steps: int, batch: int = 128) -> float:
    """Images per second of training steps (after two warm-up steps)."""
    cfg = TrainConfig(kind=kind, amp=amp)
    model = build_model(cfg, CLASSES, 53).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, 1, 48, 48), torch.randint(0, 7, (batch,))
    w = torch.rand(batch, 53)

    def step():
        xa, wa = augment(x, w, list(range(53)), gen)
        with _autocast(cfg, device):
            out = model(xa.to(device).contiguous(memory_format=torch.channels_last))
        loss = training_loss(out, y.to(device), wa.to(device), cfg.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def inference_ms(device: torch.device, amp: str, repeats: int = 50) -> float:
    """Milliseconds for one face (batch 1) through the two-stream network, median."""
    cfg = TrainConfig(kind="two_stream", amp=amp)
    model = build_model(cfg, CLASSES, 53).to(device).eval()
    x = torch.rand(1, 1, 48, 48, device=device)
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        with _autocast(cfg, device):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads "
          f"{torch.get_num_threads()}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        for amp in ("off", "auto"):
            for kind in ("image", "blendshape", "two_stream"):
                speed = train_speed(kind, device, amp, args.steps)
                results[f"train {kind} {device.type} amp={amp}"] = speed
                print(f"train {kind:<10} {device.type:<4} amp={amp:<4}: {speed:8.0f} images/s")
            ms = inference_ms(device, amp)
            results[f"inference two_stream {device.type} amp={amp} ms"] = ms
            print(f"inference two-stream, batch 1, {device.type} amp={amp}: {ms:.2f} ms/image")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
