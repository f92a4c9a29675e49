"""Chinese-CLIP's contrastive loss, and its ``--accum-freq`` gradient cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOGIT_SCALE_MAX = math.log(100)  # cn_clip clamps to 4.6052 = ln(100), as the CLIP paper does


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Mean of image→text and text→image cross-entropy over ``logit_scale × img @ txtᵀ``.

    ``logit_scale`` is the already exponentiated scale (what ``CLIP.forward`` returns). Logits are
    computed in fp32 even under autocast: a 100× scale on bf16 features loses the ranking.
    """
    img, txt = image_features.float(), text_features.float()
    logits_per_image = logit_scale.float() * img @ txt.t()
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


def clamp_logit_scale(model) -> None:
    """After every optimizer step, as cn_clip does."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)


def accum_loss(
    chunk_image: torch.Tensor,
    chunk_text: torch.Tensor,
    logit_scale: torch.Tensor,
    cached_image: list[torch.Tensor],
    cached_text: list[torch.Tensor],
    index: int,
) -> torch.Tensor:
    """Loss over all cached micro-batches with micro-batch ``index`` replaced by features that carry
    gradient: summed over ``index``, the gradients equal those of one big batch (cn_clip's get_loss)."""
    image = torch.cat(cached_image[:index] + [chunk_image] + cached_image[index + 1 :])
    text = torch.cat(cached_text[:index] + [chunk_text] + cached_text[index + 1 :])
    return clip_loss(image, text, logit_scale)
