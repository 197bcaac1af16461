"""Checkpoint conversion checked against an independent reference: a small OpenAI-CLIP-architecture
model written here in plain torch (nn.MultiheadAttention with the fused in_proj, QuickGELU MLP,
x @ proj, EOT pooling at the largest token id) and an Alpha-CLIP variant that adds conv1_alpha."""

import gzip
import logging
import warnings
from collections import OrderedDict

import pytest
import torch
import typer
from openai_tokenizer import CAPTIONS, ReferenceTokenizer  # tests/, on sys.path through its conftest.py
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import CLIPModel, PreTrainedTokenizerFast
from typer.testing import CliRunner

from fc.convert import convert
from fcdata.captions import tokenize_captions
from fcdata.errors import UserError
from fctrain.api import FocusClip
from fctrain.clip_tokenizer import find_bpe_vocab
from fctrain.config import LoraConfig, ModelConfig
from fctrain.convert import (
    alpha_clip_visual_to_hf, convert_alpha_clip_checkpoint, convert_openai_checkpoint, load_alpha_clip_visual,
    openai_to_hf, read_state_dict,
)
from fctrain.model import RGBAClip, build_model, load_clip

IMAGE, PATCH, WIDTH, LAYERS, EMBED = 64, 16, 128, 2, 32  # width 128: two heads (OpenAI: width // 64)
VOCAB, CONTEXT = 40, 16  # the last two ids are <start>, <end>, as in CLIP's vocabulary
WORDS = ["a", "photo", "of", "the", "red", "car", "dog", "man", "riding", "horse", "tree", "tall"]
ATOL = 2e-5
QUICK = "quick_gelu"  # the reference's MLP activation, as OpenAI's


# ---------------------------------------------------------------------------------------------
# The reference: OpenAI CLIP's architecture, written from its description


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width: int, mask: torch.Tensor | None = None, activation=QuickGELU):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // 64)  # fused in_proj_weight: rows q, k, v
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, 4 * width), gelu=activation(), c_proj=nn.Linear(4 * width, width)))
        self.ln_2 = nn.LayerNorm(width)
        self.mask = mask

    def forward(self, x):  # L x N x D (sequence first, as nn.MultiheadAttention defaults)
        h = self.ln_1(x)
        mask = None if self.mask is None else self.mask[: x.shape[0], : x.shape[0]]
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, mask: torch.Tensor | None = None, activation=QuickGELU):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, mask, activation) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Visual(nn.Module):
    def __init__(self, alpha: bool, activation=QuickGELU):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTH, PATCH, PATCH, bias=False)
        if alpha:
            self.conv1_alpha = nn.Conv2d(1, WIDTH, PATCH, PATCH, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(WIDTH))
        self.positional_embedding = nn.Parameter(torch.zeros((IMAGE // PATCH) ** 2 + 1, WIDTH))
        self.ln_pre = nn.LayerNorm(WIDTH)
        self.transformer = Transformer(WIDTH, LAYERS, activation=activation)
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(torch.zeros(WIDTH, EMBED))

    def forward(self, image, alpha=None):
        x = self.conv1(image)  # N x D x g x g
        if alpha is not None:
            x = x + self.conv1_alpha(alpha)
        x = x.flatten(2).transpose(1, 2)  # N x g*g x D
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class ReferenceCLIP(nn.Module):
    def __init__(self, alpha: bool = False, activation=QuickGELU, vocab: int = VOCAB, context: int = CONTEXT):
        super().__init__()
        self.visual = Visual(alpha, activation)
        causal = torch.full((context, context), float("-inf")).triu(1)  # a token sees itself and earlier ones
        self.transformer = Transformer(WIDTH, LAYERS, causal, activation)
        self.token_embedding = nn.Embedding(vocab, WIDTH)
        self.positional_embedding = nn.Parameter(torch.zeros(context, WIDTH))
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.zeros(WIDTH, EMBED))
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x.transpose(0, 1)).transpose(0, 1))
        return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ self.text_projection  # at EOT, the largest id


def reference(alpha: bool = False, seed: int = 0, **architecture) -> ReferenceCLIP:
    """Random weights everywhere (LayerNorm gains near 1, non-zero biases) so a swapped or dropped tensor shows."""
    torch.manual_seed(seed)
    model = ReferenceCLIP(alpha, **architecture).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                continue
            is_norm_gain = ".ln_" in f".{name}" and name.endswith("weight")
            param.copy_(1 + 0.1 * torch.randn_like(param) if is_norm_gain else 0.1 * torch.randn_like(param))
    return model


