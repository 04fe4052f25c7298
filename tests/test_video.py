"""The video modality plugin: space-time tokenisation, frame-conditional prediction, moving
digits, GIF/MP4/PNG output, decord loading, FVD's code path and the moving-digits proxy."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rinkit.build import build_model
from rinkit.config import DataConfig, list_presets, load_config, modality_options
from rinkit.errors import RinkitError
from rinkit.registry import get_dataset, get_modality
from rinkit_plugins.video import VideoOptions, condition
from rinkit_plugins.video.tokenizer import VideoDetokenizer, VideoTokenizer
from rinkit_plugins.video.writer import write_videos

TINY = ["model.interface_dim=48", "model.latent_dim=32", "model.num_latents=8", "model.blocks=2",
        "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2",
        "modality_options.frames=8", "modality_options.context_frames=2", "modality_options.frame_size=16",
        "modality_options.digit_size=8", "modality_options.patch_size=4", "modality_options.time_patch=2",
        "train.batch_size=16", "train.warmup_steps=5", "train.log_every=1", "train.ckpt_every=1000",
        "train.eval_samples=0", "sampler.steps=3", "train.ema_decay=0.9",
        "modality_options.copy_window=4"]  # the preset copies within 10 px of its 32-px frames


def tiny(*over):
    return load_config("video-digits", None, [*TINY, *over])


@pytest.mark.parametrize("t,k,size,p,tp,pos,concat", [
    (16, 5, (64, 64), 4, 2, "learned", False), (8, 0, (16, 24), 4, 1, "sincos", False),
    (7, 3, (32, 32), 8, 3, "sincos+learned", True), (4, 1, (8, 8), 2, 4, "learned", True)])
def test_token_and_output_shapes(t, k, size, p, tp, pos, concat):
    o = VideoOptions(frames=t, context_frames=k, frame_size=size, channels=3, patch_size=p, time_patch=tp,
                     pos_emb=pos, context_concat=concat)
    tok, detok = VideoTokenizer(o, 16), VideoDetokenizer(o, 16)
    x = torch.randn(2, t - k, 3, *size)
    ctx = torch.randn(2, k, 3, *size) if k else None
    tokens, state = tok(x, ctx)
    slots = math.ceil(k / tp) + math.ceil((t - k) / tp)  # each part padded to whole time patches
    assert tokens.shape == (2, slots * (size[0] // p) * (size[1] // p), 16) and state is None
    assert detok(tokens, ctx, state).shape == (2, t - k, 3, *size)


def test_kinetics600_preset_matches_the_paper():
    cfg = load_config("kinetics600")
    o = modality_options(cfg)
    from rinkit.info import model_info
    info = model_info(cfg)
    assert info["interface_tokens"] == 2304  # (3 + 6) x 16 x 16, as the official code
    assert abs(info["params"] / 411e6 - 1) < 0.03
    assert info["sample_shape"] == [11, 3, 64, 64] and o.context_frames == 5


def test_condition_splits_and_context_reaches_the_prediction():
    cfg = tiny()
    o, model = modality_options(cfg), build_model(cfg).eval()
    x = torch.rand(2, 8, 1, 16, 16) * 2 - 1
    target, ctx, mask = condition(x, o)
    assert mask is None and torch.equal(torch.cat([ctx, target], 1), x) and target.shape[1] == 6
    gamma = torch.full((2,), 0.5)
    out, _ = model(target, gamma, None, None, ctx)
    assert out.shape == target.shape
    out2, _ = model(target, gamma, None, None, ctx.flip(-1))
    assert not torch.allclose(out, out2)  # the given frames are read through the interface
    with pytest.raises(ValueError, match="context"):
        model(target, gamma, None, None, None)
    assert condition(x, VideoOptions(frames=8, context_frames=0, frame_size=16)) == (x, None, None)


def test_context_concat_gives_each_token_the_last_given_frame_at_its_pixels():
    o = VideoOptions(frames=6, context_frames=2, frame_size=16, patch_size=4, time_patch=2, context_concat=True)
    tok = VideoTokenizer(o, 8).eval()
    x, ctx = torch.randn(1, 4, 1, 16, 16), torch.randn(1, 2, 1, 16, 16)
    base, _ = tok(x, ctx)
    ctx2 = ctx.clone()
    ctx2[:, -1, :, :4, :4] += 1.0  # change the last given frame in the top-left patch only
    moved = (tok(x, ctx2)[0] - base).abs().sum(-1)[0]
    # predicted slots 0-1 then context slot 0, each 4 x 4 patches: only patch (0, 0) of every slot changes
    changed = (moved > 1e-6).reshape(3, 4, 4)
    assert changed[:, 0, 0].all() and changed.sum() == 3


def test_context_window_lets_a_token_see_the_given_frames_around_its_patch():
    # context_window m: a token sees the concatenated given frames m px beyond its own patch, so content
    # that has moved since the last given frame is within its reach
    o = VideoOptions(frames=6, context_frames=2, frame_size=16, patch_size=4, time_patch=2, context_concat=True,
                     context_window=4)
    tok = VideoTokenizer(o, 8).eval()
    x, ctx = torch.randn(1, 4, 1, 16, 16), torch.randn(1, 2, 1, 16, 16)
    base, _ = tok(x, ctx)
    ctx2 = ctx.clone()
    ctx2[:, -1, :, :4, :4] += 1.0  # the top-left patch of the last given frame
    changed = ((tok(x, ctx2)[0] - base).abs().sum(-1)[0] > 1e-6).reshape(3, 4, 4)
    # every slot's patches (0..1, 0..1) have those pixels in their 12 x 12 window; the rest do not
    assert changed[:, :2, :2].all() and changed.sum() == 12
    ctx3 = ctx.clone()
    ctx3[:, 0] += 1.0  # the frame before the last: only seen with context_concat_frames=2
    assert torch.equal(tok(x, ctx3)[0][:, :32], base[:, :32])
    o2 = o.model_copy(update={"context_concat_frames": 2})
    tok2 = VideoTokenizer(o2, 8).eval()
    assert not torch.allclose(tok2(x, ctx3)[0][:, :32], tok2(x, ctx)[0][:, :32])
    assert tok2(x, ctx)[0].shape == base.shape


def test_bad_options_are_one_line_errors():
    with pytest.raises(RinkitError, match="context_frames"):
        modality_options(tiny("modality_options.context_frames=8"))
    with pytest.raises(RinkitError, match="context_concat"):
        modality_options(tiny("modality_options.context_frames=0", "modality_options.context_concat=true"))
    with pytest.raises(RinkitError, match="context_window"):
        modality_options(tiny("modality_options.context_concat=false", "modality_options.context_window=4"))
    with pytest.raises(RinkitError, match="context_concat_frames 3 exceeds context_frames 2"):
        modality_options(tiny("modality_options.context_concat_frames=3"))
    with pytest.raises(RinkitError, match="divisible"):
        modality_options(tiny("modality_options.patch_size=5"))
    assert get_modality("video").default_preset in list_presets()


def test_moving_digits_are_deterministic_and_bounce_inside_the_canvas():
    o = VideoOptions(frames=16, frame_size=32)
    build = get_dataset("video", "moving_digits").build
    a, b = build(o, DataConfig(), "train"), build(o, DataConfig(), "train")
    for i in (0, 5, 999):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    other = build(o.model_copy(update={"data_seed": 1}), DataConfig(), "train")
    assert not torch.equal(a[0][0], other[0][0])
    x, y, pos = a.clip(3)
    assert x.shape == (16, 32, 32) and 0 <= y < 10 and x.min() == -1
    assert (pos >= 0).all() and (pos <= 32 - 16).all()
    ink = (x + 1).reshape(16, -1).sum(1)  # the whole digit is inside the canvas in every frame
    assert torch.allclose(torch.from_numpy(ink), torch.from_numpy(ink[:1]).expand(16), rtol=1e-5)
    steps = np.abs(np.diff(pos, axis=0))
    assert steps.max() <= 4 and steps.sum() > 0  # moving, at most 2.5 px/frame (+ rounding)


def test_motion_score_separates_real_tracks_from_broken_ones():
    from rinkit_plugins.video.metrics import MovingDigitsMetric
    o = VideoOptions(frames=16, context_frames=4, frame_size=32)
    ds = get_dataset("video", "moving_digits").build(o, DataConfig(), "test")
    clips = torch.stack([ds[i][0] for i in range(24)])
    m = MovingDigitsMetric(o)
    real_err, real_speed = m.motion(clips)
    frozen = torch.cat([clips[:, :4], clips[:, 3:4].expand(-1, 12, -1, -1, -1)], 1)
    frozen_err, frozen_speed = m.motion(frozen)
    swapped = torch.cat([clips[:, :4], clips.roll(1, 0)[:, 4:]], 1)  # another clip's future
    swap_err, _ = m.motion(swapped)
    assert real_err.max() < 0.5
    assert frozen_err.mean() > 2 * real_err.mean() and frozen_speed.mean() < 0.5 * real_speed.mean()
    assert (swap_err > 0.5).mean() > 0.7


def test_short_training_run_lowers_the_loss_and_writes_videos(tmp_path):
    from rinkit.build import build_diffusion
    from rinkit.sampling import load_for_sampling
    from rinkit.train.trainer import train
    cfg = tiny("train.steps=60", "train.lr=3e-3")
    o = modality_options(cfg)
    ds = get_dataset("video", "moving_digits").build(o, cfg.data, "test")
    target, ctx, _ = condition(torch.stack([ds[i][0] for i in range(32)]), o)
    diffusion = build_diffusion(cfg)

    def fixed_loss(model):  # same clips, noise levels and noise before and after training
        with torch.no_grad():
            return diffusion.loss(model.eval(), target, None, ctx, generator=torch.Generator().manual_seed(0)).item()

    torch.manual_seed(cfg.train.seed)  # the trainer's initialisation
    before = fixed_loss(build_model(cfg))
    res = train(cfg, run_dir=tmp_path / "run", progress=False)
    after = fixed_loss(load_for_sampling(res.checkpoint, "cpu")[0])
    assert after < 0.8 * before, (before, after)
    assert sorted(p.suffix for p in res.samples) == [".gif", ".mp4", ".png"]


def _gif_frames(path):
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def test_gif_mp4_round_trip_and_given_frames_are_unchanged(tmp_path):
    import imageio.v2 as iio
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, 256, (3, 2, 1, 20, 24), generator=g).float() / 127.5 - 1
    pred = torch.rand(3, 6, 1, 20, 24, generator=g) * 2 - 1
    files = write_videos(pred, None, tmp_path / "s", VideoOptions(frames=8, context_frames=2, frame_size=(20, 24)),
                         context=ctx)
    gif, mp4, png = (tmp_path / f"s.{e}" for e in ("gif", "mp4", "png"))
    assert set(files) == {gif, mp4, png}
    frames = _gif_frames(gif)
    assert frames.shape[0] == 8
    # clip 0 sits in the top-left cell: 2-px border, frames enlarged 3x (min cell 64 px)
    cell = frames[:2, 2:2 + 60:3, 2:2 + 72:3, 0]
    given = ((ctx[0, :, 0] + 1) * 127.5).round().byte().numpy()
    assert np.array_equal(cell, given)
    reader = iio.get_reader(mp4, "ffmpeg")
    assert reader.count_frames() == 8
    assert reader.get_data(0).shape == frames.shape[1:]  # sizes are multiples of 16: no rescaling
    reader.close()
    strip = Image.open(png)
    assert strip.size == (8 * (24 + 2), 3 * (20 + 2))  # 1-px borders, no enlarging at >= 32 px


def _write_test_video(path, n=20, size=64):
    import imageio.v2 as iio
    frames = [np.full((size, size, 3), 10 * i + 20, np.uint8) for i in range(n)]  # brightness = index
    iio.mimwrite(path, frames, fps=10, codec="libx264", quality=10, macro_block_size=16)


def test_decord_reads_a_video_the_test_writes(tmp_path):
    pytest.importorskip("decord")
    (tmp_path / "vids" / "test" / "classA").mkdir(parents=True)
    _write_test_video(tmp_path / "vids" / "test" / "classA" / "a.mp4")
    from rinkit_plugins.video.data import read_frames, video_length
    assert video_length(tmp_path / "vids" / "test" / "classA" / "a.mp4") == 20
    o = VideoOptions(frames=4, frame_size=32, channels=3, patch_size=4, frame_stride=3)
    ds = get_dataset("video", "video_folder").build(o, DataConfig(dataset="video_folder", path=str(tmp_path / "vids")), "test")
    x, y = ds[0]
    assert x.shape == (4, 3, 32, 32) and y == 0
    # the test split takes the middle clip: span 10 of 20 frames -> start 5, frames 5, 8, 11, 14
    level = ((x.mean((1, 2, 3)) + 1) * 127.5).numpy()
    assert np.allclose(level, [10 * i + 20 for i in (5, 8, 11, 14)], atol=3)
    assert read_frames(tmp_path / "vids" / "test" / "classA" / "a.mp4", [0, 19]).shape == (2, 64, 64, 3)
    with pytest.raises(RinkitError, match="data.path"):
        get_dataset("video", "video_folder").build(o, DataConfig(dataset="video_folder"), "train")


def test_frame_folders_with_clip_sampling(tmp_path):
    for v in range(2):
        d = tmp_path / f"v{v}"
        d.mkdir()
        for i in range(6):
            Image.fromarray(np.full((16, 16, 3), 40 * i + v, np.uint8)).save(d / f"{i:03d}.png")
    o = VideoOptions(frames=4, frame_size=16, channels=1, patch_size=4, frame_stride=2)
    ds = get_dataset("video", "frame_folders").build(o, DataConfig(dataset="frame_folders", path=str(tmp_path)), "test")
    assert len(ds) == 2
    x, _ = ds[1]
    level = ((x.mean((1, 2, 3)) + 1) * 127.5).round().numpy()
    assert np.array_equal(level, [1, 81, 161, 201])  # frames 0, 2, 4 and the last frame repeated


def test_fvd_code_path_with_random_i3d_weights(tmp_path, monkeypatch):
    from rinkit_plugins.video.i3d import InceptionI3d
    from rinkit_plugins.video.metrics import I3D_ENV, fvd
    monkeypatch.delenv(I3D_ENV, raising=False)
    x = torch.rand(6, 9, 3, 32, 32) * 2 - 1
    with pytest.raises(RinkitError, match=I3D_ENV):
        fvd(x, x)
    torch.manual_seed(0)
    net = InceptionI3d()
    for mod in net.modules():  # He init keeps the signal alive through 60 random layers
        if isinstance(mod, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    torch.save(net.state_dict(), tmp_path / "i3d.pt")
    monkeypatch.setenv(I3D_ENV, str(tmp_path / "i3d.pt"))
    same = fvd(x, x, size=32)
    other = fvd(x, torch.rand(6, 9, 3, 32, 32) * 0.2, size=32)
    assert abs(same) < 1e-6 and other > 1e-3


def test_video_reference_rows_order_the_constructed_predictions():
    from benchmarks.video_references import references
    r = references("video-digits", 24, [])
    true, frozen, other, noise = (r[k] for k in ("the true future", "last given frame frozen",
                                                 "another clip's future", "Gaussian noise"))
    assert true["video_class_keep"] == 1.0 and other["video_class_keep"] < 0.5
    assert true["video_motion_ok"] > frozen["video_motion_ok"] > noise["video_motion_ok"]
    moved = r["last given frame moved on at its last step"]  # the constant-velocity baseline
    assert moved["video_motion_ok"] > frozen["video_motion_ok"] + 0.2 and moved["video_class_keep"] > 0.7
    assert noise["video_digits_fid"] > 3 * true["video_digits_fid"]
    # speckle on the true future costs class kept in order of its strength (24 clips: FID's bias is too large)
    n1, n2 = r["the true future + noise std 0.1"], r["the true future + noise std 0.2"]
    assert true["video_class_keep"] > n1["video_class_keep"] > n2["video_class_keep"] > other["video_class_keep"]
    assert true["video_digits_fid"] < n2["video_digits_fid"] < noise["video_digits_fid"]


def test_the_constant_velocity_row_is_closer_to_the_future_than_the_frozen_frame():
    from benchmarks.video_references import extrapolated
    from rinkit_plugins.video.data import moving_digits
    o = modality_options(load_config("video-digits"))
    ds = moving_digits(o, None, "test")
    x = torch.stack([ds[i][0] for i in range(32)])
    ctx, fut = x[:, :4], x[:, 4:]
    from rinkit_plugins.video.metrics import centre_of_mass
    # the centre of mass: positions are rounded (a 1.6 px/frame digit steps 2, 1, 2 px), so the
    # last step is off by up to 1 px per axis, and it knows nothing of walls
    com = lambda v: centre_of_mass(v.flatten(0, 1)).view(32, 4, 2)  # noqa: E731
    err = (com(extrapolated(ctx, 4, 3)) - com(fut)).norm(dim=-1)
    frozen = (com(ctx[:, -1:].expand_as(fut)) - com(fut)).norm(dim=-1)
    # (32 test clips: 1.2 / 4.7 px off in frames 1 / 4, against 1.7 / 5.1 px frozen; bounces and
    # the rounded steps make up the rest)
    assert err[:, 0].mean() < 0.8 * frozen[:, 0].mean() and err.mean() < 0.9 * frozen.mean()


def test_trajectory_tool_splits_class_kept_by_predicted_frame(tmp_path, capsys):
    """benchmarks/video_trajectory --tables A: per noise level, the class kept of each predicted
    frame (4 -> 4 here, so all four are shown) averages to the table's class-kept column, and
    no sampling table is printed."""
    from benchmarks.video_trajectory import main as traj_main
    from rinkit.train.trainer import train
    train(tiny("train.steps=2", "train.ckpt_every=2", "modality_options.context_frames=4"), run_dir=tmp_path / "run",
          progress=False)
    assert traj_main([str(tmp_path / "run"), "--clips", "6", "--tables", "A"]) == 0
    assert torch.is_grad_enabled()  # the tool leaves the caller's autograd switch as it found it
    out = capsys.readouterr().out
    rows = [r.split(" | ") for r in out.splitlines() if r.startswith("| 0.")]
    assert len(rows) == 11 and "B. sampler" not in out  # gamma 0.01 ... 0.99
    for r in rows:
        frames = [float(v) for v in r[5].split(" / ")]
        assert len(frames) == 4 and abs(sum(frames) / 4 - float(r[4])) < 0.011  # both rounded to 2 places


def test_guidance_sweep_scores_each_weight_and_interval_with_the_modality_metrics(tmp_path, capsys):
    """benchmarks/guidance_sweep: one row per (w, interval), w = 0 once, each scored by the
    modality's registered metrics on the same clips; an interval that no sampling step reaches
    gives the unguided row's numbers; an unguided model or a bad interval: one line, exit 2."""
    import json

    from benchmarks.guidance_sweep import main as sweep_main
    from rinkit.train.trainer import train
    run = tmp_path / "run"
    train(load_config("video-digits", None, [*TINY, "diffusion.context_dropout=0.5", "train.steps=3",
                                             "train.ckpt_every=3"]), run_dir=run, progress=False)
    out = tmp_path / "sweep.json"
    assert sweep_main([str(run), "--samples", "8", "--guidance", "0", "3", "--intervals", "all", "1e6,2e6",
                       "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["guidance"], r["interval"]) for r in rows] == [(0, None), (3, None), (3, [1e6, 2e6])]
    assert rows[2]["video_digits_fid"] == rows[0]["video_digits_fid"] != rows[1]["video_digits_fid"]
    assert "| 3 | every step |" in capsys.readouterr().out
    assert sweep_main([str(run), "--intervals", "2,1"]) == 2
    # the NFE study guides at each weight it is given, on the same clips (w = 0: the unguided row)
    from benchmarks.nfe_study import main as nfe_main
    assert nfe_main(["--ckpt", str(run), "--samples", "8", "--batch-size", "8", "--steps", "3", "--samplers", "ddpm",
                     "--carry", "no", "--guidance", "0,3", "--metric", "video_digits_fid",
                     "--out", str(tmp_path / "nfe")]) == 0
    nfe = json.loads((tmp_path / "nfe.json").read_text())["rows"]
    assert [r["guidance"] for r in nfe] == [0, 3] and nfe[0]["video_digits_fid"] != nfe[1]["video_digits_fid"]
    assert nfe[0]["video_digits_fid"] == rows[0]["video_digits_fid"]  # the sweep's unguided row, same clips
    assert "DDPM W=3 not carried" in (tmp_path / "nfe.md").read_text()
    plain = tmp_path / "plain"
    train(load_config("video-digits", None, [*TINY, "train.steps=1", "train.ckpt_every=1", "diffusion.context_dropout=0",
                                             "sampler.guidance=0"]), run_dir=plain, progress=False)
    assert sweep_main([str(plain), "--samples", "4", "--guidance", "1"]) == 2
    assert "not trained for guidance" in capsys.readouterr().err
