import pytest
import torch

from rinkit.engine import RIN, attention, xformers_available
from rinkit.engine.rin import SelfConditioning


@pytest.mark.parametrize("n_tokens,num_latents,num_classes", [(1, 3, 0), (16, 8, 10), (100, 5, 3), (257, 20, 0)])
def test_core_shapes(n_tokens, num_latents, num_classes):
    core = RIN(interface_dim=24, latent_dim=32, num_latents=num_latents, blocks=2, layers_per_block=[1, 2],
               latent_heads=4, rw_heads=2, num_classes=num_classes)
    x = torch.randn(3, n_tokens, 24)
    labels = torch.tensor([0, 1, num_classes]) if num_classes else None
    out, z = core(x, torch.rand(3), labels)
    assert out.shape == x.shape
    assert z.shape == (3, num_latents, 32)


def test_num_latents_counts_time_and_class_tokens():
    assert RIN(16, 16, 10, 1, 1, 2, 2, num_classes=5).latents.shape[0] == 8
    assert RIN(16, 16, 10, 1, 1, 2, 2, num_classes=0).latents.shape[0] == 9
    with pytest.raises(ValueError):
        RIN(16, 16, 2, 1, 1, 2, 2, num_classes=5)


def test_read_write_width_is_min_of_widths_and_only_query_is_normalised():
    core = RIN(interface_dim=24, latent_dim=64, num_latents=6, blocks=1, layers_per_block=1,
               latent_heads=4, rw_heads=4)
    block = core.blocks[0]
    assert block.read.attn.q.out_features == 24 and block.write.attn.q.out_features == 24
    # keys/values enter un-normalised: scaling X by a constant changes the read (LN would cancel it)
    z = torch.randn(2, 6, 64)
    x = torch.randn(2, 5, 24)
    assert not torch.allclose(block.read(z, x), block.read(z, 3 * x), atol=1e-4)


def test_block_without_compute_only_reads():
    core = RIN(16, 16, 4, blocks=2, layers_per_block=[0, 1], latent_heads=2, rw_heads=2)
    assert core.blocks[0].write is None and core.blocks[1].write is not None


def test_self_conditioning_is_identity_at_init():
    torch.manual_seed(1)
    core = RIN(16, 32, 6, 2, 1, 4, 2, num_classes=4, self_cond=True)
    x, g, lab = torch.randn(2, 7, 16), torch.rand(2), torch.tensor([1, 2])
    a, za = core(x, g, lab, None)
    b, zb = core(x, g, lab, torch.randn(2, 6, 32) * 5)
    assert torch.equal(a, b) and torch.equal(za, zb)
    sc = SelfConditioning(32, 4)
    assert torch.count_nonzero(sc(torch.randn(3, 6, 32))) == 0


def test_self_conditioning_changes_output_once_trained():
    core = RIN(16, 32, 6, 1, 1, 4, 2, self_cond=True)
    torch.nn.init.ones_(core.self_cond.norm_out.weight)
    x, g = torch.randn(2, 7, 16), torch.rand(2)
    assert not torch.allclose(core(x, g, None, None)[0], core(x, g, None, torch.randn(2, 6, 32))[0])


def test_dropout_and_drop_path_only_in_compute_layers():
    core = RIN(16, 32, 6, 2, 2, 4, 2, dropout=0.3, drop_path=0.2)
    for block in core.blocks:
        assert block.read.mlp.drop.p == 0.0
        assert block.write.mlp.drop.p == 0.0
        for layer in block.compute:
            assert layer.mlp.drop.p == 0.3 and layer.drop_path.p == 0.2


def test_time_embedding_uses_gamma_times_1000():
    core = RIN(16, 32, 6, 1, 1, 4, 2)
    e1 = core.time_embed(torch.tensor([0.5]))
    core.time_embed.scale = 1.0
    assert not torch.allclose(e1, core.time_embed(torch.tensor([0.5])))


@pytest.mark.parametrize("shape", [(2, 4, 7, 8), (1, 2, 33, 16)])
def test_sdpa_matches_math_reference(shape):
    q, k, v = torch.randn(shape), torch.randn(shape[0], shape[1], 5, shape[3]), torch.randn(shape[0], shape[1], 5, shape[3])
    torch.testing.assert_close(attention(q, k, v, "sdpa"), attention(q, k, v, "math"), atol=1e-5, rtol=1e-5)


def test_backends_give_the_same_model_output():
    torch.manual_seed(0)
    a = RIN(16, 32, 6, 1, 2, 4, 2, attention="sdpa")
    b = RIN(16, 32, 6, 1, 2, 4, 2, attention="math")
    b.load_state_dict(a.state_dict())
    x, g = torch.randn(2, 9, 16), torch.rand(2)
    torch.testing.assert_close(a(x, g)[0], b(x, g)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not (torch.cuda.is_available() and xformers_available()),
                    reason="xformers runs only on CUDA with the optional extra installed")
def test_xformers_matches_sdpa_on_cuda():
    q, k, v = (torch.randn(2, 4, 64, 32, device="cuda") for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, "xformers"), attention(q, k, v, "sdpa"), atol=2e-3, rtol=2e-3)


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="backend"):
        RIN(16, 16, 4, 1, 1, 2, 2, attention="flash3")


# -- optional backends say what they are ----------------------------------------------------------

