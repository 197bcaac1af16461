"""OpenAI CLIP's reference tokenizer (its simple_tokenizer algorithm, written again here from its
description) and a caption set covering each kind of text its cleaning repairs: the expected token
ids for tests/fcdata/test_captions.py and tests/fctrain/test_convert.py."""

import gzip
import html
from functools import lru_cache

import ftfy
import regex

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
