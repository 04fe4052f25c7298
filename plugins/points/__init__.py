"""The built-in 3-D modalities: point clouds (`points`) and voxel occupancy grids (`voxels`).

One plugin may serve several modalities; both share the procedural shapes of shapes.py.
  points  (N, 3) clouds; by default one interface token per point (PointInfinity's data stream:
          Fourier features of the point's position, optionally its k-nearest-neighbour offsets),
          or with `tokens: groups` one token per group of points (farthest-point centres + k
          nearest neighbours, PointNet-embedded). Positions come from content only, never from
          the point's index, so the denoiser is permutation-equivariant over points
          (tokenizer.py). `canonical_pose: true` trains on each cloud turned into its own frame and
          gives every sample a uniform random pose (pose.py; exact for data posed at random, as the
          built-in shapes are). Writes PLY files + a PNG render.
  voxels  (1, D, D, D) occupancy in {-1, +1}; 3-D patches with 3-D sin-cos positions.
Datasets: `shapes` (built in: sphere, box, torus, cylinder, random size and pose) for both, and
`folder` (.ply / .npy / .xyz point sets) for points. Metrics (metrics.py): Chamfer distance and
EMD based MMD, coverage and 1-NN accuracy against the held-out split.

Registered through the `rinkit` entry-point group (pyproject.toml), like any third-party plugin."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rinkit.plugin import DatasetSpec, MetricSpec, Modality, hookimpl


class PointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_points: int = Field(512, ge=4)
    # interface tokens: one per point (PointInfinity's data stream), or one per group of points
    tokens: Literal["points", "groups"] = "points"
    fourier_freqs: int = Field(6, ge=0)
    fourier_directions: int = Field(0, ge=0)  # 0: the coordinate axes (NeRF); else this many random ones per frequency
    local_k: int = Field(0, ge=0)       # tokens = "points": also embed the offsets to the k nearest points
    num_groups: int = Field(64, ge=1)   # tokens = "groups": how many (farthest-point centres)
    group_size: int = Field(16, ge=1)   # tokens = "groups": points per group (k nearest of each centre)
    neighbours: int = Field(3, ge=1)    # tokens = "groups": group tokens mixed into each point's readout
    normalize: Literal["unit_sphere", "none"] = "unit_sphere"  # folder data only
    # train on each cloud turned into its own frame; samples get a uniform random pose (pose.py)
    canonical_pose: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.tokens == "points":
            if self.local_k >= self.num_points:
                raise ValueError(f"local_k ({self.local_k}) must be below num_points ({self.num_points})")
            return self
        if self.num_groups > self.num_points or self.group_size > self.num_points:
            raise ValueError(f"num_groups ({self.num_groups}) and group_size ({self.group_size}) must not "
                             f"exceed num_points ({self.num_points})")
        if self.neighbours > self.num_groups:
            raise ValueError(f"neighbours ({self.neighbours}) exceeds num_groups ({self.num_groups})")
        return self


class VoxelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    grid_size: int = Field(16, ge=2)
    patch_size: int = Field(4, ge=1)
    pos_emb: Literal["sincos", "sincos+learned"] = "sincos+learned"

    @model_validator(mode="after")
    def _check(self):
        if self.grid_size % self.patch_size:
            raise ValueError(f"grid_size {self.grid_size} is not divisible by patch_size {self.patch_size}")
        return self


def _point_tokenizer(o: PointOptions, dim: int):
    from rinkit_plugins.points import tokenizer as t
    if o.tokens == "points":
        return t.PointTokenizer(dim, o.fourier_freqs, o.local_k, o.fourier_directions)
    return t.PointGroupTokenizer(o.num_groups, o.group_size, dim, o.fourier_freqs, o.fourier_directions)


def _point_detokenizer(o: PointOptions, dim: int):
    from rinkit_plugins.points import tokenizer as t
    if o.tokens == "points":
        return t.PointDetokenizer(o.num_points, dim)
    return t.PointGroupDetokenizer(dim, o.fourier_freqs, o.neighbours, o.fourier_directions)


def _voxel_tokenizer(o: VoxelOptions, dim: int):
    from rinkit_plugins.points.tokenizer import VoxelTokenizer
    return VoxelTokenizer(o.grid_size, o.patch_size, dim, o.pos_emb)


def _voxel_detokenizer(o: VoxelOptions, dim: int):
    from rinkit_plugins.points.tokenizer import VoxelDetokenizer
    return VoxelDetokenizer(o.grid_size, o.patch_size, dim)


def _write_points(samples, labels, path, options=None, context=None, **kw):
    from rinkit_plugins.points.writer import write_clouds
    return write_clouds(samples, labels, path, options)


def _write_voxels(samples, labels, path, options=None, context=None, **kw):
    from rinkit_plugins.points.writer import write_voxels
    return write_voxels(samples, labels, path, options)


def _shape_clouds(options, data_cfg, split="train"):
    from rinkit_plugins.points.data import shape_clouds, turned
    return shape_clouds(options.num_points, split, turned(options, split))


def _shape_voxels(options, data_cfg, split="train"):
    from rinkit_plugins.points.data import shape_voxels
    return shape_voxels(options.grid_size, split)


def _folder(options, data_cfg, split="train"):
    from rinkit_plugins.points.data import folder
    return folder(options, data_cfg, split)


def _metric(modality):
    def build(options, data_cfg):
        from rinkit_plugins.points.metrics import PointMetric
        return PointMetric(modality, options, data_cfg)
    return build


def _finish_points(samples, options, generators):
    """`canonical_pose`: the model drew each shape in its own frame; give it a uniform random pose."""
    if not options.canonical_pose:
        return samples
    from rinkit_plugins.points.pose import random_pose
    return random_pose(samples, generators).clamp(-1, 1)


def _points_view(values, x, options, **kw):  # rinkit routing
    from rinkit_plugins.points.view import points_view
    return points_view(values, x, options, **kw)


def _voxels_view(values, x, options, **kw):  # rinkit routing
    from rinkit_plugins.points.view import voxels_view
    return voxels_view(values, x, options, **kw)


@hookimpl
def rinkit_modalities():
    return [
        Modality(name="points", description="point clouds (N, 3): groups of points, permutation-equivariant; PLY + PNG",
                 options=PointOptions, make_tokenizer=_point_tokenizer, make_detokenizer=_point_detokenizer,
                 sample_shape=lambda o: (o.num_points, 3), write_samples=_write_points,
                 default_preset="points-shapes", invertible=True, token_view=_points_view,
                 finish=_finish_points),
        Modality(name="voxels", description="voxel occupancy grids (1, D, D, D): 3-D patches; PLY + PNG + npy",
                 options=VoxelOptions, make_tokenizer=_voxel_tokenizer, make_detokenizer=_voxel_detokenizer,
                 sample_shape=lambda o: (1, o.grid_size, o.grid_size, o.grid_size), write_samples=_write_voxels,
                 default_preset="points-voxels", invertible=True, token_view=_voxels_view),
    ]


@hookimpl
def rinkit_datasets():
    desc = "built-in procedural shapes: sphere, box, torus, cylinder (random size and pose), 4 classes"
    return [DatasetSpec("points", "shapes", desc, _shape_clouds, num_classes=4, reads_path=False),
            DatasetSpec("points", "folder", ".ply/.npy/.xyz point sets under data.path, class sub-folders as labels",
                        _folder),
            DatasetSpec("voxels", "shapes", desc + " (solid occupancy)", _shape_voxels, num_classes=4, reads_path=False)]


@hookimpl
def rinkit_metrics():
    return [MetricSpec("points", "point_sets", "MMD / coverage / 1-NN accuracy under Chamfer and EMD vs the "
                       "held-out split", _metric("points")),
            MetricSpec("voxels", "voxel_sets", "the point-set metrics on occupied voxel centres + occupancy gap",
                       _metric("voxels"))]
