"""Optimizers, the learning-rate schedule and EMA (docs/method.md §5).

* LAMB's update rule is timm's (`timm.optim.Lamb`), reimplemented here with multi-tensor
  (`torch._foreach_*`) ops and tested equal to timm's, whose state dicts it loads and writes. Its
  hidden clipping is off: clipping is done once, explicitly, in the trainer, for every optimizer,
  which the official code silently failed to do for LAMB.
* Weight decay skips biases and LayerNorm parameters (the official `bias|beta|gamma` exclusion);
  learned positional and latent tables ARE decayed, as in the official code.
* LR: linear warm-up, then `cosine@r` = a cosine over (steps - warmup) / r steps, truncated at the
  end of training (ends at 0.5 (1 + cos(r pi)) of the peak), or constant.
* EMA starts as a copy of the model (the official code started it from a fresh random init).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm_or_bias = p.ndim == 1 or name.endswith(".bias")
        (no_decay if is_norm_or_bias else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=1e-8)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=tuple(betas), eps=1e-8, max_grad_norm=None)
    raise ValueError(f"unknown optimizer {name!r}")


class Lamb(torch.optim.Optimizer):
    """LAMB with timm's update rule (`timm.optim.Lamb`, the NVIDIA FusedLAMB variant: Adam moments
    with bias correction, L2 weight decay added to the update, layer-wise trust ratio
    ||w|| / ||update|| on decayed parameters, 1 where either norm is 0).

    Why it exists: timm's Lamb loops over the parameters one tensor at a time on CPU (older timm
    everywhere), paying Python dispatch for each of ~13 ops per tensor. This is the same update,
    op for op as timm's per-tensor path (bitwise equal on CPU), with multi-tensor (foreach)
    kernels, run on CPU over cache-sized chunks (see _CPU_CHUNK_ELEMENTS). The state layout is
    timm's (`exp_avg`, `exp_avg_sq` per parameter; `step`, a float32 CPU tensor, per group), so
    state dicts move either way. Global-norm clipping (`max_grad_norm`), `caution` and
    decoupled decay are not implemented: they must stay off (ValueError otherwise).
    """

    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True, betas=(0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, grad_averaging: bool = True,
                 max_grad_norm: float | None = None, trust_clip: bool = False,
                 always_adapt: bool = False, caution: bool = False, decoupled_decay: bool = False,
                 corrected_weight_decay: bool = False, foreach: bool | None = None):
        # max_grad_norm defaults to None here (timm: 1.0), as it is the only value supported
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon: {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas}")
        if foreach is False:
            raise ValueError("Lamb: foreach=False is not supported (this Lamb is the multi-tensor one; "
                             "use timm.optim.Lamb for the per-tensor path)")
        _check_unsupported(dict(max_grad_norm=max_grad_norm, caution=caution, decoupled_decay=decoupled_decay,
                                corrected_weight_decay=corrected_weight_decay))
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, grad_averaging=grad_averaging,
                        max_grad_norm=None, trust_clip=trust_clip, always_adapt=always_adapt)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _check_unsupported(param_group)
        super().add_param_group(param_group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a loaded state dict (from timm's Lamb or ours)
            _check_unsupported(group)
            group.setdefault("trust_clip", False)
            group.setdefault("always_adapt", False)
            if "step" in group:  # as timm: a CPU tensor (older timm saved an int)
                step = group["step"]
                group["step"] = (step.to("cpu") if torch.is_tensor(step)
                                 else torch.tensor(float(step), dtype=torch.float32))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
            # as timm: one step count per group, counted even when no parameter has a gradient
            if "step" not in group:
                group["step"] = torch.tensor(0.0, dtype=torch.float32)
            group["step"].add_(1)
            buckets: dict[tuple, tuple[list, ...]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                b = buckets.setdefault((p.device, p.dtype), ([], [], [], []))
                b[0].append(p)
                b[1].append(p.grad)
                b[2].append(state["exp_avg"])
                b[3].append(state["exp_avg_sq"])
            if not buckets:
                continue
            step = group["step"].item()
            if group["bias_correction"]:
                bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
            else:
                bc1, bc2 = 1.0, 1.0
            lr = group["lr"]
            lr = lr.item() if torch.is_tensor(lr) else lr
            for params, grads, exp_avgs, exp_avg_sqs in buckets.values():
                _lamb_foreach(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2,
                              beta3=beta3, bc1=bc1, bc2=bc2, eps=group["eps"],
                              weight_decay=group["weight_decay"], trust_clip=group["trust_clip"],
                              always_adapt=group["always_adapt"])
        return loss


def _check_unsupported(group: dict) -> None:
    """The timm Lamb options this Lamb does not implement must be off (also in loaded state dicts)."""
    bad = {k: group[k] for k in ("caution", "decoupled_decay", "corrected_weight_decay") if group.get(k)}
    if group.get("max_grad_norm") is not None:
        bad["max_grad_norm"] = group["max_grad_norm"]
    if bad:
        raise ValueError(f"Lamb: unsupported option(s) {bad}: global-norm clipping, caution and decoupled "
                         "weight decay are not implemented (use timm.optim.Lamb)")


# CPU foreach ops are C++ loops over the tensors, not fused kernels: one op over all tensors streams
# the whole model through memory once per op (about 13 ops), which measured slower than timm's
# per-tensor loop, whose tensors stay in cache between ops. So on CPU the parameters go through in
# units (small tensors grouped up to this many elements, a bigger one alone), and a unit's
# elementwise work in chunks of at most this many elements (a big tensor in flat pieces), each
# staying in cache for all its ops; a unit's temporaries stay small (a whole-model update buffer,
# freshly allocated each step, cost more in page faults than it saved). On CUDA (fused foreach
# kernels) or with None: all tensors as one unit and one chunk.
_CPU_CHUNK_ELEMENTS = 1 << 17


def _units(tensors: list[torch.Tensor], budget: int) -> list[list[int]]:
    """Consecutive index groups of <= budget elements; a tensor bigger than that is one alone."""
    units, cur, total = [], [], 0
    for i, t in enumerate(tensors):
        if cur and total + t.numel() > budget:
            units.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += t.numel()
    return units + [cur] if cur else units


def _chunks(lists: list[list[torch.Tensor]], budget: int | None):
    """Split parallel tensor lists into chunks of <= budget elements: [(owners, [views per list])],
    owners[k] = the index of the tensor that view k is (a flat piece of)."""
    if budget is None:
        return [(list(range(len(lists[0]))), lists)]
    chunks, owners, cur, total = [], [], [[] for _ in lists], 0
    for i, t in enumerate(lists[0]):
        n = t.numel()
        split = n > budget and all(ts[i].is_contiguous() for ts in lists)
        flats = [ts[i].view(-1) for ts in lists] if split else None
        for start in range(0, n, budget) if split else (0,):
            size = min(budget, n - start) if split else n
            if owners and total + size > budget:
                chunks.append((owners, cur))
                owners, cur, total = [], [[] for _ in lists], 0
            owners.append(i)
            for c, ts, f in zip(cur, lists, flats or lists):
                c.append(f[start:start + size] if split else ts[i])
            total += size
    if owners:
        chunks.append((owners, cur))
    return chunks


def _lamb_foreach(params, grads, exp_avgs, exp_avg_sqs, **hyper) -> None:
    """timm's `_single_tensor_lamb`, op for op (so the same numbers), over lists of same-device,
    same-dtype tensors."""
    budget = _CPU_CHUNK_ELEMENTS if params[0].device.type == "cpu" else None
    if budget is None:
        _lamb_unit(params, grads, exp_avgs, exp_avg_sqs, budget=None, **hyper)
        return
    for idx in _units(params, budget):
        _lamb_unit([params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx],
                   [exp_avg_sqs[i] for i in idx], budget=budget, **hyper)


def _lamb_unit(params, grads, exp_avgs, exp_avg_sqs, *, budget, lr, beta1, beta2, beta3, bc1, bc2,
               eps, weight_decay, trust_clip, always_adapt) -> None:
    adapt = weight_decay != 0 or always_adapt  # layer-wise adaptation (timm: decayed params only)
    updates = [torch.empty_like(p) for p in params] if adapt else []  # whole, for their norms
    chunks = _chunks([params, grads, exp_avgs, exp_avg_sqs, updates] if adapt
                     else [params, grads, exp_avgs, exp_avg_sqs], budget)
    for _, (p, g, m, v, *u) in chunks:
        if beta3 == 1 - beta1:
            torch._foreach_lerp_(m, g, beta3)  # m_t, grad averaging
        else:
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, g, alpha=beta3)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)  # v_t
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bc2 ** 0.5)
        torch._foreach_add_(denom, eps)
        if adapt:
            u = u[0]
            torch._foreach_copy_(u, m)
            torch._foreach_div_(u, bc1)
        else:
            u = torch._foreach_div(m, bc1)
        torch._foreach_div_(u, denom)
        if weight_decay != 0:
            torch._foreach_add_(u, p, alpha=weight_decay)
        if not adapt:
            torch._foreach_add_(p, u, alpha=-lr)
    if adapt:
        w_norm = torch.stack(torch._foreach_norm(params))
        u_norm = torch.stack(torch._foreach_norm(updates))
        ratio = torch.where(w_norm > 0, torch.where(u_norm > 0, w_norm / u_norm, 1.0), 1.0)
        if trust_clip:
            ratio = torch.clamp(ratio, max=1.0)
        ratio = ratio.unbind(0)
        for owners, (p, *_, u) in chunks:
            torch._foreach_mul_(u, [ratio[i] for i in owners])
            torch._foreach_add_(p, u, alpha=-lr)


def lr_factor(step: int, total: int, warmup: int, decay: str) -> float:
    """Multiplier of the peak LR used for the update that takes the model from `step` to step+1.
    Warm-up is step / warmup as in the official schedule (the first update has LR 0, the peak is
    reached at update `warmup`)."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if decay == "constant":
        return 1.0
    r = float(decay.split("@", 1)[1])
    span = max(total - warmup, 1) / r
    progress = min((step - warmup) / span, r)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, train_cfg, step: int, total: int) -> None:
    """Set the LR of the update from `step` to step+1 (peak `train_cfg.lr`, its warm-up and decay)."""
    lr = train_cfg.lr * lr_factor(step, total, train_cfg.warmup_steps, train_cfg.decay)
    for g in opt.param_groups:
        g["lr"] = lr


def apply_update(model: nn.Module, opt: torch.optim.Optimizer, ema: "EMA", grad_clip: float | None) -> torch.Tensor:
    """The update after one global batch's gradients: clip, optimizer step, EMA. Returns the
    gradient norm before clipping. The trainer and the benchmarks share it, so a benchmark trains
    exactly as `rinkit train` does."""
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    opt.step()
    ema.update(model)
    return gnorm


class EMA:
    """Exponential moving average of parameters; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = dict(model.named_parameters())
        ema_p = [p for n, p in self.model.named_parameters()]
        torch._foreach_lerp_(ema_p, [src[n].detach() for n, _ in self.model.named_parameters()],
                             1.0 - self.decay)
        for (_, b), (_, sb) in zip(self.model.named_buffers(), model.named_buffers()):
            b.copy_(sb)
