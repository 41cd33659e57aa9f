"""Checkpoints: save (atomically, with a content hash), load (verified), pack for release, and
rebuild the network they hold. Inference needs only this module and ``models``.

A checkpoint is a dict of plain data and tensors, loaded with ``weights_only=True``:
``kind``, ``model_config``, ``classes``, ``shape_names``, ``model`` (the state dict) and
``model_sha256`` (a hash of every tensor in it, checked on loading), plus what training adds
(``config``, ``optimizer``, ``epoch``, ``history``, ``best``) or a release adds (``card``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from bsviz.fer.models import Network, Stream, network_from_config
from bsviz.files import atomic_path

REQUIRED = ("kind", "model_config", "classes", "shape_names", "model")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, damaged, altered or of another kind."""


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """``torch.save`` through a temp file and a rename (whole or absent), with the hash of
    ``checkpoint["model"]`` stored beside it."""
    checkpoint = {**checkpoint, "model_sha256": state_hash(checkpoint["model"])}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded with ``weights_only=True`` and verified against its hash.

    Raises CheckpointError (one line naming the file) for a missing, empty, truncated or
    damaged file, a file that is not a bsviz checkpoint, or weights that changed after saving.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged, truncated "
                              "or not a PyTorch checkpoint") from None
    missing = [k for k in REQUIRED if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a bsviz checkpoint (it lacks {', '.join(missing)})")
    if checkpoint.get("model_sha256") != state_hash(checkpoint["model"]):
        what = "has no content hash" if "model_sha256" not in checkpoint else \
            "does not match its content hash: its weights changed after it was saved"
        raise CheckpointError(f"checkpoint {path} {what}; use the original file")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> Network:
    """Rebuild the saved network (in eval mode) from a checkpoint dict."""
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
