import re

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import BertConfig, CLIPConfig, CLIPModel

from fcdata.errors import UserError
from fcdata.transforms import ALPHA_MEAN, ALPHA_STD
from fctrain.config import LoraConfig, ModelConfig
from floats import assert_different, assert_same
from fctrain.model import (
    RGBAClip,
    apply_lora,
    build_model,
    check_text_pooling,
    compile_vision,
    create_tiny_model,
    load_adapters,
    load_clip,
    parameter_counts,
    save_adapters,
    set_gradient_checkpointing,
    trainable_summary,
)
from fctrain.text_cache import TextEmbeddingCache

SIZE = 64  # px: a 4 x 4 patch grid keeps every forward in milliseconds
PHRASES = [
    "a man riding a horse", "the red car parked on the street", "dog lying on green grass",
    "white clouds in a blue sky", "a man wearing a black hat", "two people walking", "a tall tree",
] * 3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny CLIP (64 px) and its tokenizer, saved once for the module."""
    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", PHRASES, image_size=SIZE, seed=0)


def fresh(tiny_dir, lora: LoraConfig | None = None, seed: int = 0) -> tuple[RGBAClip, object]:
    clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE))
    model = RGBAClip(clip)
    if lora is not None:
        torch.manual_seed(seed)
        apply_lora(model, lora)
    return model.eval(), tokenizer


def inputs(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random CLIP-normalised pixels and graded alphas in [0, 1] normalised like the loader's."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, SIZE, SIZE, generator=g)
    alpha = torch.rand(batch, 1, SIZE, SIZE, generator=g)
    return pixels, (alpha - ALPHA_MEAN) / ALPHA_STD


def perturb(model: RGBAClip, seed: int = 1) -> None:
    """Make LoRA B and the alpha conv non-zero, as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name.startswith("alpha_embedding"):
                param.copy_(0.05 * torch.randn(param.shape, generator=g))


def image_features(clip: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    out = clip.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 / 5


# --- building and loading ----------------------------------------------------------------------


def test_tiny_model_is_deterministic(tiny_dir, tmp_path):
    """The same phrases and seed give bit-identical weights (tests and demos are reproducible)."""
    again = create_tiny_model(tmp_path / "again", PHRASES, image_size=SIZE, seed=0)
    a, b = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = load_file(create_tiny_model(tmp_path / "other", PHRASES, image_size=SIZE, seed=1) / "model.safetensors")
    assert not torch.equal(a["vision_model.encoder.layers.0.self_attn.q_proj.weight"],
                           other["vision_model.encoder.layers.0.self_attn.q_proj.weight"])


def test_load_clip_missing_dir_is_a_user_error(tmp_path):
    """A missing or non-CLIP model path fails with a one-line UserError, never a download attempt."""
    for bad in (tmp_path / "nope", "no-such-org/no-such-model"):
        with pytest.raises(UserError) as info:
            load_clip(ModelConfig(name_or_path=str(bad)))
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        load_clip(tmp_path / "empty")


def test_load_clip_incomplete_dir_is_a_user_error(tiny_dir, tmp_path):
    """A model directory without weights or without a tokenizer is refused (transformers 5 would
    otherwise build an empty tokenizer), as is a non-CLIP model."""
    import shutil

    for name, files in (("no-weights", ["config.json", "tokenizer.json", "tokenizer_config.json"]),
                        ("no-tokenizer", ["config.json", "model.safetensors"])):
        (tmp_path / name).mkdir()
        for file in files:
            shutil.copy(tiny_dir / file, tmp_path / name)
        with pytest.raises(UserError, match="weights" if name == "no-weights" else "tokenizer") as info:
            load_clip(tmp_path / name)
        assert "\n" not in str(info.value)
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="needs a CLIP model"):
        load_clip(tmp_path / "bert")


def test_load_clip_checks_image_size_and_attention(tiny_dir):
    """ModelConfig's image size must match the model's; its attention implementation is used."""
    with pytest.raises(UserError, match="image_size"):
        load_clip(ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE + 16))
    clip, _ = load_clip(ModelConfig(name_or_path=str(tiny_dir), image_size=SIZE, attn_implementation="eager"))
    assert clip.config.vision_config._attn_implementation == "eager"


