"""MediaPipe's 52 blendshape scores and their mapping onto a rig's expression names.

MediaPipe names follow ARKit (``eyeBlinkLeft``); ICT FaceKit splits sides with a
suffix (``eyeBlink_L``) and has two ARKit shapes per side (``browInnerUp_L/_R``,
``cheekPuff_L/_R``), while ``mouthLeft``/``jawLeft`` are movements, not sides, in
both. ``_neutral`` has no ICT shape. ``ict_index`` derives the mapping from the two
name lists and checks that it covers every ICT name exactly once. Both name sides
from the subject's view: ICT ``_L`` shapes move +x (the subject's left), and MediaPipe's
``eyeBlinkLeft`` rises when the eye on the image's right closes, so no mirroring.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from bsviz.rig.rig import load_rig

# MediaPipe's 52 blendshape categories, in its output order.
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)


def ict_targets(name: str, ict_names: tuple[str, ...]) -> list[str]:
    """The ICT shapes one MediaPipe score drives: 'eyeBlinkLeft' -> ['eyeBlink_L'],
    'browInnerUp' -> ['browInnerUp_L', 'browInnerUp_R'], 'mouthLeft' -> ['mouthLeft'],
    '_neutral' -> []."""
    if name in ict_names:
        return [name]
    side = re.fullmatch(r"(\w+)(Left|Right)", name)
    if side and f"{side[1]}_{side[2][0]}" in ict_names:
        return [f"{side[1]}_{side[2][0]}"]
    both = [f"{name}_L", f"{name}_R"]
    return both if all(n in ict_names for n in both) else []


def ict_index(ict_names: tuple[str, ...] | None = None,
              mediapipe_names: tuple[str, ...] = BLENDSHAPE_NAMES) -> np.ndarray:
    """(K,) int: for each ICT name, the index of the MediaPipe score that drives it.

    ``ict_names`` defaults to the rig's (53 names). Raises ValueError unless every
    ICT name is driven by exactly one MediaPipe score.
    """
    ict_names = rig_names() if ict_names is None else tuple(ict_names)
    sources: dict[str, list[int]] = {n: [] for n in ict_names}
    for i, name in enumerate(mediapipe_names):
        for target in ict_targets(name, ict_names):
            sources[target].append(i)
    bad = {n: [mediapipe_names[i] for i in s] for n, s in sources.items() if len(s) != 1}
    if bad:
        raise ValueError(f"ICT names not mapped exactly once from MediaPipe names: {bad}")
    return np.array([s[0] for s in sources.values()])


@cache
def rig_names() -> tuple[str, ...]:
    """The shipped rig's expression names, in order (53 for ICT FaceKit)."""
    return load_rig().names


def to_ict(scores: np.ndarray, ict_names: tuple[str, ...] | None = None) -> np.ndarray:
    """(..., 52) MediaPipe scores -> (..., K) ICT weights in [0, 1] (a column gather)."""
    return np.asarray(scores)[..., ict_index(ict_names)]
