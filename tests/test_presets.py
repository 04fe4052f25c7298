"""The paper presets: every one builds (meta device), reports its size, and hits the paper's counts."""
from __future__ import annotations

import json

import pytest

from rinkit.cli import main
from rinkit.config import load_config
from rinkit.info import model_info

PAPER = ["cifar10", "imagenet64", "imagenet128", "imagenet256", "imagenet512", "imagenet1024"]


@pytest.fixture(scope="module")
def infos():
    return {p: model_info(load_config(p, None, [])) for p in PAPER}


def test_every_preset_builds_and_reports(infos):
    for name, info in infos.items():
        assert info["params"] == info["breakdown"]["total"] > 1e7, name
        assert info["gflops"] > 0 and info["interface_tokens"] > 0
    # tokens follow image size / patch size: 32/2, 64/8, 128/4, 256/8, 512/8, 1024/8
    assert [infos[p]["interface_tokens"] for p in PAPER] == [256, 64, 1024, 1024, 4096, 16384]


def test_cifar10_is_the_official_31m(infos):
    assert abs(infos["cifar10"]["params"] / 31.0e6 - 1) < 0.01
    b = infos["cifar10"]["breakdown"]  # docs/method.md §8: compute 18.9M, read 7.5M, write 2.0M, self-cond 2.1M
    assert round(b["compute"] / 1e6, 1) == 18.9 and round(b["read"] / 1e6, 1) == 7.5
    assert round(b["write"] / 1e6, 1) == 2.0 and round(b["self_cond"] / 1e6, 1) == 2.1


def test_imagenet_sizes_match_the_paper(infos):
    assert abs(infos["imagenet256"]["params"] / 410e6 - 1) < 0.03
    assert abs(infos["imagenet64"]["params"] / 157.8e6 - 1) < 0.001  # the released 64x64 sweep
    # FLOPs grow with the interface tokens at a fixed core (Fig. 1: 194 < 334 < 425 GFLOPs)
    g = [infos[p]["gflops"] for p in ("imagenet128", "imagenet256", "imagenet512", "imagenet1024")]
    assert g == sorted(g)
    # the 128/256 ratio that motivated 128 vs 256 latents (Fig. 1: 194/334 = 0.58)
    assert 0.5 < g[0] / g[1] < 0.65


def test_presets_carry_the_paper_recipe():
    c = load_config("cifar10", None, [])
    assert (c.train.optimizer, c.train.lr, c.train.decay, c.train.warmup_steps) == ("lamb", 3e-3, "cosine@0.8", 10000)
    assert (c.train.steps, c.train.batch_size, c.train.ema_decay, c.train.grad_clip) == (150000, 256, 0.9999, None)
    assert (c.model.dropout, c.diffusion.self_cond_rate, c.sampler.steps) == (0.1, 0.9, 1000)
    i = load_config("imagenet64", None, [])
    assert (i.train.lr, i.train.decay, i.train.batch_size, i.diffusion.train_schedule) == (2e-3, "cosine@0.7", 1024, "linear")


def test_info_json_for_the_largest_preset(capsys):
    assert main(["info", "--preset", "imagenet1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] > 4e8 and out["gflops"] > 500 and out["interface_tokens"] == 16384
