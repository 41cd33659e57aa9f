"""Offscreen images of a rig's face with pyrender (headless: OSMesa by default).

``PYOPENGL_PLATFORM`` must be set before OpenGL is first imported: the first ``Renderer``
sets it to ``osmesa`` unless the caller chose (e.g. ``egl`` on a GPU machine), then imports
pyrender.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from bsviz.files import atomic_path
from bsviz.rig.colours import vertex_colours
from bsviz.rig.rig import Rig, vertex_normals

# Camera yaw about the head's vertical axis, degrees (positive: the face's left side).
VIEWS = {"front": 0.0, "three_quarter": 40.0, "profile": 90.0}
BACKGROUND = (1.0, 1.0, 1.0)
# Camera-fixed directional lights, (yaw, pitch, intensity): degrees from the view axis,
# positive to the camera's right and up. A key light above-left, a softer fill on the right.
LIGHTS = ((-30.0, 35.0, 3.0), (40.0, 0.0, 1.2))
AMBIENT = 0.25
# Image files ``save_png`` writes, by extension; lossy ones at a quality that keeps the shading.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def _look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """(4, 4) camera-to-world pose for an OpenGL camera at ``eye`` looking at ``target``."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    pose[:3, 3] = eye
    return pose


class Renderer:
    """A reusable offscreen renderer for one rig's topology (one GL context).

    Framing comes from the rig's neutral face, so every expression of a rig is
    seen through the same camera. Use as a context manager, or call ``close()``.
    """

    def __init__(self, rig: Rig, size: int = 512, yfov_deg: float = 30.0):
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        import pyrender  # imported here: OpenGL reads PYOPENGL_PLATFORM when first imported

        self._pyrender = pyrender
        self.triangles = rig.visible_triangles()
        self.colours = vertex_colours(rig)
        used = rig.neutral[np.unique(self.triangles)]
        lo, hi = used.min(axis=0), used.max(axis=0)
        self.target = (lo + hi) / 2
        radius = np.linalg.norm(hi - lo) / 2
        self.distance = 0.8 * radius / np.sin(np.radians(yfov_deg) / 2)
        self.camera = pyrender.PerspectiveCamera(yfov=np.radians(yfov_deg), aspectRatio=1.0,
                                                 znear=self.distance / 10, zfar=self.distance * 4)
        self.size = size
        self._gl = pyrender.OffscreenRenderer(size, size)

    def render(self, vertices: np.ndarray, view: str | float = "front",
               colours: np.ndarray | None = None,
               lights: tuple[tuple[float, float, float], ...] = LIGHTS,
               ambient: float = AMBIENT) -> np.ndarray:
        """(size, size, 3) uint8 image of ``vertices`` (V, 3) from a named view or a yaw in degrees.

        ``colours`` (V, 3) in [0, 1] replaces the rig's colours (e.g. a displacement heatmap).
        ``lights`` are directional and fixed to the camera, (yaw, pitch, intensity) each as in
        ``LIGHTS``; ``ambient`` is the grey level of the ambient light.
        """
        vertices = np.asarray(vertices, np.float32)
        pyrender = self._pyrender
        primitive = pyrender.Primitive(
            positions=vertices, normals=vertex_normals(vertices, self.triangles),
            indices=self.triangles, color_0=self.colours if colours is None else colours,
            material=pyrender.MetallicRoughnessMaterial(metallicFactor=0.0, roughnessFactor=0.7,
                                                        doubleSided=True))
        scene = pyrender.Scene(bg_color=(*BACKGROUND, 1.0), ambient_light=(ambient,) * 3)
        scene.add(pyrender.Mesh([primitive]))
        camera_pose = self.camera_pose(view)
        scene.add(self.camera, pose=camera_pose)
        for yaw_deg, pitch_deg, intensity in lights:
            y, p = np.radians(yaw_deg), np.radians(pitch_deg)
            light_dir = np.array([np.sin(y) * np.cos(p), np.sin(p), np.cos(y) * np.cos(p)])
            light_eye = self.target + camera_pose[:3, :3] @ light_dir
            scene.add(pyrender.DirectionalLight(intensity=intensity),
                      pose=_look_at(light_eye, self.target))
        colour, _ = self._gl.render(scene)
        return colour[..., :3].copy()

    def camera_pose(self, view: str | float = "front") -> np.ndarray:
        """(4, 4) camera-to-world pose of a named view or a yaw in degrees."""
        if isinstance(view, str) and view not in VIEWS:
            raise ValueError(f"unknown view '{view}' (choose from {', '.join(VIEWS)})")
        yaw = np.radians(VIEWS[view] if isinstance(view, str) else float(view))
        eye = self.target + self.distance * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
        return _look_at(eye, self.target)

    def project(self, vertices: np.ndarray, view: str | float = "front") -> np.ndarray:
        """(N, 3) where ``vertices`` (N, 3) land in ``render``'s image: x, y in pixels (y down,
        pixel edges at integers) and the distance in front of the camera, centimetres."""
        pose = self.camera_pose(view)
        local = (np.asarray(vertices, np.float64) - pose[:3, 3]) @ pose[:3, :3]  # camera frame
        depth = -local[:, 2]
        focal = self.size / 2 / np.tan(self.camera.yfov / 2)  # pixels
        x = self.size / 2 + focal * local[:, 0] / depth
        y = self.size / 2 - focal * local[:, 1] / depth
        return np.stack([x, y, depth], axis=1)

    def close(self) -> None:
        if self._gl is not None:
            self._gl.delete()
            self._gl = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_image(rig: Rig, vertices: np.ndarray, view: str | float = "front", size: int = 512,
                 colours: np.ndarray | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 image; for many frames keep a ``Renderer`` open instead."""
    with Renderer(rig, size) as renderer:
        return renderer.render(vertices, view, colours)


def image_format(path: str | Path) -> str:
    """The PIL format that ``path``'s extension names (``IMAGE_FORMATS``); ValueError if none."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"cannot write {path}: unknown image format '{suffix}' (use "
                         f"{', '.join(IMAGE_FORMATS)})")
    return IMAGE_FORMATS[suffix]


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image in the format its extension names: PNG, JPEG or WebP
    (``image_format``), atomically (a temp file, then rename)."""
    format_ = image_format(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=format_, **SAVE_OPTIONS.get(format_, {}))
