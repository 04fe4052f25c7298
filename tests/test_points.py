"""The points plugin: permutation equivariance of the point tokenizer + engine, voxel patches,
procedural shapes, PLY/NPY/XYZ I/O, writers, the set metrics on hand-computed cases and short
training runs."""
import numpy as np
import pytest
import torch

from rinkit import registry
from rinkit.build import build_model
from rinkit.config import load_config
from rinkit.errors import RinkitError
from rinkit_plugins.points import PointOptions, VoxelOptions, shapes
from rinkit_plugins.points.data import folder, read_points, shape_clouds, write_ply
from rinkit_plugins.points.metrics import (chamfer, emd, mmd_cov, one_nn_accuracy, chamfer_matrix,
                                           set_metrics)

TINY = ["model.interface_dim=32", "model.latent_dim=64", "model.num_latents=16", "model.latent_heads=2",
        "model.rw_heads=2", "train.batch_size=16", "train.warmup_steps=5", "train.log_every=10",
        "train.ckpt_every=1000", "train.eval_samples=0", "sampler.steps=4"]


def small_points_cfg(*extra):
    return load_config("points-shapes", None, [*TINY, "modality_options.num_points=128",
                                               "modality_options.num_groups=16", "modality_options.group_size=8",
                                               *extra])


def test_points_and_voxels_registered_with_presets():
    assert registry.get_modality("points").default_preset == "points-shapes"
    assert registry.get_modality("voxels").default_preset == "points-voxels"
    assert load_config("points-shapes").modality == "points" and load_config("points-voxels").modality == "voxels"
    with pytest.raises(RinkitError, match="num_groups"):
        build_model(load_config("points-shapes", None, ["modality_options.tokens=groups",
                                                        "modality_options.num_groups=1000"]))
    with pytest.raises(RinkitError, match="local_k"):
        build_model(load_config("points-shapes", None, ["modality_options.local_k=256"]))


@pytest.mark.parametrize("tokens", ["points", "groups"])
def test_point_denoiser_is_permutation_equivariant(tokens):
    """Permuting the input points permutes the prediction identically; latents are unchanged."""
    cfg = small_points_cfg(f"modality_options.tokens={tokens}", "diffusion.self_cond_rate=0.9")  # with the warm start
    model = build_model(cfg).eval()
    torch.nn.init.ones_(model.core.self_cond.norm_out.weight)  # make the warm-start path matter
    x, _ = shape_clouds(128, "train").tensors(3)
    x = x + 0.1 * torch.randn_like(x)  # a noisy x_t, as the denoiser sees it
    gamma, labels = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0, 1, 4])
    prev = torch.randn(3, 16, 64)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, lat = model(x, gamma, labels, prev)
        out_p, lat_p = model(x[:, perm], gamma, labels, prev)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lat_p, lat, atol=1e-5, rtol=1e-5)


def test_point_tokens_are_points_with_their_neighbourhoods():
    """tokens: points (the default): one token per point, in the input's order; a token sees its
    own position and its k nearest neighbours' offsets, so moving one point changes only its own
    token and those of the points that have it as a neighbour."""
    o = PointOptions(num_points=64, local_k=4)
    m = registry.get_modality("points")
    tok, detok = m.make_tokenizer(o, 16), m.make_detokenizer(o, 16)
    torch.manual_seed(0)
    x = torch.rand(2, 64, 3) * 2 - 1
    tokens, state = tok(x)
    assert tokens.shape == (2, 64, 16) and state is None and detok(tokens, None, state).shape == x.shape
    perm = torch.randperm(64)
    torch.testing.assert_close(tok(x[:, perm])[0], tokens[:, perm])
    moved = x.clone()
    moved[0, 5] += 0.05
    changed = (tok(moved)[0] - tokens).abs().amax(-1) > 1e-6                   # (2, 64)
    knn = ((x[0, :, None] - x[0, None]) ** 2).sum(-1).topk(5, largest=False).indices[:, 1:]
    near = set(((knn == 5).any(1)).nonzero().flatten().tolist()) | {5}
    assert not changed[1].any() and set(changed[0].nonzero().flatten().tolist()) <= near
    assert changed[0, 5]
    # without neighbourhoods a token is a function of its own point alone
    o0 = PointOptions(num_points=64)
    tok0 = m.make_tokenizer(o0, 16)
    assert ((tok0(moved)[0] - tok0(x)[0]).abs().amax(-1) > 1e-6).sum() == 1


