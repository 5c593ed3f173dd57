"""Reference-policy log-probs for DDPO: precomputed once and cached, or computed live.

Default (``reference: precomputed``), as the RLHF-V reference code does: the frozen
initial model runs once over the prepared data (inference mode, batched, progress bar)
and the per-token log-probs of every answer token are stored beside the data, in
``PREPARED/reference_logps/<fingerprint>/`` (a ``datasets`` dataset, one row per pair:
``chosen_logps``, ``rejected_logps``, each the log-probs of the row's answer tokens in
order). The fingerprint hashes the model's parameters and config, the prepared data's
fingerprint, the image pipeline and the precision: an unchanged run reuses the cache,
a changed model or data computes a new one. Token weights are applied at train time
(``rlhfv.ddpo.loss.ddpo_loss``), so a new ``gamma`` needs no recompute.

Alternatives: ``ModelReference`` (a live frozen copy, forward every step) and
``AdapterDisabledReference`` (under LoRA: the same model with its adapters switched off,
no second copy in memory).

Each reference source is a callable ``(model, batch) -> (2B, T-1)`` float32 tensor aligned
with ``labels[:, 1:]`` (0 where the label is -100), like ``rlhfv.ddpo.forward.token_logps``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfv.ddpo.forward import token_logps, unwrap_model
from rlhfv.errors import InputError

CACHE_DIRNAME = "reference_logps"
FINGERPRINT_FILE = "rlhfv_reference.json"
IGNORE_INDEX = -100

ReferenceSource = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


# ------------------------------------------------------------------ per-token packing


def answer_logps(token_logps_: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """The log-probs of each row's answer tokens, in order: row n -> values where ``labels[n, 1:] != -100``.

    token_logps_ (N, T-1) aligned with labels[:, 1:]; labels (N, T).
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    values = token_logps_.detach().float().cpu()
    return [values[n][mask[n].cpu()].tolist() for n in range(values.shape[0])]


def scatter_answer_logps(rows: Sequence[Sequence[float]], labels: torch.Tensor) -> torch.Tensor:
    """Inverse of ``answer_logps``: place each row's values at its answer positions of (N, T-1)."""
    mask = labels[:, 1:] != IGNORE_INDEX
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for n, values in enumerate(rows):
        count = int(mask[n].sum())
        if count != len(values):
            raise InputError(
                f"cached reference log-probs hold {len(values)} answer tokens but the batch row has {count}; "
                "the prepared data changed without a new fingerprint: delete the reference_logps folder",
                field="reference",
                reason="stale_reference_cache",
            )
        out[n][mask[n].cpu()] = torch.tensor(values, dtype=torch.float32)
    return out.to(labels.device)


# ------------------------------------------------------------------ reference sources


class PrecomputedReference:
    """Reads cached per-token log-probs for the batch's pairs (``batch["pair_index"]``)."""

    def __init__(self, table: Any) -> None:
        self.table = table  # datasets.Dataset with chosen_logps / rejected_logps, row i = pair i

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pairs = batch["pair_index"].tolist()
        rows = self.table.select_columns(["chosen_logps", "rejected_logps"])[pairs] if pairs else {}
        stacked = [*rows["chosen_logps"], *rows["rejected_logps"]]
        return scatter_answer_logps(stacked, batch["labels"])


class ModelReference:
    """A live frozen reference model (a second copy in memory), forward every step.

    ``autocast``: the policy's mixed-precision context (``accelerator.autocast``). The copy is
    not passed through ``accelerator.prepare``, so without it the reference would run in
    fp32 while the policy runs in bf16, and the rewards would not start at 0.
    """

    def __init__(
        self,
        ref_model: torch.nn.Module,
        forward: str = "auto",
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.ref_model = ref_model.eval().requires_grad_(False)
        self.forward = forward
        self.autocast = autocast

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            return token_logps(self.ref_model, batch, mode=self.forward)


class AdapterDisabledReference:
    """Under LoRA: the policy itself with its adapters disabled is the initial model."""

    def __init__(self, forward: str = "auto") -> None:
        self.forward = forward

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        peft_model = _find_peft(model)
        if peft_model is None:
            raise InputError("needs a LoRA model (lora: true)", field="reference", reason="bad_config")
        with torch.no_grad(), peft_model.disable_adapter():
            return token_logps(model, batch, mode=self.forward)


def _find_peft(model: torch.nn.Module):
    while True:
        if hasattr(model, "disable_adapter"):
            return model
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return None
        model = inner


# ------------------------------------------------------------------ fingerprints


def fingerprint_model(model: torch.nn.Module) -> str:
    """A hash of the model's config and every parameter and buffer (names, dtypes, bytes)."""
    base = unwrap_model(model)
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(base, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(base.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        # reshape first: view(uint8) refuses 0-dim tensors (a scalar buffer, CLIP's logit_scale)
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reference_fingerprint(model_fingerprint: str, data_fingerprint: str, **settings: Any) -> str:
    """Fingerprint of a reference cache: model + prepared data + settings that change the numbers."""
    payload = json.dumps(
        {"model": model_fingerprint, "data": data_fingerprint, **settings}, sort_keys=True, default=str
    )
    return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


# ------------------------------------------------------------------ precompute + cache


def compute_answer_logps(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    forward: str = "auto",
    progress: bool = True,
    total: int | None = None,
) -> dict[int, tuple[list[float], list[float]]]:
    """Run ``model`` in inference mode over ``batches``: ``{pair_index: (chosen_logps, rejected_logps)}``."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    out: dict[int, tuple[list[float], list[float]]] = {}
    try:
        with torch.inference_mode():
            for batch in tqdm(
                batches, total=total, desc="reference log-probs", disable=not progress, unit="batch"
            ):
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with autocast():
                    logps = token_logps(model, batch, mode=forward)
                rows = answer_logps(logps, batch["labels"])
                half = len(rows) // 2
                for i, pair in enumerate(batch["pair_index"].tolist()):
                    out[pair] = (rows[i], rows[half + i])
    finally:
        model.train(was_training)
    return out


def write_reference_cache(
    path: Path, values: Mapping[int, tuple[list[float], list[float]]], n_pairs: int, info: Mapping[str, Any]
) -> None:
    """Save ``values`` (all pairs 0..n_pairs-1) as a datasets dataset plus ``rlhfv_reference.json``."""
    from datasets import Dataset, Features, Sequence, Value

    missing = [i for i in range(n_pairs) if i not in values]
    if missing:
        raise RuntimeError(f"reference log-probs missing for {len(missing)} pairs (first {missing[:5]})")
    features = Features(
        {
            "pair_index": Value("int64"),
            "chosen_logps": Sequence(Value("float32")),
            "rejected_logps": Sequence(Value("float32")),
        }
    )
    table = Dataset.from_dict(
        {
            "pair_index": list(range(n_pairs)),
            "chosen_logps": [values[i][0] for i in range(n_pairs)],
            "rejected_logps": [values[i][1] for i in range(n_pairs)],
        },
        features=features,
    )
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    table.save_to_disk(str(tmp))
    (tmp / FINGERPRINT_FILE).write_text(json.dumps(dict(info), indent=2, sort_keys=True, default=str))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)  # a cache folder is complete or absent


def read_reference_cache(path: Path):
    """The cached table at ``path`` if complete, else None."""
    from datasets import load_from_disk

    if not (path / FINGERPRINT_FILE).is_file():
        return None
    return load_from_disk(str(path))


def cache_path(cache_root: str | Path, fingerprint: str) -> Path:
    return Path(cache_root) / CACHE_DIRNAME / fingerprint
