import random

from transformers import AutoTokenizer

from fcdata.captions import CONTEXT_LENGTH as MAX_LENGTH
from fctrain.tokenizer import END, PAD, START, build_tokenizer

PHRASES = [
    "a man riding a horse", "the red car parked on the street", "dog lying on green grass",
    "White clouds in a blue sky", "a man wearing a black hat", "two people walking", "a tall tree",
] * 3


def test_round_trip_through_autotokenizer(tmp_path):
    """The saved tokenizer loads offline with AutoTokenizer and encodes exactly like the built one."""
    built = build_tokenizer(PHRASES, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    texts = ["A man riding a HORSE", "the red car", "zebra, unseen!"]
    assert loaded(texts)["input_ids"] == built(texts)["input_ids"]
    assert loaded.model_max_length == MAX_LENGTH
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == (PAD, START, END)
    assert loaded.decode(loaded("A man riding a HORSE")["input_ids"], skip_special_tokens=True) == "a man riding a horse"


def test_every_text_is_wrapped_in_start_and_end(tmp_path):
    """Each encoding starts with <start> and ends with <end> (CLIP pools at the end token)."""
    tok = build_tokenizer(PHRASES, tmp_path)
    for ids in tok(["a tall tree", "x", ""])["input_ids"]:
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert ids.count(tok.eos_token_id) == 1


def test_batch_pads_to_the_longest_on_the_right(tmp_path):
    """A batch pads to its longest text with <pad> under attention mask 0, after the end token."""
    tok = build_tokenizer(PHRASES, tmp_path)
    batch = tok(["a tree", "the red car parked on the street"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert set(batch) == {"input_ids", "attention_mask"}  # CLIP takes no token_type_ids
    longest = len(tok("the red car parked on the street")["input_ids"])
    assert ids.shape == (2, longest) and mask[1].all()
    short = len(tok("a tree")["input_ids"])
    assert ids[0, short - 1] == tok.eos_token_id
    assert (ids[0, short:] == tok.pad_token_id).all() and not mask[0, short:].any() and mask[0, :short].all()


def test_truncation_keeps_the_end_token(tmp_path):
    """Captions longer than 77 tokens are cut to 77 with <end> still last."""
    tok = build_tokenizer(PHRASES, tmp_path)
    ids = tok("a man " * 100, truncation=True)["input_ids"]
    assert len(ids) == MAX_LENGTH and ids[-1] == tok.eos_token_id


def test_same_phrases_give_the_same_tokenizer(tmp_path):
    """Training is deterministic and ignores phrase order: identical tokenizer.json files."""
    shuffled = list(PHRASES)
    random.Random(1).shuffle(shuffled)
    build_tokenizer(PHRASES, tmp_path / "a")
    build_tokenizer(shuffled, tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert "horse" in (tmp_path / "a" / "tokenizer.json").read_text()
