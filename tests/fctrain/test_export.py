import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import CLIPModel

from floats import assert_different, assert_same
from fcdata.errors import UserError
from fcdata.transforms import CLIP_MEAN, center_crop, letterbox, normalize_alphas, normalize_images
from fctrain.api import FocusClip
from fctrain.export import METADATA, export_model
from fctrain.model import RGBAClip

SIZE = 64
PHRASES = ["a man riding a horse", "the red car parked on the street", "a tall tree", "two people walking"] * 3
TEXTS = ["a man riding a horse", "a tall tree", "a red car"]


@pytest.fixture(scope="module")
def trained(make_trained_tiny):
    """A tiny LoRA model whose LoRA B and alpha conv are non-zero (as after training), and its tokenizer."""
    return make_trained_tiny(PHRASES, image_size=SIZE)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, tokenizer = trained
    return export_model(model, tokenizer, tmp_path_factory.mktemp("export") / "focus", image_size=SIZE)


def samples():
    """Two non-square uint8 images with a box mask and a graded mask."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)]
    box = np.zeros((48, 80), np.uint8)
    box[10:30, 20:60] = 255
    graded = (np.linspace(0, 1, 90 * 40).reshape(90, 40) * 255).round().astype(np.uint8)
    return images, [box, graded]


def training_model_features(model: RGBAClip, tokenizer, images, alphas):
    """What the training code computes for the same inputs: letterbox, normalise, encode, L2-normalise."""
    pairs = [letterbox(i, a[None], SIZE) for i, a in zip(images, alphas)]
    pixels = torch.stack([torch.tensor(p).permute(2, 0, 1) for p, _ in pairs])
    masks = torch.stack([torch.tensor(m) for _, m in pairs])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = F.normalize(model.encode_image(normalize_images(pixels), normalize_alphas(masks)), dim=-1)
        text = F.normalize(model.encode_text(batch["input_ids"], batch["attention_mask"]), dim=-1)
    return image, text


def test_export_then_load_gives_the_training_models_embeddings(trained, exported):
    """FocusClip on the export reproduces the training model's image, text and score outputs."""
    model, tokenizer = trained
    images, alphas = samples()
    image, text = training_model_features(model, tokenizer, images, alphas)
    loaded = FocusClip.load(exported)
    # Merged LoRA weights (W + BA in one matrix) round differently from the adapter's two matmuls.
    assert_same(loaded.encode_image(images, alphas), image)
    assert_same(loaded.encode_text(TEXTS), text)
    scores = loaded.score(images, alphas, TEXTS)
    assert scores.shape == (2, 3)
    assert_same(scores, model.logit_scale.exp().detach() * image @ text.T)


def test_an_export_carries_the_text_adapters(trained, tmp_path):
    """With LoRA on the text tower too, the export (LoRA folded into both towers) gives the trained
    model's text features, not the frozen tower's."""
    from fctrain.config import LoraConfig
    from fctrain.model import apply_lora, wrap_clip

    model, tokenizer = trained
    lora = LoraConfig(rank=4, alpha=8.0, text_targets=("q_proj", "v_proj", "out_proj"))
    torch.manual_seed(0)
    texted = apply_lora(wrap_clip(copy_of_base(model)), lora).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in texted.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    images, alphas = samples()
    _, text = training_model_features(texted, tokenizer, images, alphas)
    _, frozen = training_model_features(model, tokenizer, images, alphas)
    loaded = FocusClip.load(export_model(texted, tokenizer, tmp_path / "focus", image_size=SIZE))
    assert_same(loaded.encode_text(TEXTS), text)
    assert_different(text, frozen)


def copy_of_base(model: RGBAClip) -> CLIPModel:
    import copy

    return copy.deepcopy(model.peft_model).unload()


