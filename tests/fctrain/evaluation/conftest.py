"""A tiny trained-looking model for the benchmark tests (their data: fcdata.synth_benchmarks)."""

import pytest
import torch

from fctrain.config import LoraConfig, ModelConfig
from fctrain.model import RGBAClip, apply_lora, create_tiny_model, load_clip

SIZE = 64
PHRASES = ["the red box on the left", "a blue ball", "green thing", "a photo of a dog", "a photo of a cat"] * 3

@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """A tiny LoRA model whose LoRA B and alpha conv are non-zero (as after training), and its tokenizer."""
    tiny = create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", PHRASES, image_size=SIZE)
    clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny), image_size=SIZE))
    torch.manual_seed(0)
    model = apply_lora(RGBAClip(clip), LoraConfig(rank=4, alpha=8.0)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name.startswith("alpha_embedding"):
                param.copy_(0.05 * torch.randn(param.shape, generator=g))
    return model, tokenizer