def test_fourier_features_along_the_axes_or_random_directions():
    """fourier_directions = 0 keeps NeRF's axis features in the order saved weights expect; > 0
    projects on that many fixed unit directions per frequency, the same in every model built."""
    import math
    from rinkit_plugins.points.tokenizer import Fourier
    p = torch.rand(2, 7, 3) * 2 - 1
    freqs = 2.0 ** torch.arange(4) * math.pi
    arg = (p[..., None] * freqs).flatten(-2)  # x at every frequency, then y, then z
    torch.testing.assert_close(Fourier(4)(p), torch.cat([p, arg.sin(), arg.cos()], -1))
    f = Fourier(4, directions=5)
    assert f.dim == 3 + 2 * 4 * 5 and torch.equal(f.proj, Fourier(4, directions=5).proj)
    u = f.proj.T.reshape(4, 5, 3) / freqs[:, None, None]  # per frequency, 5 unit directions
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(4, 5))
    assert (u[0] @ torch.eye(3)).abs().max(-1).values.min() < 0.99  # not the axes
    out = f(p)
    torch.testing.assert_close(out[..., 3:23], torch.sin(p @ f.proj))
    # wired through the options into the point tokenizer
    m = registry.get_modality("points")
    tok = m.make_tokenizer(PointOptions(num_points=64, fourier_directions=5), 16)
    assert tok.fourier.dim == 3 + 2 * 6 * 5 and tok(p)[0].shape == (2, 7, 16)


def test_point_tokens_are_groups_of_points():
    o = PointOptions(num_points=64, tokens="groups", num_groups=8, group_size=5)
    m = registry.get_modality("points")
    tok, detok = m.make_tokenizer(o, 16), m.make_detokenizer(o, 16)
    x = torch.rand(2, 64, 3) * 2 - 1
    tokens, (points, centres) = tok(x)
    assert tokens.shape == (2, 8, 16) and points is x
    # every centre is an input point, and the centres are spread out (farthest-point sampling)
    d = ((centres[:, :, None] - x[:, None]) ** 2).sum(-1)
    assert (d.min(-1).values == 0).all()
    assert torch.pdist(centres[0]).min() > 0.1
    # the token set does not depend on the order of the points
    tokens_p, _ = tok(x[:, torch.randperm(64)])
    torch.testing.assert_close(tokens_p, tokens)
    assert detok(tokens, None, (points, centres)).shape == x.shape


def test_voxel_tokenizer_detokenizer_invert_each_other():
    o = VoxelOptions(grid_size=8, patch_size=2, pos_emb="sincos")
    m = registry.get_modality("voxels")
    dim = 8
    tok, detok = m.make_tokenizer(o, dim), m.make_detokenizer(o, dim)
    with torch.no_grad():
        tok.patch.weight.zero_()
        tok.patch.bias.zero_()
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    tok.patch.weight[(i * 2 + j) * 2 + k, 0, i, j, k] = 1.0
        detok.proj.weight.copy_(torch.eye(dim))
        detok.proj.bias.zero_()
        tok.pos.fixed.zero_()  # the voxel positions are the patch layer's
    tok.norm = detok.norm = torch.nn.Identity()
    x = torch.randn(2, 1, 8, 8, 8)
    t, state = tok(x)
    assert t.shape == (2, 64, dim) and state is None
    torch.testing.assert_close(detok(t, None, state), x)


def test_shapes_are_deterministic_and_on_their_surfaces():
    a, b = shapes.cloud("train", 4, 256), shapes.cloud("train", 4, 256)
    assert np.array_equal(a, b) and not np.array_equal(a, shapes.cloud("test", 4, 256))
    assert np.abs(a).max() <= 0.96
    for i in range(8):  # labels cycle: sphere, box, torus, cylinder
        shape, rng = shapes.shape_example("train", i)
        assert shape.label == i % 4
        p = shape.surface(200, rng)
        # surface points sit on the solid's boundary: pulled toward the centre they are inside
        # (or for a torus, toward its tube), pushed out they are not
        if shape.label == 0:
            r = np.linalg.norm(p - shape.shift, axis=1)
            np.testing.assert_allclose(r, shape.params[0] * shape.scale, rtol=1e-6)
            assert shape.inside(shape.shift + (p - shape.shift) * 0.98).all()
            assert not shape.inside(shape.shift + (p - shape.shift) * 1.02).any()
    v1, v2 = shapes.voxels("train", 0, 16), shapes.voxels("train", 0, 16)
    assert np.array_equal(v1, v2) and set(np.unique(v1)) == {-1.0, 1.0}
    sphere, _ = shapes.shape_example("train", 0)
    expected = 4 / 3 * np.pi * (sphere.params[0] * sphere.scale) ** 3 / 8  # fraction of the [-1, 1] cube
    assert (v1 > 0).mean() == pytest.approx(expected, rel=0.15)


