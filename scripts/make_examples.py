"""Write the app's example faces: the shipped ICT FaceKit rig posed and rendered (no photos).

Run from the repository root: ``python scripts/make_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

from bsviz.fer.synth import painted_colours
from bsviz.rig.blend import blend
from bsviz.rig.render import Renderer, save_png
from bsviz.rig.rig import load_rig
from bsviz.ui.cli import DEMO_EXPRESSION

HERE = Path(__file__).resolve().parents[1] / "bsviz" / "ui" / "examples"
SIZE = 256


def both(**weights: float) -> dict[str, float]:
    """``{name_L: w, name_R: w}`` for each ``name=w``."""
    return {f"{name}_{side}": w for name, w in weights.items() for side in "LR"}


# name: (expression weights, identity weights)
EXAMPLES = {
    "happy": (DEMO_EXPRESSION, {"identity000": 1.0}),
    "surprise": ({"jawOpen": 0.55, **both(browInnerUp=0.9, browOuterUp=0.9, eyeWide=0.8)},
                 {"identity001": -1.0}),
    "sadness": ({"mouthShrugLower": 0.4, **both(browInnerUp=0.8, mouthFrown=0.8, eyeSquint=0.2)},
                {"identity002": 1.0}),
    "anger": ({**both(browDown=1.0, eyeSquint=0.5, noseSneer=0.5, mouthPress=0.6)},
              {"identity003": -1.0}),
    "disgust": ({"mouthShrugUpper": 0.3, **both(noseSneer=0.9, mouthUpperUp=0.7,
                                                 cheekSquint=0.6, browDown=0.5)},
                {"identity004": 1.0}),
    "neutral": ({}, {}),
}


def main() -> None:
    rig = load_rig()
    colours = painted_colours(rig)
    with Renderer(rig, size=SIZE) as renderer:
        for name, (expression, identity) in EXAMPLES.items():
            vertices = blend(rig, expression, identity)
            path = HERE / f"{name}.png"
            save_png(path, renderer.render(vertices, "front", colours))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
