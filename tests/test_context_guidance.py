"""Classifier-free guidance on clean conditioning data (diffusion.context_dropout, off by
default): training drops the context to the null context, sampling contrasts the two."""
import pytest
import torch

from rinkit.config import load_config
from rinkit.diffusion import Diffusion, sample
from rinkit.diffusion.samplers import denoise
from rinkit.sampling import guided


class ContextModel(torch.nn.Module):
    """Predicts the mean of its context per example (so guidance arithmetic is visible) and
    records every context and label batch it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))
        self.contexts, self.labels = [], []

    def forward(self, x, gamma, labels=None, prev=None, context=None):
        self.contexts.append(context)
        self.labels.append(labels)
        out = x * 0 + self.w * context.flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))
        return out, torch.zeros(x.shape[0], 2, 3)


def test_training_drops_the_context_to_zeros_for_the_given_fraction_in_both_passes():
    torch.manual_seed(0)
    m, d = ContextModel(), Diffusion(context_dropout=0.25)
    ctx = torch.rand(4000, 2, 1, 2, 2) + 0.5  # never zero
    d.loss(m, torch.zeros(4000, 2, 1, 2, 2), None, ctx)
    c1, c2 = m.contexts
    assert torch.equal(c1, c2)  # the same (dropped) context in pass 1 and pass 2
    dropped = (c1.flatten(1) == 0).all(1)
    assert 0.23 < dropped.float().mean() < 0.27
    assert torch.equal(c1[~dropped], ctx[~dropped])
    m, few = ContextModel(), ctx[:8]
    Diffusion().loss(m, torch.zeros(8, 2, 1, 2, 2), None, few)
    assert m.contexts[0] is few  # off by default: the context is passed as it is


def test_guidance_contrasts_the_context_with_the_null_context():
    d = Diffusion(pred="eps", context_dropout=0.1)
    x, g = torch.zeros(2, 1, 2, 2), torch.tensor([0.5, 0.5])
    ctx = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1).expand(2, 1, 1, 2, 2)
    m = ContextModel()
    _, eps, _ = denoise(m, d, x, g, None, None, guidance=2.0, context=ctx, clip=False)
    assert torch.equal(m.contexts[0][2:], torch.zeros_like(ctx))  # second half: the null context
    torch.testing.assert_close(eps[:, 0, 0, 0], 3.0 * torch.tensor([1.0, 3.0]) - 2.0 * 0.0)
    with pytest.raises(ValueError, match="context_dropout"):
        denoise(ContextModel(), Diffusion(pred="eps"), x, g, None, None, guidance=2.0, context=ctx)


def test_with_labels_and_context_the_unconditional_half_drops_both():
    d = Diffusion(pred="eps", context_dropout=0.1, num_classes=10)
    m = ContextModel()
    ctx = torch.ones(2, 1, 1, 2, 2)
    denoise(m, d, torch.zeros(2, 1, 2, 2), torch.tensor([0.5, 0.5]), torch.tensor([3, 4]), None,
            guidance=1.0, context=ctx)
    assert m.labels[0].tolist() == [3, 4, 10, 10] and torch.equal(m.contexts[0][2:], torch.zeros_like(ctx))
    m = ContextModel()  # class guidance only (no context dropout): the context stays in both halves
    denoise(m, Diffusion(pred="eps", num_classes=10), torch.zeros(2, 1, 2, 2), torch.tensor([0.5, 0.5]),
            torch.tensor([3, 4]), None, guidance=1.0, context=ctx)
    assert m.labels[0].tolist() == [3, 4, 10, 10] and torch.equal(m.contexts[0], torch.cat([ctx, ctx]))


def test_sampling_applies_the_configured_guidance_to_context_dropout_models():
    assert not guided(load_config("video-digits", None, ["diffusion.context_dropout=0"]))
    assert guided(load_config("video-digits", None, ["diffusion.context_dropout=0.1"]))
    m = ContextModel()
    sample(m, Diffusion(context_dropout=0.1), (2, 1, 2, 2), steps=3, guidance=1.5,
           context=torch.ones(2, 1, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert all(c.shape[0] == 4 for c in m.contexts)  # both halves at every step
