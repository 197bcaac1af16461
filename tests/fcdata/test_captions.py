"""Captions are tokenised as OpenAI CLIP was trained: token ids equal those of OpenAI's reference
tokenizer (its simple_tokenizer algorithm, written again below from its description) over the real
BPE vocabulary, for captions covering each kind of text the cleaning repairs."""

import gzip
import html
from functools import lru_cache

import ftfy
import pytest
import regex

from fcdata.captions import clean_caption, tokenize_captions
from fctrain.clip_tokenizer import build_clip_tokenizer, find_bpe_vocab

VOCAB_FILE = find_bpe_vocab()
needs_vocab = pytest.mark.skipif(
    VOCAB_FILE is None,
    reason="OpenAI's bpe_simple_vocab_16e6.txt.gz not found: install open-clip-torch (scripts/setup.sh does, --no-deps)",
)

CAPTIONS = {
    "plain": "a photo of a dog",
    "case and spacing": "  A Man\tRIDING a\n horse  ",
    "curly quotes": "the dog\u2019s \u201cfavourite\u201d ball",
    "html entities": "fish &amp; chips on a plate",
    "html brackets": "a sign saying &lt;stop&gt;",
    "html escaped twice": "salt &amp;amp; pepper",
    "html numeric": "caf&#233; table &#x2014; outside",
    "ligatures": "\ufb01sh on the \ufb02oor",
    "full-width letters": "\uff32\uff25\uff24 car number \uff11\uff12",
    "mojibake": "caf\u00c3\u00a9 au lait",
    "mojibake quotes": "the man\u00e2\u20ac\u2122s hat",
    "control characters": "a\x00 dog\x07 on\x1b grass",
    "c1 control": "red\x85 bus",
    "byte order mark": "\ufeffa red bus",
    "no-break and ideographic spaces": "a\u00a0red\u3000car",
    "combining accent": "cafe\u0301 sign",
    "accented capitals": "\u00c9COLE and \u00c5LAND",
    "emoji and symbols": "a \U0001f436 dog \u2764 50% off!!",
    "digits and contractions": "it's 2 dogs' toys, they'll play 10 times",
    "literal start token": "<|startoftext|> a cat",
    "literal end token": "a cat <|endoftext|> sitting",
    "long": " ".join(["the tall green tree beside a small red house"] * 12),
    "empty": "",
}


# ---------------------------------------------------------------------------------------------
# The reference: OpenAI's simple_tokenizer, from its description


def reference_bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the rest to 256+n."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    codes, extra = list(keep), 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, codes)))


class ReferenceTokenizer:
    """OpenAI CLIP's tokenizer: clean, lowercase, split by its regex, byte-encode, apply the ranked
    merges greedily (lowest rank first, all its occurrences), look the pieces up. `specials_as_text`
    turns off its one shortcut, a literal <|startoftext|>/<|endoftext|> becoming the special id:
    the regex and the BPE then treat that text as any other."""

    def __init__(self, path, specials_as_text: bool = True):
        rows = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(row.split()) for row in rows]
        self.byte_char = reference_bytes_to_unicode()
        pieces = list(self.byte_char.values())
        pieces += [p + "</w>" for p in pieces] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {p: i for i, p in enumerate(pieces)}
        self.rank = {m: i for i, m in enumerate(merges)}
        self.specials_as_text = specials_as_text
        specials = "" if specials_as_text else r"<\|startoftext\|>|<\|endoftext\|>|"
        self.split = regex.compile(specials + r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
        self.bpe = lru_cache(maxsize=None)(self._bpe)

    @staticmethod
    def clean(text: str) -> str:
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip().lower()

    def _bpe(self, word: str) -> list[str]:
        if not self.specials_as_text and word in ("<|startoftext|>", "<|endoftext|>"):
            return [word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self.rank.get(pair, float("inf")))
            if best not in self.rank:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str, context: int = 77) -> list[int]:
        ids = []
        for word in self.split.findall(self.clean(text)):
            chars = "".join(self.byte_char[b] for b in word.encode("utf-8"))
            ids += [self.ids[piece] for piece in self.bpe(chars)]
        return [self.ids["<|startoftext|>"]] + ids[: context - 2] + [self.ids["<|endoftext|>"]]


# ---------------------------------------------------------------------------------------------


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
    for path in [*(root / "fcdata").glob("*.py"), *(root / "fctrain").glob("*.py")]:
        if path.name == "captions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "tokenizer":
                    direct.append(f"{path.name}:{node.lineno}")
    assert not direct, f"tokenizer called directly (use fcdata.captions.tokenize_captions): {direct}"
