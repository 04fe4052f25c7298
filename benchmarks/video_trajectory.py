"""Where a frame-conditional video model loses the digit: its x0 estimate on noised *true*
futures (what training sees) against the estimate along the sampler's own trajectory, with the
self-conditioning latents fed in different ways (docs/video.md, "Diagnosis").

    python -m benchmarks.video_trajectory CHECKPOINT [--clips 64] [--steps 50] [--tables A]

Tables (held-out clips, their true futures as the reference; the future of a moving digit is a
function of its given frames, so the MSE to it is meaningful):
  A. noised true futures at fixed gamma: pass 1 (no previous latents) and pass 2 (latents of
     pass 1 at the same x_t), exactly the two passes of training;
  B. the sampler's trajectory, by step, for each way of feeding the previous latents:
     carry (the default: the latents of the previous step), none (no self-conditioning), fresh
     (both training passes at the current x_t, 2 NFE per step), and `oracle` (the true future
     noised to each step's gamma, latents carried along it);
  C. hand-over: the sampler driven by the true future for its first k steps (an oracle whose
     prediction is that future, so x_t at step k is the true future noised to gamma_k, the DDPM
     posterior given it) and by the model from step k on; the final sample's MSE / class kept
     say from which noise level on the model can finish a clip it did not start.
`--split train` runs the same on training clips (memorised digits vs copied ones)."""
from __future__ import annotations

import argparse

import torch

from rinkit.build import build_diffusion
from rinkit.diffusion import sample

GAMMAS = (0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)


class Probe:
    """Scores frame estimates: MSE to the true future and the fraction classified as the digit."""

    def __init__(self, opts, future: torch.Tensor, labels: torch.Tensor):
        from rinkit.plugin import digits_classifier
        from rinkit_plugins.video.metrics import MovingDigitsMetric
        self.metric, self.future, self.labels = MovingDigitsMetric(opts), future, labels
        self.net = digits_classifier()

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) whether each predicted frame is classified as its clip's digit."""
        x = x.float().clamp(-1, 1)
        b, t = x.shape[:2]
        cls = self.net.head(torch.from_numpy(self.metric.features(x)).float()).argmax(1).view(b, t)
        return (cls == self.labels[:, None]).float()

    def mse(self, x: torch.Tensor) -> float:
        return float(((x.float().clamp(-1, 1) - self.future) ** 2).mean())

    def __call__(self, x: torch.Tensor) -> tuple[float, float]:
        return self.mse(x), float(self.kept(x).mean())