def test_point_files_round_trip_and_folder_dataset(tmp_path):
    pts = np.random.default_rng(0).uniform(-2, 2, (300, 3)).astype(np.float32)
    for k, cls in enumerate(["a", "b"]):
        (tmp_path / cls).mkdir()
        for i in range(10):
            stem = tmp_path / cls / f"{i}"
            data = pts * (k + 1) + i
            [lambda: write_ply(stem.with_suffix(".ply"), data),
             lambda: np.save(stem.with_suffix(".npy"), np.c_[data, np.ones(len(data))]),  # extra column ignored
             lambda: np.savetxt(stem.with_suffix(".xyz"), data)][i % 3]()
    np.testing.assert_array_equal(read_points(tmp_path / "a" / "0.ply"), pts)
    np.testing.assert_allclose(read_points(tmp_path / "a" / "1.npy"), pts + 1)
    np.testing.assert_allclose(read_points(tmp_path / "a" / "2.xyz"), pts + 2, rtol=1e-6)
    o = PointOptions(num_points=128, num_groups=16, group_size=8)
    data_cfg = load_config("points-shapes", None, [f"data.path={tmp_path}", "data.dataset=folder"]).data
    train, test = folder(o, data_cfg, "train"), folder(o, data_cfg, "test")
    assert len(train) == 18 and len(test) == 2 and sorted(set(train.labels.tolist())) == [0, 1]
    x, _ = train[0]
    assert x.shape == (128, 3) and torch.linalg.norm(x, dim=1).max() <= 0.9 + 1e-5
    (tmp_path / "a" / "bad.xyz").write_text("1 2\n3 4\n")
    with pytest.raises(RinkitError, match="bad.xyz"):
        folder(o, data_cfg, "train")


def test_chamfer_and_emd_hand_cases():
    a = torch.tensor([[0.0, 0, 0], [1, 0, 0]])
    assert chamfer(a, a).item() == 0
    assert chamfer(a, a[[1, 0]]).item() == 0
    b = torch.tensor([[0.0, 0, 0]])
    # a -> b: squared distances 0 and 1 (mean 0.5); b -> a: 0
    assert chamfer(a, b).item() == pytest.approx(0.5)
    assert emd(a.numpy(), a.numpy()[[1, 0]]) == 0
    assert emd(a.numpy(), (a + torch.tensor([0, 0, 2.0])).numpy()) == pytest.approx(2.0)
    # the optimal matching crosses over: {0, 1} vs {1.1, -0.1} pairs 0 with -0.1 and 1 with 1.1
    c = torch.tensor([[1.1, 0, 0], [-0.1, 0, 0]])
    assert emd(a.numpy(), c.numpy()) == pytest.approx(0.1)


def test_set_metrics_behave_as_defined():
    # two independent draws from the same distribution: 1-NNA ~ 50 %, good coverage
    rng = np.random.default_rng(0)
    draw = lambda n: [rng.normal(size=(32, 3)).astype(np.float32) * 0.3 + rng.normal(size=3) * 0.5  # noqa: E731
                      for _ in range(n)]
    s1, s2 = draw(60), draw(60)
    d = set_metrics(s1, s2, emd_points=32)
    assert 0.35 <= d["pc_1nna_cd"] <= 0.65 and 0.35 <= d["pc_1nna_emd"] <= 0.65
    assert d["pc_cov_cd"] > 0.4
    # a set against itself: MMD 0, full coverage, and 1-NNA 0 (each sample's twin is in the other set)
    g = torch.stack([torch.from_numpy(c) for c in s1])
    dm = chamfer_matrix(g, g)
    assert mmd_cov(dm) == (0.0, 1.0)
    assert one_nn_accuracy(dm, dm, dm) == 0.0
    # far apart sets are perfectly separable
    far = [c + 10 for c in s2]
    assert set_metrics(s1, far, with_emd=False)["pc_1nna_cd"] == 1.0


