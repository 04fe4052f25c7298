"""The shipped models (plugins/*/weights, package data): they load offline by name, sample through
the CLI and the API alike, and the digits model still scores what was recorded when it shipped."""
import pytest
import torch

import rinkit
from rinkit.cli import main
from rinkit.evaluate.metrics import evaluate_metrics


def test_shipped_models_are_listed_and_self_describing():
    shipped = rinkit.shipped_models()
    assert {"digits", "audio-synth"} <= set(shipped)
    for name, path in shipped.items():
        assert path.stat().st_size < 8e6  # a few MB in all: EMA only, fp16
        info = rinkit.load(name, "cpu").info
        assert info["dtype"] == "float16" and info["command"].startswith("rinkit train")
        assert len(info["commit"]) == 40 and info["metrics"]


def test_shipped_digits_model_scores_its_recorded_digits_fid():
    """300 class-balanced samples (seed 1, the preset's 50-step sampler): within 3 standard
    deviations (measured over 5 seeds at shipping time) of the recorded mean, and a class accuracy
    that shows the labels are used. A model whose weights did not load (or loaded wrongly from fp16)
    scores > 100."""
    m = rinkit.load("digits", "cpu")
    rec = m.info["metrics"]
    assert next(m.model.parameters()).dtype == torch.float32  # stored fp16, computed fp32
    res = evaluate_metrics(m.model, m.cfg, 300, "cpu", seed=1)
    mean, std = rec["digits_fid-300_mean"], rec["digits_fid-300_std"]
    assert abs(res["digits_fid"] - mean) <= 3 * std + 0.5, (res, rec)
    assert res["digits_acc"] >= rec["digits_acc-300_mean"] - 0.05


def test_pretrained_cli_equals_the_api(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--pretrained", "digits", "--class", "7", "--per-class", "3", "--steps", "5",
                 "--device", "cpu"]) == 0
    assert "samples: samples/digits-0.png" in capsys.readouterr().out
    from PIL import Image
    m = rinkit.load("digits", "cpu")
    files = m.save(m.sample(classes=[7], per_class=3, steps=5), tmp_path / "api")
    assert (Image.open(files[0]).tobytes() == Image.open(tmp_path / "samples" / "digits-0.png").tobytes())
    with pytest.raises(rinkit.api.RinkitError, match="EMA weights only"):
        rinkit.load("digits", "cpu", ema=False)


def test_shipped_audio_model_samples():
    m = rinkit.load("audio-synth", "cpu")
    x = m.sample(labels=[0, 3], steps=4)
    assert x.shape == (2, *m.modality.sample_shape(m.options)) and x.abs().max() <= 1
    assert m.info["metrics"]["audio_acc"] > 0.8  # recorded at shipping: the classes are learned
