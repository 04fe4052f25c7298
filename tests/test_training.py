import json
import pickle

import pytest
import torch

from rinkit.build import build_diffusion, build_model
from rinkit.errors import RinkitError
from rinkit.train.checkpoint import Checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from rinkit.train.data import StepBatchSampler
from rinkit.train.optim import EMA, build_optimizer, lr_factor
from rinkit.train.trainer import load_for_sampling, train


def test_gradients_reach_every_parameter(tiny_cfg):
    cfg = tiny_cfg("diffusion.self_cond_rate=1.0")
    model = build_model(cfg)
    torch.nn.init.ones_(model.core.self_cond.norm_out.weight)  # past init the warm start matters
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.arange(6)
    # the self-cond path only gets gradient through pass-2 inputs; the loss reaches it via its LN
    build_diffusion(cfg).loss(model, x, y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_lr_schedule_warmup_then_truncated_cosine():
    # official warm-up: step / W, so the first update has LR 0 and update W the peak
    assert lr_factor(0, 100, 10, "cosine@0.8") == 0.0
    assert lr_factor(1, 100, 10, "cosine@0.8") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine@0.8") == pytest.approx(0.9)
    assert lr_factor(10, 100, 10, "cosine@0.8") == pytest.approx(1.0)
    # the official cosine@r ends at 0.5 (1 + cos(r pi)): 9.5 % for r = 0.8
    assert lr_factor(100, 100, 10, "cosine@0.8") == pytest.approx(0.0955, abs=1e-3)
    assert lr_factor(100, 100, 10, "cosine@0.7") == pytest.approx(0.2061, abs=1e-3)
    assert lr_factor(50, 100, 10, "constant") == 1.0


def test_weight_decay_skips_norms_and_biases_but_not_embeddings(tiny_cfg):
    model = build_model(tiny_cfg())
    opt = build_optimizer(model, "lamb", 1e-3, 0.01)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.core.latents) in decayed and id(model.tokenizer.pos.learned) in decayed
    assert not any(names[i].endswith(".bias") or "norm" in names[i] for i in decayed)
    assert opt.param_groups[0]["max_grad_norm"] is None  # timm's hidden clip is off; ours is explicit


def test_ema_starts_as_copy_and_moves_toward_model(tiny_cfg):
    model = build_model(tiny_cfg())
    ema = EMA(model, 0.9)
    for a, b in zip(ema.model.parameters(), model.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = next(ema.model.parameters()).clone()
    ema.update(model)
    torch.testing.assert_close(next(ema.model.parameters()), before + 0.1)


def test_step_batches_are_a_function_of_the_step():
    a = StepBatchSampler(10, 4, seed=3)
    b = StepBatchSampler(10, 4, seed=3, start_step=5)
    assert [a.batch(s) for s in range(5, 9)] == [next(iter(b))] + [b.batch(s) for s in range(6, 9)]
    epoch = sum((a.batch(s) for s in range(5)), [])[:10]
    assert sorted(epoch) == list(range(10))  # each epoch is a permutation
    r0, r1 = StepBatchSampler(10, 2, 3, rank=0, world_size=2), StepBatchSampler(10, 2, 3, rank=1, world_size=2)
    assert r0.batch(0) + r1.batch(0) == a.batch(0)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    opt = build_optimizer(model, "lamb", 1e-3, 0.01)
    x = torch.rand(3, 1, 8, 8)
    model(x, torch.rand(3), torch.arange(3))[0].sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "step-0000001.safetensors",
                           Checkpoint(cfg.to_dict(), 1, model.state_dict(), model.state_dict(), opt.state_dict(),
                                      {"torch": torch.get_rng_state(), "python": "x"}))
    ck = load_checkpoint(path)
    assert ck.step == 1 and ck.config == cfg.to_dict() and ck.rng["python"] == "x"
    model2 = build_model(cfg).eval()
    model2.load_state_dict(ck.model)
    g, lab = torch.rand(3), torch.arange(3)
    assert torch.equal(model(x, g, lab)[0], model2(x, g, lab)[0])
    opt2 = build_optimizer(model2, "lamb", 1e-3, 0.01)
    opt2.load_state_dict(ck.optimizer)
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list_checkpoints(tmp_path) == [path]


