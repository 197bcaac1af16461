"""Caption embeddings of the frozen text tower: computed once per caption and kept on the device
(`TextEmbeddingCache`), and the mask-free encoding of right-padded captions the trainer uses."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import torch

from fcdata.captions import tokenize_captions

if TYPE_CHECKING:
    from fctrain.model import RGBAClip


class TextEmbeddingCache:
    """Caption -> text embedding, least recently used evicted beyond `max_entries`.

    The text tower is frozen, so a caption's embedding never changes during training: each is
    computed once, under no_grad. Rows live in one table on the device that computed them, so a
    step moves only a few hundred index bytes to the device (from pinned memory, asynchronously)
    and never waits on it: the keys and the LRU order are kept on the host. The table grows by
    doubling up to max_entries x D (bf16 at width 512: 1 KB a caption, 2 GB at 2M captions; lower
    `model.text_cache_entries` on a small card). Keyed by the caption (`embed`) or by its token ids
    (`embed_tokens`, for batches tokenised in data workers): one cache per model.
    """

    _FIRST_CAPACITY = 1024

    def __init__(self, max_entries: int = 100_000):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._slots: OrderedDict[str | bytes, int] = OrderedDict()  # key -> row of the table, LRU first
        self._free: list[int] = []  # rows of the table that hold no key
        self._table: torch.Tensor | None = None  # capacity x D
        self.hits = 0  # captions served from the cache
        self.misses = 0  # captions run through the text tower

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: str | bytes) -> bool:
        return key in self._slots

    def embed(self, texts: list[str], tokenizer, model: RGBAClip, device: str | torch.device) -> torch.Tensor:
        """B captions -> B x D embeddings on `device`; the misses go through the text tower in one
        batch padded to its longest caption."""

        def compute(missing: list[str]) -> torch.Tensor:
            batch = tokenize_captions(tokenizer, missing)
            if tokenizer.padding_side != "right":
                return model.encode_text(_to(batch["input_ids"], device), _to(batch["attention_mask"], device))
            return encode_right_padded(model, _to(batch["input_ids"], device))

        return self._lookup(list(texts), compute, torch.device(device))

    def embed_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: RGBAClip, device: str | torch.device
    ) -> torch.Tensor:
        """The same for tokenised captions: B x T ids and mask, right-padded, ON THE HOST (the keys
        are read there; host tensors avoid a device sync)."""
        lengths = attention_mask.sum(1).tolist()
        keys = [np.asarray(ids[:n], np.int64).tobytes() for ids, n in zip(input_ids.tolist(), lengths)]

        def compute(missing: list[bytes]) -> torch.Tensor:
            rows = [torch.from_numpy(np.frombuffer(key, np.int64).copy()) for key in missing]
            ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # M x T', right-padded with 0
            return encode_right_padded(model, _to(ids, device))

        return self._lookup(keys, compute, torch.device(device))

    def _lookup(self, keys: list, compute, device: torch.device) -> torch.Tensor:
        unique = list(dict.fromkeys(keys))  # in order of first appearance
        hits = [k for k in unique if k in self._slots]
        missing = [k for k in unique if k not in self._slots]
        for key in hits:
            self._slots.move_to_end(key)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = None
        if missing:
            with torch.no_grad():
                fresh = compute(missing).detach()  # M x D on `device`
            if self._table is None:
                self._table = fresh.new_empty(0, fresh.shape[1])
            fresh = fresh.to(self._table.dtype)
        if self._table is None:  # an empty batch before any caption
            return torch.empty(0, 0, device=device)
        # Which rows of [table rows of the hits; fresh] (H + M) each of the B keys takes. The hits'
        # slots are read before new keys are placed: placing may evict a hit of this very batch.
        row_of = {key: i for i, key in enumerate(hits + missing)}
        hit_slots = [self._slots[k] for k in hits]
        store = missing[-self.max_entries:]  # a batch larger than the cache keeps its last captions
        store_slots = self._assign(store)
        host = torch.tensor(hit_slots + [row_of[k] for k in keys] + store_slots, dtype=torch.int64)
        indices = _to(host, device)  # one small copy for the three index lists
        hit_index, gather, store_index = indices.split([len(hits), len(keys), len(store_slots)])
        rows = self._table.index_select(0, hit_index)
        if fresh is not None:
            rows = torch.cat([rows, fresh])
        out = rows.index_select(0, gather)
        if store:
            # After the gathers in stream order: a slot freed by eviction may be one a hit read above.
            self._table.index_copy_(0, store_index, fresh[len(missing) - len(store):])
        return out

    def _assign(self, keys: list) -> list[int]:
        """Table rows for new keys: free rows first, then more room, then the least recently used."""
        capacity = self._table.shape[0]
        in_use = len(self._slots)
        if in_use + len(keys) > capacity and capacity < self.max_entries:
            self._grow(min(self.max_entries, max(2 * capacity, self._FIRST_CAPACITY, in_use + len(keys))))
        slots = []
        for key in keys:
            if not self._free:
                _, slot = self._slots.popitem(last=False)
                self._free.append(slot)
            slot = self._free.pop()
            self._slots[key] = slot
            slots.append(slot)
        return slots

    def _grow(self, capacity: int) -> None:
        old = self._table
        table = old.new_empty(capacity, old.shape[1])
        table[: old.shape[0]] = old  # a device-to-device copy, queued like any kernel
        self._free.extend(range(capacity - 1, old.shape[0] - 1, -1))
        self._table = table


def encode_right_padded(model: RGBAClip, input_ids: torch.Tensor) -> torch.Tensor:
    """Text features of right-padded captions (B x T ids) without a padding mask. CLIP's text
    tower is causal and pools at the end token, so padding after it changes nothing; given a mask,
    transformers asks `mask.all()` (a device sync) and SDPA runs a masked kernel, not its causal one."""
    return model.encode_text(input_ids, None)


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without the host waiting: CUDA copies from pageable memory block,
    from pinned memory they are queued."""
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