def inputs(seed: int = 1):
    """Images, graded alphas normalised as Alpha-CLIP's (a - 0.5) / 0.26, and zero-padded token rows
    <start> words <end> whose end token is the largest id."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, IMAGE, IMAGE, generator=g)
    ramp = torch.linspace(0, 1, IMAGE)
    alphas = torch.stack([torch.ones(IMAGE, IMAGE), ramp[None, :] * ramp[:, None],
                          torch.rand(IMAGE, IMAGE, generator=g)])[:, None]
    tokens = torch.zeros(4, CONTEXT, dtype=torch.long)
    for row, length in enumerate([1, 5, 9, CONTEXT - 2]):
        words = torch.randint(2, VOCAB - 2, (length,), generator=g)
        tokens[row, : length + 2] = torch.cat([torch.tensor([VOCAB - 2]), words, torch.tensor([VOCAB - 1])])
    return images, (alphas - 0.5) / 0.26, tokens, (tokens != 0).long()


def clip_tokenizer(directory):
    """A word-level tokenizer laid out like CLIP's: pad 0, words, then <start>, <end> as the largest ids."""
    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    vocab.update({f"<w{i}>": i for i in range(len(vocab), VOCAB - 2)})
    vocab.update({"<start>": VOCAB - 2, "<end>": VOCAB - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>", special_tokens=[("<start>", VOCAB - 2), ("<end>", VOCAB - 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<start>", eos_token="<end>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=CONTEXT, model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def alpha_ref():
    return reference(alpha=True, seed=2)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, ref):
    """OpenAI-layout checkpoint -> HF CLIP directory with a tokenizer (the base for Alpha-CLIP)."""
    tmp = tmp_path_factory.mktemp("base")
    torch.save(ref.state_dict(), tmp / "clip.pt")
    return convert_openai_checkpoint(tmp / "clip.pt", tmp / "hf", clip_tokenizer(tmp / "tok"), activation=QUICK).out_dir


def alpha_clip_visual_dict(alpha_ref) -> dict:
    """What Alpha-CLIP releases: model.visual.state_dict() with its attention's in_proj.weight naming."""
    return {k.replace("attn.in_proj_", "attn.in_proj."): v for k, v in alpha_ref.visual.state_dict().items()}


def assert_features(ours: torch.Tensor, theirs: torch.Tensor):
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Tests


def test_openai_conversion_gives_the_reference_features(ref):
    """OpenAI layout -> HF CLIPModel: same image and text features (EOT pooling, causal mask, q/k/v split, proj.T)."""
    config, tensors = openai_to_hf(ref.state_dict(), activation=QUICK)
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size) == (WIDTH, LAYERS, 2, PATCH, IMAGE)
    assert (t.vocab_size, t.max_position_embeddings, t.num_attention_heads, t.eos_token_id, config.projection_dim) == (VOCAB, CONTEXT, 2, VOCAB - 1, EMBED)
    assert v.hidden_act == t.hidden_act == "quick_gelu"
    clip = CLIPModel(config).eval()
    clip.load_state_dict(tensors, strict=True)
    images, _, tokens, mask = inputs()
    with torch.no_grad():
        hf_image = clip.visual_projection(clip.vision_model(pixel_values=images).pooler_output)
        hf_text = clip.text_projection(clip.text_model(input_ids=tokens, attention_mask=mask).pooler_output)
        assert_features(hf_image, ref.visual(images))
        assert_features(hf_text, ref.encode_text(tokens))
        # Unpadded (OpenAI passes no padding mask): the causal mask alone gives the same EOT features.
        assert_features(clip.text_projection(clip.text_model(input_ids=tokens).pooler_output), ref.encode_text(tokens))
    assert clip.logit_scale.item() == pytest.approx(ref.logit_scale.item())


def test_converted_directory_loads_with_load_clip(ref, base_dir):
    """convert_openai_checkpoint writes a directory load_clip reads; as RGBAClip (zero alpha conv) it is the reference."""
    clip, tokenizer = load_clip(base_dir)
    model = RGBAClip(clip).eval()
    images, alphas, _, _ = inputs()
    batch = tokenizer(["a red car", "the man riding a horse"], padding="max_length", return_tensors="pt")
    assert batch["input_ids"][0, :5].tolist() == [VOCAB - 2, 2, 6, 7, VOCAB - 1]
    with torch.no_grad():
        assert_features(model.encode_image(images, alphas), ref.visual(images))
        assert_features(model.encode_text(batch["input_ids"], batch["attention_mask"]), ref.encode_text(batch["input_ids"]))


