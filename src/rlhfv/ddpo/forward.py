"""The policy forward: per-token log-probs of the labels for a stacked preference batch.

The batch follows the contract in ``docs/architecture.md``: ``2B`` rows
``[chosen_0..chosen_{B-1}; rejected_0..rejected_{B-1}]``, right-padded, ``labels`` -100
outside the answers, images repeated for the chosen and the rejected row of a pair.

Two ways to get the same numbers:

* ``plain``: one ordinary ``model(...)`` call on the ``2B`` rows, as TRL does. The vision
  tower and the shared image + prompt prefix run twice per pair.
* ``shared_prefix``: one packed row per pair, ``[prefix | chosen answer | rejected answer]``.
  The vision tower sees each image once and the language model computes the prefix once;
  a block attention mask lets the chosen answer see the prefix and itself, and the
  rejected answer see the prefix and itself (never the chosen answer); the rejected
  answer's position ids restart where the prefix ends (for Qwen2-VL: its 3D multimodal
  rotary positions, taken from the plain layout). The prefix is the longest common prefix
  of the two rows, so answer words shared at the start are computed once as well.

``token_logps(model, batch, mode="auto")`` picks ``shared_prefix`` when the model and the
batch allow it and falls back to ``plain`` with one warning otherwise.

Also here: ``length_grouped_indices`` / ``LengthGroupedSampler`` (less padding: batches of
similar lengths).
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch

from rlhfv.ddpo.loss import IGNORE_INDEX, per_token_logps

logger = logging.getLogger(__name__)

Mode = Literal["auto", "plain", "shared_prefix"]

# Batch keys that are training targets or bookkeeping, never model inputs.
NON_MODEL_KEYS = frozenset({"labels", "token_weights", "pair_index"})
# Model types whose shared-prefix forward is tested equal to the plain one.
SHARED_PREFIX_MODEL_TYPES = frozenset({"llava", "llava_next", "qwen2_vl", "idefics3"})
# Attention implementations that take a custom 4D mask (flash attention kernels do not).
SHARED_PREFIX_ATTENTION = frozenset({"eager", "sdpa"})

_warned: set[str] = set()


def token_logps(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], mode: Mode = "auto"
) -> torch.Tensor:
    """Per-token log-probs ``log p(labels[:, t] | tokens < t)`` of the ``2B`` stacked rows.

    Returns a float32 tensor of shape ``(2B, T-1)`` aligned with ``labels[:, 1:]``; 0 where
    the label is -100. Gradients flow to the model's parameters.

    ``mode``: ``"plain"`` (one forward over the 2B rows), ``"shared_prefix"`` (one packed
    forward per pair; raises ``ValueError`` where unsupported) or ``"auto"`` (shared
    prefix where supported, else plain with one logged warning).
    """
    if mode == "plain":
        return plain_token_logps(model, batch)
    if mode == "shared_prefix":
        reason = shared_prefix_unsupported_reason(model, batch)
        if reason is not None:
            raise ValueError(f"shared-prefix forward unavailable: {reason}")
        return shared_prefix_token_logps(model, batch)
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'plain' or 'shared_prefix', not {mode!r}")
    reason = shared_prefix_unsupported_reason(model, batch)
    if reason is None:
        return shared_prefix_token_logps(model, batch)
    if reason not in _warned:
        _warned.add(reason)
        logger.warning("shared-prefix forward unavailable (%s); using the plain forward", reason)
    return plain_token_logps(model, batch)


# ---------------------------------------------------------------------------- helpers


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP/FSDP (``.module``) and peft (``get_base_model``)."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model


def _forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    params = inspect.signature(unwrap_model(model).forward).parameters
    return frozenset(
        name
        for name, p in params.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    )


def model_inputs(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> dict:
    """The batch entries the model's ``forward`` names, minus labels and bookkeeping.

    Adds ``mm_token_type_ids`` (0 text, 1 image, 2 video) when the model wants it and the
    batch lacks it: Qwen2-VL needs it to build its multimodal rotary positions.
    """
    accepted = _forward_parameters(model)
    inputs = {k: v for k, v in batch.items() if k in accepted and k not in NON_MODEL_KEYS}
    if "mm_token_type_ids" in accepted and "mm_token_type_ids" not in inputs:
        config = unwrap_model(model).config
        image_id = getattr(config, "image_token_id", None)
        video_id = getattr(config, "video_token_id", None)
        if image_id is not None:
            ids = batch["input_ids"]
            types = torch.zeros_like(ids)
            types[ids == image_id] = 1
            if video_id is not None:
                types[ids == video_id] = 2
            inputs["mm_token_type_ids"] = types
    return inputs


def _label_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``out[n, t] = log softmax(logits[n, t])[labels[n, t + 1]]`` (0 where -100): (N, T-1)."""
    return per_token_logps(logits, labels)[0]


