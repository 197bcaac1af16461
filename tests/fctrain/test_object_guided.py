import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcdata.errors import UserError
from fcdata.transforms import ALPHA_MEAN, ALPHA_STD
from fctrain.api import FocusClip
from fctrain.checkpoint import load_trained
from fctrain.config import EvalOptions, LoraConfig, ModelConfig, load_config
from fctrain.evaluation.methods import GEOMETRIES, Region, Tower
from fctrain.evaluation.regions import evaluate
from fctrain.export import METADATA, export_model
from fctrain.model import (
    ALPHA_WEIGHTS, RGBAClip, apply_lora, build_model, create_tiny_model, load_adapters, load_clip, parameter_counts,
    save_adapters, set_gradient_checkpointing,
)
from fctrain.object_guided import GUIDE_WEIGHTS, ObjectGuidedClip
from fctrain.train import train
from floats import assert_different, assert_same

SIZE = 64
PHRASES = ["a man riding a horse", "the red car parked on the street", "a tall tree", "two people walking"] * 3
LORA = LoraConfig(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", PHRASES, image_size=SIZE, seed=0)


def fresh(tiny_dir, lora: LoraConfig | None = LORA) -> tuple[ObjectGuidedClip, object]:
    clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE))
    model = ObjectGuidedClip(clip)
    if lora is not None:
        torch.manual_seed(0)
        apply_lora(model, lora)
    return model.eval(), tokenizer


def perturb(model: ObjectGuidedClip, seed: int = 1) -> None:
    """Move LoRA B and the guide's zero projection off zero, as training does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name.startswith("guide.project"):
                param.copy_(0.05 * torch.randn(param.shape, generator=g))


def inputs(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    alpha = (torch.rand(batch, 1, SIZE, SIZE, generator=g) > 0.5).float()
    return torch.randn(batch, 3, SIZE, SIZE, generator=g), (alpha - ALPHA_MEAN) / ALPHA_STD


def clip_features(model: RGBAClip, pixels: torch.Tensor) -> torch.Tensor:
    clip = model.base_clip
    return clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)


def test_starts_equal_to_clip_and_mask_off_returns_there(tiny_dir):
    """The zero-initialised residual projection makes the fresh model CLIP exactly (the mask is
    ignored), and after training `mask_off` (evaluation's base weights) gives CLIP with LoRA back."""
    model, _ = fresh(tiny_dir, lora=None)
    pixels, alpha = inputs()
    with torch.no_grad():
        assert_same(model.encode_image(pixels, alpha), clip_features(model, pixels))
        perturb(model)
        trained = model.encode_image(pixels, alpha)
        assert_different(trained, clip_features(model, pixels))
        with model.mask_off():
            assert_same(model.encode_image(pixels, alpha), clip_features(model, pixels))
        assert_same(model.encode_image(pixels, alpha), trained)  # restored


def test_shapes_and_the_mask_steers_the_embedding(tiny_dir):
    """B x projection_dim out; once the head moved, another mask on the same pixels moves the
    embedding; inputs of the wrong size are refused with the expected shapes."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    pixels, alpha = inputs(batch=2)
    _, other = inputs(batch=2, seed=5)
    with torch.no_grad():
        out = model.encode_image(pixels, alpha)
        assert out.shape == (2, model.base_clip.config.projection_dim)
        assert_different(model.encode_image(pixels, other), out)
        with pytest.raises(ValueError, match="B x 1 x 64 x 64"):
            model.encode_image(pixels, alpha[:, :, :32])


def test_only_lora_and_the_guide_train_and_get_gradients(tiny_dir):
    """LoRA and every guide parameter train, nothing of CLIP itself; one step's gradients reach the
    zero projection and LoRA; there is no alpha conv; the summary counts the guide."""
    model, _ = fresh(tiny_dir)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    guide = {f"guide.{n}" for n, _ in model.guide.named_parameters()}
    assert guide <= trainable and all("lora_" in n for n in trainable - guide)
    assert not hasattr(model, "alpha_embedding")
    pixels, alpha = inputs()
    model.train()
    model(pixels, alpha).square().sum().backward()
    assert model.guide.project.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # A gets none while B is zero
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert parameter_counts(model)["alpha"] == sum(p.numel() for p in model.guide.parameters())


def test_gradient_checkpointing_changes_nothing_for_the_guided_model(tiny_dir):
    """The guided forward through checkpointed vision blocks gives the same output and gradients."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    model.train()
    pixels, alpha = inputs()
    results = []
    for enabled in (False, True):
        set_gradient_checkpointing(model, enabled)
        model.zero_grad(set_to_none=True)
        out = model(pixels, alpha)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (out_off, grads_off), (out_on, grads_on) = results
    assert_same(out_on, out_off)
    assert grads_on.keys() == grads_off.keys()
    for name in grads_off:  # each against its own scale: the guide's and LoRA's grads differ by orders of magnitude
        assert_same(grads_on[name], grads_off[name], what=name)


def test_adapters_round_trip_and_architectures_do_not_mix(tiny_dir, tmp_path):
    """save_adapters/load_adapters carry LoRA and the guide exactly; an alpha_conv model refuses them."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    save_adapters(model, tmp_path / "adapters")
    assert (tmp_path / "adapters" / GUIDE_WEIGHTS).is_file() and not (tmp_path / "adapters" / ALPHA_WEIGHTS).exists()
    loaded, _ = fresh(tiny_dir)
    load_adapters(loaded, tmp_path / "adapters")
    pixels, alpha = inputs()
    with torch.no_grad():
        assert_same(loaded.encode_image(pixels, alpha), model.encode_image(pixels, alpha))
    clip, _ = load_clip(ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE))
    with pytest.raises(UserError, match=ALPHA_WEIGHTS):
        load_adapters(apply_lora(RGBAClip(clip), LORA), tmp_path / "adapters")


def test_export_records_the_architecture_and_focus_clip_loads_it(tiny_dir, tmp_path):
    """The export says object_guided; FocusClip.load rebuilds that model with the same embeddings."""
    model, tokenizer = fresh(tiny_dir)
    perturb(model)
    out = export_model(model, tokenizer, tmp_path / "export", image_size=SIZE)
    meta = json.loads((out / METADATA).read_text())
    assert meta["architecture"] == "object_guided" and GUIDE_WEIGHTS in meta["files"]
    loaded = FocusClip.load(out)
    assert isinstance(loaded.model, ObjectGuidedClip)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:40, 16:48] = 255
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    from fcdata.transforms import normalize_alphas, normalize_images

    with torch.no_grad():
        expected = F.normalize(model.encode_image(normalize_images(pixels), normalize_alphas(torch.from_numpy(mask)[None, None])), dim=-1)
    assert_same(loaded.encode_image(image, mask), expected)


def test_the_eval_tower_runs_trained_views_on_the_guide_and_base_views_on_clip(tiny_dir):
    """REC and ImageNet-S's shared tower: alpha views go through the guide (a box differs from the
    whole image), base views are plain CLIP (LoRA and guide off)."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    regions = [Region((4.0, 6.0, 30.0, 40.0)), Region((40.0, 0.0, 80.0, 48.0))]
    tower = Tower(model, batch_size=3)
    try:
        features = tower.encode_images([(image, regions)], ("whole_image", "alpha_box", "alpha_whole"), GEOMETRIES["squash"])[0]
    finally:
        tower.close()
    assert torch.all((features["alpha_box"] * features["alpha_whole"]).sum(-1) < 1 - 1e-4)
    from fcdata.transforms import normalize_images, squash

    pixels = normalize_images(torch.tensor(squash(image, np.zeros((0, 48, 80), np.uint8), SIZE)[0]).permute(2, 0, 1)[None])
    with torch.no_grad(), model.peft_model.disable_adapter():
        expected = F.normalize(clip_features(model, pixels), dim=-1)
    assert torch.all((features["whole_image"] * expected).sum(-1) > 1 - 1e-5)


