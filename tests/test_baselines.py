"""The per-modality baselines of benchmarks/baselines/: each builds, trains a step under rinkit's
denoiser contract and reports its FLOPs; the point-voxel parts do what they claim."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.baselines import audio as audio_bl  # noqa: E402
from benchmarks.baselines import points as points_bl  # noqa: E402
from benchmarks.quality import flops_per_example  # noqa: E402
from rinkit.config import load_config  # noqa: E402


def train_one_step(entry, x, labels):
    torch.manual_seed(0)
    model = entry.build()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss = entry.diffusion.loss(model, x, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())  # every parameter is on the path
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return model


def test_pvcnn_baseline_trains_a_step_and_reports_flops():
    from rinkit_plugins.points.data import shape_clouds
    cfg = load_config("points-shapes", None, ["modality_options.num_points=128"])
    entry = points_bl.pvcnn_entry(cfg, width=8)
    assert entry.shape == (128, 3) and entry.diffusion.self_cond_rate == 0
    x, y = shape_clouds(128, "train").tensors(4)
    model = train_one_step(entry, x, y)
    out, latents = model(x, torch.rand(4), y)
    assert out.shape == x.shape and latents is None
    f = flops_per_example(entry, 2)
    assert f["forward"] > 1e6 and f["train"] == pytest.approx(3 * f["forward"])
    assert f["train_direct_count"] == pytest.approx(f["train"], rel=0.05)
    with pytest.raises(ValueError, match="point clouds"):
        points_bl.pvcnn_entry(load_config("audio-synth"))


def test_pvcnn_is_permutation_equivariant():
    torch.manual_seed(0)
    model = points_bl.PVCNNDenoiser(num_classes=4, width=8).eval()
    x = torch.randn(2, 96, 3) * 0.5
    perm = torch.randperm(96)
    gamma, labels = torch.tensor([0.3, 0.9]), torch.tensor([1, 4])
    with torch.no_grad():
        out, _ = model(x, gamma, labels)
        out_p, _ = model(x[:, perm], gamma, labels)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-4, rtol=1e-4)


def test_voxelize_then_devoxelize_returns_the_voxel_values():
    """Points at voxel centres carrying their own (distinct per axis) coordinates come back
    unchanged: voxel layout and grid_sample's axis order agree."""
    res = 4
    idx = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), 0).reshape(1, 3, -1).float()
    feats = torch.cat([idx, idx[:, :1] * 10 + idx[:, 1:2] * 3 + idx[:, 2:]], 1)  # (1, 4, 64)
    grid = points_bl.voxelize(feats, idx, res)
    assert grid.shape == (1, 4, res, res, res) and grid[0, 3, 1, 2, 3] == 10 + 6 + 3
    torch.testing.assert_close(points_bl.devoxelize(grid, idx), feats)
    # two points in one voxel are averaged
    two = points_bl.voxelize(torch.tensor([[[1.0, 3.0]]]), torch.zeros(1, 3, 2), 2)
    assert two[0, 0, 0, 0, 0] == 2.0 and two.sum() == 2.0


def test_spectrogram_unet_trains_a_step_and_reports_flops():
    cfg = load_config("audio-synth", None, ["modality_options.n_mels=32", "modality_options.hop_length=500"])
    entry = audio_bl.unet_entry(cfg, width=0.34, depth=1)
    assert entry.shape == (1, 32, 32)
    x = torch.rand(2, *entry.shape) * 2 - 1
    model = train_one_step(entry, x, torch.tensor([0, 3]))
    assert model(x, torch.rand(2), torch.tensor([1, 2]))[0].shape == x.shape
    f = flops_per_example(entry, 2)
    assert f["forward"] > 1e6 and f["train"] == pytest.approx(3 * f["forward"])
    # the full-size default is the documented, parameter-matched one
    with torch.device("meta"):
        full = audio_bl.spectrogram_unet((1, 64, 64), 4)
    assert 1.3e6 < sum(p.numel() for p in full.parameters()) < 1.6e6
    with pytest.raises(ValueError, match="divisible by 8"):
        audio_bl.spectrogram_unet((1, 60, 64))