def test_point_metric_on_built_in_shapes():
    from rinkit_plugins.points.metrics import PointMetric
    cfg = small_points_cfg()
    o = registry.get_modality("points").options(**cfg.modality_options)
    metric = PointMetric("points", o, cfg.data, emd_points=32)
    real, _ = shape_clouds(128, "train").tensors(24)
    good, noise = metric(real), metric(torch.rand(24, 128, 3) * 2 - 1)
    assert good["pc_mmd_cd"] < noise["pc_mmd_cd"] / 2 and good["pc_1nna_cd"] < noise["pc_1nna_cd"]
    assert noise["pc_1nna_cd"] > 0.9


def test_render_layout_gives_every_class_its_own_rows():
    from rinkit_plugins.points.writer import by_class, layout
    x, y = by_class(torch.arange(7.0), torch.tensor([2, 0, 1, 0, 2, 2, 0]))
    assert y.tolist() == [0, 0, 0, 1, 2, 2, 2] and x.tolist() == [1.0, 3.0, 6.0, 2.0, 0.0, 4.0, 5.0]
    cells, titles = layout(y, 7)  # a class shorter than the others still starts and ends its row
    assert cells == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2)] and titles == [0, 1, 2]
    cells, titles = layout(y, 7, per_row=2)  # a class longer than a row wraps, titled once
    assert cells[:4] == [(0, 0), (0, 1), (1, 0), (2, 0)] and titles == [0, "", 1, 2, ""]
    assert layout(None, 5)[0][-1] == (1, 1)  # unlabelled: a near-square grid


def test_writers(tmp_path):
    from plyfile import PlyData
    x, y = shape_clouds(128, "test").tensors(4)
    paths = registry.get_modality("points").write_samples(x, y, tmp_path / "pc", PointOptions(num_points=128))
    assert paths[0].suffix == ".png" and paths[0].stat().st_size > 1000
    plys = [p for p in paths if p.suffix == ".ply"]
    assert len(plys) == 4 and PlyData.read(str(plys[0]))["vertex"].count == 128
    v = torch.from_numpy(np.stack([shapes.voxels("test", i, 8)[None] for i in range(4)]))
    vpaths = registry.get_modality("voxels").write_samples(v, y, tmp_path / "vox", VoxelOptions(grid_size=8, patch_size=2))
    assert vpaths[0].suffix == ".png" and any(p.suffix == ".npy" for p in vpaths)
    assert np.array_equal(np.load(tmp_path / "vox" / "grids.npy"), v.numpy())


@pytest.mark.parametrize("modality", ["points", "voxels"])
def test_short_runs_lower_the_loss(modality, tmp_path):
    from rinkit.train.trainer import train
    if modality == "points":
        cfg = small_points_cfg("train.steps=60", "diffusion.pred=eps", "diffusion.self_cond_rate=0.9")  # pinned, as the threshold
    else:
        cfg = load_config("points-voxels", None, [*TINY, "modality_options.grid_size=8", "modality_options.patch_size=2",
                                                  "train.steps=60", "diffusion.pred=eps",
                                                  "train.optimizer=adamw", "train.lr=2e-3"])
    res = train(cfg, run_dir=tmp_path / "run", progress=False)
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-10:])
    assert last < 0.7 * first and last < 0.8, (first, last)  # eps target (pinned): 0.8 beats predicting 0 (loss 1)
    assert any(p.suffix == ".ply" for p in res.samples) and res.samples[0].suffix == ".png"