def test_alpha_clip_gives_the_reference_features_with_graded_alphas(tmp_path, ref, alpha_ref, base_dir):
    """Alpha-CLIP visual file + base text tower: RGBAClip matches conv1(x) + conv1_alpha(alpha) for graded alphas."""
    torch.save(alpha_clip_visual_dict(alpha_ref), tmp_path / "alpha.pth")
    model = load_alpha_clip_visual(tmp_path / "alpha.pth", base_dir)
    images, alphas, tokens, mask = inputs()
    with torch.no_grad():
        ours = model.encode_image(images, alphas)
        assert_features(ours, alpha_ref.visual(images, alphas))
        assert_features(model.encode_text(tokens, mask), ref.encode_text(tokens))  # the base's text tower
    assert (ours[0] - ours[1]).abs().max() > 1e-3  # the alpha really changes the embedding
    assert not model.training and not any(p.requires_grad for p in model.clip.text_model.parameters())


@pytest.mark.parametrize("prefix", ["", "visual.", "module.", "module.visual.", "visual.module."])
def test_alpha_clip_prefixes_are_handled(tmp_path, alpha_ref, base_dir, prefix):
    """Bare, visual.-prefixed and DDP module.-prefixed Alpha-CLIP files (.pth and .safetensors) convert alike."""
    state = {prefix + k: v for k, v in alpha_clip_visual_dict(alpha_ref).items()}
    if prefix.startswith("visual."):
        state["token_embedding.weight"] = torch.zeros(VOCAB, WIDTH)  # a full model's text keys: ignored
    path = tmp_path / ("alpha.safetensors" if "module" in prefix else "alpha.pth")
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = load_alpha_clip_visual(path, base_dir)
    images, alphas, _, _ = inputs()
    with torch.no_grad():
        assert_features(model.encode_image(images, alphas), alpha_ref.visual(images, alphas))


