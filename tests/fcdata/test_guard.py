"""Readers of shards through real faults: zero-byte, non-tar and truncated shards, members of
random bytes, missing members; streams that can never yield end in an error, not a hang."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fcdata import guard, keys, reasons
from fcdata.errors import CountingHandler, ReadError, UserError
from fcdata.loader import Prefetcher, RegionStream, make_loader
from fcdata.options import LoaderOptions
from fcdata.reader import decode_sample
from fcdata.tarformat import iter_shard

pytestmark = pytest.mark.timeout(120)  # a hang is the failure these tests guard against


@pytest.fixture(scope="module")
def tokenizer():
    core = Tokenizer(models.WordLevel(vocab={"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")


def read_all(paths):
    handler = CountingHandler("test")
    samples = list(guard.decoded(guard.read_raw(paths, handler), decode_sample, handler))
    return samples, handler


def test_each_fault_is_a_counted_skip_by_reason(shard_faults):
    """Every kind of broken shard or sample is skipped and counted under its own reason, and the
    good samples around it are still read."""
    paths = [
        shard_faults.zero_bytes(), shard_faults.text_file(), shard_faults.truncated(keep=0.6),
        shard_faults.random_members(every=4), shard_faults.without_member(), shard_faults.empty_tar(),
        shard_faults.random_members("train-90006.tar", extension="json", every=8), shard_faults.good,
    ]
    samples, handler = read_all(paths)
    assert handler.counts == {
        reasons.READ_EMPTY_SHARD: 2, reasons.READ_UNREADABLE_SHARD: 1, reasons.READ_TRUNCATED_SHARD: 1,
        reasons.READ_BAD_IMAGE: 2, reasons.READ_MISSING_MEMBER: 1, reasons.READ_BAD_METADATA: 1,
    }
    per_shard = len(list(iter_shard(shard_faults.good)))
    truncated_kept = len(list(guard.read_raw([paths[2]], lambda exc: True)))
    assert 0 < truncated_kept < per_shard  # the samples before the cut are kept
    assert len(samples) == truncated_kept + (per_shard - 2) + (per_shard - 1) + (per_shard - 1) + per_shard
    assert "train-90001.tar" in handler.first or "train-90000.tar" in handler.first


def test_a_truncated_shard_yields_what_precedes_the_cut_then_says_so(shard_faults):
    """iter_shard of a cut archive gives its complete samples, then a ReadError naming the shard."""
    path = shard_faults.truncated(keep=0.5)
    seen = []
    with pytest.raises(ReadError) as caught:
        for sample in iter_shard(path):
            seen.append(sample)
    assert caught.value.reason == reasons.READ_TRUNCATED_SHARD and path in str(caught.value)
    assert seen and all({keys.IMAGE, keys.META} <= set(s) for s in seen)


def test_check_shards_fails_only_when_no_shard_can_hold_a_sample(shard_faults):
    """0-byte and non-tar shards are named at once when they are all there is; beside a good shard
    they are reported, not fatal."""
    zero, text = shard_faults.zero_bytes(), shard_faults.text_file()
    with pytest.raises(UserError, match=r"train-90000\.tar is empty \(0 bytes\)"):
        guard.check_shards([zero, text])
    with pytest.raises(UserError, match="is not a tar file"):
        guard.check_shards([text])
    assert guard.check_shards([zero, shard_faults.good]) == {zero: "is empty (0 bytes)"}


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("fault", ["zero_bytes", "text_file", "all_images_random"])
def test_an_endless_stream_that_can_never_yield_is_an_error_naming_the_shard(shard_faults, tokenizer, fault, workers):
    """Training's endless stream over shards that hold nothing usable raises a UserError (through
    a DataLoader worker too) instead of spinning forever."""
    path = shard_faults.random_members(every=1) if fault == "all_images_random" else getattr(shard_faults, fault)()
    options = LoaderOptions(batch_size=4, regions_per_image=2, workers=workers, shuffle_buffer=4, resample=True)
    stream = RegionStream([path, path], options, tokenizer, 32)
    with pytest.raises(UserError, match="no usable sample in the shards") as caught:
        next(iter(Prefetcher(make_loader(stream), torch.device("cpu"))))
    assert path in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_an_endless_stream_with_one_good_shard_among_bad_ones_keeps_going(shard_faults, tokenizer):
    """The watchdog never fires while some shard can still yield: batches come, skips are counted."""
    paths = [shard_faults.zero_bytes(), shard_faults.random_members(every=1), shard_faults.good]
    options = LoaderOptions(batch_size=4, regions_per_image=2, workers=0, shuffle_buffer=4, resample=True)
    batches = []
    for batch in Prefetcher(make_loader(RegionStream(paths, options, tokenizer, 32)), torch.device("cpu")):
        batches.append(batch)
        if len(batches) == 30:
            break
    skipped = {}
    for batch in batches:
        for reason, count in batch.source.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    assert len(batches) == 30 and skipped.get(reasons.READ_EMPTY_SHARD, 0) >= 1 and skipped.get(reasons.READ_BAD_IMAGE, 0) >= 1


def test_an_exactly_once_pass_smaller_than_a_batch_gives_one_short_batch(shard_faults, tokenizer):
    """Fewer samples than the batch size in an exactly-once pass: one short batch, then the end."""
    options = LoaderOptions(batch_size=64, regions_per_image=2, workers=0, shuffle_buffer=4, resample=False)
    batches = list(Prefetcher(make_loader(RegionStream([shard_faults.good], options, tokenizer, 32)), torch.device("cpu")))
    assert len(batches) == 1 and 0 < len(batches[0]) < 64


def test_an_exactly_once_pass_over_bad_shards_ends_with_its_reason(shard_faults, tokenizer):
    """An exactly-once pass that reads nothing usable ends (no hang) and says why."""
    options = LoaderOptions(batch_size=4, regions_per_image=2, workers=0, shuffle_buffer=4, resample=False)
    prefetcher = Prefetcher(make_loader(RegionStream([shard_faults.random_members(every=1)], options, tokenizer, 32)), torch.device("cpu"))
    assert list(prefetcher) == []
    assert len(prefetcher.problems) == 1 and "bad_image" in prefetcher.problems[0]


def test_require_any_names_the_reasons():
    """Nothing readable at all: one line with the counts and the first failure."""
    handler = CountingHandler("test")
    handler(ReadError(reasons.READ_BAD_IMAGE, "x.tar: sample 1", "UnidentifiedImageError"))
    with pytest.raises(UserError, match=r"no readable sample in the shards; skipped bad_image 1, first: x\.tar"):
        guard.require_any(0, handler, "shards")
    guard.require_any(1, handler, "shards")  # something was read: no error
