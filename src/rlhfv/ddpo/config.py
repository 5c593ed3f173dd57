"""One typed configuration for a training run (DDPO or SFT).

Defaults are the paper's (RLHF-V, Sec. 5): beta 0.5, gamma 5, the weighted *mean* of Eq. 5,
lr 5e-7, 10% warmup, 7 epochs. ``PRESETS["reference"]`` is the released training script's
(beta 0.1, gamma 1.1, weighted *sum*, 3% warmup). A YAML file may name a preset
(``preset: reference``; ``--preset`` on the command line wins) and override fields;
command-line ``--set key=value`` overrides come last. The resolved config is written to ``OUTPUT/train_config.yaml``.

>>> TrainConfig().beta, TrainConfig.from_preset("reference").normalisation
(0.5, 'sum')
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rlhfv.errors import InputError

SEED_MAX = 2**32 - 1  # numpy's largest seed (accelerate's set_seed seeds numpy too)


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; every field has a ``help`` string in its metadata."""

    # objective
    beta: float = _f(0.5, "DPO KL strength (paper 0.5; released script 0.1)")
    gamma: float = _f(
        5.0, "weight of changed tokens in Eq. 5 (paper 5; released script 1.1; 1 = vanilla DPO)"
    )
    normalisation: str = _f(
        "mean",
        "sequence log-prob: 'mean' = weighted mean, divide by N (paper Eq. 5); 'sum' = weighted sum (released script)",
        choices=("mean", "sum"),
    )
    loss_type: str = _f(
        "sigmoid", "preference loss: 'sigmoid' (DPO), 'hinge', 'ipo'", choices=("sigmoid", "hinge", "ipo")
    )
    sft_weight: float = _f(
        0.0, "weight of the SFT term -log pi(y_w) added to the DDPO loss (reference code: 0)"
    )
    reference: str = _f(
        "precomputed",
        "reference log-probs: 'precomputed' once and cached beside the data; 'model' = a live frozen copy; "
        "'adapters_disabled' = the LoRA base model (needs lora: true)",
        choices=("precomputed", "model", "adapters_disabled"),
    )
    forward: str = _f(
        "auto",
        "policy forward: 'plain' (2B rows), 'shared_prefix' (image + prompt computed once per pair), "
        "'auto' (shared prefix where the model allows it)",
        choices=("auto", "plain", "shared_prefix"),
    )
    reference_batch_size: int = _f(8, "pairs per batch when precomputing reference log-probs")

    # optimisation
    learning_rate: float = _f(5e-7, "peak learning rate of AdamW (paper 5e-7)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    lr_scheduler: str = _f(
        "cosine", "learning-rate schedule after warmup", choices=("cosine", "linear", "constant")
    )
    warmup_ratio: float = _f(0.1, "share of optimiser steps spent warming up linearly from 0 (paper 0.1)")
    num_epochs: float = _f(7.0, "passes over the data (paper 7); ignored when max_steps is set")
    max_steps: int | None = _f(None, "stop after this many optimiser steps (overrides num_epochs)")
    per_device_batch_size: int = _f(1, "preference pairs per process per forward")
    gradient_accumulation_steps: int = _f(
        4, "forwards per optimiser step; global batch = per_device_batch_size * accumulation * processes"
    )
    max_grad_norm: float | None = _f(1.0, "clip the gradient norm to this (null: no clipping)")
    mixed_precision: str = _f(
        "bf16", "'no' (fp32), 'bf16' or 'fp16' autocast", choices=("no", "fp32", "bf16", "fp16")
    )
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    seed: int = _f(42, "seed for data order, dropout and LoRA initialisation")

    # what is trained
    freeze_vision_tower: bool = _f(False, "keep the vision encoder frozen")
    freeze_projector: bool = _f(False, "keep the vision-language projector frozen")
    lora: bool = _f(False, "train LoRA adapters (peft) instead of all parameters")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] | None = _f(
        None, "module names to adapt; null picks the language model's attention and MLP projections"
    )

    # data
    image_pipeline: str = _f(
        "pad",
        "'pad' = pad to a square before a cropping image processor, never crop (paper Sec. 3.3); "
        "'processor' = the processor as is; 'random_crop' = RandomResizedCrop(0.5-1) augmentation (opt-in)",
        choices=("pad", "processor", "random_crop"),
    )
    shuffle: bool = _f(True, "shuffle pairs each epoch (seeded)")
    group_by_length: bool = _f(
        False,
        "order each epoch so a per-device batch holds pairs of similar length (less padding; seeded; "
        "with shuffle false: groups of consecutive pairs sorted by length, in dataset order)",
    )
    dataloader_num_workers: int = _f(0, "DataLoader worker processes")

    # output
    logging_steps: int = _f(1, "log metrics every N optimiser steps")
    save_steps: int = _f(
        500, "save a checkpoint every N optimiser steps (and at the end: save_final_checkpoint)"
    )
    save_final_checkpoint: bool = _f(
        True,
        "also save a checkpoint at the last step, so a finished run can be extended with --resume "
        "(false: skip that extra save, e.g. of a large fully fine-tuned model)",
    )
    save_total_limit: int | None = _f(None, "keep only the newest N step checkpoints (null: all)")
    report_to: list[str] = _f(
        ["tensorboard"],
        "accelerate trackers: tensorboard, wandb, or none (also: null or [])",
        # "none" is dropped before the check (_coerce_types); listed so the error names it
        choices=("tensorboard", "wandb", "none"),
    )
    preset: str | None = _f(
        None, "name of the preset this config started from", choices=("paper", "reference")
    )

    def __post_init__(self) -> None:
        self._coerce_types()
        positive = ("beta", "gamma", "learning_rate", "adam_epsilon", "reference_batch_size")
        positive += ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps")
        positive += ("lora_r", "lora_alpha", "num_epochs")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"must be a positive number, got {value!r}", field=name, reason="bad_config")
        nonnegative = ("weight_decay", "sft_weight", "adam_beta1", "adam_beta2", "lora_dropout")
        nonnegative += ("dataloader_num_workers",)
        for name in nonnegative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"must be >= 0, got {value!r}", field=name, reason="bad_config")
        for name in ("adam_beta1", "adam_beta2", "lora_dropout"):
            if getattr(self, name) >= 1:
                raise InputError(
                    f"must be below 1, got {getattr(self, name)!r}", field=name, reason="bad_config"
                )
        if not 0 <= self.seed <= SEED_MAX:
            raise InputError(
                f"must be in [0, {SEED_MAX}], got {self.seed!r}", field="seed", reason="bad_config"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(
                f"must be in [0, 1), got {self.warmup_ratio!r}", field="warmup_ratio", reason="bad_config"
            )
        if self.max_steps is not None and self.max_steps <= 0:
            raise InputError(
                f"must be a positive integer, got {self.max_steps!r}", field="max_steps", reason="bad_config"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise InputError(
                f"must be positive or null, got {self.max_grad_norm!r}",
                field="max_grad_norm",
                reason="bad_config",
            )
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise InputError(
                f"must be at least 1 or null, got {self.save_total_limit!r}",
                field="save_total_limit",
                reason="bad_config",
            )
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is None or value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                if item not in choices:
                    raise InputError(
                        f"{item!r} is not one of {', '.join(choices)}", field=f.name, reason="bad_config"
                    )
        if self.mixed_precision == "fp32":
            self.mixed_precision = "no"
        if self.reference == "adapters_disabled" and not self.lora:
            raise InputError(
                "'adapters_disabled' needs lora: true (the base model is the reference only under LoRA)",
                field="reference",
                reason="bad_config",
            )

    def _coerce_types(self) -> None:
        """Accept YAML/command-line spellings: ints for floats, one string for a list, 'none' for null."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = str(f.type)
            if isinstance(value, str) and value.lower() in ("none", "null") and "None" in kind:
                value = None
            if f.name == "report_to":
                value = [] if value in (None, "none") else [value] if isinstance(value, str) else list(value)
                value = [v for v in value if v != "none"]
            elif f.name == "lora_target_modules" and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif kind.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif kind == "str" and value is False and "no" in f.metadata.get("choices", ()):
                value = "no"  # YAML 1.1 reads a bare `no` as false
            elif kind.startswith("float") and isinstance(value, str):
                # YAML 1.1 reads "1e-3" (no dot) as a string
                with contextlib.suppress(ValueError):
                    value = float(value)
            expected = {"float": (float,), "int": (int,), "bool": (bool,), "str": (str,)}.get(
                kind.split(" ")[0]
            )
            if (
                expected
                and value is not None
                and (not isinstance(value, expected) or (expected != (bool,) and isinstance(value, bool)))
            ):
                raise InputError(
                    f"expected {kind}, got {type(value).__name__} {value!r}",
                    field=f.name,
                    reason="bad_config",
                )
            setattr(self, f.name, value)

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> TrainConfig:
        """The named preset (``PRESETS``) with ``overrides`` applied."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", field="preset")
        return cls.from_dict({**PRESETS[name], **overrides, "preset": name})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"unknown config key(s) {', '.join(unknown)}; see `rlhfv train --help-config`",
                field=unknown[0],
                reason="bad_config",
            )
        return cls(**values)

    @property
    def is_vanilla_dpo(self) -> bool:
        """gamma 1 with the weighted sum: exactly vanilla DPO (TRL's sigmoid loss), token weights unused."""
        return self.gamma == 1.0 and self.normalisation == "sum"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (one comment line per field with its help)."""
        import yaml

        lines = ["# resolved rlhfv training config"]
        for f in fields(self):
            lines.append(f"# {f.metadata['help']}")
            lines.append(
                yaml.safe_dump({f.name: getattr(self, f.name)}, default_flow_style=True).strip("{}\n")
            )
        Path(path).write_text("\n".join(lines) + "\n")


PRESETS: dict[str, dict[str, Any]] = {
    # RLHF-V paper, Sec. 5 (the dataclass defaults)
    "paper": {},
    # the released Muffin DDPO script
    "reference": {"beta": 0.1, "gamma": 1.1, "normalisation": "sum", "warmup_ratio": 0.03},
}


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["beta=0.1", "lora=true"]`` -> ``{"beta": 0.1, "lora": True}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected key=value, got {pair!r}", field="--set", reason="bad_config")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise InputError(
                f"cannot parse value {raw!r}: {yaml_problem(err, where=False)}",
                field=key.strip(),
                reason="bad_config",
            ) from err
    return out


def yaml_problem(err: Exception, *, where: bool = True) -> str:
    """A PyYAML error in one line (its own message spans several, with a caret drawing), e.g.
    ``line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow
    sequence from line 2, column 7)``."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if where and mark is not None else ""

    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    if context and at(getattr(err, "context_mark", None)):  # where the unclosed thing began
        context += f" from {at(err.context_mark)}"
    place = at(getattr(err, "problem_mark", None))
    return (f"{place}: " if place else "") + problem + (f" ({context})" if context else "")


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, preset: str | None = None
) -> TrainConfig:
    """Resolve a config: preset <- YAML <- overrides. The preset is the overrides' ``preset``,
    else ``preset`` (``--preset``), else the file's ``preset`` key, else paper: the command line wins."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", path=str(path), reason="missing_file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            # a reader error (e.g. a control character) has no line and column to point at
            joint = " at " if getattr(err, "problem_mark", None) is not None else ": "
            raise InputError(
                f"not valid YAML{joint}{yaml_problem(err)}", path=str(path), reason="bad_config"
            ) from err
        if not isinstance(loaded, dict):
            raise InputError("expected a mapping of config keys", path=str(path), reason="bad_config")
        values.update(loaded)
    from_file = values.pop("preset", None)
    values.update(overrides or {})
    name = values.pop("preset", None) or preset or from_file or "paper"
    try:
        return TrainConfig.from_preset(name, **values)
    except InputError as err:
        if path is not None and err.path is None:
            err.path = str(path)
            err.args = (str(err),)
        raise
