"""A small tokenizer trained on the data's own phrases, for the tiny test/quick-start model.

Real runs use the CLIP tokenizer in the user's model directory; this one exists so that the whole
pipeline (tokenise, encode, train, export, load) runs offline without any pretrained download.
`load_tokenizer` is the one way a saved tokenizer is read (a model directory, `fc convert --tokenizer`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fcdata.captions import CONTEXT_LENGTH
from fcdata.errors import UserError

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
# Order fixes the ids: pad 0, unk 1, start 2, end 3. The end id must not be 2: HF's CLIP text
# tower treats eos_token_id == 2 as "legacy" and pools at argmax(input_ids) instead of at the
# end token (see fctrain.model.check_text_pooling).
SPECIAL_TOKENS = (PAD, UNK, START, END)
VOCABULARY_FILES = ("tokenizer.json", "vocab.json")  # what a saved tokenizer directory holds
WORD_START = "\u2581"  # "▁", marks the first piece of each word


def build_tokenizer(phrases: Iterable[str], out_dir: Path, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a lowercasing BPE tokenizer on `phrases`, save it into `out_dir`, return it loaded.

    Every text is wrapped as `<start> ... <end>`, padded with `<pad>` and cut at 77 tokens (the
    end token survives the cut). The same phrases always give the same files.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    # BPE, as CLIP's own tokenizer: the tiny model sees the same kind of sub-word units as the real
    # one, and a word never seen in training still splits into known pieces (down to single
    # characters) instead of collapsing to <unk> as a word-level model would. Word starts are marked
    # with a "▁" character (Metaspace) rather than CLIP's "</w>" end-of-word suffix: the tokenizers
    # library numbers suffixed tokens in hash-map order, so two trainings on the same phrases give
    # different ids and merges (huggingface/tokenizers#1794), while a marker character is part of
    # the sorted base alphabet and training is deterministic. It also decodes back to spaced text.
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # NFKC folds look-alike characters (full-width letters, ligatures); runs of any whitespace
    # (tabs, newlines) become one space, as in CLIP's own text cleaning.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    # Words (split at spaces, each marked "▁word"), then each punctuation mark on its own.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always", split=True),
         pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=WORD_START, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        # Every lowercase ASCII letter, digit and punctuation mark is in the vocabulary even when the
        # training phrases lack it, so test captions rarely hit <unk>.
        initial_alphabet=list(WORD_START + string.ascii_lowercase + string.digits + string.punctuation),
        show_progress=False,
    )
    # Sorted (duplicates kept: BPE merges follow word frequency) so the result cannot depend on
    # the order the phrases arrive in.
    tokenizer.train_from_iterator(sorted(phrases), trainer=trainer)
    start_id, end_id = tokenizer.token_to_id(START), tokenizer.token_to_id(END)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}",
        pair=f"{START} $A {END} $B:1 {END}:1",
        special_tokens=[(START, start_id), (END, end_id)],
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=START,
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=CONTEXT_LENGTH,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],  # CLIP takes no token_type_ids
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(where: str | Path, what: str):
    """The tokenizer saved at `where` (a directory, or a hub id already in the local cache);
    `what` names it in the one-line errors (e.g. "model 'runs/x'")."""
    local = Path(where).expanduser()
    # transformers 5 quietly builds an empty CLIP tokenizer from a directory without vocabulary files.
    if local.is_dir() and not any((local / name).is_file() for name in VOCABULARY_FILES):
        raise UserError(f"{what}: no tokenizer ({' or '.join(VOCABULARY_FILES)}) in {local}")
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.is_dir() else str(where), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: cannot load the tokenizer ({exc})".splitlines()[0]) from exc
