"""Alpha-CLIP's LoRA tensors (loralib) folded into the weights they adapt.

Alpha-CLIP built with `lora_adapt=True` (its LoRA training) swaps, in every vision block,
`attn.in_proj` for `loralib.MergedLinear(D, 3D, r, enable_lora=[True, False, True])` (q and v
adapted, k not) and `attn.out_proj`, `mlp.c_fc`, `mlp.c_proj` for `loralib.Linear(..., r)`. Each
keeps `weight` and `bias` and adds two factors; loralib's default lora_alpha = 1 (Alpha-CLIP keeps
it) gives scaling = lora_alpha / r:

    Linear        lora_A  r x in         lora_B  out x r        delta = B @ A
    MergedLinear  lora_A  (g*r) x in     lora_B  (g*D) x r      g = adapted parts (2: q and v);
                  part i's delta B[i*D:(i+1)*D] @ A[i*r:(i+1)*r] goes to that part's rows of the
                  3D x D weight (q: 0..D, v: 2D..3D), the other rows (k) get none

A dict saved in train mode holds the base weight and the factors (unmerged): the weight to use is
weight + delta * scaling. loralib's `eval()` adds that into `weight` in place and keeps the factors
(merged): `weight` is already the one to use and the factors are stale. Both dicts have the same
keys, so which one a file is can only be told against the base model: LoRA training freezes the
adapted weights (loralib marks them frozen; Alpha-CLIP trains only the factors and conv1_alpha).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fcdata.errors import UserError

STATES = ("auto", "merged", "unmerged")
MERGED_PARTS = 3  # in_proj is q, k, v stacked
ALPHA_CLIP_PARTS = {2: (True, False, True), 3: (True, True, True)}  # adapted parts -> which (MergedLinear)


def pop_lora_deltas(sd: dict[str, torch.Tensor], lora_alpha: float) -> dict[str, torch.Tensor]:
    """Remove every `X.lora_A`/`X.lora_B` pair from `sd`: {`X.weight`: delta * scaling}, float32,
    the weight's shape. Shapes that fit neither layout are a UserError naming the layer."""
    prefixes = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith((".lora_A", ".lora_B"))})
    deltas = {}
    for prefix in prefixes:
        names = (f"{prefix}.lora_A", f"{prefix}.lora_B", f"{prefix}.weight")
        missing = [n for n in names if n not in sd]
        if missing:
            raise UserError(f"LoRA layer {prefix}: {', '.join(missing)} missing (loralib saves lora_A, lora_B and weight)")
        a, b = sd.pop(names[0]).float(), sd.pop(names[1]).float()
        deltas[names[2]] = _delta(prefix, a, b, sd[names[2]].shape) * (lora_alpha / b.shape[1])
    return deltas


def _delta(prefix: str, a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """B @ A laid out as the weight, unscaled (a MergedLinear's parts placed at their rows)."""
    bad = UserError(f"LoRA layer {prefix}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} fit neither "
                    f"loralib.Linear (r x in, out x r) nor Alpha-CLIP's MergedLinear over q, k, v "
                    f"(2r x in, 2/3 out x r) for its weight {tuple(shape)}")
    if len(shape) != 2 or a.ndim != 2 or b.ndim != 2 or a.shape[1] != shape[1] or b.shape[1] == 0:
        raise bad
    out_features, rank = shape[0], b.shape[1]
    if b.shape[0] == out_features and a.shape[0] == rank:  # loralib.Linear
        return b @ a
    part = out_features // MERGED_PARTS
    if not prefix.endswith("in_proj") or not part or out_features % MERGED_PARTS or b.shape[0] % part:
        raise bad
    groups = b.shape[0] // part
    enabled = ALPHA_CLIP_PARTS.get(groups)
    if enabled is None or a.shape[0] != groups * rank:
        raise bad
    delta = torch.zeros(shape, dtype=torch.float32)
    for group, slot in enumerate(i for i, on in enumerate(enabled) if on):
        delta[slot * part : (slot + 1) * part] = b[group * part : (group + 1) * part] @ a[group * rank : (group + 1) * rank]
    return delta


def lora_state(
    stored: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
) -> str:
    """"merged", "unmerged" or "zero" (all deltas 0: the two are the same), by comparing the
    stored adapted weights with the base model's: unmerged ones equal the base, merged ones equal
    base + delta. Up to a tenth of the largest delta is allowed for rounding (fp16 saves)."""
    largest = max(float(d.abs().max()) for d in deltas.values())
    if largest == 0:
        return "zero"
    for key in deltas:
        if key not in base or base[key].shape != stored[key].shape:
            found = tuple(base[key].shape) if key in base else "nothing"
            raise UserError(f"the base model has {found} for {key}, the checkpoint {tuple(stored[key].shape)}: "
                            f"the base must be the CLIP the checkpoint was trained from")
    as_is = max(float((stored[k].float() - base[k].float()).abs().max()) for k in deltas)
    minus_delta = max(float((stored[k].float() - deltas[k] - base[k].float()).abs().max()) for k in deltas)
    if as_is <= 0.1 * largest:
        return "unmerged"
    if minus_delta <= 0.1 * largest:
        return "merged"
    raise UserError(
        f"cannot tell whether the LoRA deltas are merged into the weights: the base model's adapted weights differ "
        f"from them by {as_is:.3g} and from them minus the deltas by {minus_delta:.3g} (largest delta {largest:.3g}); "
        f"is --base the CLIP this was trained from? Say which with --lora merged (saved after model.eval()) or "
        f"--lora unmerged (saved in train mode)"
    )
