"""CLIP's own tokenizer built from OpenAI's BPE file, for checkpoints that come without tokenizer files.

OpenAI CLIP, open_clip and Alpha-CLIP ship their vocabulary as `bpe_simple_vocab_16e6.txt.gz`: a
header line, then merges, one "left right" pair a line. The vocabulary is fixed by that file:

    ids 0..255       the 256 bytes, each as a printable character (GPT-2's byte-to-unicode table)
    ids 256..511     the same with "</w>" (end of word)
    ids 512..49405   the first 48894 merges, joined, in file order
    49406, 49407     <|startoftext|>, <|endoftext|>

and is written here as a Hugging Face CLIPTokenizer (tokenizer.json) with bos 49406, eos = pad =
49407 and 77 tokens, which `fctrain.model.load_clip` and `fc train` read.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

from fcdata.captions import CONTEXT_LENGTH
from fcdata.errors import UserError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # OpenAI's simple_tokenizer keeps this many merges of the file
VOCAB_SIZE = 2 * 256 + MERGES + 2
START, END = "<|startoftext|>", "<|endoftext|>"
# Packages that ship the file beside their code; looked up without importing them (open_clip
# imports torchvision at import time).
PACKAGES = ("open_clip", "clip", "alpha_clip")


def find_bpe_vocab() -> Path | None:
    """The BPE file of an installed open_clip, OpenAI `clip` or Alpha-CLIP package, or None."""
    for package in PACKAGES:
        try:
            spec = importlib.util.find_spec(package)  # locates a top-level package without running it
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / BPE_FILE
            if path.is_file():
                return path
    return None


def byte_characters() -> list[str]:
    """GPT-2's byte-to-unicode table in its vocabulary order: first the printable Latin-1 bytes as
    themselves (33..126, 161..172, 174..255), then the other bytes (controls, space, ...) as the
    characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + i) for i in range(len(others))]


def read_bpe(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order) of an OpenAI BPE file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"BPE file {path} not found")
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a gzipped UTF-8 BPE file like OpenAI's {BPE_FILE} ({exc})") from exc
    rows = [row for row in lines[1:] if row][:MERGES]  # the first line is a header
    if len(rows) < MERGES:
        raise UserError(f"{path}: not OpenAI's CLIP BPE file (it has {len(rows)} merges; CLIP's at least {MERGES})")
    merges = [tuple(row.split(" ")) for row in rows]
    bad = next((i for i, pair in enumerate(merges) if len(pair) != 2 or not all(pair)), None)
    if bad is not None:
        raise UserError(f"{path}: not OpenAI's CLIP BPE file (merge {bad + 1} is {rows[bad]!r}, not 'left right')")
    base = byte_characters()
    tokens = base + [c + "</w>" for c in base] + ["".join(pair) for pair in merges] + [START, END]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise UserError(f"{path}: its merges repeat tokens ({len(vocab)} distinct of {VOCAB_SIZE}); not CLIP's BPE file")
    return vocab, merges


def build_clip_tokenizer(path: str | Path):
    """A Hugging Face CLIPTokenizer from an OpenAI BPE file (see the module docstring)."""
    from transformers import CLIPTokenizer

    vocab, merges = read_bpe(path)
    return CLIPTokenizer(vocab=vocab, merges=merges, bos_token=START, eos_token=END, pad_token=END,
                         unk_token=END, model_max_length=CONTEXT_LENGTH)