def test_bad_checkpoint_files_are_named(tmp_path, tiny_cfg):
    with pytest.raises(RinkitError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(RinkitError, match="pickle"):
        load_checkpoint(pkl)
    zipped = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, zipped)
    with pytest.raises(RinkitError, match="pickle"):
        load_checkpoint(zipped)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello world, not a checkpoint")
    with pytest.raises(RinkitError, match="not a rinkit checkpoint"):
        load_checkpoint(txt)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(RinkitError, match="not a rinkit checkpoint"):
        load_checkpoint(foreign)
    good = save_checkpoint(tmp_path / "step-0000002.safetensors",
                           Checkpoint(tiny_cfg().to_dict(), 2, build_model(tiny_cfg()).state_dict()))
    data = good.read_bytes()
    for cut in (len(data) // 2, 100):
        trunc = tmp_path / f"trunc{cut}.safetensors"
        trunc.write_bytes(data[:cut])
        with pytest.raises(RinkitError, match="truncated|corrupt"):
            load_checkpoint(trunc)


def test_short_run_resume_is_exact(tiny_cfg, tmp_path):
    """8 steps straight == 5 steps, then a resumed process for the remaining 3: identical weights."""
    cfg = tiny_cfg("train.steps=8", "train.ckpt_every=5")
    straight = train(cfg, run_dir=tmp_path / "a", progress=False)
    train(cfg, run_dir=tmp_path / "b", progress=False, max_steps=5)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-0000005.safetensors"]
    resumed = train(cfg, run_dir=tmp_path / "b", progress=False)  # auto-resume from step 5
    assert resumed.step == 8 and len(resumed.losses) == 3
    assert straight.losses[-3:] == resumed.losses
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
        assert torch.equal(a.ema[k], b.ema[k]), k


def test_resume_refuses_a_different_model(tiny_cfg, tmp_path):
    train(tiny_cfg("train.steps=2"), run_dir=tmp_path, progress=False)
    with pytest.raises(RinkitError, match="different config.*model.latent_dim"):
        train(tiny_cfg("train.steps=4", "model.latent_dim=64"), run_dir=tmp_path, progress=False)


def test_ctrl_c_finishes_the_step_and_saves_a_second_aborts_without_saving(tiny_cfg, tmp_path, monkeypatch):
    import signal
    from rinkit.diffusion.process import Diffusion
    cfg = tiny_cfg("train.steps=20", "train.ckpt_every=3")
    calls, presses = {"n": 0}, {8: 1}
    real = Diffusion.loss

    def ctrl_c(self, *a, **k):  # real SIGINTs in the middle of a step (loss call 8 is step 7 -> 8)
        calls["n"] += 1
        for _ in range(presses.get(calls["n"], 0)):
            signal.raise_signal(signal.SIGINT)
        return real(self, *a, **k)
    monkeypatch.setattr(Diffusion, "loss", ctrl_c)
    res = train(cfg, run_dir=tmp_path, progress=False)
    assert res.stopped == "SIGINT" and res.step == 8 and not res.samples
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names[-1] == "step-0000008.safetensors"  # the whole step, then a checkpoint
    assert load_checkpoint(tmp_path / "checkpoints" / names[-1]).step == 8
    # resumed (periodic save at 9); two presses inside step 10 -> 11: abort, step 10 is not saved
    calls["n"], presses = 0, {3: 2}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "step-0000009.safetensors"
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_non_finite_losses_skip_then_stop(tiny_cfg, tmp_path, monkeypatch):
    from rinkit.diffusion.process import Diffusion
    monkeypatch.setattr(Diffusion, "loss", lambda self, *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(RinkitError, match="non-finite"):
        train(tiny_cfg("train.steps=50", "train.max_bad_steps=3"), run_dir=tmp_path, progress=False)


def test_sampling_from_checkpoint(tiny_cfg, tmp_path):
    res = train(tiny_cfg("train.steps=2"), run_dir=tmp_path, progress=False)
    model, cfg, device = load_for_sampling(tmp_path)
    assert cfg.model.latent_dim == 32 and not model.training
    assert res.samples and res.samples[0].exists()
    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == 2 and {"loss", "lr", "grad_norm", "examples_per_s"} <= set(stats[-1])


def test_safetensors_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(tmp_path, tiny_cfg):
    """The first byte of a safetensors file is the low byte of its header length: 0x80 is legal."""
    meta_pad = "x"
    for _ in range(400):  # grow the metadata until the header length's low byte is 0x80
        path = save_checkpoint(tmp_path / "step-0000001.safetensors",
                               Checkpoint(tiny_cfg().to_dict(), 1, {"w": torch.zeros(2)}, extra={"pad": meta_pad}))
        if path.read_bytes()[:1] == b"\x80":
            break
        meta_pad += "x"
    assert path.read_bytes()[:1] == b"\x80"
    assert load_checkpoint(path).extra["pad"] == meta_pad
