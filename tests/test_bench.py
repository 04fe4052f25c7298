"""The benchmark harness runs end to end on tiny models and its measurements mean what they say.
(Speed goals live in benchmarks/RESULTS.md, never here.)"""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.harness import parse_models, run  # noqa: E402
from benchmarks.measure import PeakMemory, count_flops, matmul_peak  # noqa: E402
from benchmarks.models import adm_unet  # noqa: E402
from rinkit.errors import RinkitError  # noqa: E402


def test_harness_end_to_end_tiny(tmp_path):
    res = run(["rin:cifar10", "unet:32"], batch=1, reps=1, warmup=0, sample_steps=1, tiny=True,
              out=str(tmp_path), log=lambda s: None, command="test")
    rin, unet = res["models"]
    for r in (rin, unet):
        assert r["train_s"] > 0 and r["denoise_s"] > 0 and r["sample_s"] > 0
        assert r["train_peak_bytes"] >= r["state_bytes"] > 0
        assert 0 < r["mfu_train"] < 2 and 0 < r["mfu_forward"] < 2
    # RIN's training step has a no-grad self-conditioning pass: ~4 forwards (fwd + fwd + 2x bwd);
    # the U-Net has none: ~3
    assert 3.5 < rin["flops_train_step"] / rin["flops_forward"] < 4.5
    assert 2.5 < unet["flops_train_step"] / unet["flops_forward"] < 3.5
    assert res["matmul_peak_flops_per_s"] > 0 and res["machine"]["cores"] >= 1
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [m["name"] for m in saved["models"]] == [rin["name"], unet["name"]]
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert "| RIN cifar10" in (tmp_path / "bench.md").read_text()


def test_adm_unet_is_the_published_size():
    with torch.device("meta"):
        n32 = sum(p.numel() for p in adm_unet(32, 3, 10).parameters())
        n64 = sum(p.numel() for p in adm_unet(64, 3, 1000).parameters())
    assert abs(n32 / 35.7e6 - 1) < 0.01  # DDPM's CIFAR-10 U-Net
    assert abs(n64 / 296e6 - 1) < 0.01   # ADM ImageNet-64


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as pm:
        x = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
        del x
    assert pm.bytes >= 12 * 2**20


def test_flop_count_and_matmul_peak():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    assert matmul_peak("cpu", n=128, reps=2)["flops_per_s"] > 0


@pytest.mark.parametrize("groups", [1, 8])
def test_a_convolutions_gradients_each_cost_its_forward(groups):
    """Also for a grouped conv, whose weight gradient torch's own formula counts `groups` times."""
    x, w = torch.randn(2, groups, 12, 12), torch.randn(2 * groups, 1, 5, 5, requires_grad=True)
    conv = lambda x: torch.nn.functional.conv2d(x, w, groups=groups)  # noqa: E731
    fwd = count_flops(lambda: conv(x))
    assert fwd == 2 * 2 * (2 * groups) * 25 * 8 * 8
    assert count_flops(lambda: conv(x).sum().backward()) == 2 * fwd  # + the weight gradient
    assert count_flops(lambda: conv(x.clone().requires_grad_()).sum().backward()) == 3 * fwd  # + the input's


def test_bad_model_specs_are_one_line_errors():
    with pytest.raises(RinkitError, match="bad model"):
        parse_models(["transformer:xl"], [], True)
    with pytest.raises(RinkitError, match="needs a rin:PRESET"):
        parse_models(["unet:32"], [], True)
    with pytest.raises(RinkitError, match="no ADM U-Net configuration"):
        adm_unet(48)
    with pytest.raises(RinkitError, match="no python at"):
        run(["rin:cifar10", "rinpt:cifar10"], batch=1, reps=1, warmup=0, sample_steps=1, tiny=True,
            rinpt_python="/nonexistent/python", log=lambda s: None)


def test_bench_cli_reports_bad_input(capsys):
    from benchmarks.cli import main
    assert main(["--models", "transformer:xl"]) == 2
    assert "bad model 'transformer:xl'" in capsys.readouterr().err
