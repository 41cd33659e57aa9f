"""Shared fixtures: the shipped rig and the read-only ``../shared`` folder beside the repo."""

from pathlib import Path

import numpy as np
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


def synth_file(path, names, n=20, seed=0):
    """A synth.npz as ``bsviz synth`` writes it, with random crops and weights."""
    from bsviz.fer.synth import SynthSet

    rng = np.random.default_rng(seed)
    k = len(names)
    synth = SynthSet(images=rng.integers(0, 256, (n, 1, 48, 48), dtype=np.uint8),
                     weights=rng.random((n, k), dtype=np.float32),
                     identity=np.zeros((n, 10), np.float32), pose=np.zeros((n, 3), np.float32),
                     light=np.zeros((n, 5), np.float32),
                     mediapipe_weights=rng.random((n, k), dtype=np.float32),
                     render_mediapipe_weights=rng.random((n, k), dtype=np.float32),
                     index=np.arange(n), names=tuple(names))
    np.savez(path, **{f: v for f, v in vars(synth).items() if f != "names"},
             names=np.array(names))
    return synth


GLTF_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16,
                   5125: np.uint32, 5126: np.float32}


def gltf_array(gltf, blob, index):
    """Decode an accessor (dense of any component type, strided, normalized; or sparse float)
    with pygltflib's parsed JSON, independently."""
    acc = gltf.accessors[index]
    width = {"SCALAR": 1, "VEC3": 3}[acc.type]
    out = np.zeros((acc.count, width), np.float64)
    if acc.bufferView is not None:
        view = gltf.bufferViews[acc.bufferView]
        dtype = np.dtype(GLTF_COMPONENTS[acc.componentType])
        stride = view.byteStride or dtype.itemsize * width
        rows = np.frombuffer(blob, np.uint8, acc.count * stride, view.byteOffset).reshape(-1, stride)
        out[:] = rows[:, :dtype.itemsize * width].copy().view(dtype)
        if acc.normalized:  # glTF: c / max, and at least -1 for signed types
            out = np.maximum(out / np.iinfo(dtype).max, -1)
    if acc.sparse:
        iv, vv = gltf.bufferViews[acc.sparse.indices.bufferView], gltf.bufferViews[acc.sparse.values.bufferView]
        idx = np.frombuffer(blob, np.uint32, acc.sparse.count, iv.byteOffset)
        out[idx] = np.frombuffer(blob, np.float32, acc.sparse.count * width, vv.byteOffset).reshape(-1, width)
    return out


def compact_glb_vertices(path):
    """(rig vertex ids (N,), their positions (N, 3) in the rig's centimetres) of a compact GLB
    (``save_mesh(..., compact=True)``), decoded with pygltflib, independently of bsviz."""
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(path))
    mesh, node = gltf.meshes[0], gltf.nodes[0]
    ids = np.concatenate([np.arange(a, b) for a, b in mesh.extras["rigVertices"]])
    metres = gltf_array(gltf, gltf.binary_blob(), mesh.primitives[0].attributes.POSITION)
    return ids, (metres * node.scale + node.translation) * 100
