"""GPU-only checks (skipped without CUDA): the device paths CPU runs never exercise."""

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_prefetcher_side_stream_gives_the_cpu_result(make_shards):
    """The CUDA prefetcher (pinned copy + normalisation on a side stream) equals the CPU path."""
    from fcdata.loader import Prefetcher, RegionStream, make_loader, resolve_shards
    from fcdata.options import LoaderOptions
    from fctrain.tokenizer import build_tokenizer

    shards = resolve_shards(str(make_shards(images=20, seed=1, shard_samples=8, val_fraction=0.0)))
    tokenizer = build_tokenizer(["a red circle", "a blue square"], Path(shards[0]).parent / "tok")
    options = LoaderOptions(batch_size=8, workers=0, shuffle_buffer=4)
    on_cpu = next(iter(Prefetcher(make_loader(RegionStream(shards, options, tokenizer, 64)), torch.device("cpu"))))
    on_gpu = next(iter(Prefetcher(make_loader(RegionStream(shards, options, tokenizer, 64)), torch.device("cuda"))))
    torch.testing.assert_close(on_gpu.pixel_values.cpu(), on_cpu.pixel_values)
    torch.testing.assert_close(on_gpu.alpha.cpu(), on_cpu.alpha)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_steps_run_in_mixed_precision_with_fused_adamw(make_shards, tmp_path, amp):
    """A few bf16 / fp16 (scaled) steps on CUDA with fused AdamW give finite losses and a checkpoint."""
    from fctrain.config import load_config
    from fctrain.train import train

    shards = make_shards(images=40, seed=2, shard_samples=16, val_fraction=0.1)
    config = load_config(None, [
        f'data.shards="{shards}"', f'run.out_dir="{tmp_path}"', "data.batch_size=16", "data.workers=0",
        "model.image_size=64", "model.tiny_pretrain_steps=5", "run.steps=4", "run.log_every=1", "run.val_every=0",
        f'optim.amp="{amp}"', 'run.device="cuda"',
    ])
    result = train(config)
    assert result.step == 4 and result.metrics["nonfinite_steps"] == 0 and result.metrics["peak_mem_gib"] > 0


def test_zero_alpha_conv_equals_clip_in_bf16():
    """At initialisation the RGBA model equals CLIP on the GPU under bf16 autocast too."""
    from transformers import CLIPConfig, CLIPModel

    from fctrain.model import RGBAClip

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 64, "intermediate_size": 128,
                                               "num_hidden_layers": 2, "num_attention_heads": 2}, projection_dim=32)).cuda().eval()
    model = RGBAClip(clip)
    pixels, alpha = torch.randn(2, 3, 64, 64, device="cuda"), torch.randn(2, 1, 64, 64, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ours = model.encode_image(pixels, alpha)
        plain = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(ours, plain)
