"""Running the registered metrics of a modality (rinkit_metrics) on a model's samples: the
end-of-training evaluation, the in-training proxy ("digits_fid-300") and the NFE study.
Image FID against a reference set is rinkit.evaluate.evaluator (`rinkit eval`)."""
from __future__ import annotations

import inspect

import torch

from rinkit.build import ConfigLike, resolve
from rinkit.errors import RinkitError
from rinkit.registry import metrics, owner
from rinkit.sampling import balanced_labels, conditioning_examples, generate


def metric_specs(cfg: ConfigLike) -> list:
    return [m for m in metrics(cfg.modality).values() if not m.tags or cfg.data.dataset in m.tags]


def evaluate_metrics(model, cfg: ConfigLike, n: int, device, seed: int = 1, batch_size: int = 256,
                     carry_latents: bool | None = None, **sampler_overrides) -> dict[str, float]:
    """Every metric registered for this modality and dataset, on n EMA samples (class-balanced
    labels for conditional models); sampler fields may be overridden (the NFE study does)."""
    cfg = resolve(cfg)
    specs = metric_specs(cfg)
    if not specs or n <= 0:
        return {}
    k = cfg.model.num_classes
    labels = balanced_labels(-(-n // k), k, "cpu")[:n] if k else None
    context = conditioning_examples(cfg, n, labels)
    x = generate(model, cfg, n, labels, seed, device, batch_size=batch_size, context=context,
                 carry_latents=carry_latents, **sampler_overrides)
    return score_samples(cfg, x, labels, context)


def score_samples(cfg: ConfigLike, x: torch.Tensor, labels: torch.Tensor | None = None,
                  context: torch.Tensor | None = None) -> dict[str, float]:
    """Every metric registered for this modality and dataset on given samples in [-1, 1] (from
    this model or another library's: benchmarks.time_to_fid scores rin-pytorch's this way)."""
    specs = metric_specs(cfg)
    out: dict[str, float] = {}
    opts = resolve(cfg).options
    by: dict[str, str] = {}
    for spec in specs:
        fn = spec.build(opts, cfg.data)
        # conditional modalities' metrics also see the given data (e.g. video frames), if they take it
        kw = {"context": context} if context is not None and takes_context(fn) else {}
        res = fn(x, labels, **kw)
        name = f"'{spec.modality}/{spec.name}' ({owner('metric', (spec.modality, spec.name))})"
        for key in res:
            if key in by:  # never let one metric's number silently replace another's
                raise RinkitError(f"metrics {by[key]} and {name} both return the key {key!r}; one must rename it")
            by[key] = name
        out.update(res)
    return out


def takes_context(fn) -> bool:
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def proxy_label(n: int) -> str:
    """'2k' for 2000 samples, '300' for 300: the suffix of a proxy metric (FID-2k)."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def proxy_metrics(model, cfg: ConfigLike, device) -> dict[str, float]:
    """The in-training proxy: the registered metrics on `train.metric_samples` samples with
    `train.metric_steps` sampling steps, keys suffixed with the sample count ("digits_fid-500")
    so nobody mistakes them for a 50k-sample evaluation."""
    t = cfg.train
    over = {"steps": t.metric_steps} if t.metric_steps else {}
    res = evaluate_metrics(model, cfg, t.metric_samples, device, seed=1, **over)
    return {f"{k}-{proxy_label(t.metric_samples)}": v for k, v in res.items()}
