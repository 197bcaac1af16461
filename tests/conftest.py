import pytest

from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg


@pytest.fixture(scope="module")
def make_shards(tmp_path_factory):
    """Shard folders of small generated datasets (images 160-224 px on the long side)."""

    def make(images: int, seed: int, shard_samples: int, val_fraction: float):
        root = tmp_path_factory.mktemp("vg")
        generate_vg(root, SynthOptions(num_images=images, seed=seed, long_side_px=(160, 224)))
        out = tmp_path_factory.mktemp("shards")
        shard_vg(root, out, ShardOptions(shard_samples=shard_samples, val_fraction=val_fraction, workers=1))
        return out

    return make



@pytest.fixture(scope="module")
def make_trained_tiny(tmp_path_factory):
    """A tiny CLIP (no pretraining) with LoRA whose B and alpha conv are non-zero, as after
    training (so masks change its embeddings), and its tokenizer."""

    def make(phrases, image_size: int = 64):
        import torch

        from fctrain.config import LoraConfig, ModelConfig
        from fctrain.model import RGBAClip, apply_lora, create_tiny_model, load_clip

        tiny = create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", phrases, image_size=image_size)
        clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny), image_size=image_size))
        torch.manual_seed(0)
        model = apply_lora(RGBAClip(clip), LoraConfig(rank=4, alpha=8.0)).eval()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name or name.startswith("alpha_embedding"):
                    param.copy_(0.05 * torch.randn(param.shape, generator=generator))
        return model, tokenizer

    return make