def test_points_reference_rows_and_a_checkpoints_row(tmp_path, capsys):
    """benchmarks/points_references: the real clouds score near chance and the constructed rows
    worse; --ckpt adds the row of a trained model at the same sample count."""
    from benchmarks.points_references import main as refs_main, references
    from rinkit.train.trainer import train
    over = ["modality_options.num_points=64"]
    r = references("points-shapes", 16, over, with_emd=False)
    real, blobs, noise = (r[k]["pc_1nna_cd"] for k in ("real train clouds",
                                                        "Gaussian blobs with each real cloud's mean and covariance",
                                                        "Gaussian noise N(0, I) clipped to [-1, 1]"))
    assert real < 0.65 and real < blobs < noise == 1.0 and "pc_1nna_emd" not in r["real train clouds"]
    train(load_config("points-shapes", None, [*TINY, *over, "train.steps=2", "train.ckpt_every=2"]),
          run_dir=tmp_path / "run", progress=False)
    assert refs_main(["--samples", "8", "--cd-only", "--real-only", "--ckpt", str(tmp_path / "run"), "--set", *over]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ") and "---" not in x][1:]
    assert [x.split(" | ")[0] for x in rows] == ["| real train clouds", f"| model: {tmp_path / 'run'}"]
    assert float(rows[1].split(" | ")[1]) > float(rows[0].split(" | ")[1])  # 2 steps: told apart from real clouds
    # --guidance: one row per guidance weight, each sampled with it (guidance changes the samples)
    assert refs_main(["--samples", "8", "--cd-only", "--real-only", "--ckpt", str(tmp_path / "run"), "--set", *over,
                      "--guidance", "0", "4"]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ") and "---" not in x][1:]
    assert [x.split(" | ")[0] for x in rows[1:]] == [f"| model: {tmp_path / 'run'}, guidance {w}" for w in (0, 4)]
    assert rows[1].split(" | ")[1:] != rows[2].split(" | ")[1:]
    # --guidance-interval: a sigma interval that no sampling step reaches leaves the samples unguided;
    # --extents adds each class's principal extents for the real clouds and every model row
    assert refs_main(["--samples", "8", "--cd-only", "--real-only", "--ckpt", str(tmp_path / "run"), "--set", *over,
                      "--guidance", "4", "--guidance-interval", "1e6", "2e6", "--extents"]) == 0
    out = capsys.readouterr().out
    table = [x for x in out.split("mean principal extents")[0].splitlines() if x.startswith("| ") and "---" not in x]
    assert table[-1].split(" | ")[0] == f"| model: {tmp_path / 'run'}, guidance 4, sigma in (1e+06, 2e+06]"
    assert table[-1].split(" | ")[1:] == rows[1].split(" | ")[1:]  # = the w = 0 row
    sizes = [x for x in out.split("mean principal extents")[1].splitlines() if x.startswith("| ") and "---" not in x]
    assert sizes[0].startswith("| clouds | class 0 | class 1 | class 2 | class 3") and len(sizes) == 3
    cell, rest = sizes[1].split(" | ")[1].split(", thickness ")
    thick, read = rest.split(", read ")
    real_sphere = [float(v) for v in cell.split(" / ")]
    assert real_sphere == sorted(real_sphere, reverse=True) and max(real_sphere) / min(real_sphere) < 1.3  # round
    assert 0 < float(thick) < 0.1 * real_sphere[-1]  # a real sphere's points lie on its surface
    assert float(read) == 1.0  # held-out real spheres are read as spheres


def test_shape_classifier_reads_held_out_shapes_whatever_their_pose():
    """class_read, the number behind "told apart by eye": trained on the real train clouds only, it
    reads held-out clouds as their class, reads clouds under the wrong labels as not theirs, and
    its features do not move when a cloud is turned or shifted."""
    from rinkit_plugins.points.data import shape_clouds
    from rinkit_plugins.points.metrics import ShapeNet, class_read
    x, y = shape_clouds(64, "test").tensors(128)
    read = class_read(x, y)  # 64 points (cheap) is sparse for edges: at 256, boxes 0.97, cylinders 0.89
    assert read[0] == read[2] == 1.0 and min(read.values()) >= 0.6, read
    swapped = torch.tensor([1, 0, 3, 2])[y]  # spheres called boxes, tori called cylinders, ...
    assert max(class_read(x, swapped).values()) <= 0.15
    g = torch.Generator().manual_seed(0)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g))
    turned = x[:8] @ (q * torch.sign(torch.diagonal(r))) + torch.tensor([0.1, -0.05, 0.02])
    assert torch.allclose(ShapeNet.features(turned), ShapeNet.features(x[:8]), atol=1e-3)


