"""Config -> objects: the denoiser (plugin tokenizer + RIN core + plugin detokenizer) and the
diffusion process. The only place that joins a modality plugin to the engine."""
from __future__ import annotations

from rinkit.config import Config, modality_options
from rinkit.diffusion import Diffusion
from rinkit.engine import RIN, Denoiser, EstimateEmbedding
from rinkit.registry import get_modality


def build_model(cfg: Config) -> Denoiser:
    modality, opts = get_modality(cfg.modality), modality_options(cfg)
    m = cfg.model
    core = RIN(interface_dim=m.interface_dim, latent_dim=m.latent_dim, num_latents=m.num_latents,
               blocks=m.blocks, layers_per_block=m.layers_per_block, latent_heads=m.latent_heads,
               rw_heads=m.rw_heads, latent_mlp_ratio=m.latent_mlp_ratio,
               interface_mlp_ratio=m.interface_mlp_ratio, dropout=m.dropout, drop_path=m.drop_path,
               num_classes=m.num_classes, self_cond=cfg.diffusion.self_cond_rate > 0,
               attention=m.attention, time_scale=m.time_scale, rw_dim=m.rw_dim, write_context=m.write_context)
    estimate = (EstimateEmbedding(modality.make_tokenizer(opts, m.interface_dim), m.interface_dim)
                if cfg.diffusion.self_cond_x0 else None)
    return Denoiser(modality.make_tokenizer(opts, m.interface_dim), core,
                    modality.make_detokenizer(opts, m.interface_dim), estimate)


def build_diffusion(cfg: Config) -> Diffusion:
    d = cfg.diffusion
    return Diffusion(d.train_schedule, d.sample_schedule, d.pred, d.input_scale, d.self_cond_rate,
                     d.cond_dropout, cfg.model.num_classes, d.self_cond_x0, d.context_dropout)


def sample_shape(cfg: Config) -> tuple[int, ...]:
    return tuple(get_modality(cfg.modality).sample_shape(modality_options(cfg)))
