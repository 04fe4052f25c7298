"""A command joins its config to the modality plugin once (rinkit.build.resolve) and hands the
result downstream: the plugin's option validation does not re-run in every module it reaches."""
import pytest
from conftest import TINY
from pydantic import model_validator

from rinkit import registry
from rinkit.build import Resolved, resolve
from rinkit.cli import main


@pytest.fixture
def validations(monkeypatch):
    """Counts every validation of the image plugin's options model."""
    image, calls = registry.get_modality("image"), []

    class Counted(image.options):
        @model_validator(mode="after")
        def _count(self):
            calls.append(1)
            return self

    monkeypatch.setattr(image, "options", Counted)
    return calls


def test_train_and_sample_validate_the_plugins_options_once(tmp_path, validations, monkeypatch):
    from rinkit_plugins.image.digits_metric import DigitsMetric
    # the metric path runs, without training the digits classifier (seconds) for a number unused here
    monkeypatch.setattr(DigitsMetric, "__call__", lambda self, samples, labels=None: {"digits_fid": 1.0})
    run = tmp_path / "run"
    # the whole train path: contract check, sample grid, proxy metric and final metrics
    assert main(["train", "--run-dir", str(run), "--quiet", "--set", *TINY, "train.steps=2",
                 "train.eval_samples=4"]) == 0
    assert len(validations) == 1
    validations.clear()
    assert main(["sample", "--ckpt", str(run), "--num-samples", "4", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert len(validations) == 1


def test_resolved_reads_through_to_its_config(tiny_cfg):
    cfg = tiny_cfg()
    r = resolve(cfg)
    assert isinstance(r, Resolved) and resolve(r) is r
    assert r.modality == "image" and r.impl is registry.get_modality("image")
    assert r.model is cfg.model and r.sample_shape == (1, 8, 8) and r.dataset.name == "digits"
    other = r.replace(sampler=cfg.sampler.model_copy(update={"steps": 7}))
    assert other.sampler.steps == 7 and other.options is r.options and r.sampler.steps == 4
    with pytest.raises(ValueError):
        r.replace(modality_options={"image_size": 16})
