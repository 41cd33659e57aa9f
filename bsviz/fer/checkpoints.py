"""Checkpoints: save (atomically, with a content hash), read (verified), pack for release, and
rebuild the network they hold.

A checkpoint is a dict of plain data and tensors in the zip file ``torch.save`` writes:
``kind``, ``model_config``, ``classes``, ``shape_names``, ``model`` (the state dict) and
``model_sha256`` (a hash of every tensor in it, checked on reading), plus what training adds
(``config``, ``optimizer``, ``epoch``, ``history``, ``best``) or a release adds (``card``).
``read_checkpoint`` reads one without torch, its tensors as numpy arrays, through an unpickler
that accepts only plain data and tensors (stricter than ``torch.load(weights_only=True)``):
inference (``fer.predict``) needs nothing else, and so starts without importing torch (3.4 s
of a cold start on a 2-core machine). ``load_checkpoint`` gives the same dict with tensors.
"""

from __future__ import annotations

import collections
import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bsviz.files import atomic_path

if TYPE_CHECKING:
    from bsviz.fer.models import Network, Stream

REQUIRED = ("kind", "model_config", "classes", "shape_names", "model")
# torch's storage classes in the pickle -> the numpy dtype of their bytes
STORAGES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
            "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
            "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
TORCH_DTYPES = {np.dtype(t): f"torch.{np.dtype(t).name}" for t in STORAGES.values()}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, damaged, altered or of another kind."""


def state_hash(state: dict[str, np.ndarray]) -> str:
    """sha256 over a state dict's names, dtypes (torch's names), shapes and bytes, in name
    order; the arrays may be numpy arrays or CPU tensors (``np.asarray`` of each)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        array = np.asarray(state[name])
        digest.update(f"{name}|{TORCH_DTYPES[array.dtype]}|{array.shape}\n".encode())
        digest.update(np.ascontiguousarray(array.reshape(-1)).view(np.uint8).tobytes())
    return digest.hexdigest()


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 with a numpy array for the storage."""
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), strides).copy()


class _Unpickler(pickle.Unpickler):
    """The pickle of a torch zip file, its tensors as arrays; any other class is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGES:
            return STORAGES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused: {module}.{name} is not plain data or a tensor")

    def persistent_load(self, pid: tuple) -> np.ndarray:
        _, dtype, key, _, _ = pid  # ("storage", dtype, key, location, numel)
        return np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, its tensors as numpy arrays, verified against its hash; no torch.

    Raises CheckpointError (one line naming the file) for a missing, empty, truncated or
    damaged file, a file that is not a bsviz checkpoint, or weights that changed after saving.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            with archive.open(pkl) as file:
                checkpoint = _Unpickler(file, archive, pkl[:-len("data.pkl")]).load()
    except Exception:  # noqa: BLE001 (zip, pickle and numpy raise many kinds for a bad file)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged, truncated "
                              "or not a PyTorch checkpoint of plain data and tensors") from None
    missing = [k for k in REQUIRED if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a bsviz checkpoint (it lacks {', '.join(missing)})")
    if checkpoint.get("model_sha256") != state_hash(checkpoint["model"]):
        what = "has no content hash" if "model_sha256" not in checkpoint else \
            "does not match its content hash: its weights changed after it was saved"
        raise CheckpointError(f"checkpoint {path} {what}; use the original file")
    return checkpoint


def load_checkpoint(path: str | Path) -> dict:
    """``read_checkpoint`` with torch tensors for the arrays (to train, resume or evaluate)."""
    import torch

    def tensors(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        if isinstance(value, dict):
            return type(value)((k, tensors(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(tensors(v) for v in value)
        return value

    return tensors(read_checkpoint(path))


def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """``torch.save`` through a temp file and a rename (whole or absent), with the hash of
    ``checkpoint["model"]`` stored beside it."""
    import torch

    state = {k: v.detach().cpu() for k, v in checkpoint["model"].items()}
    checkpoint = {**checkpoint, "model_sha256": state_hash(state)}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def model_from_checkpoint(checkpoint: dict) -> Network:
    """Rebuild the saved network (in eval mode) from a checkpoint dict (with tensors)."""
    from bsviz.fer.models import network_from_config

    model = network_from_config(checkpoint["kind"], checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def init_stream(stream: Stream, checkpoint: dict, classes: tuple[str, ...]) -> None:
    """Load a pretrained stream of ``stream.kind`` from a stream or a two-stream checkpoint. A
    classifier trained on another class list keeps only its features: its last layer starts anew."""
    state = checkpoint["model"]
    if checkpoint["kind"] == "two_stream":
        prefix = stream.kind + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif checkpoint["kind"] != stream.kind:
        raise CheckpointError(f"a {checkpoint['kind']} checkpoint cannot start the "
                              f"{stream.kind} stream")
    if stream.kind == "image" and tuple(checkpoint["classes"]) != tuple(classes):
        state = {k: v for k, v in state.items() if not k.startswith("fc2.")}
    stream.load_state_dict(state, strict=False)


def pack_checkpoint(src: str | Path, dst: str | Path, card: dict | None = None) -> Path:
    """A small release copy of a checkpoint: the weights in float16, config, classes and
    shape names, the model ``card`` (data, protocol, accuracy, date, command); no optimizer."""
    checkpoint = load_checkpoint(src)
    keep = {k: checkpoint[k] for k in ("kind", "config", "model_config", "classes",
                                       "shape_names", "epoch", "history") if k in checkpoint}
    keep["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in checkpoint["model"].items()}
    keep["card"] = card if card is not None else checkpoint.get("card", {})
    return save_checkpoint(dst, keep)
