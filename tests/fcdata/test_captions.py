"""Captions are tokenised as OpenAI CLIP was trained: token ids equal those of OpenAI's reference
tokenizer (tests/openai_tokenizer.py) over the real BPE vocabulary, for captions covering each kind
of text the cleaning repairs."""

import pytest
from openai_tokenizer import CAPTIONS, ReferenceTokenizer  # tests/, on sys.path through its conftest.py

from fcdata.captions import clean_caption, tokenize_captions
from fctrain.clip_tokenizer import build_clip_tokenizer, find_bpe_vocab

VOCAB_FILE = find_bpe_vocab()
needs_vocab = pytest.mark.skipif(
    VOCAB_FILE is None,
    reason="OpenAI's bpe_simple_vocab_16e6.txt.gz not found: install open-clip-torch (scripts/setup.sh does, --no-deps)",
)


@pytest.fixture(scope="module")
def clip_tokenizer():
    return build_clip_tokenizer(VOCAB_FILE)


@pytest.fixture(scope="module")
def reference():
    return ReferenceTokenizer(VOCAB_FILE)


def ours(tokenizer, texts) -> list[list[int]]:
    batch = tokenize_captions(tokenizer, texts, return_tensors=None)
    return [ids[: sum(mask)] for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


@needs_vocab
def test_token_ids_equal_openai_reference_for_every_kind_of_caption(clip_tokenizer, reference):
    """Cleaning + CLIP's BPE give OpenAI's ids for each class (quotes, entities, ligatures, width, mojibake, controls, BOM)."""
    names, texts = list(CAPTIONS), list(CAPTIONS.values())
    expected = [reference.encode(text) for text in texts]
    for name, got, want in zip(names, ours(clip_tokenizer, texts), expected):
        assert got == want, f"{name}: {CAPTIONS[name]!r}"


@needs_vocab
def test_the_cleaning_is_what_makes_them_equal(clip_tokenizer, reference):
    """Without cleaning, Hugging Face's CLIP tokenizer gives other ids for most of the repaired classes."""
    repaired = ["curly quotes", "html entities", "html brackets", "html escaped twice", "html numeric", "ligatures",
                "full-width letters", "mojibake", "mojibake quotes", "control characters", "byte order mark"]
    raw = clip_tokenizer([CAPTIONS[name] for name in repaired])["input_ids"]
    differ = [name for name, ids in zip(repaired, raw) if ids != reference.encode(CAPTIONS[name])]
    assert len(differ) >= len(repaired) - 1, f"only {differ} differ: the caption set no longer tests the cleaning"


@needs_vocab
def test_pinned_ids_of_openai_vocabulary(clip_tokenizer):
    """A few literal ids of OpenAI's vocabulary, so a wrong vocabulary or reference cannot agree with itself."""
    start, a, photo, of, dog, end = 49406, 320, 1125, 539, 1929, 49407
    got = ours(clip_tokenizer, ["a photo of a dog", "A  PHOTO of a dog ", "a photo &amp;amp; a dog", "\ufeffa photo"])
    assert got[0] == got[1] == [start, a, photo, of, a, dog, end]
    amp = clip_tokenizer.convert_tokens_to_ids("&</w>")
    assert got[2] == [start, a, photo, amp, a, dog, end]
    assert got[3] == [start, a, photo, end]


@needs_vocab
def test_literal_special_tokens_stay_text(clip_tokenizer, reference):
    """<|endoftext|> typed in a caption is BPE text, never the end id where CLIP would pool (OpenAI's shortcut differs)."""
    texts = [CAPTIONS["literal start token"], CAPTIONS["literal end token"]]
    for got in ours(clip_tokenizer, texts):
        assert got[0] == 49406 and got[-1] == 49407
        assert 49406 not in got[1:-1] and 49407 not in got[1:-1]
    openai_shortcut = ReferenceTokenizer(VOCAB_FILE, specials_as_text=False)
    assert 49407 in openai_shortcut.encode(texts[1])[1:-1]


@needs_vocab
def test_long_captions_are_cut_with_the_end_token_last(clip_tokenizer):
    """Cut at 77 tokens (or max_length), the end token still last, as OpenAI's tokenize(truncate=True)."""
    long = CAPTIONS["long"]
    assert len(ours(clip_tokenizer, [long])[0]) == 77 and ours(clip_tokenizer, [long])[0][-1] == 49407
    short = tokenize_captions(clip_tokenizer, [long, "a dog"], max_length=16, return_tensors="np")
    assert short["input_ids"].shape == (2, 16) and short["input_ids"][0, -1] == 49407


def test_clean_caption_matches_openai_cleaning_without_a_vocabulary():
    """The cleaning alone (no vocabulary needed): each repaired class becomes the plain text CLIP saw."""
    assert clean_caption(CAPTIONS["curly quotes"]) == "the dog's \"favourite\" ball"
    assert clean_caption(CAPTIONS["html escaped twice"]) == "salt & pepper"
    assert clean_caption(CAPTIONS["ligatures"]) == "fish on the floor"
    assert clean_caption(CAPTIONS["full-width letters"]) == "red car number 12"
    assert clean_caption(CAPTIONS["mojibake"]) == "caf\u00e9 au lait"
    assert clean_caption(CAPTIONS["control characters"]) == "a dog on grass"
    assert clean_caption(CAPTIONS["byte order mark"]) == "a red bus"
    assert clean_caption(CAPTIONS["case and spacing"]) == "a man riding a horse"
    for text in CAPTIONS.values():
        assert clean_caption(text) == ReferenceTokenizer.clean(text)


def test_library_code_tokenises_captions_only_through_tokenize_captions():
    """No fcdata/fctrain module calls a tokenizer on text directly: every caption gets the same cleaning."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    direct = []
    for path in [*(root / "fcdata").rglob("*.py"), *(root / "fctrain").rglob("*.py")]:  # subpackages too
        if path.name == "captions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "tokenizer":
                    direct.append(f"{path.name}:{node.lineno}")
    assert not direct, f"tokenizer called directly (use fcdata.captions.tokenize_captions): {direct}"


def test_phrase_keys_follow_the_cleaning():
    """Captions the text tower sees as one text share a loss key (not negatives of each other); others do not."""
    from fcdata.loader import phrase_key

    assert phrase_key("fish &amp; chips") == phrase_key("Fish  & chips") == phrase_key("\ufefffish & chips")
    assert phrase_key("the dog\u2019s ball") == phrase_key("the dog's ball") != phrase_key("the dogs ball")