# --- text pooling ------------------------------------------------------------------------------


def test_text_pools_at_the_end_token(tiny_dir):
    """The text embedding is the end token's state: padding after it is ignored, a word before it counts."""
    model, tokenizer = fresh(tiny_dir)
    assert tokenizer.eos_token_id != 2  # HF's legacy argmax pooling would kick in
    batch = tokenizer(["a man riding a horse", "a tall tree"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        out = model.base_clip.text_model(input_ids=ids, attention_mask=mask)
        ends = mask.sum(1) - 1
        assert (ids[torch.arange(2), ends] == tokenizer.eos_token_id).all()
        assert torch.equal(out.pooler_output, out.last_hidden_state[torch.arange(2), ends])

        base = model.encode_text(ids, mask)
        padded_ids = F.pad(ids, (0, 5), value=tokenizer.pad_token_id)
        padded_mask = F.pad(mask, (0, 5), value=0)
        padded = model.base_clip.text_model(input_ids=padded_ids, attention_mask=padded_mask)
        assert torch.equal(padded.pooler_output, padded.last_hidden_state[torch.arange(2), ends])  # same position
        # Longer rows run other kernels, so equal only to float32 rounding of the scale.
        assert_same(model.encode_text(padded_ids, padded_mask), base)
        changed = ids.clone()
        changed[:, 1] = tokenizer.convert_tokens_to_ids("▁dog")
        assert_different(model.encode_text(changed, mask), base)


def test_pooling_check_rejects_a_mismatched_end_token(tiny_dir):
    """A text config whose eos id disagrees with the tokenizer (or legacy id 2 with a non-max end id) is refused."""
    clip, tokenizer = load_clip(tiny_dir)
    config = clip.config.text_config
    check_text_pooling(config, tokenizer)
    for eos in (2, tokenizer.eos_token_id + 1):
        wrong = type(config)(**{**config.to_dict(), "eos_token_id": eos})
        with pytest.raises(UserError):
            check_text_pooling(wrong, tokenizer)


# --- the alpha path ----------------------------------------------------------------------------


def test_zero_init_equals_clip_exactly(tiny_dir):
    """At init RGBAClip is bit-for-bit CLIP for any alpha: random, binary, graded, all ones."""
    model, _ = fresh(tiny_dir)
    pixels, graded = inputs()
    binary = torch.where(graded > 0, 1.0, 0.0).sub(ALPHA_MEAN).div(ALPHA_STD)
    ones = torch.full_like(graded, (1 - ALPHA_MEAN) / ALPHA_STD)
    with torch.no_grad():
        reference = image_features(model.base_clip, pixels)
        for alpha in (graded, binary, ones, torch.randn_like(graded)):
            assert torch.equal(model.encode_image(pixels, alpha), reference)


def test_alpha_path_is_live_after_training_moves_it(tiny_dir):
    """Once the alpha conv is non-zero, different (graded or binary) alphas give different embeddings."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    pixels, graded = inputs(batch=1)
    half = torch.zeros_like(graded)
    half[..., : SIZE // 2] = 1
    alphas = [graded, (half - ALPHA_MEAN) / ALPHA_STD, (1 - half - ALPHA_MEAN) / ALPHA_STD, (0.5 * half - ALPHA_MEAN) / ALPHA_STD]
    with torch.no_grad():
        feats = [model.encode_image(pixels, a) for a in alphas]
        assert torch.equal(model.encode_image(pixels, alphas[0]), feats[0])  # deterministic
    for i in range(len(feats)):
        for j in range(i):
            assert_different(feats[i], feats[j], what=f"alphas {i} and {j}")


def test_alpha_conv_is_a_fourth_input_channel_of_the_patch_conv(tiny_dir):
    """The alpha conv enters exactly where Alpha-CLIP puts it: as a 4th channel of the patch embedding,
    before the class token, positions and pre-LayerNorm (reference: HF CLIP with a 4-channel patch conv)."""
    model, _ = fresh(tiny_dir)
    perturb(model)
    config = model.base_clip.config
    rgba_config = type(config)(**{**config.to_dict(), "vision_config": {**config.vision_config.to_dict(), "num_channels": 4}})
    reference = CLIPModel(rgba_config).eval()
    state = model.base_clip.state_dict()
    key = "vision_model.embeddings.patch_embedding.weight"
    state[key] = torch.cat([state[key], model.alpha_embedding.weight], dim=1)  # D x 4 x P x P
    reference.load_state_dict(state)
    pixels, alpha = inputs()
    with torch.no_grad():
        expected = image_features(reference, torch.cat([pixels, alpha], dim=1))
        assert_same(model.encode_image(pixels, alpha), expected)  # a 4-channel conv sums in another order


def test_wrong_input_size_is_refused(tiny_dir):
    """Inputs at another resolution or with several alpha channels fail with a clear message."""
    model, _ = fresh(tiny_dir)
    pixels, alpha = inputs()
    with pytest.raises(ValueError, match="expected pixel_values"):
        model.encode_image(pixels[..., :32, :32], alpha[..., :32, :32])
    with pytest.raises(ValueError, match="expected pixel_values"):
        model.encode_image(pixels, alpha.repeat(1, 2, 1, 1))


# --- LoRA and what trains ----------------------------------------------------------------------


def contrastive_loss(model: RGBAClip, tokenizer) -> torch.Tensor:
    pixels, alpha = inputs(batch=3)
    batch = tokenizer(["a man riding a horse", "a tall tree", "a red car"], padding=True, return_tensors="pt")
    image = F.normalize(model.encode_image(pixels, alpha), dim=-1)
    text = F.normalize(model.encode_text(batch["input_ids"], batch["attention_mask"]), dim=-1)
    logits = model.logit_scale.exp() * image @ text.T
    labels = torch.arange(3)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_only_lora_and_alpha_train_and_get_gradients(tiny_dir):
    """After apply_lora only vision LoRA and the alpha conv require and receive gradients."""
    model, tokenizer = fresh(tiny_dir, LoraConfig())
    perturb(model)  # with B = 0, LoRA's A would get exactly zero gradient
    model.train()
    contrastive_loss(model, tokenizer).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith("alpha_embedding")}
    assert all(".vision_model.encoder.layers." in n for n in trainable if "lora_" in n)
    assert not any(isinstance(m, LoraLayer) for m in model.base_clip.text_model.modules())
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    assert not model.logit_scale.requires_grad


def test_text_lora_trains_the_text_tower_through_lora_only(tiny_dir):
    """lora.text_targets puts LoRA on every text block's named linears; only LoRA (both towers) and
    the alpha conv train, and the text LoRA gets gradients through the text features."""
    model, tokenizer = fresh(tiny_dir, LoraConfig(text_targets=("q_proj", "v_proj")))
    perturb(model)
    model.train()
    contrastive_loss(model, tokenizer).backward()
    layers = model.base_clip.config.text_config.num_hidden_layers
    assert sum(isinstance(m, LoraLayer) for m in model.base_clip.text_model.modules()) == 2 * layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith("alpha_embedding")}
    text_lora = [n for n in trainable if ".text_model." in n]
    assert text_lora and all(re.search(r"self_attn\.(q|v)_proj\.lora_", n) for n in text_lora)
    grads = dict(model.named_parameters())
    assert all(grads[n].grad is not None and grads[n].grad.abs().sum() > 0 for n in text_lora)
    counts = parameter_counts(model)
    assert counts["text_lora"] == sum(grads[n].numel() for n in text_lora)
    assert counts["trainable"] == counts["vision_trainable"] + counts["text_lora"]
    assert "text tower LoRA" in trainable_summary(model)


def test_text_adapters_round_trip_and_change_text_features(tiny_dir, tmp_path):
    """Saved text adapters load back onto a fresh model with the same text features, which differ
    from the frozen tower's."""
    lora = LoraConfig(rank=4, alpha=8.0, text_targets=("q_proj", "k_proj", "v_proj", "out_proj"))
    model, tokenizer = fresh(tiny_dir, lora)
    perturb(model)
    save_adapters(model, tmp_path / "ckpt")
    batch = tokenizer(PHRASES[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.encode_text(batch["input_ids"], batch["attention_mask"])
        frozen = fresh(tiny_dir)[0].encode_text(batch["input_ids"], batch["attention_mask"])
        loaded = load_adapters(fresh(tiny_dir, lora, seed=5)[0], tmp_path / "ckpt").eval()
        assert torch.equal(loaded.encode_text(batch["input_ids"], batch["attention_mask"]), expected)
    assert_different(expected, frozen)


def test_trainable_counts_match_a_manual_count(tiny_dir):
    """parameter_counts/trainable_summary agree with r x (in + out) per wrapped linear plus the alpha conv."""
    width, layers, patch, r = 128, 4, 16, 8
    for targets, per_layer in ((("q_proj", "k_proj", "v_proj", "out_proj"), 4 * r * 2 * width),
                               (("fc1", "fc2"), 2 * r * (width + 4 * width))):
        model, _ = fresh(tiny_dir, LoraConfig(rank=r, targets=targets))
        counts = parameter_counts(model)
        assert counts["lora"] == layers * per_layer
        assert counts["alpha"] == width * patch * patch
        assert counts["trainable"] == counts["vision_trainable"] == counts["lora"] + counts["alpha"]
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        summary = trainable_summary(model)
        assert summary.startswith(f"trainable {counts['trainable']:,} of {counts['total']:,} parameters")
        assert re.search(r"vision tower: [\d.]+M of [\d.]+M \([\d.]+%", summary)


def test_vit_b16_lora_share_matches_the_brief():
    """ViT-B/16 with LoRA r=16 on q/k/v/out: 1.18M LoRA (~1.36% of the vision tower) + 0.20M alpha conv."""
    config = CLIPConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           patch_size=16, image_size=224),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        projection_dim=512,
    )
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = apply_lora(RGBAClip(CLIPModel(config)), LoraConfig(rank=16))
    counts = parameter_counts(model)
    vision_base = sum(p.numel() for p in model.base_clip.vision_model.parameters() if not p.requires_grad)
    assert 1.1e6 <= counts["lora"] <= 1.3e6
    assert counts["lora"] == 12 * 4 * 16 * (768 + 768)
    assert counts["alpha"] == 768 * 16 * 16
    assert 85.5e6 < vision_base < 86.0e6  # ViT-B/16 (OpenAI CLIP): 85.8M
    assert abs(100 * counts["lora"] / (vision_base + counts["lora"]) - 1.36) < 0.02
    assert counts["trainable"] == counts["lora"] + counts["alpha"]


def test_gradient_checkpointing_changes_nothing_but_memory(tiny_dir):
    """Checkpointed vision blocks give the same features and the same LoRA/alpha gradients."""
    model, tokenizer = fresh(tiny_dir, LoraConfig())
    perturb(model)
    model.train()
    results = []
    for enabled in (False, True):
        set_gradient_checkpointing(model, enabled)
        layers = model.base_clip.vision_model.encoder.layers
        assert all(layer.gradient_checkpointing == enabled for layer in layers)
        assert not any(layer.gradient_checkpointing for layer in model.base_clip.text_model.encoder.layers)
        model.zero_grad(set_to_none=True)
        loss = contrastive_loss(model, tokenizer)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert_same(loss_on, loss_off)
    assert grads_on.keys() == grads_off.keys()
    for name in grads_off:  # each gradient against its own scale: LoRA A and B grads differ by orders of magnitude
        assert_same(grads_on[name], grads_off[name], what=name)


def test_adapters_round_trip(tiny_dir, tmp_path):
    """save_adapters -> load_adapters (onto LoRA'd or plain models) reproduces the embeddings exactly."""
    lora = LoraConfig(rank=4, alpha=8.0)
    model, _ = fresh(tiny_dir, lora, seed=0)
    perturb(model)
    save_adapters(model, tmp_path / "ckpt")
    assert {"adapter_config.json", "adapter_model.safetensors", "alpha_embedding.safetensors"} <= {
        p.name for p in (tmp_path / "ckpt").iterdir()}
    pixels, alpha = inputs()
    with torch.no_grad():
        expected = model.encode_image(pixels, alpha)
        for target in (fresh(tiny_dir, lora, seed=5)[0], fresh(tiny_dir)[0]):
            load_adapters(target, tmp_path / "ckpt").eval()
            assert torch.equal(target.encode_image(pixels, alpha), expected)
            assert {n for n, p in target.named_parameters() if p.requires_grad} == {
                n for n, p in model.named_parameters() if p.requires_grad}


def test_adapters_from_other_lora_settings_are_refused(tiny_dir, tmp_path):
    """Loading adapters saved with another rank is a one-line UserError, not a shape traceback."""
    model, _ = fresh(tiny_dir, LoraConfig(rank=4))
    save_adapters(model, tmp_path / "ckpt")
    with pytest.raises(UserError, match="adapters were saved with"):
        load_adapters(fresh(tiny_dir, LoraConfig(rank=8))[0], tmp_path / "ckpt")
    with pytest.raises(UserError):
        load_adapters(model, tmp_path / "missing")


def test_build_model_creates_the_tiny_model_once(tmp_path):
    """build_model('tiny') builds the tiny model when absent, reuses it after, applies LoRA and checkpointing."""
    config = ModelConfig(name_or_path="tiny", image_size=SIZE, gradient_checkpointing=True)
    with pytest.raises(UserError, match="phrases"):
        build_model(config, LoraConfig(), tmp_path / "tiny")
    model, tokenizer = build_model(config, LoraConfig(), tmp_path / "tiny", phrases=PHRASES)
    assert model.peft_model is not None and len(tokenizer) > 4
    assert all(layer.gradient_checkpointing for layer in model.base_clip.vision_model.encoder.layers)
    stamp = (tmp_path / "tiny" / "model.safetensors").stat().st_mtime_ns
    again, _ = build_model(config, LoraConfig(), tmp_path / "tiny")  # no phrases needed now
    assert (tmp_path / "tiny" / "model.safetensors").stat().st_mtime_ns == stamp
    a = {n: p for n, p in model.named_parameters()}
    assert all(torch.equal(a[n], p) for n, p in again.named_parameters())  # same seed, same LoRA init


def test_compiled_vision_forward_matches_eager_and_survives_copies(tiny_dir):
    """compile_vision keeps the outputs; a deep copy of a compiled model computes with its own weights."""
    import copy

    model, _ = fresh(tiny_dir, LoraConfig())
    pixels, alpha = inputs(batch=2)
    with torch.no_grad():
        eager = model.encode_image(pixels, alpha)
        assert compile_vision(model, backend="eager")  # dynamo tracing without inductor: seconds on CPU
        assert_same(model.encode_image(pixels, alpha), eager)
        twin = copy.deepcopy(model)
        twin.alpha_embedding.weight.normal_(std=0.05)  # random: a constant would vanish in the LayerNorm
        assert_different(twin.encode_image(pixels, alpha), eager)
        assert_same(model.encode_image(pixels, alpha), eager)


# --- the text cache ----------------------------------------------------------------------------


class CountingModel:
    """Wraps a model's encode_text to record how many captions each call computes."""

    def __init__(self, model):
        self.model = model
        self.calls: list[int] = []

    def encode_text(self, input_ids, attention_mask):
        self.calls.append(input_ids.shape[0])
        return self.model.encode_text(input_ids, attention_mask)


def test_text_cache_equals_fresh_computation_and_computes_misses_once(tiny_dir):
    """Cached rows equal a direct forward; each distinct caption goes through the tower once."""
    model, tokenizer = fresh(tiny_dir)
    counting = CountingModel(model)
    cache = TextEmbeddingCache(max_entries=100)
    texts = ["a tall tree", "a man riding a horse", "a tall tree", "a red car"]
    first = cache.embed(texts, tokenizer, counting, "cpu")
    assert counting.calls == [3] and (cache.misses, cache.hits) == (3, 1)
    second = cache.embed(["a red car", "a tall tree", "a dog"], tokenizer, counting, "cpu")
    assert counting.calls == [3, 1] and (cache.misses, cache.hits) == (4, 3)
    batch = tokenizer(texts + ["a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model.encode_text(batch["input_ids"], batch["attention_mask"])
    # The cache ran batches of 3 and 1 against this batch of 5: other kernels, equal to rounding.
    assert_same(first, direct[:4])
    assert_same(second, direct[[3, 0, 4]])
    assert not first.requires_grad


def test_text_cache_by_token_ids_matches_by_caption(tiny_dir):
    """embed_tokens (keys from worker-tokenised ids) gives the rows embed gives for the same captions."""
    model, tokenizer = fresh(tiny_dir)
    texts = ["a tall tree", "a man riding a horse", "a tall tree"]
    by_text = TextEmbeddingCache().embed(texts, tokenizer, model, "cpu")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    cache = TextEmbeddingCache()
    by_ids = cache.embed_tokens(batch["input_ids"], batch["attention_mask"], model, "cpu")
    assert_same(by_ids, by_text)
    assert (cache.misses, cache.hits, len(cache)) == (2, 1, 2)


def test_text_cache_evicts_least_recently_used(tiny_dir):
    """Beyond max_entries the least recently used caption goes; a batch larger than the cache still works."""
    model, tokenizer = fresh(tiny_dir)
    cache = TextEmbeddingCache(max_entries=2)
    cache.embed(["a", "b"], tokenizer, model, "cpu")
    cache.embed(["a"], tokenizer, model, "cpu")  # a is now the most recent
    cache.embed(["c"], tokenizer, model, "cpu")
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    out = cache.embed(["d", "e", "f"], tokenizer, model, "cpu")
    assert out.shape[0] == 3 and len(cache) == 2 and "f" in cache


def test_text_cache_serves_a_hit_whose_row_this_batch_evicts(tiny_dir):
    """A cached caption evicted to make room for the same batch's new captions still gets its own
    row (the table is read before the new rows are written), and the cache keeps the newest."""
    model, tokenizer = fresh(tiny_dir)
    cache = TextEmbeddingCache(max_entries=2)
    cache.embed(["a tall tree", "a red car"], tokenizer, model, "cpu")
    texts = ["a tall tree", "a dog", "a man riding a horse", "a dog"]
    out = cache.embed(texts, tokenizer, model, "cpu")
    assert "a tall tree" not in cache and "a dog" in cache and "a man riding a horse" in cache
    direct = [cache_free(model, tokenizer, text) for text in texts]
    for row, expected in zip(out, direct):
        assert torch.nn.functional.cosine_similarity(row, expected, dim=0) > 1 - 1e-5
    again = cache.embed(["a dog", "a man riding a horse"], tokenizer, model, "cpu")
    assert torch.equal(again, out[[1, 2]]) and (cache.hits, cache.misses) == (4, 4)


def cache_free(model, tokenizer, text: str) -> torch.Tensor:
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model.encode_text(batch["input_ids"], batch["attention_mask"])[0]


def test_right_padded_captions_encode_the_same_without_a_mask(tiny_dir):
    """The causal text tower pools at the end token, so right padding needs no mask: the text
    cache and the trainer encode without one (a mask makes transformers sync on mask.all())."""
    from fctrain.text_cache import encode_right_padded

    model, tokenizer = fresh(tiny_dir)
    batch = tokenizer(["a tall tree", "a man riding a horse on the beach", "a dog"], padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "right" and not batch["attention_mask"].all()
    with torch.no_grad():
        masked = model.encode_text(batch["input_ids"], batch["attention_mask"])
        unmasked = encode_right_padded(model, batch["input_ids"])
    for row, expected in zip(unmasked, masked):
        assert torch.nn.functional.cosine_similarity(row, expected, dim=0) > 1 - 1e-5