def test_xformers_never_silently_swaps_for_sdpa_on_cpu():
    q = torch.randn(1, 2, 4, 8)
    why = "CUDA tensors" if xformers_available() else "not importable"
    with pytest.raises(RuntimeError, match=why):
        attention(q, q, q, "xformers")
    core = RIN(16, 16, 4, 1, 1, 2, 2, attention="xformers")  # builds (rinkit info counts it) ...
    with pytest.raises(RuntimeError, match=why):  # ... but never runs another kernel
        core(torch.randn(1, 3, 16), torch.rand(1))


@pytest.mark.skipif(torch.cuda.is_available() and xformers_available(), reason="xformers can run here")
def test_training_with_xformers_where_it_cannot_run_is_a_one_line_error(tmp_path, capsys):
    from conftest import TINY
    from rinkit.cli import main
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--set", *TINY, "model.attention=xformers"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rinkit: error: model.attention=xformers") and "sdpa" in err and "\n" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sampling_an_xformers_checkpoint_where_it_cannot_run_says_it_uses_sdpa(tiny_cfg, tmp_path, capsys):
    from rinkit.build import build_model
    from rinkit.sampling import load_for_sampling
    from rinkit.train.checkpoint import Checkpoint, save_checkpoint
    cfg = tiny_cfg()
    sd = build_model(cfg).state_dict()
    cfg.model.attention = "xformers"
    path = save_checkpoint(tmp_path / "step-0000001.safetensors", Checkpoint(cfg.to_dict(), 1, sd, sd))
    model, loaded, _ = load_for_sampling(path, "cpu")
    assert "trained with attention=xformers" in capsys.readouterr().out
    assert loaded.model.attention == "sdpa" and model.core.blocks[0].read.attn.backend == "sdpa"


def _fake_cuda(monkeypatch, bf16: bool, capability=(7, 0)):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")


def test_bf16_on_a_gpu_without_it_is_a_one_line_error_and_auto_falls_to_fp32(tiny_cfg, monkeypatch):
    from rinkit.build import check_backends
    from rinkit.errors import RinkitError
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    _fake_cuda(monkeypatch, bf16=False)  # no GPU here: the CUDA queries are stood in for
    with pytest.raises(RinkitError, match=r"train.precision=bf16: Tesla V100 \(compute capability 7.0\)"):
        check_backends(tiny_cfg("train.precision=bf16"), cuda)
    assert check_backends(tiny_cfg("train.precision=auto"), cuda) == "fp32"
    _fake_cuda(monkeypatch, bf16=True, capability=(9, 0))
    assert check_backends(tiny_cfg("train.precision=auto"), cuda) == "bf16"
    assert check_backends(tiny_cfg("train.precision=bf16"), cuda) == "bf16"
    assert check_backends(tiny_cfg("train.precision=auto"), cpu) == "fp32"


def test_compile_where_it_cannot_work_is_a_one_line_error(tiny_cfg, monkeypatch, tmp_path, capsys):
    import torch._dynamo
    import torch.utils._triton
    from conftest import TINY
    from rinkit.build import check_backends
    from rinkit.cli import main
    from rinkit.errors import RinkitError
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    assert main(["train", "--compile", "--run-dir", str(tmp_path / "run"), "--set", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "--compile" in err and "C++ compiler" in err and "\n" not in err
    monkeypatch.delenv("CXX")
    cfg = tiny_cfg("train.compile=true")
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    with pytest.raises(RinkitError, match="Triton"):
        check_backends(cfg, torch.device("cuda"))
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(RinkitError, match="TorchDynamo"):
        check_backends(cfg, torch.device("cpu"))


def test_info_counts_an_xformers_model_like_sdpa(tiny_cfg):
    from rinkit.info import model_info
    a, b = model_info(tiny_cfg("model.attention=xformers")), model_info(tiny_cfg())
    assert (a["params"], a["gflops"]) == (b["params"], b["gflops"]) and a["gflops"] > 0


# -- the tokenizer contract: one type, (tokens, state) ----------------------------------------

class _OldFormTokenizer(torch.nn.Module):
    """The form before one type: a bare (B, N, D) tensor."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 16)

    def forward(self, x, context=None):
        return self.proj(x.reshape(x.shape[0], -1, 4))


class _Detokenizer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 4)

    def forward(self, tokens, context=None, state=None):
        return self.proj(tokens).reshape(tokens.shape[0], 1, -1)


def _denoiser(tokenizer, detokenizer):
    from rinkit.engine.rin import Denoiser
    return Denoiser(tokenizer, RIN(16, 16, 4, 1, 1, 2, 2), detokenizer)


@pytest.mark.parametrize("batch", [2, 3])  # at batch 2 a bare tensor would unpack into two "halves"
def test_a_tokenizer_returning_the_old_form_is_a_one_line_error_naming_it(batch):
    from rinkit.errors import RinkitError
    model = _denoiser(_OldFormTokenizer(), _Detokenizer())
    with pytest.raises(RinkitError) as e:
        model(torch.randn(batch, 1, 32), torch.rand(batch))
    assert str(e.value) == ("tokenizer _OldFormTokenizer returned a tensor; expected (tokens, state), "
                            "state None when unused (`return tokens, None`)")


def test_a_detokenizer_without_state_is_a_one_line_error_naming_it():
    from rinkit.errors import RinkitError

    class NoState(_Detokenizer):
        def forward(self, tokens, context=None):
            return super().forward(tokens)
    with pytest.raises(RinkitError, match=r"^detokenizer NoState\.forward\(tokens, context=None\) takes no state; "
                                          r"expected forward\(tokens, context, state\)"):
        _denoiser(_OldFormTokenizer(), NoState())
