"""A miniature CLIP pretraining for the tiny model, so that it can stand in for a real checkpoint.

Real runs start from OpenAI CLIP, which already knows colours and shapes and whose frozen text
tower maps captions to meaningful directions. A tiny model with random weights has neither, and
a frozen random text tower gives the image side arbitrary targets to chase. So when the trainer
creates the tiny model it first trains BOTH towers, like CLIP, on (region crop, phrase) pairs cut
from the training shards, no alpha; with `full_image_ratio` (model.tiny_pretrain_full_images; the
demo uses 0.5) some images are also seen whole, captioned with one of their region phrases, as
CLIP saw whole images. The result knows what "a red triangle" looks like but not where to look in
a full scene, which is exactly what LoRA + alpha then has to learn; the whole-image baseline stays
at chance among one image's regions.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from fcdata import guard, keys
from fcdata.captions import tokenize_captions
from fcdata.errors import CountingHandler
from fcdata.loader import phrase_key
from fcdata.transforms import letterbox, normalize_images
from fctrain.loss import region_contrastive_loss


@dataclass(frozen=True)
class PretrainOptions:
    steps: int = 300  # optimiser steps
    batch_size: int = 64  # crops per step
    crops_per_image: int = 4  # distinct-phrase regions cut from each image
    lr: float = 1e-3  # AdamW peak learning rate (warm-up 10%, cosine)
    margin: tuple[float, float] = (0.1, 1.5)  # context around each box, a share of its side, drawn per crop
    # Chance that an image also gives a whole-image pair (captioned with one of its region phrases):
    # CLIP was trained on whole images, so its text space is not shaped on crops alone.
    full_image_ratio: float = 0.0
    seed: int = 0


def crop_pairs(shards: list[str], size: int, options: PretrainOptions) -> Iterator[tuple[np.ndarray, str]]:
    """Endless (size x size x 3 uint8 crop, phrase) pairs, cycling through the shards; unreadable
    shards and samples are skipped (counted, logged), and a pass that yields nothing is an error."""
    rng = random.Random(options.seed)
    handler = CountingHandler("tiny-model pretraining")
    while True:
        produced = 0
        for pairs in guard.decoded(guard.read_raw(shards, handler), functools.partial(_sample_crops, rng=rng, size=size, options=options), handler):
            for pair in pairs:
                produced += 1
                yield pair
        guard.require_any(produced, handler, "shards for tiny-model pretraining")


def _sample_crops(sample: dict, rng: random.Random, size: int, options: PretrainOptions) -> list[tuple[np.ndarray, str]]:
    """Crops of up to crops_per_image distinct-phrase regions of one sample, with their phrases."""
    from PIL import Image

    meta = json.loads(sample[keys.META])
    regions = meta["regions"]
    distinct = list({p.lower(): k for k, p in reversed(list(enumerate(regions["phrase"])))}.values())
    image = Image.open(io.BytesIO(sample[keys.IMAGE])).convert("RGB")
    crops = []
    for k in rng.sample(distinct, min(options.crops_per_image, len(distinct))):
        x0, y0, x1, y1 = regions["box"][k]
        margin = rng.uniform(*options.margin)  # objects seen tight and amid their scene
        pad_x, pad_y = margin * (x1 - x0), margin * (y1 - y0)
        box = (max(0, x0 - pad_x), max(0, y0 - pad_y), min(image.width, x1 + pad_x), min(image.height, y1 + pad_y))
        crops.append((letterbox(np.asarray(image.crop(box)), _NO_MASKS, size)[0], regions["phrase"][k]))
    if options.full_image_ratio and rng.random() < options.full_image_ratio:
        crops.append((letterbox(np.asarray(image), _NO_MASKS, size)[0], regions["phrase"][rng.choice(distinct)]))
    return crops


_NO_MASKS = np.zeros((0, 1, 1), np.uint8)


def pretrain_tiny_clip(clip, tokenizer, shards: list[str], options: PretrainOptions, report: Callable[[int, float], None] | None = None) -> None:
    """Train every parameter of `clip` on region crops in place (CPU or wherever it lives)."""
    size = clip.config.vision_config.image_size
    clip.train()
    clip.requires_grad_(True)
    device = next(clip.parameters()).device
    optimizer = torch.optim.AdamW(clip.parameters(), lr=options.lr, weight_decay=0.1)
    warmup = max(1, options.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / options.steps))))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        clip.logit_scale.data.fill_(math.log(1 / 0.07))  # CLIP's own start; learned, clamped at 100
        pairs = crop_pairs(shards, size, options)
        for step in range(options.steps):
            batch = [next(pairs) for _ in range(options.batch_size)]
            pixels = torch.from_numpy(np.stack([crop for crop, _ in batch])).permute(0, 3, 1, 2).to(device)
            phrases = [phrase for _, phrase in batch]
            tokens = tokenize_captions(tokenizer, phrases).to(device)
            image_features = clip.visual_projection(clip.vision_model(pixel_values=normalize_images(pixels)).pooler_output)
            text_pooled = clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
            text_features = clip.text_projection(text_pooled)
            key_tensor = torch.tensor([phrase_key(p) for p in phrases], device=device)
            # Only rank 0 pretrains (the others wait at a barrier): no collectives here.
            loss = region_contrastive_loss(
                image_features, text_features, key_tensor, clip.logit_scale.exp(), across_ranks=False
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            if report and (step + 1) % 50 == 0:
                report(step + 1, float(loss))
    clip.eval()