def test_local_thickness_measures_how_far_points_stray_from_the_surface():
    from benchmarks.points_references import thickness
    g = torch.Generator().manual_seed(0)
    plane = torch.cat([torch.rand(2, 256, 2, generator=g) * 2 - 1, torch.zeros(2, 256, 1)], -1)
    jitter = torch.randn(plane.shape, generator=g)
    t = [thickness(plane + s * jitter, torch.tensor([0, 1]))[0] for s in (0.0, 0.02, 0.05)]
    assert t[0] < 1e-6 and t[0] < t[1] < t[2]
    # the measure is per point: rotating the plane does not change it
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    assert abs(thickness((plane + 0.02 * jitter) @ q, None)[0] - thickness(plane + 0.02 * jitter, None)[0]) < 1e-4


def test_the_group_tokenizers_state_reaches_its_detokenizer():
    """tokens: groups: the engine hands the tokenizer's state ((points, centres)) to the
    detokenizer as its third argument, unchanged; the other tokenizers' state is None."""
    cfg = small_points_cfg("modality_options.tokens=groups")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    seen = {}
    model.tokenizer.register_forward_hook(lambda mod, args, out: seen.update(made=out[1]))
    model.detokenizer.register_forward_pre_hook(lambda mod, args: seen.update(got=args[2]))
    x = torch.rand(2, 128, 3) * 2 - 1
    with torch.no_grad():
        out, _ = model(x, torch.rand(2), torch.zeros(2, dtype=torch.long))
    points, centres = seen["made"]
    assert seen["got"] is seen["made"] and points is x and centres.shape == (2, 16, 3)
    assert out.shape == x.shape
    # the detokenizer decodes each point from the groups the tokenizer chose (its state): other
    # centres give another output for the same tokens
    tokens, state = model.tokenizer(x)
    assert not torch.allclose(model.detokenizer(tokens, None, state),
                              model.detokenizer(tokens, None, (x, centres.roll(1, dims=1))))
    model = build_model(small_points_cfg())  # tokens: points
    model.detokenizer.register_forward_pre_hook(lambda mod, args: seen.update(points_state=args[2]))
    model(x, torch.rand(2), torch.zeros(2, dtype=torch.long))
    assert seen["points_state"] is None


def test_a_points_model_denoises_clouds_of_any_size(tmp_path):
    """tokens: points: the weights trained at 64 points denoise a cloud of another size point by
    point (a point's prediction depends on the set, not on its size being the trained one), and
    benchmarks/points_render draws denser clouds than trained, beside real ones at that size."""
    from benchmarks.points_render import main as render_main
    from rinkit.train.trainer import train
    cfg = small_points_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(2, 200, 3) * 2 - 1
    gamma, labels = torch.tensor([0.3, 0.7]), torch.tensor([0, 2])
    with torch.no_grad():
        out, _ = model(x, gamma, labels)
        out_p, _ = model(x[:, :50], gamma, labels)
    assert out.shape == (2, 200, 3) and out_p.shape == (2, 50, 3)
    assert not torch.allclose(out[:, :50], out_p)  # the other 150 points reach the first 50 through the latents
    over = ["modality_options.num_points=64"]
    train(load_config("points-shapes", None, [*TINY, *over, "train.steps=2", "train.ckpt_every=2"]),
          run_dir=tmp_path / "run", progress=False)
    stem = tmp_path / "render"
    assert render_main(["--ckpt", str(tmp_path / "run"), "--points", "96", "--guidance", "0", "1",
                        "--per-class", "2", "--steps", "2", "--out", str(stem)]) == 0
    assert all((tmp_path / f"render_{s}.png").is_file() for s in ("real", "model_g0", "model_g1"))
    voxels = tmp_path / "vox"
    train(load_config("points-voxels", None, [*TINY, "modality_options.grid_size=8", "modality_options.patch_size=2",
                                              "train.steps=1", "train.ckpt_every=1"]), run_dir=voxels, progress=False)
    assert render_main(["--ckpt", str(voxels), "--out", str(tmp_path / "v")]) == 2  # one line, no traceback
    unconditional = tmp_path / "uncond"
    train(load_config("points-shapes", None, [*TINY, *over, "model.num_classes=0", "sampler.guidance=0",
                                              "train.steps=1", "train.ckpt_every=1"]), run_dir=unconditional, progress=False)
    assert render_main(["--ckpt", str(unconditional), "--guidance", "2", "--out", str(tmp_path / "u")]) == 2


# -- canonical pose (plugins/points/pose.py) -------------------------------------------------------

def _dists(x):
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact to float32 rounding


