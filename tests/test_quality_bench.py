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


def test_quality_benchmark_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "quality_digits"
    threads = torch.get_num_threads()
    try:
        rc = main(["--budget", "1.5", "--eval-samples", "20", "--points", "2", "--sample-steps", "3",
                   "--calib-steps", "2", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
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
    assert "--steps takes two step counts" in capsys.readouterr().err
    assert not (tmp_path / "q.json").exists()
