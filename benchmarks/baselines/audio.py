"""The audio baseline: an ADM-style 2-D U-Net on the log-mel spectrogram (1 x mels x frames), the
conventional spectrogram denoiser (Riffusion runs Stable Diffusion's U-Net on spectrogram images;
AudioLDM a 2-D U-Net on the latents of a mel-spectrogram VAE: convolutions over frequency x
time). It is
benchmarks/models.py's ADM U-Net (diffusers' UNet2DModel under rinkit's denoiser contract) with
its layout scaled to the spectrogram, as ADM[8] is for the 8x8 digits:

* four levels (64 -> 32 -> 16 -> 8 mel rows for the default 64 x 64 spectrogram), two residual
  blocks per level, scale-shift norm and residual up/down-sampling (ADM's ImageNet flags),
  self-attention at the two lowest levels, one head (too few channels for ADM's 64 per head);
* 24 base channels x (1, 2, 2, 2): 1.49M parameters with 4 classes, matched in parameters to the
  audio RIN (1.35M), as the digits benchmark matches its U-Net. Convolutions over every
  time-frequency bin make it ~18x RIN's forward FLOPs at this size; the equal-wall-clock
  protocol charges it for that in steps.
"""
from __future__ import annotations

SPECTROGRAM_ADM = dict(channels=24, mult=(1, 2, 2, 2), res_blocks=2, attn=(16, 8), head_channels=None,
                       dropout=0.0, scale_shift=True, resblock_updown=True,
                       source="ADM layout scaled to 64x64x1 log-mel spectrograms")


def spectrogram_unet(shape: tuple[int, int, int], num_classes: int = 0, width: float = 1.0,
                     depth: int | None = None):
    """The ADM-style U-Net for a (1, mels, frames) spectrogram; both sides must be divisible by 8."""
    from benchmarks.models import adm_unet
    c, h, w = shape
    if h % 8 or w % 8:
        raise ValueError(f"the spectrogram U-Net halves the spectrogram three times: {h} x {w} is not "
                         "divisible by 8")
    return adm_unet((h, w), c, num_classes, width, depth, layout=SPECTROGRAM_ADM)


def unet_entry(cfg, width: float = 1.0, depth: int | None = None):
    """An `Entry` (benchmarks/models.py) for an audio config: the same objective, schedules and label
    dropout as the config's RIN, minus self-conditioning (a U-Net has no latents to carry)."""
    from benchmarks.models import Entry, without_self_cond
    from rinkit.build import build_diffusion, sample_shape
    if cfg.modality != "audio":
        raise ValueError(f"the spectrogram U-Net is for audio; config {cfg.name!r} is {cfg.modality}")
    d = without_self_cond(build_diffusion(cfg))
    shape, k = tuple(sample_shape(cfg)), cfg.model.num_classes
    name = "U-Net ADM-spectrogram" + (f" (width {width:g})" if width != 1.0 or depth else "")
    return Entry(name, "unet", lambda: spectrogram_unet(shape, k, width, depth), d, shape, k,
                 note=SPECTROGRAM_ADM["source"])