# --- the training loop, resume and fc eval on the tiny model -------------------------------------


@pytest.fixture(scope="module")
def shard_dir(make_shards):
    return make_shards(images=60, seed=4, shard_samples=16, val_fraction=0.15)


def config_for(shard_dir, out_dir, *overrides):
    return load_config(None, [
        f'data.shards="{shard_dir}"', f'run.out_dir="{out_dir}"', "data.batch_size=16", "data.workers=0",
        "data.shuffle_buffer=20", "model.image_size=32", "run.log_every=1", "run.val_every=0",
        "optim.warmup_steps=2", "optim.lr=2e-3", "run.steps=6", "checkpoint.every_steps=3",
        "model.tiny_pretrain_steps=10", 'model.architecture="object_guided"', "model.text_cache=false",
        *overrides,
    ])


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def test_train_resume_and_eval_with_the_object_guided_architecture(shard_dir, tmp_path):
    """A short run trains only LoRA and the guide; resuming from step 3 reproduces steps 4-6; the
    trained run loads back as object_guided and fc eval's table has its row beside CLIP's."""
    whole = train(config_for(shard_dir, tmp_path / "whole"))
    assert (whole.checkpoint / GUIDE_WEIGHTS).is_file()
    reference = losses(whole.run_dir)
    resumed = tmp_path / "resumed"
    shutil.copytree(whole.run_dir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000006")
    (resumed / "metrics.jsonl").unlink()
    train(config_for(shard_dir, resumed, 'checkpoint.resume="latest"'))
    again = losses(resumed)
    assert sorted(again) == [4, 5, 6]
    for step in (4, 5, 6):  # metrics.jsonl rounds losses to 5 decimals
        assert again[step] == pytest.approx(reference[step], rel=0, abs=2e-5)

    config = config_for(shard_dir, whole.run_dir)
    trained, _, _ = load_trained(whole.run_dir)
    start, _ = build_model(config.model, config.lora, whole.run_dir / "tiny-model", seed=config.run.seed)
    assert isinstance(trained, ObjectGuidedClip)
    changed = {n for (n, a), (_, b) in zip(trained.named_parameters(), start.named_parameters()) if not torch.equal(a, b)}
    assert any(n.startswith("guide.") for n in changed) and all("lora_" in n or n.startswith("guide.") for n in changed)

    model, tokenizer, _ = load_trained(whole.run_dir)
    report = evaluate(model, tokenizer, EvalOptions(shards=str(shard_dir), split="train", max_images=6, methods=("focus", "untrained")), torch.device("cpu"))
    assert set(report.results) == {"focus", "untrained"} and report.regions > 0
    assert 0 <= report.results["focus"]["box_accuracy"] <= 1


@pytest.mark.slow
def test_demo_adds_the_object_guided_rows(tmp_path):
    """fc demo (--object-guided, the default) fine-tunes the second architecture from the same tiny
    CLIP for its own number of steps, its focus and whole-image rows join the table beside the focus
    rows, titled as object-guided, and it is the run the demo exports."""
    from fctrain.config import DemoOptions
    from fctrain.demo import run_demo

    result = run_demo(DemoOptions(out_dir=tmp_path, images=40, steps=4, object_guided_steps=6, pretrain_steps=4, eval_images=4, workers=1, object_guided=True))
    rows = result.evaluation.results
    assert {"focus", "focus_object_guided", "focus_whole_object_guided", "whole_image"} <= set(rows)
    assert 0 <= rows["focus_object_guided"]["box_accuracy"] <= 1
    assert result.evaluation.title("focus_object_guided") == "Obj-guided (box)"
    assert result.evaluation.title("focus_whole_object_guided") == "Obj-guided (whole)"
    order = list(rows)
    assert order.index("focus_whole_object_guided") == order.index("focus_object_guided") + 1 < order.index("untrained")  # beside the focus rows
    assert (tmp_path / "run-object-guided" / "checkpoints" / "step-0000006" / GUIDE_WEIGHTS).is_file()
    assert result.training.step == 4 and result.object_guided.step == 6
    assert result.exported_run == tmp_path / "run-object-guided"
    assert not (tmp_path / "run-object-guided" / "tiny-model").exists()  # the first run's pretrained CLIP, reused


def test_an_unknown_architecture_is_one_line():
    """A mistyped model.architecture is refused naming the choices, before anything is built."""
    with pytest.raises(UserError, match="alpha_conv, object_guided"):
        load_config(None, ['model.architecture="object-guided"'])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])])
