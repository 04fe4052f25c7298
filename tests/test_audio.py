"""The audio plugin: mel maths, spectrogram round trips, tokenizer, synthetic data, loaders,
writer, metrics (incl. the FAD code path with random VGGish weights) and a short training run."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from rinkit import registry
from rinkit.build import build_model
from rinkit.config import load_config
from rinkit.errors import RinkitError
from rinkit_plugins.audio import AudioOptions
from rinkit_plugins.audio.data import CLASSES, folder, synth, synth_wave
from rinkit_plugins.audio.spectrogram import LogMel, hz_to_mel, mel_filterbank, mel_to_hz

O = AudioOptions()


def test_audio_plugin_registered_with_its_preset():
    m = registry.get_modality("audio")
    assert m.default_preset == "audio-synth" and m.sample_shape(O) == (1, 64, 64)
    assert {("audio", "synth"), ("audio", "folder")} <= set(registry.datasets("audio"))
    cfg = load_config("audio-synth")
    assert cfg.modality == "audio" and cfg.model.num_classes == len(CLASSES)


def test_slaney_mel_scale_hand_values():
    assert hz_to_mel(1000.0) == pytest.approx(15.0)           # 1 kHz = 15 mels (linear part: 200/3 Hz per mel)
    assert hz_to_mel(200.0) == pytest.approx(3.0)
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)    # 27 mels per factor 6.4 above 1 kHz
    f = np.array([0.0, 123.4, 999.0, 1000.0, 4321.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-10, atol=1e-9)
    fb = mel_filterbank(16000, 512, 64)
    assert fb.shape == (64, 257) and (fb.max(1) > 0.5).all()  # no empty filter; peaks near 1


def test_full_scale_sine_is_zero_db():
    t = torch.arange(O.n_samples) / O.sample_rate
    db = LogMel(O).db(torch.sin(2 * math.pi * 1000.0 * t)[None])
    # within 1.5 dB: the sine sits between mel-filter peaks and the Hann window spreads it
    assert db[..., 2:-2].amax().item() == pytest.approx(0.0, abs=1.5)
    assert LogMel(O)(torch.zeros(1, O.n_samples)).eq(-1).all()  # silence sits at the floor


def test_griffin_lim_round_trip_keeps_the_spectrogram():
    wave, _ = synth_wave("test", 0, O.n_samples, O.sample_rate)  # a note
    lm = LogMel(O)
    spec = lm(torch.from_numpy(wave)[None])
    back = lm.invert(spec)
    assert back.shape == (1, O.n_samples) and back.abs().max() <= 1
    err = (lm.denormalise(lm(back)) - lm.denormalise(spec)).abs()
    loud = lm.denormalise(spec) > -40  # where the sound is; the floor is noise either way
    assert err[loud].mean() < 3.0  # dB
    torch.testing.assert_close(lm.invert(spec), back)  # seeded phase: deterministic


def test_tokenizer_detokenizer_invert_each_other():
    o = AudioOptions(patch_size=(8, 4), pos_emb="sincos")
    m = registry.get_modality("audio")
    dim = 32
    tok, detok = m.make_tokenizer(o, dim), m.make_detokenizer(o, dim)
    with torch.no_grad():
        tok.patch.weight.zero_()
        tok.patch.bias.zero_()
        for i in range(8):
            for j in range(4):
                tok.patch.weight[i * 4 + j, 0, i, j] = 1.0
        detok.proj.weight.copy_(torch.eye(dim))
        detok.proj.bias.zero_()
    tok.norm = detok.norm = torch.nn.Identity()
    tok.pos.fixed.zero_()
    x = torch.randn(2, 1, 64, 64)
    t, state = tok(x)
    assert t.shape == (2, 8 * 16, dim) and state is None
    torch.testing.assert_close(detok(t, None, state), x)


@pytest.mark.parametrize("kind", ["sincos", "factorized", "sincos+factorized"])
def test_positions_name_frequency_and_time(kind):
    tok = registry.get_modality("audio").make_tokenizer(AudioOptions(pos_emb=kind), 32)
    if "factorized" in kind:
        torch.nn.init.normal_(tok.pos.freq)
        torch.nn.init.normal_(tok.pos.time)
    pos = tok.pos().detach().reshape(8, 16, 32)  # (mel patches, frame patches)
    assert len({tuple(r.tolist()) for r in pos.reshape(-1, 32)}) == 8 * 16  # all distinct
    if kind == "factorized":  # a learned code per row plus one per column
        torch.testing.assert_close(pos[3, 5] - pos[3, 2], pos[6, 5] - pos[6, 2])


def test_synthetic_clips_are_deterministic_and_distinct():
    a, la = synth_wave("train", 5, O.n_samples, O.sample_rate)
    b, lb = synth_wave("train", 5, O.n_samples, O.sample_rate)
    c, _ = synth_wave("test", 5, O.n_samples, O.sample_rate)
    assert np.array_equal(a, b) and la == lb == 5 % 4 and not np.array_equal(a, c)
    assert 0.25 < np.abs(a).max() <= 0.9
    ds = synth(O, None, "train")
    x, y = ds[6]
    assert x.shape == (1, 64, 64) and y == 2 and -1 <= x.min() and x.max() <= 1
    # drums are noisy, notes are tonal: spectral flatness tells them apart
    from rinkit_plugins.audio.metric import spectral_stats
    specs, labels = ds.tensors(32)
    flat = spectral_stats(O, specs)["flatness"]
    assert flat[labels.numpy() == 3].mean() > 3 * flat[labels.numpy() == 0].mean()


def test_folder_dataset_reads_resamples_and_splits(tmp_path):
    t = np.arange(22050 * 3) / 22050  # 3 s at 22.05 kHz -> three 1 s clips at 16 kHz
    for k, (cls, f) in enumerate([("bass", 110.0), ("treble", 1760.0)]):
        (tmp_path / cls).mkdir()
        for i in range(10):
            ext = ".flac" if i % 2 else ".wav"
            sf.write(str(tmp_path / cls / f"{i}{ext}"), 0.5 * np.sin(2 * np.pi * f * t), 22050)
    data_cfg = load_config("audio-synth", None, [f"data.path={tmp_path}", "data.dataset=folder"]).data
    train, test = folder(O, data_cfg, "train"), folder(O, data_cfg, "test")
    assert len(train) == 2 * 9 * 3 and len(test) == 2 * 1 * 3
    assert sorted(set(train.labels.tolist())) == [0, 1]
    x, _ = test[0]
    assert x.shape == (1, 64, 64)
    (tmp_path / "bass" / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(RinkitError, match="broken.wav"):
        folder(O, data_cfg, "train")
    with pytest.raises(RinkitError, match="data.path"):
        folder(O, load_config("audio-synth").data, "train")


def test_writer_writes_wavs_and_a_png(tmp_path):
    specs, labels = synth(O, None, "test").tensors(4)
    paths = registry.get_modality("audio").write_samples(specs, labels, tmp_path / "s", O)
    assert paths[0].suffix == ".png" and paths[0].stat().st_size > 0
    wavs = [p for p in paths if p.suffix == ".wav"]
    assert len(wavs) == 4
    wave, sr = sf.read(str(wavs[0]))
    assert sr == 16000 and len(wave) == O.n_samples


def test_metric_real_clips_beat_noise():
    from rinkit_plugins.audio.metric import AudioMetric
    metric = AudioMetric(O)
    real, labels = synth(O, None, "train").tensors(256)
    good = metric(real, labels)
    noise = metric(torch.rand(256, 1, 64, 64) * 2 - 1, labels)
    assert good["audio_acc"] > 0.9 and noise["audio_acc"] < 0.5
    assert good["audio_fd"] < noise["audio_fd"] / 20
    for k in ("audio_band_db_l1", "audio_centroid_gap_hz", "audio_dynamics_gap_db"):
        assert good[k] < noise[k] / 5
    from rinkit_plugins.audio.metric import spectral_gaps
    assert all(v == 0 for v in spectral_gaps(O, real, real).values())  # a set against itself


def test_fad_code_path_with_random_vggish_weights(tmp_path, monkeypatch):
    from rinkit_plugins.audio.metric import fad
    from rinkit_plugins.audio.vggish import ENV, VGGish, load_vggish
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(RinkitError, match=ENV):
        load_vggish()
    monkeypatch.setenv(ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(RinkitError, match="not found"):
        load_vggish()
    torch.manual_seed(0)
    path = tmp_path / "vggish.pth"
    torch.save({k: v.half() for k, v in VGGish().state_dict().items()}, path)  # half: a smaller file
    monkeypatch.setenv(ENV, str(path))
    real, _ = synth(O, None, "test").tensors(8)
    assert fad(O, real, real) == pytest.approx(0.0, abs=1e-6)
    assert fad(O, torch.rand(8, 1, 64, 64) * 2 - 1, real) > 0
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(RinkitError, match="torchvggish"):
        load_vggish(tmp_path / "bad.pth")


def test_short_audio_run_lowers_the_loss(tmp_path):
    from rinkit.train.trainer import train
    cfg = load_config("audio-synth", None, [
        "model.interface_dim=32", "model.latent_dim=64", "model.num_latents=16", "model.latent_heads=2",
        "model.rw_heads=2", "train.batch_size=16", "train.warmup_steps=5", "train.steps=80",
        "diffusion.pred=eps", "train.lr=2e-3", "train.log_every=10", "train.ckpt_every=1000",
        "train.eval_samples=0", "sampler.steps=4"])
    res = train(cfg, run_dir=tmp_path / "run", progress=False)
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-10:])
    assert last < 0.8 * first and last < 0.9, (first, last)  # eps target (pinned): 0.9 beats predicting 0 (loss 1)
    assert any(p.suffix == ".wav" for p in res.samples) and any(p.suffix == ".png" for p in res.samples)
    assert build_model(cfg)  # the preset builds
