"""benchmarks.model_swap: sampling with one model on the noisy steps and another on the clean ones."""
import json
import math

import pytest
import torch

from benchmarks.model_swap import Switch, main


class Const(torch.nn.Module):
    """Predicts a constant; records the log-SNR of every call and whether latents were given."""

    def __init__(self, value):
        super().__init__()
        self.value, self.seen, self.prev_given = value, [], []

    def forward(self, x_t, gamma, labels=None, prev=None, context=None):
        g = float(gamma[0])
        self.seen.append(math.log(g / (1 - g)))
        self.prev_given.append(prev is not None)
        return torch.full_like(x_t, self.value), torch.ones(x_t.shape[0], 2, 3)


def test_switch_routes_each_evaluation_by_its_log_snr():
    noisy, clean = Const(1.0), Const(2.0)
    sw = Switch(noisy, clean, switch=0.5)
    x = torch.zeros(3, 1, 4, 4)
    for g in (0.1, 0.5, 0.6, 0.7, 0.9):  # log-SNR -2.2, 0, +0.41, +0.85, +2.2
        pred, latents = sw(x, torch.full((3,), g), None, torch.zeros(3, 2, 3), None)
        assert latents is None  # one model's latents never reach the other
        assert float(pred[0, 0, 0, 0]) == (2.0 if math.log(g / (1 - g)) > 0.5 else 1.0)
    assert sw.calls == {"noisy": 3, "clean": 2}
    assert all(s <= 0.5 for s in noisy.seen) and all(s > 0.5 for s in clean.seen)
    assert not any(noisy.prev_given + clean.prev_given)


def _save(model, folder, kind):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / f"{kind}-ema.pt")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A RIN and a U-Net for the digits preset without self-conditioning, saved as
    benchmarks.quality --save saves them; differently initialised so their samples differ."""
    from benchmarks.quality import models_for
    over = ["diffusion.self_cond_rate=0", "sampler.steps=6"]
    _, pairs = models_for("digits", over)
    (rin, cfg), (unet, _) = pairs
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(3)
    _save(rin.build(), d / "r", "rin")
    torch.manual_seed(4)
    _save(unet.build(), d / "u", "unet")
    return d, over, cfg


def test_a_switch_beyond_every_level_is_the_one_model_alone(saved, tmp_path):
    """Handing over above every sampling level leaves all evaluations to the noisy-end model: its
    metrics are those of that model sampled alone (the quality benchmark's final evaluation, which
    --solo reproduces), and the reverse order gives the other model's; a switch in between gives
    neither, and splits the evaluations between the two."""
    from benchmarks.noise_levels import load_models
    from rinkit.evaluate.metrics import evaluate_metrics
    d, over, cfg = saved
    out = tmp_path / "s"
    assert main(["--set", *over, "--weights", str(d / "r"), str(d / "u"), "--switch", "100", "0", "--solo",
                 "--samples", "30", "--threads", "1", "--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    rin, unet = "RIN digits (r)", "U-Net ADM-8 (u)"
    _, models = load_models("digits", over, [str(d / "r")])
    want = evaluate_metrics(models[0][1], cfg, 30, "cpu", seed=1, batch_size=500)
    assert rows[rin]["digits_fid"] == pytest.approx(want["digits_fid"], rel=1e-9)
    assert rows[f"{rin} → {unet} at log-SNR +100"]["digits_fid"] == pytest.approx(rows[rin]["digits_fid"], rel=1e-9)
    assert rows[f"{unet} → {rin} at log-SNR +100"]["digits_fid"] == pytest.approx(rows[unet]["digits_fid"], rel=1e-9)
    assert (rows[f"{rin} → {unet} at log-SNR +100"]["evaluations_noisy"],
            rows[f"{rin} → {unet} at log-SNR +100"]["evaluations_clean"]) == (6, 0)
    mid = rows[f"{rin} → {unet} at log-SNR +0"]
    assert mid["evaluations_noisy"] > 0 and mid["evaluations_clean"] > 0
    assert mid["evaluations_noisy"] + mid["evaluations_clean"] == 6
    assert mid["digits_fid"] not in (pytest.approx(rows[rin]["digits_fid"]), pytest.approx(rows[unet]["digits_fid"]))
    assert "| sampled with |" in (tmp_path / "s.md").read_text()


def test_bad_arguments_are_one_line_errors(saved, capsys):
    d, over, _ = saved
    base = ["--set", *over, "--samples", "4", "--threads", "1"]
    assert main([*base, "--weights", str(d / "r"), "--switch", "0"]) == 2
    assert "exactly two models" in capsys.readouterr().err
    assert main([*base, "--weights", str(d / "r"), str(d / "u"), "--solo", "vae"]) == 2
    assert "--solo vae: no such model kind" in capsys.readouterr().err
    assert main([*base, "--weights", str(d / "r"), str(d / "u")]) == 2
    assert "nothing to run" in capsys.readouterr().err