def test_export_is_standalone_without_peft_files(exported):
    """The export is plain transformers + two Focus-CLIP files: no adapters, no LoRA keys, metadata complete."""
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "alpha_embedding.safetensors", METADATA, "tokenizer.json"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    keys = load_file(exported / "model.safetensors").keys()
    assert not [k for k in keys if "lora" in k or "base_layer" in k]
    CLIPModel.from_pretrained(exported, local_files_only=True)  # plain RGB CLIP loads too
    meta = json.loads((exported / METADATA).read_text())
    assert meta["format_version"] == 1 and meta["image_size"] == SIZE
    assert meta["image_mean"] == list(CLIP_MEAN) and meta["alpha_std"] == 0.26


def test_export_leaves_the_training_model_untouched(trained, tmp_path):
    """Exporting merges a copy: the training model keeps its adapters, trainable flags and outputs."""
    model, tokenizer = trained
    pixels, alpha = torch.randn(2, 3, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        before = model.encode_image(pixels, alpha)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    export_model(model, tokenizer, tmp_path / "out", image_size=SIZE)
    assert model.peft_model is not None
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels, alpha), before)


def test_failed_export_leaves_no_half_written_directory(trained, tmp_path, monkeypatch):
    """An export that dies midway leaves neither a partial output nor temporary files; an old export survives."""
    model, tokenizer = trained
    out = tmp_path / "out"

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    monkeypatch.setattr(RGBAClip, "save_mask_module", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, tokenizer, out, image_size=SIZE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    export_model(model, tokenizer, out, image_size=SIZE)  # the earlier export
    before = files()
    monkeypatch.setattr(RGBAClip, "save_mask_module", explode)
    with pytest.raises(RuntimeError):
        export_model(model, tokenizer, out, image_size=SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and files() == before
    monkeypatch.undo()
    (out / "old.txt").write_text("not the export's")
    with pytest.raises(UserError, match="also holds old.txt"):  # never deletes what it did not write
        export_model(model, tokenizer, out, image_size=SIZE)
    export_model(model, tokenizer, out, image_size=SIZE, overwrite=True)  # asked to: replaced whole
    assert not (out / "old.txt").exists() and (out / METADATA).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_export_refuses_another_image_size(trained, tmp_path):
    """The metadata cannot claim a size the position embeddings were not trained for."""
    with pytest.raises(ValueError, match="image_size"):
        export_model(*trained, tmp_path / "out", image_size=SIZE * 2)


def test_api_alpha_forms_agree(exported):
    """None = all-ones mask; float 0..1, bool and uint8 masks mean the same; one image gives 1 x D unit rows."""
    loaded = FocusClip.load(exported)
    images, (box, _) = samples()
    image = images[0]
    whole = loaded.encode_image(image)
    assert whole.shape[0] == 1
    assert_same(whole.norm(dim=-1), torch.ones(1))
    # Each form becomes the same uint8 mask; another reading of one would move the embedding by
    # about half its scale (region against whole image: 0.59).
    assert_same(loaded.encode_image(image, np.full(image.shape[:2], 255, np.uint8)), whole)
    region = loaded.encode_image(image, box)
    assert_same(loaded.encode_image(image, box / 255.0), region)
    assert_same(loaded.encode_image([image], [box > 0]), region)
    assert_different(region, whole)  # the mask matters after "training"


def test_api_relation_alpha_is_a_graded_mask(exported):
    """The API's relation alpha of two boxes equals the hand-made graded uint8 mask (subject 255,
    object 128 for weight 0.5, overlap 255), and the object's weight changes the embedding."""
    from fctrain.api import relation_alpha

    loaded = FocusClip.load(exported)
    image = samples()[0][0]
    alpha = relation_alpha((20, 10, 50, 30), (40, 20, 70, 40), weights=(1.0, 0.5), shape=image.shape[:2])
    by_hand = np.zeros(image.shape[:2], np.uint8)
    by_hand[20:40, 40:70] = 128
    by_hand[10:30, 20:50] = 255
    assert_same(loaded.encode_image(image, alpha), loaded.encode_image(image, by_hand))
    heavier = relation_alpha((20, 10, 50, 30), (40, 20, 70, 40), weights=(1.0, 1.0), shape=image.shape[:2])
    assert_different(loaded.encode_image(image, heavier), loaded.encode_image(image, alpha))


def test_api_batches_and_validates(exported):
    """Results do not depend on batching; malformed inputs fail with a clear message."""
    loaded = FocusClip.load(exported)
    images, alphas = samples()
    together = loaded.encode_image(images, alphas)
    loaded.batch_size = 1
    assert_same(loaded.encode_image(images, alphas), together)  # batch 1 vs 2: other kernels
    with pytest.raises(ValueError, match="one mask"):
        loaded.encode_image(images, alphas[:1])
    with pytest.raises(ValueError, match="uint8"):
        loaded.encode_image(images[0].astype(np.float32))
    with pytest.raises(ValueError, match="must match"):
        loaded.encode_image(images[0], alphas[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loaded.encode_image(images[0], np.full(images[0].shape[:2], 2.0))


def test_api_load_refuses_non_exports(tmp_path, trained):
    """Loading a directory that is not a Focus-CLIP export is a one-line UserError."""
    with pytest.raises(UserError, match="not a Focus-CLIP export"):
        FocusClip.load(tmp_path)
    with pytest.raises(UserError):
        FocusClip.load(tmp_path / "missing")


def features_of(model: RGBAClip, transform, image, alpha):
    """The model's unit embedding of one image and mask through `transform` (letterbox or center_crop)."""
    square, masks = transform(image, alpha[None], SIZE)
    pixels = torch.tensor(square).permute(2, 0, 1)[None]
    with torch.no_grad():
        return F.normalize(model.encode_image(normalize_images(pixels), normalize_alphas(torch.tensor(masks)[None])), dim=-1)


def test_api_preprocess_letterbox_by_default_or_center_crop(trained, exported):
    """preprocess: the export's letterbox by default, or CLIP's center_crop; each gives its transform's features."""
    model, _ = trained
    images, (box, _) = samples()
    ones = np.full(images[0].shape[:2], 255, np.uint8)
    default, cropping = FocusClip.load(exported), FocusClip.load(exported, preprocess="center_crop")
    assert (default.preprocess, cropping.preprocess) == ("letterbox", "center_crop")
    for alpha in (ones, box):
        for loaded, transform in ((default, letterbox), (cropping, center_crop)):
            ours = loaded.encode_image(images[0], alpha)
            assert F.cosine_similarity(ours, features_of(model, transform, images[0], alpha)).item() > 1 - 1e-6
    # A non-square image: the views differ (the crop drops the sides, the letterbox adds padding) ...
    whole = F.cosine_similarity(default.encode_image(images[0]), cropping.encode_image(images[0])).item()
    assert whole < 1 - 1e-3
    # ... and a square image at the model's size is the same picture either way.
    square = np.ascontiguousarray(np.resize(images[0], (SIZE, SIZE, 3)))
    assert F.cosine_similarity(default.encode_image(square), cropping.encode_image(square)).item() > 1 - 1e-6


def test_api_preprocess_is_checked_and_warns_when_the_crop_loses_the_region(exported):
    """An unknown preprocess is refused; a region cut away by center_crop is said, not silently embedded."""
    with pytest.raises(UserError, match="preprocess must be one of"):
        FocusClip.load(exported, preprocess="squash")
    loaded = FocusClip.load(exported, preprocess="center_crop")
    images, _ = samples()  # 48 x 80: the crop keeps columns 16..64
    left = np.zeros(images[0].shape[:2], np.uint8)
    left[:, :8] = 255
    with pytest.warns(UserWarning, match="cut 1 of 2 regions away entirely"):
        loaded.encode_image([images[0], images[0]], [left, None])