def openai_shapes(width=768, layers=12, patch=16, image=224, text_width=512, text_layers=12, vocab=49408, context=77, embed=512):
    """An OpenAI-layout state dict of meta tensors (no memory) with the given sizes; defaults: ViT-B/16."""
    def blocks(prefix, w, n):
        return {f"{prefix}transformer.resblocks.{i}.{name}": shape for i in range(n) for name, shape in {
            "attn.in_proj_weight": (3 * w, w), "attn.in_proj_bias": (3 * w,), "attn.out_proj.weight": (w, w),
            "attn.out_proj.bias": (w,), "ln_1.weight": (w,), "ln_1.bias": (w,), "mlp.c_fc.weight": (4 * w, w),
            "mlp.c_fc.bias": (4 * w,), "mlp.c_proj.weight": (w, 4 * w), "mlp.c_proj.bias": (w,),
            "ln_2.weight": (w,), "ln_2.bias": (w,)}.items()}
    shapes = {"visual.conv1.weight": (width, 3, patch, patch), "visual.class_embedding": (width,),
              "visual.positional_embedding": ((image // patch) ** 2 + 1, width), "visual.ln_pre.weight": (width,),
              "visual.ln_pre.bias": (width,), "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,),
              "visual.proj": (width, embed), "token_embedding.weight": (vocab, text_width),
              "positional_embedding": (context, text_width), "ln_final.weight": (text_width,),
              "ln_final.bias": (text_width,), "text_projection": (text_width, embed), "logit_scale": (),
              **blocks("visual.", width, layers), **blocks("", text_width, text_layers)}
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()} | {"logit_scale": torch.tensor(4.6052)}


def test_vit_b16_shapes_give_the_published_architecture():
    """Real ViT-B/16 shapes -> openai/clip-vit-base-patch16's config, and the 85.8M-parameter vision tower of the BRIEF."""
    config, tensors = openai_to_hf(openai_shapes(), activation=QUICK)
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size) == (768, 3072, 12, 12, 16, 224)
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads) == (512, 2048, 12, 8)
    assert (t.vocab_size, t.max_position_embeddings, t.bos_token_id, t.eos_token_id, config.projection_dim) == (49408, 77, 49406, 49407, 512)
    vision = sum(v.numel() for k, v in tensors.items() if k.startswith("vision_model."))
    assert round(vision / 1e6, 1) == 85.8
    config, _ = openai_to_hf(openai_shapes(width=1024, layers=24, patch=14, image=336, text_width=768, embed=768), activation=QUICK)
    assert (config.vision_config.num_attention_heads, config.vision_config.image_size, config.text_config.num_attention_heads) == (16, 336, 12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_openai_variants_convert_alike(tmp_path, ref):
    """module. prefixes, fp16 weights, TorchScript extras and a TorchScript archive give the same tensors."""
    _, expected = openai_to_hf(ref.state_dict(), activation=QUICK)
    wrapped = {f"module.{k}": v.half() for k, v in ref.state_dict().items()} | {"input_resolution": torch.tensor(IMAGE)}
    torch.save({"epoch": 3, "state_dict": wrapped}, tmp_path / "train.pt")
    _, from_half = openai_to_hf(read_state_dict(tmp_path / "train.pt"), activation=QUICK)
    for key, tensor in expected.items():
        assert from_half[key].dtype == torch.float32
        torch.testing.assert_close(from_half[key], tensor.half().float())
    _, _, tokens, _ = inputs()
    torch.jit.trace_module(ref, {"encode_text": tokens[:1]}).save(str(tmp_path / "jit.pt"))  # as OpenAI's .pt files
    _, from_jit = openai_to_hf(read_state_dict(tmp_path / "jit.pt"), activation=QUICK)
    assert from_jit.keys() == expected.keys()
    assert all(torch.equal(from_jit[k], expected[k]) for k in expected)


def damage(state: dict, how: str) -> dict:
    state = dict(state)
    if how == "drop-block-bias":
        del state["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    elif how == "drop-proj":
        del state["visual.proj"]
    elif how == "hf-layout":
        state = {f"vision_model.{k}": v for k, v in state.items()}
    elif how == "bad-shape":
        state["transformer.resblocks.0.mlp.c_proj.weight"] = torch.zeros(WIDTH, 3 * WIDTH)
    elif how == "unknown-key":
        state["visual.extra_head.weight"] = torch.zeros(3)
    elif how == "lora":
        state["visual.transformer.resblocks.0.attn.out_proj.lora_A"] = torch.zeros(4, WIDTH)
    elif how == "alpha":
        state["visual.conv1_alpha.weight"] = torch.zeros(WIDTH, 1, PATCH, PATCH)
    return state


@pytest.mark.parametrize("how, message", [
    ("drop-block-bias", "visual.transformer.resblocks.1.mlp.c_fc.bias"),
    ("drop-proj", "missing visual.proj"),
    ("hf-layout", "Hugging Face CLIP checkpoint already"),
    ("bad-shape", "transformer.resblocks.0.mlp.c_proj.weight has shape (128, 384)"),
    ("unknown-key", "visual.extra_head.weight"),
    ("lora", "LoRA tensors this converter does not know"),
    ("alpha", "Alpha-CLIP checkpoint"),
])
def test_bad_checkpoints_are_user_errors_naming_the_key(ref, how, message):
    """A missing, unknown or misshapen tensor, another layout, LoRA or an alpha conv: a UserError saying which."""
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        openai_to_hf(damage(ref.state_dict(), how), activation=QUICK)


def test_alpha_clip_errors(tmp_path, alpha_ref, base_dir):
    """An Alpha-CLIP file without conv1_alpha, or with a misshapen one, or missing: a UserError naming it."""
    state = alpha_clip_visual_dict(alpha_ref)
    torch.save({k: v for k, v in state.items() if k != "conv1_alpha.weight"}, tmp_path / "plain.pth")
    with pytest.raises(UserError, match="missing conv1_alpha.weight"):
        load_alpha_clip_visual(tmp_path / "plain.pth", base_dir)
    torch.save(state | {"conv1_alpha.weight": torch.zeros(WIDTH, 1, 8, 8)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="conv1_alpha.weight has shape"):
        load_alpha_clip_visual(tmp_path / "bad.pth", base_dir)
    torch.save(state | {"transformer.resblocks.1.mlp.c_fc.weight": torch.zeros(3 * WIDTH, WIDTH)}, tmp_path / "block.pth")
    with pytest.raises(UserError, match=r"transformer.resblocks.1.mlp.c_fc.weight has shape \(384, 128\)"):
        load_alpha_clip_visual(tmp_path / "block.pth", base_dir)
    with pytest.raises(UserError, match="not found"):
        load_alpha_clip_visual(tmp_path / "nothing.pth", base_dir)


def test_unreadable_files_are_user_errors(tmp_path, ref):
    """A pickled module (refused: weights_only), a broken .safetensors, or no tensors at all: one-line UserErrors."""
    torch.save(ref, tmp_path / "module.pt")
    with pytest.raises(UserError, match="plain tensors"):
        read_state_dict(tmp_path / "module.pt")
    (tmp_path / "bad.safetensors").write_text("not safetensors")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")
    torch.save({"epoch": 3, "state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match="no state dict of tensors"):
        read_state_dict(tmp_path / "empty.pt")


def test_without_a_tokenizer_the_weights_are_written_with_a_warning(tmp_path, ref, caplog):
    """No tokenizer: config + weights still written and loadable by transformers; the warning and load_clip say so."""
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    with caplog.at_level(logging.WARNING, logger="fc"):
        out = convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "hf", None, activation=QUICK).out_dir
    assert "WITHOUT a tokenizer" in caplog.text  # a BPE file found installed does not fit its 40-token vocabulary
    _, info = CLIPModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with pytest.raises(UserError, match="no tokenizer"):
        load_clip(out)
    with pytest.raises(UserError, match="not empty"):
        convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "hf", None, activation=QUICK)
    with pytest.raises(UserError, match="replace its own input"):
        convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path, None, activation=QUICK, overwrite=True)


def test_cli_converts_openai_then_alpha_clip_end_to_end(tmp_path, ref, alpha_ref):
    """`fc convert` writes a HF CLIP dir from a .pt, then a FocusClip export from an Alpha-CLIP file on top of it."""
    app = typer.Typer()
    app.command()(convert)
    torch.save({k: v.half() for k, v in ref.state_dict().items()}, tmp_path / "ViT.pt")  # OpenAI ships fp16
    torch.save({f"module.{k}": v for k, v in alpha_clip_visual_dict(alpha_ref).items()}, tmp_path / "alpha.pth")
    runner = CliRunner()
    result = runner.invoke(app, [str(tmp_path / "ViT.pt"), "--out", str(tmp_path / "clip"), "--activation", QUICK,
                                 "--tokenizer", str(clip_tokenizer(tmp_path / "tok"))])
    assert result.exit_code == 0, result.output
    assert f"patch {PATCH}, {IMAGE} px" in result.output and "MLP activation quick_gelu (as given)" in result.output
    result = runner.invoke(app, [str(tmp_path / "alpha.pth"), "--base", str(tmp_path / "clip"), "--out", str(tmp_path / "alpha")])
    assert result.exit_code == 0, result.output
    assert "Alpha-CLIP's model code always uses QuickGELU" in result.output and "no LoRA tensors" in result.output
    loaded = FocusClip.load(tmp_path / "alpha")
    images, alphas, _, _ = inputs()
    with torch.no_grad():
        assert_features(loaded.model.encode_image(images, alphas), alpha_ref.visual(images, alphas))
    text = loaded.tokenizer(["a red car"], return_tensors="pt")["input_ids"]
    half = reference()
    half.load_state_dict({k: v.half().float() for k, v in ref.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text("a red car"), torch.nn.functional.normalize(half.encode_text(text), dim=-1), atol=ATOL, rtol=1e-4)
    result = runner.invoke(app, [str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x"), "--activation", QUICK])
    assert result.exit_code == 1 and isinstance(result.exception, UserError) and "not found" in str(result.exception)


# ---------------------------------------------------------------------------------------------
# The MLP activation, TorchScript archives


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_a_state_dict_needs_the_activation_said(tmp_path, ref):
    """A state dict cannot tell QuickGELU from GELU: no --activation is a UserError, never a guess."""
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    with pytest.raises(UserError, match="cannot tell the MLP activation.*--activation quick_gelu"):
        convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_gelu_models_convert_with_gelu_and_differ_from_quick_gelu(tmp_path):
    """An open_clip-style GELU model matches only with activation gelu; as quick_gelu it is measurably another model."""
    gelu_ref = reference(seed=3, activation=nn.GELU)
    images, _, tokens, mask = inputs()
    features = {}
    for activation in ("gelu", "quick_gelu"):
        config, tensors = openai_to_hf(gelu_ref.state_dict(), activation=activation)
        clip = CLIPModel(config).eval()
        clip.load_state_dict(tensors, strict=True)
        with torch.no_grad():
            features[activation] = clip.visual_projection(clip.vision_model(pixel_values=images).pooler_output)
    with torch.no_grad():
        assert_features(features["gelu"], gelu_ref.visual(images))
        # Close (cosine ~0.9999), which is why a guess would go unnoticed, yet ~1000x float32 error on O(1) features.
        assert (features["quick_gelu"] - gelu_ref.visual(images)).abs().max() > 50 * ATOL


@pytest.mark.parametrize("activation", [nn.GELU, QuickGELU])
def test_torchscript_archives_tell_their_activation_and_keep_an_attn_mask(tmp_path, recwarn, activation):
    """An OpenAI-style TorchScript archive (causal attn_mask buffer included) converts without --activation or warnings."""
    model = reference(seed=4, activation=activation)
    model.register_buffer("attn_mask", torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1))
    _, _, tokens, mask = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings are the test's own
        torch.jit.trace_module(model, {"encode_text": tokens[:1]}).save(str(tmp_path / "jit.pt"))
    recwarn.clear()
    result = convert_openai_checkpoint(tmp_path / "jit.pt", tmp_path / "hf", clip_tokenizer(tmp_path / "tok"))
    expected = "gelu" if activation is nn.GELU else "quick_gelu"
    assert any(f"MLP activation {expected} (detected" in note for note in result.notes)
    assert not [w for w in recwarn if "jit" in str(w.message)], [str(w.message) for w in recwarn]
    clip, _ = load_clip(result.out_dir)
    assert clip.config.vision_config.hidden_act == clip.config.text_config.hidden_act == expected
    with torch.no_grad():
        assert_features(clip.text_projection(clip.text_model(input_ids=tokens, attention_mask=mask).pooler_output),
                        model.encode_text(tokens))
    other = "quick_gelu" if expected == "gelu" else "gelu"
    with pytest.raises(UserError, match=f"--activation {other}, but the modules"):
        convert_openai_checkpoint(tmp_path / "jit.pt", tmp_path / "hf2", activation=other)


def test_an_attn_mask_that_is_not_causal_is_refused(ref):
    """Only CLIP's causal text mask can be dropped (HF rebuilds it); any other mask is a UserError naming it."""
    state = ref.state_dict() | {"attn_mask": torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)}
    openai_to_hf(state, activation=QUICK)
    state["attn_mask"] = torch.zeros(CONTEXT, CONTEXT)
    with pytest.raises(UserError, match="attn_mask: an attention mask"):
        openai_to_hf(state, activation=QUICK)


# ---------------------------------------------------------------------------------------------
# A tokenizer from OpenAI's BPE file


needs_bpe = pytest.mark.skipif(find_bpe_vocab() is None, reason="OpenAI's bpe_simple_vocab_16e6.txt.gz not found: "
                               "install open-clip-torch with --no-deps (scripts/setup.sh does)")


@needs_bpe
@pytest.mark.parametrize("how", ["--bpe", "installed"])
def test_bpe_only_conversion_gives_a_model_dir_that_loads_and_pools_at_the_end(tmp_path, how):
    """No tokenizer files: CLIP's is built from the BPE file (given, or found installed); load_clip and fc train accept the result."""
    model = reference(seed=5, vocab=49408, context=77)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    bpe = find_bpe_vocab() if how == "--bpe" else None
    result = convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "hf", bpe=bpe, activation=QUICK)
    assert any("tokenizer built from the BPE file" in note for note in result.notes)
    clip, tokenizer = load_clip(result.out_dir)
    assert (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.model_max_length) == (49408, 49406, 49407, 77)
    # Every kind of caption the cleaning repairs: OpenAI's ids (zero-padded to 77, as its tokenize()
    # gives them) into the reference model, ours through tokenize_captions into the converted one.
    texts = list(CAPTIONS.values())
    openai_ids = torch.zeros(len(texts), 77, dtype=torch.long)
    for row, ids in enumerate(map(ReferenceTokenizer(find_bpe_vocab()).encode, texts)):
        openai_ids[row, : len(ids)] = torch.tensor(ids)
    batch = tokenize_captions(tokenizer, texts)
    assert batch["input_ids"][0].tolist()[:7] == [49406, 320, 1125, 539, 320, 1929, 49407]  # "a photo of a dog"
    with torch.no_grad():  # OpenAI pools at the largest id, HF at the first end token: the same place
        assert_features(clip.text_projection(clip.text_model(**batch).pooler_output), model.encode_text(openai_ids))
    build_model(ModelConfig(name_or_path=str(result.out_dir), image_size=IMAGE), LoraConfig(), None)  # as fc train does


def test_a_bad_bpe_file_is_a_user_error(tmp_path, ref):
    """A missing, non-gzip or merge-less BPE file: one line naming it."""
    torch.save(ref.state_dict(), tmp_path / "clip.pt")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip")
    (tmp_path / "short.txt.gz").write_bytes(gzip.compress(b"#version: 0.2\na b\n"))
    for name, message in (("nothing.gz", "not found"), ("bad.txt.gz", "not a gzipped"), ("short.txt.gz", "has 1 merges")):
        with pytest.raises(UserError, match=message):
            convert_openai_checkpoint(tmp_path / "clip.pt", tmp_path / "hf", bpe=tmp_path / name, activation=QUICK)


# ---------------------------------------------------------------------------------------------
# Alpha-CLIP LoRA checkpoints (loralib, as its lora_adapt=True builds them)

RANK = 16  # Alpha-CLIP's default rank


def loralib_factors(seed: int = 7) -> dict[str, torch.Tensor]:
    """Trained-looking factors for every LoRA layer of Alpha-CLIP's vision blocks, in loralib's layout:
    in_proj MergedLinear(enable_lora=[q, k, v] = [True, False, True]): A 2r x D, B 2D x r;
    out_proj, c_fc, c_proj Linear: A r x in, B out x r."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"attn.in_proj": (2 * RANK, WIDTH, 2 * WIDTH), "attn.out_proj": (RANK, WIDTH, WIDTH),
              "mlp.c_fc": (RANK, WIDTH, 4 * WIDTH), "mlp.c_proj": (RANK, 4 * WIDTH, WIDTH)}
    out = {}
    for i in range(LAYERS):
        for layer, (a_rows, fan_in, b_rows) in shapes.items():
            out[f"transformer.resblocks.{i}.{layer}.lora_A"] = 0.1 * torch.randn(a_rows, fan_in, generator=g)
            out[f"transformer.resblocks.{i}.{layer}.lora_B"] = 0.1 * torch.randn(b_rows, RANK, generator=g)
    return out


def folded_by_hand(factors: dict, scaling: float) -> dict[str, torch.Tensor]:
    """Alpha-CLIP weight key -> the delta, by hand: q rows get B[:D] @ A[:r], v rows B[D:] @ A[r:], k rows nothing."""
    out = {}
    for key in factors:
        if not key.endswith("lora_A"):
            continue
        layer = key.removesuffix(".lora_A")
        a, b = factors[key], factors[f"{layer}.lora_B"]
        if layer.endswith("in_proj"):
            q = b[:WIDTH] @ a[:RANK]
            v = b[WIDTH:] @ a[RANK:]
            out[f"{layer}.weight"] = torch.cat([q, torch.zeros(WIDTH, WIDTH), v]) * scaling
        else:
            out[f"{layer}.weight"] = b @ a * scaling
    return out


@pytest.fixture(scope="module")
def lora_base_dir(tmp_path_factory, ref, alpha_ref):
    """The CLIP a LoRA run started from: alpha_ref's vision weights (frozen under LoRA) with ref's text tower."""
    tmp = tmp_path_factory.mktemp("lora-base")
    state = {f"visual.{k}": v for k, v in alpha_ref.visual.state_dict().items() if k != "conv1_alpha.weight"}
    state |= {k: v for k, v in ref.state_dict().items() if not k.startswith("visual.")}
    torch.save(state, tmp / "clip.pt")
    return convert_openai_checkpoint(tmp / "clip.pt", tmp / "hf", clip_tokenizer(tmp / "tok"), activation=QUICK).out_dir


def lora_dict(alpha_ref, factors: dict, merged: bool, scaling: float = 1 / RANK) -> dict:
    """model.visual.state_dict() of a LoRA Alpha-CLIP under DDP: train mode (unmerged) or after eval() (merged, factors stale)."""
    state = alpha_clip_visual_dict(alpha_ref)
    if merged:
        state = {k: v + folded_by_hand(factors, scaling).get(k, 0) for k, v in state.items()}
    return {f"module.{k}": v for k, v in (state | factors).items()}


def expected_visual(alpha_ref, factors: dict, scaling: float = 1 / RANK):
    """alpha_ref's visual with the deltas added to its weights by hand."""
    model = reference(alpha=True, seed=2)
    deltas = folded_by_hand(factors, scaling)
    with torch.no_grad():
        for name, param in model.visual.named_parameters():
            param += deltas.get(name.replace("attn.in_proj_weight", "attn.in_proj.weight"), 0)
    return model.visual


@pytest.mark.parametrize("merged", [False, True], ids=["unmerged", "merged"])
def test_alpha_clip_lora_checkpoints_convert_to_the_folded_model(tmp_path, alpha_ref, lora_base_dir, merged):
    """Train-mode (unmerged) and eval-mode (merged, stale factors) loralib dicts both give base + B @ A / r, and say which."""
    factors = loralib_factors()
    torch.save(lora_dict(alpha_ref, factors, merged), tmp_path / "lora.pth")
    result = convert_alpha_clip_checkpoint(tmp_path / "lora.pth", lora_base_dir, tmp_path / "out")
    assert any(f"LoRA on {4 * LAYERS} layers found {'MERGED' if merged else 'UNMERGED'}" in n for n in result.notes), result.notes
    model = FocusClip.load(result.out_dir).model
    images, alphas, _, _ = inputs()
    truth, unadapted = expected_visual(alpha_ref, factors), alpha_ref.visual
    with torch.no_grad():
        ours = model.encode_image(images, alphas)
        assert_features(ours, truth(images, alphas))
        assert cosine(ours, unadapted(images, alphas)).min() < 0.999  # the deltas matter: not the base model


def test_lora_scaling_and_explicit_state(tmp_path, alpha_ref, base_dir, lora_base_dir):
    """lora_alpha sets the scaling; a base that matches neither case is a UserError unless the state is said."""
    factors = loralib_factors(seed=8)
    torch.save(lora_dict(alpha_ref, factors, merged=False), tmp_path / "lora.pth")
    images, alphas, _, _ = inputs()
    model = load_alpha_clip_visual(tmp_path / "lora.pth", lora_base_dir, lora_alpha=RANK)  # scaling 1
    with torch.no_grad():
        assert_features(model.encode_image(images, alphas), expected_visual(alpha_ref, factors, 1.0)(images, alphas))
    with pytest.raises(UserError, match="cannot tell whether the LoRA deltas are merged"):
        load_alpha_clip_visual(tmp_path / "lora.pth", base_dir)  # ref's vision tower: not where this LoRA started
    model = load_alpha_clip_visual(tmp_path / "lora.pth", base_dir, lora="unmerged")
    with torch.no_grad():
        assert_features(model.encode_image(images, alphas), expected_visual(alpha_ref, factors)(images, alphas))
    zero = {k: torch.zeros_like(v) if k.endswith("lora_B") else v for k, v in factors.items()}
    torch.save(lora_dict(alpha_ref, zero, merged=False), tmp_path / "zero.pth")
    result = convert_alpha_clip_checkpoint(tmp_path / "zero.pth", base_dir, tmp_path / "zero")
    assert any("all factors zero" in note for note in result.notes)


def test_lora_factors_of_the_wrong_shape_are_user_errors(tmp_path, alpha_ref, lora_base_dir):
    """A factor that fits neither loralib layout, or half a pair: a UserError naming the layer."""
    factors = loralib_factors()
    factors["transformer.resblocks.1.attn.in_proj.lora_B"] = torch.zeros(WIDTH, RANK)  # q only: ambiguous
    torch.save(lora_dict(alpha_ref, factors, merged=False), tmp_path / "bad.pth")
    with pytest.raises(UserError, match="LoRA layer transformer.resblocks.1.attn.in_proj"):
        load_alpha_clip_visual(tmp_path / "bad.pth", lora_base_dir)
    with pytest.raises(UserError, match="the base model has nothing for vision_model.encoder.layers.0.self_attn.q_proj.weight"):
        alpha_clip_visual_to_hf(lora_dict(alpha_ref, loralib_factors(), merged=False), base={})
    factors = loralib_factors()
    del factors["transformer.resblocks.0.mlp.c_fc.lora_B"]
    torch.save(lora_dict(alpha_ref, factors, merged=False), tmp_path / "half.pth")
    with pytest.raises(UserError, match="mlp.c_fc.lora_B missing"):
        load_alpha_clip_visual(tmp_path / "half.pth", lora_base_dir)
