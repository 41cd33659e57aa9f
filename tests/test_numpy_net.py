"""Inference without torch: checkpoints read into numpy arrays (against torch.load), the
networks run in numpy (against the torch modules), and damaged files refused in one line."""

import math
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from bsviz.fer.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from bsviz.fer.models import build_network
from bsviz.fer.numpy_net import NumpyNet


def trained_like(kind: str, seed: int = 0) -> torch.nn.Module:
    """A network of ``kind`` with random weights and random BatchNorm statistics (so folding
    them into the convolutions matters), in eval mode."""
    torch.manual_seed(seed)
    net = build_network(kind, widths=(8, 8, 16, 16, 16, 16, 24), feature_dim=32)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def checkpoint_of(net, tmp_path: Path, **extra) -> Path:
    """``net`` saved as a bsviz checkpoint (with ``extra`` entries) under ``tmp_path``."""
    path = tmp_path / f"{net.kind}.pt"
    save_checkpoint(path, {"kind": net.kind, "model_config": asdict(net.cfg),
                           "classes": tuple("abcdefg"), "shape_names": tuple(map(str, range(53))),
                           "model": net.state_dict(), **extra})
    return path


@pytest.mark.parametrize("kind", ["image", "blendshape", "two_stream"])
def test_numpy_forward_equals_the_torch_network(kind, tmp_path):
    net = trained_like(kind)
    images = np.random.default_rng(1).random((37, 48, 48), dtype=np.float32)  # > one batch
    with torch.no_grad():
        out = net(torch.from_numpy(images)[:, None])
    logits, weights = NumpyNet(read_checkpoint(checkpoint_of(net, tmp_path)))(images)
    for mine, theirs in ((logits, out.logits), (weights, out.weights)):
        assert (mine is None) == (theirs is None)
        if theirs is not None:
            np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-5, rtol=1e-4)
    empty = NumpyNet(read_checkpoint(checkpoint_of(net, tmp_path)))(images[:0])
    assert all(e is None or len(e) == 0 for e in empty)


def test_read_checkpoint_equals_torch_load_tensor_for_tensor(tmp_path):
    net = trained_like("two_stream")
    optimizer = torch.optim.AdamW(net.parameters())
    net.train()
    net(torch.rand(2, 1, 48, 48)).logits.sum().backward()
    optimizer.step()
    path = checkpoint_of(net, tmp_path, optimizer=optimizer.state_dict(), epoch=3,
                         history=[{"loss": 1.5, "accuracy": float("nan")}], best=(0.5, 2))
    theirs = torch.load(path, weights_only=True)
    mine = read_checkpoint(path)

    def same(a, b, where="checkpoint"):
        if isinstance(b, torch.Tensor):
            assert isinstance(a, np.ndarray) and a.dtype == b.numpy().dtype, where
            np.testing.assert_array_equal(a, b.numpy(), err_msg=where)
        elif isinstance(b, dict):
            assert a.keys() == b.keys(), where
            for k in b:
                same(a[k], b[k], f"{where}[{k!r}]")
        elif isinstance(b, (list, tuple)):
            assert type(a) is type(b) and len(a) == len(b), where
            for x, y in zip(a, b):
                same(x, y, where)
        else:
            assert a == b or (math.isnan(a) and math.isnan(b)), where

    same(mine, theirs)
    assert mine["model"]["image.conv.1.num_batches_tracked"].shape == ()


def test_damaged_checkpoints_are_refused_in_one_line(tmp_path):
    good = checkpoint_of(trained_like("image"), tmp_path)
    raw = good.read_bytes()
    cases = {"missing.pt": None, "empty.pt": b"", "truncated.pt": raw[: len(raw) // 2],
             "notes.pt": b"not a checkpoint at all"}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save({"x": object()}, tmp_path / "unsafe.pt")        # not plain data
    torch.save({"kind": "image"}, tmp_path / "other.pt")        # not a bsviz checkpoint
    state = torch.load(good, weights_only=True)
    state["model"]["fc2.bias"] += 1                             # altered after saving
    torch.save(state, tmp_path / "altered.pt")
    expected = {"missing.pt": "no such checkpoint", "empty.pt": "is empty (0 bytes)",
                "truncated.pt": "is damaged, truncated", "notes.pt": "is damaged, truncated",
                "unsafe.pt": "is damaged, truncated", "other.pt": "is not a bsviz checkpoint",
                "altered.pt": "does not match its content hash"}
    for name, message in expected.items():
        with pytest.raises(CheckpointError, match=re.escape(message)) as error:
            read_checkpoint(tmp_path / name)
        assert "\n" not in str(error.value) and name in str(error.value)