def test_bf16_autocast_forward_and_backward_agree_with_float32(tiny_dir, device):
    """Under the trainer's bf16 autocast the guided embedding points where the float32 one does
    (cosine > 0.99: bf16 keeps ~3 significant digits) and the guide still gets finite gradients."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    model.to(device)
    pixels, alpha = (t.to(device) for t in inputs())
    with torch.no_grad():
        reference = model.encode_image(pixels, alpha).float()
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(pixels, alpha)
    assert F.cosine_similarity(out.float(), reference, dim=-1).min() > 0.99
    out.float().square().sum().backward()
    grad = model.guide.object_path[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_checkpoint_from_before_the_architecture_setting_resumes_as_alpha_conv(tmp_path):
    """Checkpoints written before model.architecture existed lack it: they resume as alpha_conv
    (what they were), and are refused for an object_guided run."""
    from fctrain.rundir import check_checkpoint_config

    config = load_config(None, [])
    saved = config.to_dict()
    del saved["model"]["architecture"]
    check_checkpoint_config(tmp_path, saved, config)
    with pytest.raises(UserError, match="model.architecture: 'alpha_conv' -> 'object_guided'"):
        check_checkpoint_config(tmp_path, saved, load_config(None, ['model.architecture="object_guided"']))


def test_build_model_starts_the_guide_from_the_seed_not_the_callers_random_state(tiny_dir):
    config = ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE, architecture="object_guided")

    def guide_start(seed: int, caller_state: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(caller_state)
        model, _ = build_model(config, LORA, None, seed=seed)
        return {name: param.detach().clone() for name, param in model.named_parameters() if ".guide." in name or name.startswith("guide.")}

    first, same_seed, other_seed = guide_start(0, 1), guide_start(0, 2), guide_start(1, 1)
    assert first and first.keys() == same_seed.keys()
    for name, value in first.items():
        assert torch.equal(value, same_seed[name]), name
    assert any(not torch.equal(value, other_seed[name]) for name, value in first.items())
