import pytest

from rinkit.config import Config, apply_override, list_presets, load_config
from rinkit.errors import RinkitError


def test_default_preset_is_digits_and_valid():
    cfg = load_config()
    assert cfg.name == "digits" and cfg.modality == "image" and cfg.data.dataset == "digits"
    assert "digits" in list_presets()
    assert Config.model_validate(cfg.to_dict()) == cfg  # dict round trip


def test_overrides_are_typed_and_nested():
    cfg = load_config("digits", None, ["train.lr=1e-4", "model.layers_per_block=[1,2]", "model.blocks=2",
                                       "sampler.name=ddim", "train.grad_clip=null"])
    assert cfg.train.lr == 1e-4 and cfg.model.layers_per_block == [1, 2]
    assert cfg.sampler.name == "ddim" and cfg.train.grad_clip is None


@pytest.mark.parametrize("override,message", [
    ("model.latent_dimm=3", "unknown config key 'model.latent_dimm'"),
    ("train.lr=fast", "bad config value train.lr"),
    ("train.lr=-1", "bad config value train.lr"),
    ("diffusion.train_schedule=quadratic", "bad noise schedule"),
    ("diffusion.pred=score", "bad config value diffusion.pred"),
    ("train.decay=cosine@2", "bad config value train.decay"),
    ("model.latent_heads=7", "not divisible"),
    ("nokey", "expected key=value"),
])
def test_bad_overrides_give_one_line_errors(override, message):
    with pytest.raises(RinkitError, match=message) as e:
        load_config("digits", None, [override])
    assert "\n" not in str(e.value)


def test_unknown_preset_lists_available():
    with pytest.raises(RinkitError, match="unknown preset 'imagenet9'.*digits"):
        load_config("imagenet9")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(RinkitError, match="not valid YAML"):
        load_config(None, str(bad))
    with pytest.raises(RinkitError, match="cannot read config"):
        load_config(None, str(tmp_path / "missing.yaml"))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(RinkitError, match="mapping"):
        load_config(None, str(lst))


def test_apply_override_creates_sections():
    d = {}
    apply_override(d, "a.b.c=3")
    assert d == {"a": {"b": {"c": 3}}}