def _posed_box(sides, rotation, shift, n=256, seed=0):
    """A box surface cloud with half-sides `sides`, turned by `rotation` and moved by `shift`."""
    shape = shapes.Shape(1, tuple(sides), np.asarray(rotation), 1.0, np.asarray(shift))
    return torch.from_numpy(shape.surface(n, np.random.default_rng(seed)).astype(np.float32))


def test_canonical_pose_finds_a_box_frame_whatever_the_pose():
    from rinkit_plugins.points import pose
    rng = np.random.default_rng(3)
    sides = (0.45, 0.3, 0.2)
    outs = []
    for k in range(3):  # the same points in three poses
        x = _posed_box(sides, shapes.random_rotation(rng), rng.uniform(-0.1, 0.1, 3))
        v = pose.canonical_frame(x)
        assert torch.allclose(v.T @ v, torch.eye(3, dtype=v.dtype), atol=1e-6) and torch.linalg.det(v) > 0
        y = pose.canonical(x)
        assert torch.allclose(_dists(x), _dists(y), atol=1e-4)    # a rigid turn...
        assert torch.allclose(x.mean(0), y.mean(0), atol=1e-5)    # ...about the centroid
        half = (y.amax(0) - y.amin(0)) / 2                          # axis-aligned, longest first
        assert torch.allclose(half, torch.tensor(sides), atol=0.01), half
        outs.append((y - y.mean(0)).abs().sort(0).values)
    # the frame is a function of the shape alone: every pose gives the same cloud (up to axis signs)
    assert (outs[0] - outs[1]).abs().max() < 0.01 and (outs[0] - outs[2]).abs().max() < 0.01


def test_random_pose_is_a_seeded_uniform_turn_about_the_centroid():
    from rinkit_plugins.points import pose
    x = torch.stack([_posed_box((0.4, 0.3, 0.2), np.eye(3), (0.05, 0.0, -0.05), seed=s) for s in range(4)])
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(4)]  # noqa: E731
    a, b = pose.random_pose(x, gens()), pose.random_pose(x, gens())
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=0.05)
    assert torch.allclose(_dists(a), _dists(x), atol=1e-4)
    assert torch.allclose(a.mean(1), x.mean(1), atol=1e-5)
    r = pose.haar_rotations([torch.Generator().manual_seed(i) for i in range(4000)])
    assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3, dtype=r.dtype).expand(4000, 3, 3), atol=1e-9)
    assert (torch.linalg.det(r) > 0).all()
    assert r.mean(0).abs().max() < 0.05  # Haar: E[R] = 0 (a fixed axis would put a 1/3 or more there)
    axis = r[:, :, 2]                     # where a shape's z axis goes: uniform on the sphere
    assert (axis.mean(0).abs() < 0.05).all() and ((axis ** 2).mean(0) - 1 / 3).abs().max() < 0.03


def test_canonical_pose_serves_the_train_split_turned_and_sampling_turns_it_back(monkeypatch):
    from rinkit.build import resolve
    from rinkit.sampling import generate
    from rinkit_plugins.points import pose
    cfg = small_points_cfg("modality_options.canonical_pose=true")
    r = resolve(cfg)
    train = r.dataset.build(r.options, cfg.data, "train")
    raw = shape_clouds(128, "train")
    for i in (1, 5):  # boxes: turned into their own frame, the same points
        assert torch.allclose(train[i][0], pose.canonical(raw[i][0]), atol=1e-6)
        assert not torch.allclose(train[i][0], raw[i][0], atol=0.05)
    test = r.dataset.build(r.options, cfg.data, "test")  # the held-out split the metrics use: as the data is
    assert torch.equal(test[3][0], shape_clouds(128, "test")[3][0])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    labels = torch.tensor([0, 1, 2, 3])
    seen, real = [], pose.random_pose

    def spy(x, gens):
        seen.append(x.clone())
        return real(x, gens)
    plain = generate(model, small_points_cfg("modality_options.canonical_pose=false"), 4, labels, 0, "cpu")
    monkeypatch.setattr(pose, "random_pose", spy)
    posed = generate(model, cfg, 4, labels, 0, "cpu")  # the same draws, each then given its own pose
    assert len(seen) == 1 and torch.equal(seen[0], plain)
    assert not torch.allclose(plain, posed, atol=0.05)
    assert torch.equal(posed, generate(model, cfg, 4, labels, 0, "cpu"))  # seeded
