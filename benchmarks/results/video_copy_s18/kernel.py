"""The copy kernel of a checkpoint on held-out clips at gamma: peak probability, and whether its argmax
displacement is the true one (the shift that best matches the last given frame to each true future frame)."""
import sys, torch
import torch.nn.functional as F
from rinkit.sampling import load_for_sampling
from rinkit.build import build_diffusion, resolve
model, cfg, dev = load_for_sampling(sys.argv[1], "cpu")
cfg = resolve(cfg); diffusion, opts = build_diffusion(cfg), cfg.options
ds = cfg.dataset.build(opts, cfg.data, "test")
x = torch.stack([ds[i][0] for i in range(64)])
fut, ctx, _ = cfg.impl.condition(x, opts)
det = model.detokenizer; m = det.m; k = 2 * m + 1
last = ctx[:, -1]
# the true shift per frame: argmin over d of the MSE between last moved by d and the future frame
P = F.pad(last, (m,) * 4, mode="replicate")
H, W = last.shape[-2:]
errs = torch.stack([((P[..., m + dy:m + dy + H, m + dx:m + dx + W][:, None] - fut) ** 2).mean((2, 3, 4))
                    for dy in range(-m, m + 1) for dx in range(-m, m + 1)], -1)  # B T d
true = errs.argmin(-1)
cap = {}
orig = det.kernel_logits
det.kernel_logits = lambda *a: cap.__setitem__("l", orig(*a)) or cap["l"]
g = torch.Generator().manual_seed(0)
eps = torch.randn(fut.shape, generator=g)
for gam in (0.01, 0.3, 0.7):
    gamma = torch.full((64,), gam)
    x_t = diffusion.add_noise(fut * diffusion.b, gamma, eps)
    with torch.no_grad():
        model(x_t, gamma, None, None, ctx)
    l = cap["l"]
    (tq, hq, wq), tp = det.grid, det.patch_size[0]
    if det.kernels:
        a = l.view(64, tq, tp, det.kernels, k * k)[:, :, :, 0].reshape(64, tq * tp, k * k).softmax(-1)
        peak, arg = a.max(-1)
        hit = (arg == true[:, :a.shape[1]]).float()
        # probability on the true displacement
        ptrue = a.gather(-1, true[:, :a.shape[1], None])[..., 0]
    else:
        a = l.view(64, tq, hq * wq, tp, k * k).softmax(-1).permute(0, 1, 3, 2, 4).reshape(64, tq * tp, hq * wq, k * k)
        peak, arg = a.max(-1)
        hit = (arg == true[:, :, None]).float()
        ptrue = a.gather(-1, true[:, :, None, None].expand(-1, -1, hq * wq, 1))[..., 0]
    print(f"gamma {gam}: peak prob per frame {[round(float(v), 3) for v in peak.reshape(64, tq * tp, -1).mean((0, 2))]}, "
          f"argmax = true shift {[round(float(v), 2) for v in hit.reshape(64, tq * tp, -1).mean((0, 2))]}, "
          f"prob on the true shift {[round(float(v), 3) for v in ptrue.reshape(64, tq * tp, -1).mean((0, 2))]}")
    if det.kernels:
        ky, kx = arg // k - m, arg % k - m
        ty, tx = true[:, :a.shape[1]] // k - m, true[:, :a.shape[1]] % k - m
        err = ((ky - ty).abs().maximum((kx - tx).abs())).float()
        print(f"   mean |argmax - true| (max-norm px) per frame {[round(float(v), 2) for v in err.mean(0)]}, "
              f"within 1 px {[round(float(v), 2) for v in (err <= 1).float().mean(0)]}")
