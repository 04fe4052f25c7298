"""The built-in video modality: space-time patches, frame-conditional prediction, moving digits,
decord-decoded video folders, GIF / MP4 / PNG film strips, FVD and a moving-digits proxy.

Data are clips (T, C, H, W) in [-1, 1]. With `context_frames` = k > 0 the first k frames are
given clean and the model generates the other T - k (the RIN Kinetics-600 setting: 5 -> 11);
k = 0 is unconditional generation. Registered through the `rinkit` entry-point group."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from rinkit.plugin import DatasetSpec, MetricSpec, Modality, hookimpl


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frames: int = Field(16, ge=1)              # clip length T (context + predicted)
    context_frames: int = Field(0, ge=0)       # k given frames; 0 = unconditional
    frame_size: PositiveInt | tuple[PositiveInt, PositiveInt] = 32
    channels: int = Field(1, ge=1)
    patch_size: int = Field(4, ge=1)           # spatial patch p
    time_patch: int = Field(2, ge=1)           # temporal patch (the official `seq_stride`)
    pos_emb: Literal["learned", "sincos", "sincos+learned"] = "learned"
    # Conditioning by concatenation (as MCVD and image-to-video models do): every frame's stem
    # also sees the last given frame at the same pixels, so a token can copy what was there
    # without routing it through the latents. Needs context_frames > 0.
    context_concat: bool = False
    # How many of the last given frames are concatenated (2 shows the local motion in the stem).
    context_concat_frames: int = Field(1, ge=1)
    # Margin m (px) of the window in which a token sees the concatenated given frames: a separate
    # conv with kernel p + 2m and stride p, so a token can copy content that has moved up to ~m px
    # since the last given frame, without the detour through the latents. 0 = the same pixels.
    context_window: int = Field(0, ge=0)
    # Margin m (px) of the readout's copy from the last given frame (VideoDetokenizer): each
    # predicted token picks, per frame, a displacement of up to m px (a softmax over the
    # (2m+1)^2 of them) and the last given frame moved by it is added to its pixels; an x0
    # estimate, so it needs diffusion.pred=x0. 0 = off (the official linear readout only).
    copy_window: int = Field(0, ge=0)
    # 0: each token its own displacement distribution (DNA-like); J > 0: J per frame for the
    # whole clip, mixed per token (CDNA), so all of a rigidly moving object moves alike. This and
    # every copy_* option below apply with copy_window > 0 (so copy_window=0 alone turns the copy off).
    copy_kernels: int = Field(0, ge=0)
    # A displacement distribution is free (a logit per displacement) or a Gaussian (a centre and
    # a width per kernel and frame: a soft argmax, whose centre a linear map of a velocity reaches).
    copy_shape: Literal["free", "gaussian"] = "free"
    # r > 0: the copy kernels also read the clip's measured motion, so it reaches them without the
    # detour through the latents: per earlier given frame j steps back, the displacement at which
    # it best matches the last one (the peak of their cost volume within j*r px, FlowNetC's
    # correlation layer over the whole frame) and the match's correlation. Best with copy_shape
    # gaussian (a centre is a linear map of a velocity). Needs copy_window > 0 and two given
    # frames. 0 = off; it did not beat the default in s18's runs (docs/video.md).
    copy_motion: int = Field(0, ge=0)
    # Gaussian copy kernels that start on the classical constant-velocity extrapolation: predicted
    # frame f's centre is (f + 1) times the last measured step (within copy_motion px/frame) plus
    # the learned centre, and the kernels start narrow (0.35 px), so the copy is a sharp moved
    # frame from step 0 and the network learns corrections (bounces) instead of the motion.
    # Needs copy_motion > 0 and copy_shape gaussian.
    copy_extrapolate: bool = False
    # r > 0: with context_concat, each predicted frame's stem sees the concatenated given frames
    # moved by (f + 1) times the last measured step (searched within r px/frame) instead of
    # where they were. 0 = off.
    context_extrapolate: int = Field(0, ge=0)
    # With copy_window: the x0 estimate composites the copy and the linear readout under a
    # per-pixel mask, g * copy + (1 - g) * readout (Finn et al.'s CDNA compositing masks), instead
    # of adding the readout to the copy as a residual; where the copy is right, a saturated mask
    # passes it untouched, where an additive residual must output an exact zero. False = add.
    # Measured worse (s20: the loss stalled at 1.6x the additive run's; docs/video.md).
    copy_composite: bool = False
    fps: float = Field(8.0, gt=0)              # for GIF / MP4 output
    frame_stride: int = Field(1, ge=1)         # clip sampling from real video: every n-th frame
    digit_size: int | None = Field(None, ge=2)  # moving digits: digit side (None = half the canvas)
    data_seed: int = 0                         # moving digits: trajectories are a function of it

    @property
    def size(self) -> tuple[int, int]:
        s = self.frame_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def predicted_frames(self) -> int:
        return self.frames - self.context_frames

    @property
    def slots(self) -> tuple[int, int]:
        """Temporal token slots of (context, predicted) frames: each part is zero-padded at the
        end to a multiple of time_patch (TF 'SAME' padding, as in the official video model)."""
        return (math.ceil(self.context_frames / self.time_patch),
                math.ceil(self.predicted_frames / self.time_patch))

    @model_validator(mode="after")
    def _check(self):
        if self.context_frames >= self.frames:
            raise ValueError(f"context_frames {self.context_frames} leaves no frame to predict "
                             f"of frames {self.frames}")
        if self.context_concat and self.context_frames == 0:
            raise ValueError("context_concat needs context_frames > 0 (there is no given frame to concatenate)")
        if self.copy_window and self.context_frames == 0:
            raise ValueError("copy_window needs context_frames > 0 (it copies from the last given frame)")
        # (the copy_* options are moot without the copy: copy_window=0 turns it all off)
        if self.copy_window and self.copy_motion and self.context_frames < 2:
            raise ValueError("copy_motion needs context_frames >= 2 (it correlates the last given frame "
                             "with the earlier ones)")
        if self.copy_window and self.copy_extrapolate and (not self.copy_motion or self.copy_shape != "gaussian"):
            raise ValueError("copy_extrapolate needs copy_motion > 0 (the search radius of the measured step) "
                             "and copy_shape gaussian (a centre to start from)")
        if self.context_extrapolate and (not self.context_concat or self.context_window
                                         or self.context_frames < 2):
            raise ValueError("context_extrapolate needs context_concat: true, no context_window and "
                             "context_frames >= 2 (it measures the step between the last two given frames)")
        if (self.context_window or self.context_concat_frames > 1) and not self.context_concat:
            raise ValueError("context_window and context_concat_frames need context_concat: true")
        if self.context_concat and self.context_concat_frames > self.context_frames:
            raise ValueError(f"context_concat_frames {self.context_concat_frames} exceeds context_frames "
                             f"{self.context_frames}")
        if any(v % self.patch_size for v in self.size):
            raise ValueError(f"frame_size {self.frame_size} is not divisible by patch_size {self.patch_size}")
        if self.digit_size is not None and self.digit_size > min(self.size):
            raise ValueError(f"digit_size {self.digit_size} exceeds frame_size {self.frame_size}")
        return self


def _tokenizer(opts: VideoOptions, dim: int):
    from rinkit_plugins.video.tokenizer import VideoTokenizer
    return VideoTokenizer(opts, dim)


def _detokenizer(opts: VideoOptions, dim: int):
    from rinkit_plugins.video.tokenizer import VideoDetokenizer
    return VideoDetokenizer(opts, dim)


def condition(x, opts: VideoOptions):
    """Clean clips (B, T, C, H, W) -> (frames to generate, given frames, loss mask). The target
    holds only the predicted frames, so the loss covers them alone (no mask needed)."""
    k = opts.context_frames
    if k == 0:
        return x, None, None
    return x[:, k:], x[:, :k], None


def _write(samples, labels, path, options, context=None, **kw):
    from rinkit_plugins.video.writer import write_videos
    return write_videos(samples, labels, path, options, context=context, **kw)


def _moving_digits(options, data_cfg, split="train"):
    from rinkit_plugins.video.data import moving_digits
    return moving_digits(options, data_cfg, split)


def _video_folder(options, data_cfg, split="train"):
    from rinkit_plugins.video.data import video_folder
    return video_folder(options, data_cfg, split)


def _frame_folders(options, data_cfg, split="train"):
    from rinkit_plugins.video.data import frame_folders
    return frame_folders(options, data_cfg, split)


def _digits_metric(options, data_cfg):
    from rinkit_plugins.video.metrics import MovingDigitsMetric
    return MovingDigitsMetric(options)


def _fvd_metric(options, data_cfg):
    from rinkit_plugins.video.metrics import FVDMetric
    return FVDMetric(options, data_cfg)


def _token_view(values, x, options, **kw):  # rinkit routing
    from rinkit_plugins.video.view import token_view
    return token_view(values, x, options, **kw)


@hookimpl
def rinkit_modalities():
    return [Modality(
        name="video", description="video clips (B, T, C, H, W): space-time patches, k given frames; GIF/MP4/PNG",
        options=VideoOptions, make_tokenizer=_tokenizer, make_detokenizer=_detokenizer,
        sample_shape=lambda o: (o.predicted_frames, o.channels, *o.size), write_samples=_write,
        default_preset="video-digits", condition=condition,
        context_shape=lambda o: (o.context_frames, o.channels, *o.size), invertible=True,
        token_view=_token_view)]


@hookimpl
def rinkit_datasets():
    return [
        DatasetSpec("video", "moving_digits", "scikit-learn digits moving and bouncing in a canvas "
                    "(deterministic from data_seed; class = digit)", _moving_digits, num_classes=10,
                    reads_path=False),
        DatasetSpec("video", "video_folder", "video files under data.path (decord), clips of `frames` "
                    "every `frame_stride` frames; data.path/{train,test} if present", _video_folder),
        DatasetSpec("video", "frame_folders", "one folder of frame images per video under data.path",
                    _frame_folders),
    ]


@hookimpl
def rinkit_metrics():
    return [
        MetricSpec("video", "moving_digits", "per-frame digits-FID of the predicted frames, class "
                   "kept, and bouncing-path motion error", _digits_metric, tags=("moving_digits",)),
        MetricSpec("video", "fvd", "Fréchet Video Distance with I3D (local weights: RINKIT_I3D_WEIGHTS)",
                   _fvd_metric, tags=("video_folder", "frame_folders")),
    ]
