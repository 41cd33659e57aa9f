"""Shared fixtures: the shipped rig and the read-only ``../shared`` folder beside the repo."""

from pathlib import Path

import pytest

from bsviz.rig import Rig, load_rig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


@pytest.fixture(scope="session")
def ict_dir(shared) -> Path:
    return shared / "meshes" / "ICT-FaceKit" / "FaceXModel"


@pytest.fixture(scope="session")
def rig() -> Rig:
    return load_rig()


def obj_vertices(path: Path):
    """The ``v`` lines of an OBJ in file order, parsed independently of bsviz."""
    import numpy as np

    with open(path) as f:
        return np.array([line.split()[1:4] for line in f if line.startswith("v ")], np.float64)
