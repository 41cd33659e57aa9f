"""The rig fitted to a face's landmarks: head pose, expression and identity weights.

The geometric counterpart of the blendshape stream. MediaPipe's 478 landmarks (x, y in image
pixels, z the depth in the same scale) are matched to rig vertices once and for all
(``models/landmark_vertices.json``, made by ``scripts/make_landmark_map.py``), then fitted as

    L ~ s R (b0 + D w + I a) + t    (in the image frame flipped to the rig's axes: y up, z out)

with w in [0, 1] (the K expression weights), a the J identity weights (ridge-regularised),
s R t a similarity (pixels per centimetre, rotation, pixels). The fit alternates a closed-form
similarity (Umeyama) for the current shape with a bounded linear least-squares solve for
(w, a) under that pose; the design matrix [D; I] at the 478 vertices is fixed, so each solve is
small. ``nme`` is the mean 2D distance between the fitted points and the landmarks over the
inter-ocular distance (outer eye corners, landmarks 33 and 263).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from bsviz.assets import landmark_vertices_path
from bsviz.rig.rig import Rig

FLIP = np.diag([1.0, -1.0, -1.0])  # image (x right, y down, z away) <-> rig (x, y up, z out)
OUTER_EYE_CORNERS = (33, 263)
DEPTH_WEIGHT = 0.5       # MediaPipe's depth is less sure than its image position
EXPRESSION_PENALTY = 1.0  # ridge on the expression weights (residual units: cm per landmark)
SPARSITY = 0.001          # L1 on the expression weights: a shape needs this much evidence
IDENTITY_PENALTY = 1.0    # ridge on the identity weights
IDENTITY_BOUND = 3.0      # identity weights are kept within +-3 sd
ITERATIONS = 6            # Gauss-Newton steps on pose and shape together
SOLVER_STEPS = 200        # active-set steps of each shape solve, at most


@dataclass
class Fit:
    """The rig fitted to one face.

    weights : (K,) expression weights in [0, 1]; identity : (J,) identity weights
    scale : pixels per centimetre; rotation : (3, 3) the head's rotation (rig axes);
    translation : (3,) pixels, in the image frame flipped to the rig's axes
    nme : mean 2D landmark error over the inter-ocular distance
    """

    weights: np.ndarray
    identity: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    nme: float

    @property
    def pose(self) -> dict[str, float]:
        """Yaw, pitch and roll in degrees, R = R_y(yaw) R_x(-pitch) R_z(roll) (as
        ``fer.synth.pose_matrix``): yaw turns the face to its left, pitch tilts it up, roll turns
        it counter-clockwise as the camera sees it."""
        r = self.rotation
        return {"yaw": float(np.degrees(np.arctan2(r[0, 2], r[2, 2]))),
                "pitch": float(np.degrees(np.arcsin(np.clip(r[1, 2], -1, 1)))),
                "roll": float(np.degrees(np.arctan2(r[1, 0], r[1, 1])))}

    def to_image(self, vertices: np.ndarray) -> np.ndarray:
        """(N, 3) rig-space vertices (centimetres) posed as in the photo: x, y in image pixels,
        z the depth in pixels (larger is farther)."""
        return (self.scale * np.asarray(vertices) @ self.rotation.T + self.translation) @ FLIP


def pose_angles_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) the rotation ``Fit.pose`` reads back, R = R_y(yaw) R_x(-pitch) R_z(roll)."""
    y, p, r = np.radians([yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's weighted similarity: s, R (3, 3), t (3,) minimising
    sum_i w_i |s R source_i + t - target_i|^2 for points (N, 3), weights (N,)."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    a, b = source - mu_s, target - mu_t
    cov = (b * w[:, None]).T @ a
    u, sigma, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (w @ (a * a).sum(axis=1)))
    return scale, rotation, mu_t - scale * rotation @ mu_s


class LandmarkFitter:
    """The rig's 478 landmark vertices and the fit of them to a face's landmarks."""

    def __init__(self, rig: Rig, expression_penalty: float = EXPRESSION_PENALTY,
                 sparsity: float = SPARSITY, identity_penalty: float = IDENTITY_PENALTY):
        correspondence = json.loads(landmark_vertices_path().read_text())
        self.rig, self.ids = rig, np.array(correspondence["vertices"])
        # where MediaPipe sees each landmark on the neutral face, in the rig's frame (478, 3)
        self.neutral = rig.neutral[self.ids] + np.array(correspondence["offsets_cm"])
        basis = np.concatenate([rig.deltas[:, self.ids], rig.identity_deltas[:, self.ids]])
        self.basis = basis.reshape(len(basis), -1).T.astype(np.float64)         # (478*3, K+J)
        self.k, self.j = rig.n_shapes, len(rig.identity_names)
        n = len(self.ids)
        # per residual: 1 for x and y, DEPTH_WEIGHT^2 for depth, over the point count (478*3, 1)
        self.row_weight = np.tile([1.0, 1.0, DEPTH_WEIGHT ** 2], n)[:, None] / n
        self.weighted_basis = self.basis * self.row_weight                      # W B (478*3, K+J)
        penalty = np.r_[np.full(self.k, expression_penalty), np.full(self.j, identity_penalty)]
        # the shape block of the normal equations, fixed: B'WB + ridge (on the same scale)
        self.gram = self.weighted_basis.T @ self.basis + np.diag(penalty ** 2) / n
        self.l1 = np.r_[np.full(self.k, sparsity), np.zeros(self.j)]  # linear, as w >= 0
        self.lower = np.r_[np.zeros(self.k), -np.full(self.j, IDENTITY_BOUND)]
        self.upper = np.r_[np.ones(self.k), np.full(self.j, IDENTITY_BOUND)]

    def fit(self, landmarks: np.ndarray, iterations: int = ITERATIONS) -> Fit:
        """landmarks: (478, 3) MediaPipe landmarks in image pixels -> the fitted rig.

        Starts from the neutral face's similarity (Umeyama), then takes Gauss-Newton steps on
        pose and shape together: around the current (s, R, t, x), a point moves by
        s R (sigma X + omega x X + B_i (x' - x)) + tau, linear in the scale change sigma, the
        small rotation omega, the translation tau and the new coefficients x' (kept in their
        box), solved as one bounded least-squares problem.
        """
        target = np.asarray(landmarks, np.float64) @ FLIP                      # rig-like axes
        n, m = len(self.ids), self.k + self.j
        x = np.zeros(m)
        scale, rotation, translation = similarity(self.neutral, target, np.ones(n))
        gram = np.zeros((m + 7, m + 7))
        gram[:m, :m] = self.gram
        for _ in range(iterations):
            shape = self.neutral + (self.basis @ x).reshape(-1, 3)              # X_i (478, 3)
            aligned = (target - translation) @ rotation / scale  # the landmarks in the rig's frame
            pose = np.zeros((n, 3, 7))  # d(point)/d(omega, sigma, tau): -[X_i]x, X_i, I
            pose[:, 0, 1], pose[:, 0, 2], pose[:, 1, 2] = shape[:, 2], -shape[:, 1], shape[:, 0]
            pose[:, :, :3] -= pose[:, :, :3].transpose(0, 2, 1)
            pose[:, :, 3] = shape
            pose[:, :, 4:] = np.eye(3)
            pose = pose.reshape(3 * n, 7)  # the rows in the basis' order: point, coordinate
            weighted_pose = pose * self.row_weight
            gram[:m, m:] = self.weighted_basis.T @ pose
            gram[m:, :m] = gram[:m, m:].T
            gram[m:, m:] = weighted_pose.T @ pose
            rhs = (aligned - self.neutral).reshape(-1)  # solving for x itself, not a step
            c = np.r_[self.weighted_basis.T @ rhs - self.l1, weighted_pose.T @ rhs]
            solution = self._solve(gram, c, np.r_[x, np.zeros(7)])
            change = np.abs(solution[:m] - x).max()
            x, omega, sigma, tau = solution[:m], solution[m:m + 3], solution[m + 3], solution[-3:]
            translation = translation + scale * rotation @ tau
            rotation = rotation @ _rodrigues(omega)
            scale *= 1 + sigma
            if change < 1e-4 and np.abs(omega).max() < 1e-5:
                break
        shape = self.neutral + (self.basis @ x).reshape(-1, 3)
        fit = Fit(x[:self.k].astype(np.float32), x[self.k:].astype(np.float32), scale, rotation,
                  translation, 0.0)
        fit.nme = nme(fit.to_image(shape)[:, :2], np.asarray(landmarks)[:, :2])
        return fit

    def _solve(self, gram: np.ndarray, c: np.ndarray, start: np.ndarray) -> np.ndarray:
        """argmin over the box of x'Gx/2 - c'x: (K+J+7,) -> (K+J+7,) (the 7 pose variables
        unbounded), by an active-set method
        from ``start`` (G is positive definite: the penalties see to that). The variables held
        at a bound stay there while the others are solved for exactly; a step that would leave
        the box stops where the first variable meets its bound, which is then held; when a
        step fits, a held variable whose gradient points into the box is let go, until none
        does (the Karush-Kuhn-Tucker conditions)."""
        lo = np.r_[self.lower, np.full(7, -np.inf)]
        hi = np.r_[self.upper, np.full(7, np.inf)]
        x = np.clip(start, lo, hi)
        g = gram @ x - c
        held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        for _ in range(SOLVER_STEPS):
            free = ~held
            goal = x.copy()
            goal[free] = np.linalg.solve(gram[np.ix_(free, free)],
                                         c[free] - gram[np.ix_(free, held)] @ x[held])
            step = goal - x
            room = np.full(len(x), np.inf)  # how far along ``step`` each variable may go
            down, up = free & (step < 0), free & (step > 0)
            room[down] = (lo[down] - x[down]) / step[down]
            room[up] = (hi[up] - x[up]) / step[up]
            alpha = float(room.min())
            if alpha < 1.0:  # stop at the first bound met, and hold that variable there
                x = np.clip(x + alpha * step, lo, hi)
                held[int(np.argmin(room))] = True
                continue
            x = goal
            g = gram @ x - c
            wrong = held & (((x <= lo) & (g < 0)) | ((x >= hi) & (g > 0)))
            if not wrong.any():
                break
            held[int(np.argmax(np.abs(g) * wrong))] = False
        return x


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation by the axis-angle vector ``omega`` (radians)."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = omega / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def nme(points: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean 2D distance between points (478, 2) and landmarks (478, 2) over the inter-ocular
    distance of the landmarks (outer eye corners)."""
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(points - landmarks, axis=1).mean()
                 / np.linalg.norm(landmarks[a] - landmarks[b]))
