"""rinkit's multi-tensor Lamb against timm's (the reference it reimplements)."""
import copy

import pytest
import torch
from torch import nn
from timm.optim import Lamb as TimmLamb

from rinkit.train import optim
from rinkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rinkit.train.distributed import load_optimizer_state
from rinkit.train.optim import Lamb, build_optimizer, param_groups

KW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=None)  # as build_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.norm, self.lin2 = nn.Linear(6, 12), nn.LayerNorm(12), nn.Linear(12, 3)
        self.zero = nn.Parameter(torch.zeros(4, 5))  # decayed, ||w|| = 0 at the first step
        self.unused = nn.Parameter(torch.randn(3, 3))  # never gets a gradient
        self.strided = nn.Parameter(torch.randn(6, 5).t())  # not contiguous: never split into pieces

    def forward(self, x):
        return (self.lin2(self.norm(self.lin1(x))).sum() + (self.zero * x[:4, :5]).sum()
                + (x[:5] * self.strided).sum())


def _net(seed=0):
    torch.manual_seed(seed)
    return Net()


def _step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    opt.zero_grad()
    model(torch.randn(8, 6, generator=g)).pow(2).backward()
    assert model.unused.grad is None
    opt.step()


def _assert_same(m1, m2):
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=n)


@pytest.mark.parametrize("chunk", ["default", 7, None])  # CPU chunking: as shipped, tiny (splits), off
@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
def test_matches_timm_over_five_steps(weight_decay, chunk, monkeypatch):
    if chunk != "default":
        monkeypatch.setattr(optim, "_CPU_CHUNK_ELEMENTS", chunk)
    ref, ours = _net(), _net()
    assert not ours.strided.is_contiguous()
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    o_ref = TimmLamb(param_groups(ref, weight_decay), **KW)
    o_ours = Lamb(param_groups(ours, weight_decay), **KW)
    assert weight_decay == 0 or any(p is ours.zero for p in o_ours.param_groups[0]["params"])
    for s in range(5):
        _step(ref, o_ref, s)
        _step(ours, o_ours, s)
        _assert_same(ref, ours)
    after = dict(ref.named_parameters())
    assert not torch.equal(after["zero"], before["zero"])  # the ||w|| = 0 branch moved it
    assert torch.equal(after["unused"], before["unused"])  # grad None: skipped
    assert ours.unused not in o_ours.state
    for p_ref, p in zip(ref.parameters(), ours.parameters()):
        for k in o_ref.state[p_ref]:
            torch.testing.assert_close(o_ours.state[p][k], o_ref.state[p_ref][k], atol=1e-7, rtol=1e-6)
    assert [g["step"].item() for g in o_ours.param_groups] == [5.0, 5.0]


@pytest.mark.parametrize("opts", [dict(always_adapt=True), dict(trust_clip=True),
                                  dict(grad_averaging=False), dict(bias_correction=False)])
def test_matches_timm_with_other_options(opts):
    ref, ours = _net(), _net()
    o_ref = TimmLamb(param_groups(ref, 0.05), **KW, **opts)
    o_ours = Lamb(param_groups(ours, 0.05), **KW, **opts)
    for s in range(4):
        _step(ref, o_ref, s)
        _step(ours, o_ours, s)
    _assert_same(ref, ours)


@pytest.mark.parametrize("direction", ["timm->ours", "ours->timm"])
def test_state_dicts_move_between_timm_and_ours(direction):
    src_cls, dst_cls = (TimmLamb, Lamb) if direction == "timm->ours" else (Lamb, TimmLamb)
    src = _net()
    o_src = src_cls(param_groups(src, 0.05), **KW)
    for s in range(3):
        _step(src, o_src, s)
    dst = copy.deepcopy(src)
    o_dst = dst_cls(param_groups(dst, 0.05), **KW)
    o_dst.load_state_dict(copy.deepcopy(o_src.state_dict()))
    assert [g["step"].item() for g in o_dst.param_groups] == [3.0, 3.0]
    _step(src, o_src, 3)
    _step(dst, o_dst, 3)
    _assert_same(src, dst)


def test_checkpoint_written_with_timms_lamb_resumes(tmp_path):
    # a rinkit checkpoint file from before this Lamb (timm's state dict), loaded as the trainer does
    ref = _net()
    o_ref = TimmLamb(param_groups(ref, 0.05), **KW)
    for s in range(3):
        _step(ref, o_ref, s)
    path = save_checkpoint(tmp_path / "step-0000003.safetensors",
                           Checkpoint({}, 3, ref.state_dict(), ref.state_dict(), o_ref.state_dict(), {}))
    ck = load_checkpoint(path)
    ours = _net(seed=1)
    ours.load_state_dict(ck.model)
    o_ours = build_optimizer(ours, "lamb", KW["lr"], 0.05)
    load_optimizer_state(ours, o_ours, ck.optimizer, fsdp=False)
    _step(ref, o_ref, 3)
    _step(ours, o_ours, 3)
    _assert_same(ref, ours)


def test_int_step_from_older_timm_loads():
    ref = _net()
    o_ref = TimmLamb(param_groups(ref, 0.05), **KW)
    for s in range(2):
        _step(ref, o_ref, s)
    sd = copy.deepcopy(o_ref.state_dict())
    for g in sd["param_groups"]:
        g["step"] = int(g["step"].item())  # older timm kept an int
    ours = copy.deepcopy(ref)
    o_ours = Lamb(param_groups(ours, 0.05), **KW)
    o_ours.load_state_dict(sd)
    _step(ref, o_ref, 2)
    _step(ours, o_ours, 2)
    _assert_same(ref, ours)


def test_mixed_dtypes_are_bucketed():
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5, dtype=torch.float64)),
          nn.Parameter(torch.randn(2, 2))]
    qs = [nn.Parameter(p.detach().clone()) for p in ps]
    o_ref = TimmLamb([{"params": ps, "weight_decay": 0.1}], **KW)
    o_ours = Lamb([{"params": qs, "weight_decay": 0.1}], **KW)
    for _ in range(3):
        for p, q in zip(ps, qs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        o_ref.step()
        o_ours.step()
    for p, q in zip(ps, qs):
        assert q.dtype == p.dtype
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [dict(max_grad_norm=1.0), dict(caution=True), dict(decoupled_decay=True),
                                 dict(foreach=False)])
def test_unimplemented_options_are_refused(bad):
    with pytest.raises(ValueError):
        Lamb(nn.Linear(2, 2).parameters(), **{**KW, **bad})


def test_loading_a_state_dict_with_unimplemented_options_is_refused():
    m = nn.Linear(2, 2)
    sd = TimmLamb(m.parameters(), lr=1e-3, max_grad_norm=1.0).state_dict()
    with pytest.raises(ValueError, match="max_grad_norm"):
        Lamb(m.parameters(), lr=1e-3).load_state_dict(sd)


def test_build_optimizer_uses_our_lamb():
    opt = build_optimizer(_net(), "lamb", 1e-3, 0.01)
    assert type(opt) is Lamb and not isinstance(opt, TimmLamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.param_groups[0]["eps"] == 1e-8 and opt.param_groups[0]["max_grad_norm"] is None
