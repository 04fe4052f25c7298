"""benchmarks.noise_levels: the held-out denoising loss of trained models, level by level."""
import json

import numpy as np
import pytest
import torch

from benchmarks.noise_levels import level_grid, main, per_level_losses
from rinkit.diffusion.process import Diffusion


class ZeroModel(torch.nn.Module):
    """Predicts 0 whatever it is given; records whether it was given previous latents."""

    def __init__(self):
        super().__init__()
        self.prev_given = []

    def forward(self, x_t, gamma, labels, prev, context):
        self.prev_given.append(prev is not None)
        return torch.zeros_like(x_t), torch.ones(x_t.shape[0], 2, 3)


@pytest.mark.parametrize("rate", [0.0, 0.9])
def test_levels_follow_the_training_schedule_and_target(rate):
    """For a model that predicts 0, the v-loss at signal variance g is g E[eps^2] + (1 - g) E[x0^2]:
    ~1 at the cleanest level and ~E[x0^2] at the noisiest, so the levels are the training
    schedule's gamma(t) at the bins' midpoints and the target is the preset's. A self-conditioning
    model is measured on its second pass, given the first pass's latents."""
    d = Diffusion("sigmoid(-3,3,0.9)", "sigmoid(-3,3,0.9)", pred="v", input_scale=0.5, self_cond_rate=rate)
    x = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1  # not the noise's stream
    model = ZeroModel()
    r = per_level_losses(model, d, x, None, levels=5, batch=32)
    t, gamma = level_grid(d, 5)
    assert torch.allclose(t, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]))
    assert torch.allclose(gamma, d.train_schedule(t))
    ex2 = float((x * 0.5).pow(2).mean())
    for k, g in enumerate(gamma.tolist()):
        assert r["target_err"][k].mean() == pytest.approx(g + (1 - g) * ex2, rel=0.03)
    assert r["target_err"].shape == (5, 64) and r["x0_err"].shape == (5, 64)
    calls = 5 * 2 * (2 if rate else 1)
    assert len(model.prev_given) == calls
    assert model.prev_given == ([False, True] * (calls // 2) if rate else [False] * calls)


def test_same_noise_for_every_model_and_every_run():
    """The noise of example i at level k depends on (seed, k) only: two runs agree exactly, the
    batch size does not matter, and another seed gives other noise."""
    d = Diffusion("cosine", "cosine", pred="eps", self_cond_rate=0.0)
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    model = lambda x_t, g, labels, prev, ctx: (net(x_t), None)  # noqa: E731
    a = per_level_losses(model, d, x, None, 3, seed=0, batch=10)["target_err"]
    b = per_level_losses(model, d, x, None, 3, seed=0, batch=3)["target_err"]
    c = per_level_losses(model, d, x, None, 3, seed=1, batch=10)["target_err"]
    # the same noise; the conv's arithmetic may differ in the last bits between batch sizes
    # (oneDNN picks its kernel by shape: seen on a Zen-4 CPU), other noise differs by O(1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(a - c).max() > 1e-2


def _save(model, folder, kind):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / f"{kind}-ema.pt")


def test_saved_weights_are_measured_on_the_split(tmp_path, capsys):
    """The command loads each folder's <kind>-ema.pt into the model the quality benchmark builds,
    and measures exactly what per_level_losses measures for those weights on the split's images."""
    from benchmarks.noise_levels import split_examples
    from benchmarks.quality import models_for
    _, pairs = models_for("digits", [])
    (rin, cfg), (unet, _) = pairs
    torch.manual_seed(1)
    rin_model, unet_model = rin.build(), unet.build()
    _save(rin_model, tmp_path / "a", "rin")
    _save(unet_model, tmp_path / "a", "unet")
    torch.manual_seed(2)
    _save(rin.build(), tmp_path / "b", "rin")  # another init: other numbers
    out = tmp_path / "n"
    assert main(["--weights", str(tmp_path / "a"), str(tmp_path / "b"), "--examples", "12", "--levels", "3",
                 "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    rows = res["splits"]["test"]
    assert list(rows) == ["RIN digits (a)", "U-Net ADM-8 (a)", "RIN digits (b)"]
    x, labels = split_examples(cfg, "test", 12, 0)
    want = per_level_losses(rin_model, rin.diffusion, x, labels, 3)["target_err"].mean(1)
    assert rows["RIN digits (a)"]["target"]["mean"] == pytest.approx(want.tolist(), rel=1e-6)
    assert rows["RIN digits (b)"]["target"]["mean"] != pytest.approx(want.tolist(), rel=1e-3)
    assert (tmp_path / "n.png").is_file() and "| **mean over t** |" in (tmp_path / "n.md").read_text()


def test_missing_or_foreign_weights_are_one_line_errors(tmp_path, capsys):
    from benchmarks.quality import models_for
    (tmp_path / "empty").mkdir()
    assert main(["--weights", str(tmp_path / "empty"), "--examples", "4", "--levels", "2"]) == 2
    assert "no <kind>-ema.pt weights there" in capsys.readouterr().err
    _, pairs = models_for("digits", ["model.blocks=1"])
    _save(pairs[0][0].build(), tmp_path / "other", "rin")  # trained with other overrides
    assert main(["--weights", str(tmp_path / "other"), "--examples", "4", "--levels", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rin-ema.pt: cannot load into RIN digits" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "rin-ema.pt").write_bytes(b"not a checkpoint")
    assert main(["--weights", str(tmp_path / "bad"), "--examples", "4", "--levels", "2"]) == 2
    assert "cannot load" in capsys.readouterr().err
