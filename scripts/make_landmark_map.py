"""Make ``models/landmark_vertices.json``: the ICT FaceKit vertex under each of MediaPipe's 478
face landmarks, so that the rig can be fitted to the landmarks of a photo (``vision.fit``).

How: the shipped rig is rendered front on (painted brows and lips, as the app's examples, so
MediaPipe reads it like a photo) with several identities and expressions; MediaPipe's
landmarker runs on each render; every landmark takes the nearest rig vertex, in the image,
among the vertices the camera sees (skin facing the camera for the 468 mesh points, the irises
for the 10 iris points); the vertex most renders agree on is kept, with the share that agreed.
Then the offset: where MediaPipe puts each landmark on the neutral-expression renders,
relative to its vertex, in the rig's frame (centimetres; a similarity fitted per render brings
the landmarks back), averaged over those renders. The fit adds it to the neutral face, so that a
neutral face fits with zero expression weights.

Run from the repository root: ``python scripts/make_landmark_map.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from bsviz.fer.synth import painted_colours
from bsviz.rig.blend import blend
from bsviz.rig.render import Renderer
from bsviz.rig.rig import load_rig, vertex_normals
from bsviz.vision.faces import FaceFinder
from bsviz.vision.fit import FLIP, similarity

OUT = Path(__file__).resolve().parents[1] / "models" / "landmark_vertices.json"
SIZE = 512
# (expression weights, identity weights) of the renders that vote
POSES = [({}, {}), ({}, {"identity000": 1.0}), ({}, {"identity001": -1.0}),
         ({"jawOpen": 0.3}, {}), ({"mouthSmile_L": 0.5, "mouthSmile_R": 0.5}, {"identity002": 1}),
         ({"browInnerUp_L": 0.5, "browInnerUp_R": 0.5}, {"identity003": -1.0})]


def candidates(rig, vertices: np.ndarray, renderer: Renderer) -> tuple[np.ndarray, np.ndarray]:
    """Vertex ids the camera sees: front-facing skin, and the irises."""
    def group(name: str) -> np.ndarray:
        return np.unique(rig.triangles[rig.triangle_groups == rig.group_names.index(name)])

    normals = vertex_normals(vertices, rig.visible_triangles())
    towards = renderer.camera_pose("front")[:3, 3] - vertices
    facing = np.einsum("vc,vc->v", normals, towards / np.linalg.norm(towards, axis=1,
                                                                       keepdims=True)) > 0.15
    skin = group("M_Face")
    return skin[facing[skin]], np.concatenate([group("M_IrisLeft"), group("M_IrisRight")])


def main() -> None:
    rig = load_rig()
    colours = painted_colours(rig)
    votes: list[Counter] = [Counter() for _ in range(478)]
    seen = []  # (vertices, landmarks) of each render
    with Renderer(rig, SIZE) as renderer, FaceFinder() as finder:
        for expression, identity in POSES:
            vertices = blend(rig, expression, identity or None)
            image = renderer.render(vertices, "front", colours)
            faces = [f for f in finder.find_all(image) if f.landmarks is not None]
            if not faces:
                print(f"no landmarks on the render of {expression} {identity}; skipped")
                continue
            landmarks = faces[0].landmarks
            seen.append((vertices, landmarks, not expression))
            skin, irises = candidates(rig, vertices, renderer)
            for ids, points in ((skin, range(468)), (irises, range(468, 478))):
                projected = renderer.project(vertices[ids])[:, :2]
                for k in points:
                    nearest = ids[np.argmin(np.linalg.norm(projected - landmarks[k, :2], axis=1))]
                    votes[k][int(nearest)] += 1
    chosen = [v.most_common(1)[0] for v in votes]
    agreement = float(np.mean([n for _, n in chosen]) / len(POSES))
    ids = np.array([v for v, _ in chosen])
    offsets = []
    for vertices, landmarks, neutral in seen:
        if neutral:
            target = landmarks.astype(np.float64) @ FLIP
            scale, rotation, translation = similarity(vertices[ids], target, np.ones(len(ids)))
            offsets.append((target - translation) @ rotation / scale - vertices[ids])
    offset = np.mean(offsets, axis=0)
    OUT.write_text(json.dumps({
        "about": "ICT FaceKit vertex under each MediaPipe face landmark (0-477), made by "
                 "scripts/make_landmark_map.py: the nearest visible rig vertex to each landmark "
                 f"of {len(POSES)} front renders, the one most renders agree on",
        "agreement": round(agreement, 3), "vertices": ids.tolist(),
        "offsets_cm": np.round(offset, 4).tolist()}, separators=(",", ":")))
    print(f"wrote {OUT}: 478 vertices, renders agreeing on average {agreement:.1%}; "
          f"landmark offsets from their vertices {np.linalg.norm(offset, axis=1).mean():.3f} cm "
          f"on average (largest {np.linalg.norm(offset, axis=1).max():.3f})")


if __name__ == "__main__":
    main()
