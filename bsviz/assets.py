"""The files bsviz ships: the ICT rig, the trained network, MediaPipe's landmarker bundle, the
expression presets and the app's example faces.

In a source checkout the rig and the models stay in the repository's top-level ``meshes/`` and
``models/`` folders; ``pyproject.toml`` maps them into the package as ``bsviz.meshes`` and
``bsviz.models``, so a wheel carries them and an editable install finds them in place. Each is
found through ``importlib.resources``, never through a path relative to the source tree.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _shipped(package: str, name: str) -> Path:
    path = Path(str(files(package) / name))
    if not path.is_file():
        raise FileNotFoundError(f"shipped file {name} is missing from {package} ({path}); "
                                "reinstall bsviz")
    return path


def rig_path() -> Path:
    """The ICT FaceKit rig, ``meshes/ict_facekit.npz``."""
    return _shipped("bsviz.meshes", "ict_facekit.npz")


def model_path() -> Path:
    """The shipped BlendshapeFERNet checkpoint, ``models/blendshape_fernet.pt``."""
    return _shipped("bsviz.models", "blendshape_fernet.pt")


def landmarker_path() -> Path:
    """MediaPipe's FaceLandmarker bundle, ``models/face_landmarker.task``."""
    return _shipped("bsviz.models", "face_landmarker.task")


def landmark_vertices_path() -> Path:
    """The rig vertex under each MediaPipe landmark, ``models/landmark_vertices.json``."""
    return _shipped("bsviz.models", "landmark_vertices.json")


def presets_path() -> Path:
    """Per-class mean weights as expression presets, ``models/expression_presets.json``."""
    return _shipped("bsviz.models", "expression_presets.json")


def example_paths() -> list[Path]:
    """The app's example faces (renders of the rig), sorted by name."""
    folder = Path(str(files("bsviz.ui") / "examples"))
    return sorted(folder.glob("*.png"))
