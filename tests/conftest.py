"""Shared fixtures: the shipped rig and the read-only ``../shared`` folder beside the repo."""

from pathlib import Path

import pytest

from bsviz.rig.rig import Rig, load_rig

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


@pytest.fixture(scope="session")
def tiny_ck(shared, tmp_path_factory):
    """A 105-image CK+ (15 a class, many subjects) and its MediaPipe labels (ck.npz)."""
    import shutil

    from bsviz.fer.labels import label_dataset

    root = tmp_path_factory.mktemp("data")
    for folder in sorted((shared / "data" / "ck+48").iterdir()):
        (root / "ck+48" / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[::9][:15]:
            shutil.copy(image, root / "ck+48" / folder.name)
    label_dataset(root / "ck+48", root / "ck.npz", workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_fer(shared, tmp_path_factory):
    """A 126-image FER2013 (per class 10 train, 4 PublicTest, 4 PrivateTest) and its labels."""
    import shutil

    from bsviz.fer.labels import label_dataset

    root = tmp_path_factory.mktemp("data")
    for split, prefixes in (("train", {"Training": 10}), ("test", {"PublicTest": 4, "PrivateTest": 4})):
        for folder in sorted((shared / "data" / "fer2013" / split).iterdir()):
            (root / "fer2013" / split / folder.name).mkdir(parents=True)
            for prefix, count in prefixes.items():
                for image in sorted(folder.glob(f"{prefix}_*.jpg"))[:count]:
                    shutil.copy(image, root / "fer2013" / split / folder.name)
    label_dataset(root / "fer2013", root / "fer.npz", workers=1, progress=False)
    return root
