"""Model accounting: parameters per part and FLOPs per forward pass, counted exactly.

FLOPs come from torch.utils.flop_counter.FlopCounterMode over one forward pass at batch 1 on
the meta device (no memory, works for the largest presets on a CPU): it counts matmuls,
convolutions and attention (2 FLOPs per multiply-add) and ignores elementwise ops, norms and
softmax, the convention of the papers' GFLOPs figures."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from rinkit.build import ConfigLike, build_model, resolve
from rinkit.engine.rin import tokens_and_state


def parameter_breakdown(model) -> dict[str, int]:
    core = model.core
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    parts = {
        "compute": sum(count(b.compute) for b in core.blocks),
        "read": sum(count(b.read) for b in core.blocks),
        "write": sum(count(b.write) + count(b.context_proj) for b in core.blocks),
        "interface_conv": sum(count(b.conv) for b in core.blocks),
        "self_cond": count(core.self_cond),
        "time_class_latents": count(core.time_embed) + count(core.class_embed) + core.latents.numel(),
        "tokenizer": count(model.tokenizer),
        "x0_estimate": count(model.estimate),
        "detokenizer": count(model.detokenizer),
    }
    parts = {k: v for k, v in parts.items() if v or k not in ("interface_conv", "x0_estimate")}
    parts["total"] = sum(parts.values())
    return parts


def model_info(cfg: ConfigLike) -> dict:
    cfg = resolve(cfg)
    if cfg.model.attention == "xformers":  # FLOPs are the maths, not the kernel (and xformers has no meta kernel)
        cfg = cfg.replace(model=cfg.model.model_copy(update={"attention": "sdpa"}))
    with torch.device("meta"):
        model = build_model(cfg)
    model.eval()
    shape = cfg.sample_shape
    x = torch.zeros(1, *shape, device="meta")
    gamma = torch.full((1,), 0.5, device="meta")
    labels = torch.zeros(1, dtype=torch.long, device="meta") if cfg.model.num_classes else None
    context = None
    if cfg.context_shape is not None:
        context = torch.zeros(1, *cfg.context_shape, device="meta")
    with torch.no_grad():
        tokens, _ = tokens_and_state(model.tokenizer(x, context), model.tokenizer)
        with FlopCounterMode(display=False) as counter:
            model(x, gamma, labels, None, context)
    params = parameter_breakdown(model)
    return {"name": cfg.name, "modality": cfg.modality, "params": params["total"],
            "gflops": counter.get_total_flops() / 1e9,
            "flops_counted": "one forward pass at batch 1 by torch FlopCounterMode: matmuls, convolutions, "
                             "attention (2 FLOPs per multiply-add); no elementwise ops, norms or softmax",
            "interface_tokens": tokens.shape[1],
            "latents": cfg.model.num_latents, "sample_shape": list(shape), "breakdown": params}