def figure(path: str, model, diffusion, ctx, fut, eps, gammas=(0.01, 0.1, 0.35, 0.7), rows: int = 6) -> None:
    """A PNG, one row per clip: the given frames, the true future, then the x0 estimate (two
    training passes) from the true future noised to each gamma; each block is a frame strip."""
    import numpy as np
    from PIL import Image
    b, x0_sc = diffusion.b, diffusion.self_cond_x0
    ctx, fut, eps = ctx[:rows], fut[:rows], eps[:rows]
    strips = [ctx, fut]
    for gam in gammas:
        gamma = torch.full((len(fut),), gam)
        x_t = diffusion.add_noise(fut * b, gamma, eps)
        kw = {"prev_x0": torch.zeros_like(x_t)} if x0_sc else {}
        p1, z = model(x_t, gamma, None, None, ctx, **kw)
        if x0_sc:
            kw = {"prev_x0": diffusion.to_x0_eps(p1.float(), x_t, gamma, clip=True)[0]}
        p2, _ = model(x_t, gamma, None, z, ctx, **kw)
        strips.append(diffusion.to_x0_eps(p2.float(), x_t, gamma, clip=True)[0] / b)
    h = fut.shape[-2]
    sep = torch.zeros(h, 2)  # a grey line between the blocks
    row = [torch.cat([part for s in strips for part in (torch.cat(list(s[i].mean(1)), dim=-1), sep)], dim=-1)
           for i in range(len(fut))]
    img = ((torch.cat(row, dim=0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    Image.fromarray(np.ascontiguousarray(img)).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def policy(model, diffusion, name: str):
    """A denoiser whose self-conditioning inputs (previous latents, and the previous x_0
    estimate for x0-self-conditioned models) follow `name` (see the module docstring)."""
    if name == "carry":
        return model

    def none(x, g, lab, prev, ctx, **kw):
        kw = {k: torch.zeros_like(v) for k, v in kw.items()}
        return model(x, g, lab, None, ctx, **kw)

    def fresh(x, g, lab, prev, ctx, **kw):
        kw = {k: torch.zeros_like(v) for k, v in kw.items()}
        pred, z = model(x, g, lab, None, ctx, **kw)
        if kw:
            kw = {"prev_x0": diffusion.to_x0_eps(pred.float(), x, g, clip=True)[0]}
        return model(x, g, lab, z, ctx, **kw)
    return {"none": none, "fresh": fresh}[name]


def handover(model, diffusion, future, k0: int):
    """The sampler sees the true future's prediction for steps < k0 (the model still runs, so its
    latents are carried as usual) and the model's own from step k0 on."""
    state = {"k": 0}

    def fn(x, g, lab, prev, ctx, **kw):
        pred, z = model(x, g, lab, prev, ctx, **kw)
        if state["k"] < k0:
            b = diffusion.b
            eps = (x - g.sqrt().view(-1, 1, 1, 1, 1) * future * b) / (1 - g).sqrt().view(-1, 1, 1, 1, 1)
            pred = diffusion.target(future * b, eps, g)
        state["k"] += 1
        return pred, z
    return fn


@torch.no_grad()
def run(path: str, clips: int, steps: int, seed: int = 0, split: str = "test", fig: str | None = None,
        tables: str = "ABC") -> None:
    from rinkit.sampling import load_for_sampling
    model, cfg, dev = load_for_sampling(path, "cpu")
    diffusion, opts = build_diffusion(cfg), cfg.options
    ds = cfg.dataset.build(opts, cfg.data, split)
    x = torch.stack([ds[i][0] for i in range(clips)])
    labels = torch.tensor([ds[i][1] for i in range(clips)])
    fut, ctx, _ = cfg.impl.condition(x, opts)
    probe, b = Probe(opts, fut, labels), diffusion.b
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(fut.shape, generator=g)

    x0_sc = diffusion.self_cond_x0
    zero = {"prev_x0": torch.zeros_like(fut)} if x0_sc else {}

    def sc_input(pred, x_t, gamma):  # pass 2's estimate input, as in training
        return {"prev_x0": diffusion.to_x0_eps(pred.float(), x_t, gamma, clip=True)[0]} if x0_sc else {}

    if fig:
        figure(fig, model, diffusion, ctx, fut, eps)
    print("A. noised true futures: x0-estimate MSE / class kept (pass 2's class kept also per predicted frame, "
          "the first 4)")
    print("| gamma | pass 1 MSE | pass 1 class | pass 2 MSE | pass 2 class | pass 2 class, frames 1-4 "
          "| blank given, pass 2 MSE |")
    print("|---|---|---|---|---|---|---|")
    for gam in GAMMAS:
        gamma = torch.full((clips,), gam)
        x_t = diffusion.add_noise(fut * b, gamma, eps)
        p1, z = model(x_t, gamma, None, None, ctx, **zero)
        p2, _ = model(x_t, gamma, None, z, ctx, **sc_input(p1, x_t, gamma))
        blank = -torch.ones_like(ctx)
        q1, zb = model(x_t, gamma, None, None, blank, **zero)
        pb, _ = model(x_t, gamma, None, zb, blank, **sc_input(q1, x_t, gamma))
        est = [diffusion.to_x0_eps(p.float(), x_t, gamma, clip=True)[0] / b for p in (p1, p2, pb)]
        (m1, c1), m2, mb = probe(est[0]), probe.mse(est[1]), probe.mse(est[2])
        kept2 = probe.kept(est[1])  # classified once: its mean and its first four frames
        c2 = float(kept2.mean())
        frames = " / ".join(f"{v:.2f}" for v in kept2.mean(0)[:4].tolist())
        print(f"| {gam:.2f} | {m1:.4f} | {c1:.2f} | {m2:.4f} | {c2:.2f} | {frames} | {mb:.4f} |")
    if tables == "A":
        return

    s = cfg.sampler
    marks = sorted({0, 1, 2, 5, 10, 15, 20, 25, 30, 40, steps - 1} & set(range(steps)))
    sched = diffusion.sample_schedule
    gam_at = [float(sched(torch.tensor([1.0 - k / steps]))[0]) for k in range(steps)]
    print(f"\nB. sampler trajectory ({s.name}, {steps} steps, {s.ddpm_variance} variance): "
          "x0-estimate MSE / class kept at step k (gamma of its input)")
    rows = {}
    for name in ("carry", "none", "fresh", "oracle"):
        track = {}
        if name == "oracle":
            prev, kw = None, {}
            for k in range(steps):
                gamma = torch.full((clips,), gam_at[k])
                x_t = diffusion.add_noise(fut * b, gamma, eps)
                pred, prev = model(x_t, gamma, None, prev, ctx, **(kw if k else zero))
                kw = sc_input(pred, x_t, gamma)
                if k in marks:
                    track[k] = probe(diffusion.to_x0_eps(pred.float(), x_t, gamma, clip=True)[0] / b)
        else:
            gens = [torch.Generator().manual_seed(seed * 100003 + i) for i in range(clips)]
            sample(policy(model, diffusion, name), diffusion, fut.shape, None, steps=steps, sampler=s.name, eta=s.eta,
                   ddpm_variance=s.ddpm_variance, context=ctx, generator=gens,
                   callback=lambda k, x0: track.__setitem__(k, probe(x0 / b)) if k in marks else None)
        rows[name] = track
    print("| step | gamma | " + " | ".join(rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for k in marks:
        print(f"| {k} | {gam_at[k]:.3f} | " + " | ".join(f"{r[k][0]:.4f} / {r[k][1]:.2f}" for r in rows.values()) + " |")

    print("\nC. hand-over from the true future to the model at step k: final MSE / class kept")
    print("| k | gamma_k | final MSE | final class kept |\n|---|---|---|---|")
    for k0 in sorted({0, steps // 10, steps // 5, 3 * steps // 10, 2 * steps // 5, steps // 2, 3 * steps // 5, 4 * steps // 5}):
        gens = [torch.Generator().manual_seed(seed * 100003 + i) for i in range(clips)]
        out = sample(handover(model, diffusion, fut, k0), diffusion, fut.shape, None, steps=steps, sampler=s.name,
                     eta=s.eta, ddpm_variance=s.ddpm_variance, context=ctx, generator=gens)
        m, c = probe(out)
        print(f"| {k0} | {gam_at[k0]:.3f} | {m:.4f} | {c:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.video_trajectory", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("test", "train"), default="test")
    ap.add_argument("--figure", metavar="PNG", help="also write the x0 estimates of 6 clips at 4 noise levels")
    ap.add_argument("--tables", choices=("A", "ABC"), default="ABC", help="A: only the noised-true-future table (no sampling)")
    args = ap.parse_args(argv)
    # run() is no_grad itself; a global torch.set_grad_enabled(False) would outlive main() in the caller
    run(args.checkpoint, args.clips, args.steps, args.seed, args.split, args.figure, args.tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
