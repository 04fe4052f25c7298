"""The plugin's own tests: run `python -m pytest` in this folder after `pip install -e .`."""
import torch

from rinkit.testing import assert_plugin_loads, check_modality


def test_plugin_loads_from_its_entry_point():
    assert_plugin_loads("timeseries")


def test_contract_with_the_default_preset_and_three_channels():
    names = [c.name for c in check_modality("timeseries")]
    assert "round trip" in names and "write_samples" in names
    check_modality("timeseries", overrides=["modality_options.channels=3"], metrics=False)


def test_waves_are_deterministic_and_labelled():
    from rinkit_timeseries import Options, Waves
    a, b = Waves(Options(), "train"), Waves(Options(), "train")
    torch.testing.assert_close(a[5][0], b[5][0])
    assert [a[i][1] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert not torch.equal(a[5][0], Waves(Options(), "test")[5][0])


def test_metric_is_near_zero_for_held_out_waves_and_large_for_noise():
    from rinkit_timeseries import Options, SpectrumMetric, Waves
    o = Options()
    real = torch.stack([Waves(o, "train")[i][0] for i in range(256)])
    labels = torch.tensor([Waves(o, "train")[i][1] for i in range(256)])
    metric = SpectrumMetric(o)
    same, noise = metric(real, labels), metric(torch.rand_like(real) * 2 - 1, labels)
    assert same["ts_spectrum_db"] < 1.0 < 5.0 < noise["ts_spectrum_db"]
    assert same["ts_corr_gap"] < 0.05
    assert same["ts_freq_acc"] == 1.0 and noise["ts_freq_acc"] < 0.2