def _picked_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``out[n] = log softmax(logits[n])[targets[n]]`` for logits (N, V), targets (N,) (-100 -> 0).

    The same function as the plain path, on a length-2 view (no copy): position 0's
    logits predict the label at position 1.
    """
    pairs = logits.unsqueeze(1).expand(-1, 2, -1)
    return _label_logps(pairs, targets.unsqueeze(1).expand(-1, 2))[:, 0]


def _first_label_index(labels: torch.Tensor) -> torch.Tensor:
    """(N,) index of each row's first label != -100 (T if none)."""
    has = labels != IGNORE_INDEX
    idx = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return torch.where(has, idx, labels.shape[1]).min(dim=1).values


# ---------------------------------------------------------------------------- plain


def plain_token_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One ``model(...)`` call over the 2B rows; logits only from the first answer on."""
    labels = batch["labels"]
    n_rows, seq_len = labels.shape
    inputs = model_inputs(model, batch)
    start = int(_first_label_index(labels).min().clamp(min=1, max=seq_len - 1))
    # logits at positions start-1 .. T-1 predict labels start .. T-1 (and one past the end)
    keep = seq_len - start + 1
    if "logits_to_keep" in _forward_parameters(model):
        inputs["logits_to_keep"] = keep
        logits = model(**inputs).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    kept = _label_logps(logits, labels[:, seq_len - keep :])
    out = kept.new_zeros(n_rows, seq_len - 1)
    out[:, seq_len - keep :] = kept
    return out


# ---------------------------------------------------------------------------- shared prefix


def shared_prefix_unsupported_reason(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> str | None:
    """Why the shared-prefix forward cannot run on this model and batch; None if it can."""
    base = unwrap_model(model)
    config = base.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SHARED_PREFIX_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {sorted(SHARED_PREFIX_MODEL_TYPES)}"
    attn = getattr(config.get_text_config(), "_attn_implementation", None) or "eager"
    if attn not in SHARED_PREFIX_ATTENTION:
        return f"attention implementation {attn!r} takes no custom 4D mask"
    input_ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if input_ids.shape[0] % 2:
        return "odd number of rows"
    half = input_ids.shape[0] // 2
    lengths = mask.sum(dim=1)
    # right padding: real tokens first
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not bool((mask.bool() == (positions < lengths[:, None])).all()):
        return "batch is not right-padded"
    starts = _first_label_index(labels)
    if not bool((starts[:half] == starts[half:]).all()):
        return "chosen and rejected prompts differ in length"
    same = input_ids[:half] == input_ids[half:]
    if not bool((same | (positions >= starts[:half, None])).all()):
        return "chosen and rejected prompts differ"
    if _split_images(model_inputs(model, batch), half) is None:
        return "image inputs are not repeated per pair in the stacked layout"
    return None


def _split_images(batch: Mapping[str, torch.Tensor], half: int) -> dict | None:
    """The image inputs (of the model's inputs ``batch``) of the chosen rows only, or None.

    Row-aligned tensors (leading dim 2B) are halved; Qwen2-VL's flattened ``pixel_values``
    (one row per patch) is cut after the chosen images' patches. Checks that the
    rejected half holds the same images.
    """
    seq_len = batch["input_ids"].shape[1]
    out: dict = {}
    grid = batch.get("image_grid_thw")
    for key, value in batch.items():
        if key in NON_MODEL_KEYS or key in ("input_ids", "attention_mask"):
            continue
        if not isinstance(value, torch.Tensor):
            return None
        if value.ndim == 2 and value.shape == batch["input_ids"].shape and value.shape[1] == seq_len:
            continue  # per-token (mm_token_type_ids ...), packed with the tokens
        halves = stacked_halves(key, value, grid, half)
        if halves is None or not torch.equal(*halves):
            return None
        if key == "pixel_values" and grid is not None and not torch.equal(grid[:half], grid[half:]):
            return None
        out[key] = halves[0]
    return out


def stacked_halves(
    key: str, value: torch.Tensor, grid: torch.Tensor | None, half: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(chosen part, rejected part) of one entry of a stacked ``[chosen; rejected]`` batch, or None.

    Row-aligned tensors (leading dim 2B) split after row B; Qwen2-VL's flattened
    ``pixel_values`` (one row per patch, ``grid`` its ``image_grid_thw``) split after the
    chosen images' patches, ``sum(prod(grid[:B], -1))``. None when the entry is neither.
    """
    if key == "pixel_values" and grid is not None:
        cut = int(grid[:half].prod(dim=-1).sum())
        return value[:cut], value[cut:]
    if value.shape[0] == 2 * half:
        return value[:half], value[half:]
    return None


def _plain_position_ids(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """Position ids the plain forward uses: (2B, T), or (3, 2B, T) for multimodal RoPE."""
    base = unwrap_model(model)
    inner = getattr(base, "model", None)
    input_ids = inputs["input_ids"]
    if inner is not None and hasattr(inner, "compute_3d_position_ids"):
        kwargs = {
            k: inputs.get(k)
            for k in ("image_grid_thw", "video_grid_thw", "attention_mask", "mm_token_type_ids")
        }
        pos = inner.compute_3d_position_ids(input_ids=input_ids, inputs_embeds=None, **kwargs)
        if pos is not None:
            return pos
    # right-padded rows without a cache: the model's default is 0..T-1
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def _block_mask(segments: torch.Tensor, dtype: torch.dtype, additive: bool) -> torch.Tensor:
    """4D mask (B, 1, L, L) from per-position segment ids (0 prefix, 1 chosen, 2 rejected, -1 pad).

    Query q sees key k iff k <= q and (seg[k] == 0 or seg[k] == seg[q]); padding sees only
    itself, so no query row is empty (sdpa returns NaN for fully masked rows).
    """
    length = segments.shape[1]
    q = segments[:, :, None]
    k = segments[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (k >= 0) & (q >= 0) & ((k == 0) | (k == q))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)
    allowed = allowed[:, None]
    if not additive:
        return allowed
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def shared_prefix_token_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Same values as ``plain_token_logps`` from one packed row per pair.

    Pair i, prefix length P (longest common prefix, at least up to the first answer token),
    chosen length Lc, rejected length Lr: packed row ``ids_c[:Lc] + ids_r[P:Lr]``. Label t
    of the chosen row is predicted at packed position t-1; label t of the rejected row at
    t-1 if t <= P, else at Lc + (t-1-P).
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    device = input_ids.device
    n_rows, seq_len = input_ids.shape
    half = n_rows // 2
    base = unwrap_model(model)
    inputs = model_inputs(model, batch)
    plain_pos = _plain_position_ids(model, inputs)

    lengths = attention_mask.sum(dim=1).tolist()
    starts = _first_label_index(labels).tolist()
    differs = (input_ids[:half] != input_ids[half:]).int()
    first_diff = torch.where(differs.bool().any(1), differs.argmax(1), seq_len).tolist()

    per_token_keys = [
        k
        for k, v in inputs.items()
        if k not in ("input_ids", "attention_mask")
        and isinstance(v, torch.Tensor)
        and v.shape == input_ids.shape
    ]
    plans = []
    for i in range(half):
        len_c, len_r = lengths[i], lengths[half + i]
        # the prompts are equal (checked), so the common prefix reaches the first answer token
        prefix = max(min(first_diff[i], len_c, len_r), 1)
        plans.append((len_c, len_r, prefix, len_c + len_r - prefix))
    packed_len = max(p[3] for p in plans)

    # any id works under the mask, except one the model counts as an image or video slot
    special = {getattr(base.config, k, None) for k in ("image_token_id", "video_token_id")}
    pad_id = next(i for i in range(3) if i not in special)
    packed_ids = input_ids.new_full((half, packed_len), pad_id)
    segments = torch.full((half, packed_len), -1, dtype=torch.long, device=device)
    pos_shape = (*plain_pos.shape[:-2], half, packed_len)
    packed_pos = plain_pos.new_zeros(pos_shape)
    packed_extra = {k: inputs[k].new_zeros(half, packed_len) for k in per_token_keys}
    for i, (len_c, len_r, prefix, total) in enumerate(plans):
        r = half + i
        packed_ids[i, :len_c] = input_ids[i, :len_c]
        packed_ids[i, len_c:total] = input_ids[r, prefix:len_r]
        segments[i, :prefix] = 0
        segments[i, prefix:len_c] = 1
        segments[i, len_c:total] = 2
        packed_pos[..., i, :len_c] = plain_pos[..., i, :len_c]
        packed_pos[..., i, len_c:total] = plain_pos[..., r, prefix:len_r]
        for k in per_token_keys:
            packed_extra[k][i, :len_c] = inputs[k][i, :len_c]
            packed_extra[k][i, len_c:total] = inputs[k][r, prefix:len_r]

    attn = getattr(base.config.get_text_config(), "_attn_implementation", None) or "eager"
    dtype = base.get_input_embeddings().weight.dtype
    mask4d = _block_mask(segments, dtype, additive=attn != "sdpa")

    packed_inputs = dict(_split_images(inputs, half) or {})
    packed_inputs.update(packed_extra)
    packed_inputs.update(input_ids=packed_ids, attention_mask=mask4d, position_ids=packed_pos)

    # Where each output (row, column) reads its logits from: flat index into (half, packed_len).
    out_rows, out_cols, src_flat, targets = [], [], [], []
    for i, (len_c, len_r, prefix, _total) in enumerate(plans):
        for row, length, is_rejected in ((i, len_c, False), (half + i, len_r, True)):
            t = torch.arange(max(starts[row], 1), length, device=device)
            if t.numel() == 0:
                continue
            src = t - 1
            if is_rejected:
                src = torch.where(src < prefix, src, len_c + (src - prefix))
            out_rows.append(torch.full_like(t, row))
            out_cols.append(t - 1)
            src_flat.append(i * packed_len + src)
            targets.append(labels[row, t])
    out = torch.zeros(n_rows, seq_len - 1, dtype=torch.float32, device=device)
    if not src_flat:
        return out
    src_flat_t = torch.cat(src_flat)
    min_src = min(int((s % packed_len).min()) for s in src_flat)
    keep = packed_len - min_src
    if "logits_to_keep" in _forward_parameters(model):
        packed_inputs["logits_to_keep"] = keep
        logits = model(**packed_inputs).logits
    else:
        logits = model(**packed_inputs).logits[:, -keep:]
    # re-index into the kept window
    pair = src_flat_t // packed_len
    pos = src_flat_t % packed_len - min_src
    # only the positions that are read: (N, V)
    values = _picked_logps(logits[pair, pos], torch.cat(targets))
    return out.index_put((torch.cat(out_rows), torch.cat(out_cols)), values)


# ---------------------------------------------------------------------------- less padding


def length_grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int = 0,
    mega_batch_mult: int = 50,
    shuffle: bool = True,
) -> list[int]:
    """A shuffled order of ``range(len(lengths))`` in which consecutive batches have similar lengths.

    Shuffle, cut into mega-batches of ``batch_size * mega_batch_mult``, sort each by length
    (longest first), then shuffle the order of the resulting batches, keeping the batch
    that holds the longest item first so an out-of-memory error shows at step one.
    ``lengths`` per pair: e.g. chosen + rejected tokens. With ``shuffle`` False neither
    shuffle happens: mega-batches of consecutive items, batches in that order (the longest
    still first), the same order for every seed.

    >>> length_grouped_indices([1, 5, 2, 4], 2, mega_batch_mult=1, shuffle=False)
    [1, 0, 3, 2]
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    mega = batch_size * mega_batch_mult
    batches: list[list[int]] = []
    for begin in range(0, len(order), mega):
        chunk = sorted(order[begin : begin + mega], key=lambda j: -lengths[j])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    if not batches:
        return []
    longest = max(range(len(batches)), key=lambda b: max(lengths[j] for j in batches[b]))
    first = batches.pop(longest)
    if shuffle:
        rng.shuffle(batches)
    return [j for b in [first, *batches] for j in b]


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Sampler over ``length_grouped_indices``; a new order each epoch (``set_epoch``)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_indices(self.lengths, self.batch_size, seed=self.seed + self.epoch))
