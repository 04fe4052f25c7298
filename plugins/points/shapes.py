"""Procedural 3-D shapes, the built-in data of the points plugin (no download).

Four classes: sphere, box, torus, cylinder. Each example draws its size parameters and a pose
(uniformly random rotation, a small translation) from a generator seeded by (split, index), so
the data are identical on every machine. A shape is kept inside the unit ball (radius 0.95), so
coordinates lie in [-1, 1] as the diffusion model expects.
  surface(n)   n points uniformly distributed over the surface (area-weighted), for point clouds
  inside(p)    exact solid occupancy of query points, for voxel grids"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("sphere", "box", "torus", "cylinder")
_SPLIT_ID = {"train": 0, "test": 1}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform on SO(3): QR of a Gaussian matrix with the sign fix (Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@dataclass
class Shape:
    label: int
    params: tuple[float, ...]
    rotation: np.ndarray
    scale: float
    shift: np.ndarray

    # -- canonical frame -------------------------------------------------------------------------
    def _surface_canonical(self, n: int, rng) -> np.ndarray:
        kind = CLASSES[self.label]
        if kind == "sphere":
            v = rng.standard_normal((n, 3))
            return v / np.linalg.norm(v, axis=1, keepdims=True) * self.params[0]
        if kind == "box":
            h = np.array(self.params)
            areas = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]]).repeat(2)  # +-x, +-y, +-z faces
            face = rng.choice(6, n, p=areas / areas.sum())
            p = rng.uniform(-1, 1, (n, 3)) * h
            axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
            p[np.arange(n), axis] = sign * h[axis]
            return p
        if kind == "torus":
            big, small = self.params
            out = np.empty((0, 3))
            while len(out) < n:  # area element (R + r cos v): rejection sampling on v
                u, v = rng.uniform(0, 2 * np.pi, (2, 2 * n))
                keep = rng.uniform(0, big + small, 2 * n) < big + small * np.cos(v)
                u, v = u[keep], v[keep]
                ring = big + small * np.cos(v)
                out = np.concatenate([out, np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], 1)])
            return out[:n]
        radius, half = self.params  # cylinder along z
        side, cap = 2 * np.pi * radius * 2 * half, np.pi * radius ** 2
        part = rng.choice(3, n, p=np.array([side, cap, cap]) / (side + 2 * cap))
        u = rng.uniform(0, 2 * np.pi, n)
        rad = np.where(part == 0, radius, radius * np.sqrt(rng.uniform(0, 1, n)))
        z = np.where(part == 0, rng.uniform(-half, half, n), np.where(part == 1, half, -half))
        return np.stack([rad * np.cos(u), rad * np.sin(u), z], 1)

    def _inside_canonical(self, p: np.ndarray) -> np.ndarray:
        kind = CLASSES[self.label]
        if kind == "sphere":
            return np.linalg.norm(p, axis=-1) <= self.params[0]
        if kind == "box":
            return (np.abs(p) <= np.array(self.params)).all(-1)
        if kind == "torus":
            big, small = self.params
            return (np.linalg.norm(p[..., :2], axis=-1) - big) ** 2 + p[..., 2] ** 2 <= small ** 2
        radius, half = self.params
        return (np.linalg.norm(p[..., :2], axis=-1) <= radius) & (np.abs(p[..., 2]) <= half)

    # -- world frame -----------------------------------------------------------------------------
    def surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (self._surface_canonical(n, rng) * self.scale) @ self.rotation.T + self.shift

    def inside(self, p: np.ndarray) -> np.ndarray:
        return self._inside_canonical(((p - self.shift) @ self.rotation) / self.scale)


def random_shape(label: int, rng: np.random.Generator) -> Shape:
    kind = CLASSES[label]
    if kind == "sphere":
        params = (rng.uniform(0.45, 0.9),)
        bound = params[0]
    elif kind == "box":
        params = tuple(rng.uniform(0.15, 0.6, 3))
        bound = float(np.linalg.norm(params))
    elif kind == "torus":
        params = (rng.uniform(0.35, 0.6), rng.uniform(0.08, 0.25))
        bound = sum(params)
    else:
        params = (rng.uniform(0.15, 0.5), rng.uniform(0.2, 0.7))
        bound = float(np.hypot(*params))
    scale = min(1.0, 0.9 / bound)
    room = min(0.1, 0.95 - bound * scale)
    return Shape(label, params, random_rotation(rng), scale, rng.uniform(-room, room, 3))


def example_rng(split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([_SPLIT_ID[split], i, 104729])


def shape_example(split: str, i: int) -> tuple[Shape, np.random.Generator]:
    """Example i of a split (labels cycle through the classes): its shape and the generator that
    goes on to sample its points."""
    rng = example_rng(split, i)
    return random_shape(i % len(CLASSES), rng), rng


def cloud(split: str, i: int, n: int) -> np.ndarray:
    shape, rng = shape_example(split, i)
    return shape.surface(n, rng).astype(np.float32)


def voxel_centres(size: int) -> np.ndarray:
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)  # (D, H, W, 3), axis order z/y/x = D/H/W


def voxels(split: str, i: int, size: int) -> np.ndarray:
    """(size, size, size) solid occupancy in {-1, +1}."""
    shape, _ = shape_example(split, i)
    return np.where(shape.inside(voxel_centres(size)), 1.0, -1.0).astype(np.float32)
