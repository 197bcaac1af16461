"""A tiny CLIP that looks trained, for tests that need masks to change embeddings."""

import torch

from fctrain.config import LoraConfig, ModelConfig
from fctrain.model import RGBAClip, apply_lora, create_tiny_model, load_clip


BENCHMARK_PHRASES = ["the red box on the left", "a blue ball", "green thing", "a photo of a dog", "a photo of a cat"] * 3  # the benchmark tests' vocabulary


def trained_tiny(folder, phrases, image_size: int = 64):
    """A tiny CLIP (no pretraining) written to `folder`, with LoRA whose B and alpha conv are
    non-zero, as after training (so masks change its embeddings); returns (model, tokenizer)."""
    tiny = create_tiny_model(folder / "model", phrases, image_size=image_size)
    clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny), image_size=image_size))
    torch.manual_seed(0)
    model = apply_lora(RGBAClip(clip), LoraConfig(rank=4, alpha=8.0)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name.startswith("alpha_embedding"):
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    return model, tokenizer
