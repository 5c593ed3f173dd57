"""DDPO and SFT training on accelerate: one loop for both stages.

Python API (the CLI ``rlhfv train`` / ``rlhfv sft`` is a thin shell over it)::

    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.trainer import train_ddpo, train_sft  # train_sft lives in rlhfv.ddpo.sft

    config = TrainConfig(max_steps=100, mixed_precision="no")          # paper defaults otherwise
    sft = train_sft(config, model, processor, "data/prepared", output_dir="runs/sft")
    result = train_ddpo(config, sft.model, processor, "data/prepared", output_dir="runs/ddpo")
    result.model            # the trained model (unwrapped; a PeftModel under LoRA)
    result.history          # one dict per logged step (as in runs/ddpo/metrics.jsonl)

``prepared`` is a prepared-data directory (``rlhfv data prepare``), or a
``(dataset, metadata)`` pair as ``rlhfv.data.load_prepared`` returns it. ``model`` and
``processor`` are any image-text-to-text model and its processor (the CLI loads them with
``AutoModelForImageTextToText`` / ``AutoProcessor``). Vanilla DPO is
``TrainConfig(gamma=1.0)``; the released script's settings are
``TrainConfig.from_preset("reference")``.

What a run writes to ``output_dir``:

* ``train_config.yaml``: the resolved config;
* ``metrics.jsonl``: one JSON object per logged step (``loss``, ``rewards/*``, ``logps/*``,
  ``lr``, ``grad_norm``, ``tokens_per_second``, ``step``, ``epoch``); also sent to the
  accelerate trackers (TensorBoard under ``output_dir/tb`` by default);
* ``checkpoint-N/`` every ``save_steps`` and at the last step (``save_final_checkpoint``):
  the model in Hugging Face format (``save_pretrained``: full weights, or the LoRA adapter)
  + the processor, loadable by plain transformers / peft, ``training_state/`` (optimizer,
  scheduler, RNG) for ``resume_from``, and the config, objective and data fingerprint the
  resume checks;
* the final model + processor in ``output_dir`` itself.

Resuming (``resume_from="latest"`` or a checkpoint path) restores model, optimizer,
scheduler and RNG states, and the data position follows from the step (see
``rlhfv.ddpo.batches``), so an interrupted and resumed run ends with the weights of an
uninterrupted one; a finished run resumed with a larger ``max_steps`` goes on under the
schedule of the new length. ``trainer_state.json`` is written last and marks a complete
checkpoint: ``"latest"`` skips (with a warning) one a killed run left half-written. An
``output_dir`` holding an earlier run is refused unless resuming it or ``overwrite=True``.
A NaN or infinite loss stops the run with an ``InputError`` naming the step and the last
good checkpoint (nothing is overwritten).

Runs as one process, or under ``accelerate launch`` / ``torchrun`` (DDP, FSDP, DeepSpeed:
``configs/accelerate/``): N processes with per-device batch b see the same global batches
as one process with batch N*b.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfv.ddpo.batches import (
    PreparedPairs,
    epoch_order,
    image_transform,
    pair_lengths,
    process_indices,
    to_device,
)
from rlhfv.ddpo.config import TrainConfig
from rlhfv.ddpo.forward import length_grouped_indices, unwrap_model
from rlhfv.ddpo.objectives import OBJECTIVES
from rlhfv.ddpo.reference import (
    AdapterDisabledReference,
    ModelReference,
    PrecomputedReference,
    cache_path,
    compute_answer_logps,
    fingerprint_model,
    read_reference_cache,
    reference_fingerprint,
    write_reference_cache,
)
from rlhfv.ddpo.sft import train_sft  # re-exported: the API names both stages here
from rlhfv.errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_DIRNAME = "training_state"
TRAINER_STATE_FILE = "trainer_state.json"
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.jsonl"
# What a finished or interrupted run leaves in its output directory besides checkpoint-N/
# (the processor files are rewritten by every run and do not mark one).
RUN_FILES = (METRICS_FILE, "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
# Cleared by ``overwrite`` with the checkpoints: the previous run's model, config, metrics, logs.
CLEARED_FILES = (
    *RUN_FILES,
    CONFIG_FILE,
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "pytorch_model.bin",
)
# Config fields a resumed run may change: how long, how often to log/save, how fast to
# compute; everything else (objective, optimiser, what is trained, data order...) must match.
RESUME_MAY_CHANGE = frozenset(
    {
        "max_steps",
        "num_epochs",
        "logging_steps",
        "save_steps",
        "save_final_checkpoint",
        "save_total_limit",
        "report_to",
        "dataloader_num_workers",
        "reference_batch_size",
        "gradient_checkpointing",
        "forward",
        "preset",
    }
)

# Parameter-name components that place a parameter in the vision tower or the projector
# (checked projector first: Qwen2-VL's merger sits inside `visual`).
PROJECTOR_PARTS = frozenset(
    {"multi_modal_projector", "connector", "merger", "mm_projector", "resampler", "image_newline"}
)
VISION_PARTS = frozenset({"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vpm"})
LANGUAGE_PARTS = frozenset({"language_model", "text_model"})
# Linear layers LoRA adapts in the language model (Llama/Qwen/Mistral/SmolLM naming).
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainState:
    """Where a run is; passed to callbacks after every optimiser step."""

    step: int
    total_steps: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished run returns."""

    output_dir: Path
    global_step: int
    model: torch.nn.Module
    history: list[dict[str, float]]
    checkpoints: list[Path]


Callback = Callable[[TrainState], "bool | None"]

__all__ = ["Trainer", "TrainResult", "TrainState", "train_ddpo", "train_sft"]


# ------------------------------------------------------------------ public entry points


def train_ddpo(
    config: TrainConfig,
    model: torch.nn.Module,
    processor: Any,
    prepared: str | Path | tuple[Any, Mapping[str, Any]],
    output_dir: str | Path,
    **kwargs: Any,
) -> TrainResult:
    """Dense DPO training; see the module docstring and ``Trainer`` for ``kwargs``."""
    return Trainer(config, model, processor, prepared, output_dir, objective="ddpo", **kwargs).train()


# ------------------------------------------------------------------ model preparation


def parameter_group(name: str) -> str:
    """``"vision"``, ``"projector"`` or ``"language"`` for a parameter or module name."""
    parts = set(name.split("."))
    if parts & PROJECTOR_PARTS:
        return "projector"
    if parts & VISION_PARTS:
        return "vision"
    return "language"


def freeze_parts(model: torch.nn.Module, vision: bool, projector: bool) -> int:
    """Set ``requires_grad=False`` on the vision tower and/or projector; returns how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        group = parameter_group(name)
        if (vision and group == "vision") or (projector and group == "projector"):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def lora_target_regex(model: torch.nn.Module) -> str:
    """A peft ``target_modules`` regex: the language model's attention and MLP projections."""
    prefixes: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] not in LORA_PROJECTIONS:
            continue
        if parameter_group(name) != "language":
            continue
        parts = name.split(".")
        cut = next((i for i, p in enumerate(parts) if p in LANGUAGE_PARTS), None)
        prefixes.add(".".join(parts[: cut + 1]) if cut is not None else "")
    if not prefixes:
        raise InputError(
            f"no language-model projection among {LORA_PROJECTIONS} found; set lora_target_modules",
            field="lora_target_modules",
            reason="bad_config",
        )
    alternatives = "|".join(re.escape(p) + r"\." if p else "" for p in sorted(prefixes))
    return rf"^(?:{alternatives}).*\.(?:{'|'.join(LORA_PROJECTIONS)})$"


def check_lora_targets(model: torch.nn.Module, targets: Sequence[str]) -> None:
    """An ``InputError`` for a ``lora_target_modules`` name that matches no layer of ``model``.

    A name matches a module called that or ending in ``.name``, as peft matches a list; peft
    itself refuses only when no name matches at all, and then with the whole model printed.
    """
    names = {name: module for name, module in model.named_modules() if name}
    bad = []
    for target in targets:
        matched = [m for n, m in names.items() if n == target or n.endswith("." + target)]
        if not matched or any(next(m.children(), None) is not None for m in matched):
            bad.append(target)  # none, or a block of layers (peft adapts single layers)
    if bad:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in names.items() if isinstance(m, torch.nn.Linear)})
        shown = ", ".join(linear[:12]) + (", ..." if len(linear) > 12 else "")
        raise InputError(
            f"{', '.join(map(repr, bad))} names no single layer of the model; its Linear layers are "
            f"called {shown} (or leave lora_target_modules null for the language model's projections)",
            field="lora_target_modules",
            reason="bad_config",
        )


def apply_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """Wrap ``model`` with fresh LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    if config.lora_target_modules:
        check_lora_targets(model, config.lora_target_modules)
    targets: Any = config.lora_target_modules or lora_target_regex(model)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(model, lora)


def check_no_loose_adapters(model: torch.nn.Module) -> None:
    """An ``InputError`` for peft adapter layers outside a ``PeftModel``: rlhfv cannot merge
    them, and frozen for inference they would leave nothing (or only them) to train."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(model, PeftModel) or not any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        return
    raise InputError(
        "the model carries peft adapter layers outside a PeftModel (as transformers' from_pretrained "
        "of a LoRA adapter folder or load_adapter attaches them), which cannot be merged here: load the "
        "folder with rlhfv.data.pretrained.load_model_and_processor (its base model with the adapter "
        "merged in) or pass PeftModel.from_pretrained(base, folder)",
        field="model",
        reason="bad_model",
    )


def prepare_model(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """Freezing, LoRA and gradient checkpointing as the config asks.

    A model that already carries LoRA adapters (e.g. ``train_sft(..., lora=True).model``) is
    merged first: it is the starting point (and the reference) of this run. Adapter layers
    outside a ``PeftModel`` (transformers' ``from_pretrained`` of an adapter folder, or
    ``load_adapter``) are refused: load such a folder with
    ``rlhfv.data.pretrained.load_model_and_processor``, which merges it.
    """
    check_no_loose_adapters(model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if config.lora:
        model = apply_lora(model, config)
    freeze_parts(model, config.freeze_vision_tower, config.freeze_projector)
    if config.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if getattr(base, "config", None) is not None:
            base.config.use_cache = False
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("nothing left to train: every parameter is frozen", field="freeze_vision_tower")
    return model


# ------------------------------------------------------------------ data


def load_prepared_data(prepared: str | Path | tuple[Any, Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """``(dataset, metadata)`` from a prepared directory or an already loaded pair."""
    if isinstance(prepared, tuple):
        dataset, metadata = prepared
        return dataset, dict(metadata or {})
    from rlhfv.data import load_prepared

    return load_prepared(prepared)


# What the reference model reads from a row; what the loss reads besides: the answer spans
# and the changed-token masks (which `rlhfv data prepare --alignment/--kinds` decide).
REFERENCE_COLUMNS = ("chosen_input_ids", "rejected_input_ids", "image")
LOSS_COLUMNS = ("chosen_labels_start", "rejected_labels_start", "chosen_changed", "rejected_changed")


def data_fingerprint(dataset: Any, metadata: Mapping[str, Any], *, loss: bool = False) -> str:
    """A hash of what the reference model reads (token ids, images) or, with ``loss``, of all
    the loss reads (also answer spans and changed-token masks).

    The prepared data's own ``fingerprint`` (``rlhfv data prepare``) covers ids and images
    only, so it stands for them and keeps the reference caches' keys; data passed in memory
    without one has its columns hashed.
    """
    own = metadata.get("fingerprint")
    columns = (() if own else REFERENCE_COLUMNS) + (LOSS_COLUMNS if loss else ())
    if not columns:
        return str(own)
    digest = hashlib.sha256(str(own).encode())
    _hash_columns(dataset, [c for c in columns if c in dataset.column_names], digest)
    return digest.hexdigest()


def _hash_columns(dataset: Any, columns: Sequence[str], digest: Any) -> None:
    """Feed ``columns`` to ``digest`` in row order; integers as int64 so the stored width does not matter."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for table in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=1024):
        for name in columns:
            column = table.column(name).combine_chunks()
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                digest.update(np.asarray(pc.list_value_length(column), dtype=np.int64).tobytes())
                column = column.flatten()  # unlike .values, respects a sliced array's offset
            if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
                for item in column.to_pylist():
                    digest.update(hashlib.sha256(item).digest())
            else:
                digest.update(np.asarray(column, dtype=np.int64).tobytes())


# ------------------------------------------------------------------ the trainer


class Trainer:
    """One training run. Arguments beyond the entry points':

    * ``objective``: ``"ddpo"`` or ``"sft"`` (``rlhfv.ddpo.objectives.OBJECTIVES``);
    * ``ref_model``: the frozen reference for ``reference: model`` (default: a copy of ``model``);
    * ``reference_cache``: where ``reference_logps/`` goes (default: the prepared directory,
      or ``output_dir`` when the data was passed in memory);
    * ``resume_from``: ``"latest"`` or a ``checkpoint-N`` directory of ``output_dir``; the
      checkpoint's run must have had the same settings (``RESUME_MAY_CHANGE`` lists the fields
      that may differ), objective, data, process count, model and weights dtype
      (``RUN_IDENTITY``), else an ``InputError`` lists the differences; a ``max_steps`` at or
      below the checkpoint's step is refused (nothing to train);
    * ``model_name``: how checkpoints record the starting model for that check (default: its
      config's ``_name_or_path``; the CLI passes ``--model``, as a LoRA folder loads with its
      base model's name);
    * ``overwrite``: an ``output_dir`` holding an earlier run (checkpoints, metrics, a
      trained model) is refused unless resuming; ``overwrite=True`` deletes that run's
      checkpoints, metrics, config and model first;
    * ``callbacks``: called with a ``TrainState`` after each optimiser step; returning True
      ends the run early (the final model is still saved);
    * ``progress``: show tqdm bars (main process only).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        processor: Any,
        prepared: str | Path | tuple[Any, Mapping[str, Any]],
        output_dir: str | Path,
        *,
        objective: str = "ddpo",
        ref_model: torch.nn.Module | None = None,
        reference_cache: str | Path | None = None,
        resume_from: str | Path | None = None,
        model_name: str | None = None,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
        _refuse_resume_and_overwrite(resume_from, overwrite)
        self.config = config
        self.model = model
        self.processor = processor
        self.objective_name = objective
        self.output_dir = Path(output_dir)
        self.dataset, self.metadata = load_prepared_data(prepared)
        if reference_cache is None:
            reference_cache = prepared if isinstance(prepared, str | Path) else self.output_dir
        self.reference_cache = Path(reference_cache)
        self.ref_model = ref_model
        self.resume_from = resume_from
        self.model_name = model_name
        self.overwrite = overwrite
        self.callbacks = list(callbacks)
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.checkpoints: list[Path] = []
        self.identity: dict[str, Any] = {}  # set by train(): _run_identity

    # -- setup ------------------------------------------------------------------------

    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

        trackers = list(self.config.report_to)
        if "wandb" in trackers:
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise InputError(
                    "report_to wandb needs the wandb package (pip install wandb; in a checkout: "
                    "pip install -e '.[wandb]')",
                    field="report_to",
                ) from None
        from accelerate.state import AcceleratorState, GradientState

        # Each run configures its own precision and accumulation; accelerate keeps both in
        # process-wide singletons, so a second run in the same process (SFT, then DDPO) would
        # be refused. The process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        accelerator = Accelerator(
            # torchrun on a machine without GPUs: accelerate needs to be told to use gloo on the CPU
            cpu=world_size > 1 and not torch.cuda.is_available(),
            mixed_precision=self.config.mixed_precision,
            gradient_accumulation_steps=self.config.gradient_accumulation_steps,
            log_with=trackers or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "tb")
            ),
            step_scheduler_with_optimizer=False,
            # vision-language models carry parameters no loss reaches (e.g. CLIP's post_layernorm
            # when LLaVA reads an inner layer): DDP must be told to expect them
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        if accelerator.num_processes != world_size:
            raise RuntimeError(
                f"WORLD_SIZE is {world_size} but accelerate set up {accelerator.num_processes} process(es)"
            )
        return accelerator

    def _collator(self):
        from rlhfv.data.collator import PreferenceCollator

        return PreferenceCollator(self.processor, gamma=self.config.gamma)

    def _pairs(self, pipeline: str) -> PreparedPairs:
        transform = image_transform(pipeline, self.processor.image_processor)
        return PreparedPairs(self.dataset, transform, seed=self.config.seed)

    def _reference_source(self, accelerator, model: torch.nn.Module):
        if self.objective_name != "ddpo":
            return None
        kind = self.config.reference
        if kind == "adapters_disabled":
            return AdapterDisabledReference(self.config.forward)
        if kind == "model":
            ref = self.ref_model if self.ref_model is not None else copy.deepcopy(model)
            return ModelReference(ref.to(accelerator.device), self.config.forward, accelerator.autocast)
        return PrecomputedReference(self._precomputed_table(accelerator, model))

    def _precomputed_table(self, accelerator, model: torch.nn.Module):
        """Load the reference cache for (model, data, settings), computing it first if absent."""
        from accelerate.utils import broadcast_object_list, gather_object
        from torch.utils.data import DataLoader, Subset

        ref_model = self.ref_model if self.ref_model is not None else model
        # the reference sees the deterministic pipeline: augmentation is a training-time thing
        pipeline = "pad" if self.config.image_pipeline == "random_crop" else self.config.image_pipeline
        key = [None]
        if accelerator.is_main_process:
            key[0] = reference_fingerprint(
                fingerprint_model(ref_model),
                data_fingerprint(self.dataset, self.metadata),
                image_pipeline=pipeline,
                mixed_precision=self.config.mixed_precision,
                forward=self.config.forward,
            )
        broadcast_object_list(key, from_process=0)
        path = cache_path(self.reference_cache, key[0])
        table = read_reference_cache(path)
        if table is not None:
            return table
        ref_model.to(accelerator.device)
        mine = list(range(accelerator.process_index, len(self.dataset), accelerator.num_processes))
        loader = DataLoader(
            Subset(self._pairs(pipeline), mine),
            batch_size=self.config.reference_batch_size,
            collate_fn=self._collator(),
            num_workers=self.config.dataloader_num_workers,
        )
        checked = (_check_vocabulary(ref_model, batch, self.metadata) or batch for batch in loader)
        with _data_must_fit_model(self.metadata):
            values = compute_answer_logps(
                ref_model,
                checked,
                device=accelerator.device,
                autocast=accelerator.autocast,
                forward=self.config.forward,
                progress=self.progress and accelerator.is_local_main_process,
                total=len(loader),
            )
        gathered = gather_object([values]) if accelerator.num_processes > 1 else [values]
        if accelerator.is_main_process:
            merged = {k: v for part in gathered for k, v in part.items()}
            info = {"fingerprint": key[0], "pairs": len(self.dataset), "model": _model_name(ref_model)}
            write_reference_cache(path, merged, len(self.dataset), info)
        accelerator.wait_for_everyone()
        return read_reference_cache(path)

    def _optimizer_and_schedule(self, model: torch.nn.Module, total_steps: int):
        from transformers import get_scheduler

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=self.config.learning_rate,
            betas=(self.config.adam_beta1, self.config.adam_beta2),
            eps=self.config.adam_epsilon,
            weight_decay=self.config.weight_decay,
        )
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[
            self.config.lr_scheduler
        ]
        warmup = math.ceil(self.config.warmup_ratio * total_steps)
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
        return optimizer, scheduler

    # -- checkpoints -------------------------------------------------------------------

    @functools.cached_property
    def _data_identity(self) -> str:
        return data_fingerprint(self.dataset, self.metadata, loss=True)

    def _run_identity(self, accelerator) -> dict[str, Any]:
        """What a checkpoint records so that a resume can tell it is the same run (``RUN_IDENTITY``).
        Taken before training: DeepSpeed casts the model's weights in place."""
        return {
            "objective": self.objective_name,
            "data": self._data_identity,
            "processes": accelerator.num_processes,
            "model": model_identity(self.model_name or _model_name(self.model)),
            "dtype": _weights_dtype(self.model),
        }

    def _check_output_dir(self, accelerator, total_steps: int) -> Path | None:
        """Refuse to mix runs: a fresh run needs an output directory without an earlier run
        (or ``overwrite``, which clears it); a resumed run needs a checkpoint of the run in
        ``output_dir``, its settings, and steps left to train. Returns the checkpoint to resume."""
        _refuse_file_output(self.output_dir)
        if self.resume_from is not None:
            resume_dir = resolve_checkpoint(self.output_dir, self.resume_from)
            self._check_resume_settings(resume_dir)
            _refuse_nothing_to_train(resume_dir, _checkpoint_global_step(resume_dir), total_steps)
            return resume_dir
        if not self.overwrite:
            refuse_earlier_run(self.output_dir)
            return None
        found = previous_run(self.output_dir)
        if found and accelerator.is_main_process:
            clear_previous_run(self.output_dir)
            logger.warning(
                "--overwrite: removed the earlier run in %s (%s)", self.output_dir, ", ".join(found)
            )
        accelerator.wait_for_everyone()
        return None

    def _check_resume_settings(self, resume_dir: Path) -> None:
        state = _trainer_state(resume_dir)
        current = self.identity
        legacy = {
            data_fingerprint(self.dataset, self.metadata),
            # in-memory data used to be recorded by its datasets fingerprint (else its length)
            str(getattr(self.dataset, "_fingerprint", None) or len(self.dataset)),
        }
        if state.get("data") in legacy and state.get("data") != current["data"]:
            # written before the fingerprint covered the answer spans and masks: ids and images match
            logger.warning(
                "%s predates the check of changed-token masks; they are assumed unchanged", resume_dir
            )
            state["data"] = current["data"]
        _refuse_other_settings(
            resume_dir, _identity_differences(state, current) + _config_differences(resume_dir, self.config)
        )

    def _save_model(self, accelerator, model, directory: Path) -> None:
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                # peft looks for the base model's config.json to see whether the vocabulary was
                # resized (never, here); a base that is a LoRA folder or a hub id offline has none
                warnings.filterwarnings(
                    "ignore", message="Could not find a config file in", category=UserWarning
                )
                accelerator.unwrap_model(model).save_pretrained(
                    directory, state_dict=state_dict, safe_serialization=True
                )
            self.processor.save_pretrained(directory)

    def _save_checkpoint(self, accelerator, model, step: int, epoch: int) -> Path:
        """Model, ``training_state/``, config, then ``trainer_state.json`` last: its presence marks
        a complete checkpoint (a run killed while saving leaves one a resume skips)."""
        directory = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        if accelerator.is_main_process:  # a stale copy from a killed run must not mark this one complete
            (directory / TRAINER_STATE_FILE).unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        self._save_model(accelerator, model, directory)
        accelerator.save_state(str(directory / STATE_DIRNAME))
        accelerator.wait_for_everyone()  # every process's share of the state is on disk
        if accelerator.is_main_process:
            self.config.save(directory / CONFIG_FILE)  # what a resume compares against
            state = {"global_step": step, "epoch": epoch, **self.identity}
            tmp = directory / (TRAINER_STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(directory / TRAINER_STATE_FILE)  # atomic: never a half-written marker
            self.checkpoints.append(directory)
            limit = self.config.save_total_limit
            if limit is not None:
                for old in sorted(_checkpoint_dirs(self.output_dir), key=_checkpoint_step)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return directory

    # -- the loop ----------------------------------------------------------------------

    def _batches(self, pairs: PreparedPairs, collator, accelerator, first_step: int, steps_per_epoch: int):
        """Micro-batches for this process from optimiser step ``first_step`` on, epoch after epoch."""
        from torch.utils.data import DataLoader, Subset

        b = self.config.per_device_batch_size
        accum = self.config.gradient_accumulation_steps
        epoch, in_epoch = divmod(first_step, steps_per_epoch)
        lengths = pair_lengths(self.dataset) if self.config.group_by_length else None
        while True:
            if lengths is not None:
                order = length_grouped_indices(
                    lengths, b, seed=self.config.seed + epoch, shuffle=self.config.shuffle
                )
            else:
                order = epoch_order(len(pairs), epoch, self.config.seed, self.config.shuffle)
            mine = process_indices(
                order, in_epoch * accum, b, accelerator.num_processes, accelerator.process_index
            )
            mine = mine[: (steps_per_epoch - in_epoch) * accum * b]
            pairs.epoch = epoch
            loader = DataLoader(
                Subset(pairs, mine),
                batch_size=b,
                shuffle=False,
                collate_fn=collator,
                num_workers=self.config.dataloader_num_workers,
                # without a generator each DataLoader draws its base seed from the global RNG:
                # a run resumed mid-epoch builds one more than the uninterrupted run did there,
                # and every later dropout mask shifts
                generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch),
            )
            for batch in loader:
                yield epoch, to_device(batch, accelerator.device)
            epoch, in_epoch = epoch + 1, 0

    def _schedule(self, accelerator) -> tuple[int, int]:
        """(optimiser steps per epoch, total optimiser steps); too little data is an InputError."""
        config = self.config
        n_pairs = len(self.dataset)
        global_micro = config.per_device_batch_size * accelerator.num_processes
        steps_per_epoch = n_pairs // global_micro // config.gradient_accumulation_steps
        if steps_per_epoch == 0:
            raise InputError(
                f"{n_pairs} pairs are fewer than one global batch of "
                f"{global_micro * config.gradient_accumulation_steps} "
                "(per_device_batch_size x processes x gradient_accumulation_steps)",
                field="per_device_batch_size",
                reason="too_little_data",
            )
        return steps_per_epoch, config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)

    def _warn_if_gamma_differs(self) -> None:
        recorded = self.metadata.get("gamma")
        if (
            self.objective_name == "ddpo"
            and recorded is not None
            and not self.config.is_vanilla_dpo  # vanilla DPO leaves the token weights unused by design
            and float(recorded) != self.config.gamma
        ):
            logger.warning(
                "the prepared data records gamma %s (rlhfv data prepare --gamma) but the training config "
                "says %s; training uses %s (--set gamma=%s follows the data)",
                recorded,
                self.config.gamma,
                self.config.gamma,
                recorded,
            )

    def _setup(self, accelerator, total_steps: int):
        """Reference source, freezing/LoRA/checkpointing, optimiser, schedule, accelerate wrapping."""
        from accelerate.utils import set_seed

        config = self.config
        model = self.model
        check_no_loose_adapters(model)  # before the reference pass, which takes a while
        model.train()
        reference = None
        if config.reference != "adapters_disabled":  # the initial model, before any adapter exists
            reference = self._reference_source(accelerator, model)
        set_seed(config.seed)  # the reference precompute draws from the RNG; LoRA init must not depend on it
        model = prepare_model(model, config)
        if accelerator.is_main_process and accelerator.state.deepspeed_plugin is None:
            # DeepSpeed keeps fp32 master weights of its own; DDP and FSDP step the weights as they are
            _warn_if_half_precision_training(model)
        if config.reference == "adapters_disabled":
            reference = self._reference_source(accelerator, model)
        objective = OBJECTIVES[self.objective_name](config, reference)
        optimizer, scheduler = self._optimizer_and_schedule(model, total_steps)
        if accelerator.state.deepspeed_plugin is not None:
            # DeepSpeed keeps its own batch and accumulation counters: make them ours (accelerate
            # would otherwise switch to DeepSpeed's accumulation value)
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            ds_config["train_micro_batch_size_per_gpu"] = config.per_device_batch_size
            ds_config["gradient_accumulation_steps"] = config.gradient_accumulation_steps
            ds_config.pop("train_batch_size", None)
            if config.max_grad_norm is not None:
                ds_config["gradient_clipping"] = config.max_grad_norm
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        model.train()
        return model, optimizer, scheduler, objective

    def _optimizer_step(
        self, accelerator, model, objective, optimizer, scheduler, batches, step, window, last_ckpt
    ):
        """One optimiser step over ``gradient_accumulation_steps`` micro-batches; returns the epoch."""
        config = self.config
        epoch = 0
        for micro in range(config.gradient_accumulation_steps):
            epoch, batch = next(batches)
            with accelerator.accumulate(model):
                loss, metrics = _run_objective(objective, model, batch, self.metadata)
                _check_finite(accelerator, loss, step + 1, micro, last_ckpt)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if config.max_grad_norm is not None:
                        window.grad_norm = accelerator.clip_grad_norm_(
                            model.parameters(), config.max_grad_norm
                        )
                    window.lr = float(scheduler.get_last_lr()[0])  # the rate this update uses
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
            window.add(metrics, batch["attention_mask"].sum())
        return epoch

    def train(self) -> TrainResult:
        """Run to ``max_steps`` (or ``num_epochs``), then save the final model in ``output_dir``."""
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        config = self.config
        accelerator = self._make_accelerator()
        set_seed(config.seed)
        if accelerator.is_main_process:
            self._warn_if_gamma_differs()
        steps_per_epoch, total_steps = self._schedule(accelerator)
        self.identity = self._run_identity(accelerator)
        resume_dir = self._check_output_dir(accelerator, total_steps)  # before anything is written
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if accelerator.is_main_process:
            config.save(self.output_dir / CONFIG_FILE)
        model, optimizer, scheduler, objective = self._setup(accelerator, total_steps)
        if accelerator.is_main_process and config.report_to:
            accelerator.init_trackers("rlhfv", config=_flat_config(config))

        step = 0
        if resume_dir is not None:
            accelerator.load_state(str(resume_dir / STATE_DIRNAME))
            step = _checkpoint_global_step(resume_dir)
            _follow_schedule(scheduler)
        batches = self._batches(
            self._pairs(config.image_pipeline), self._collator(), accelerator, step, steps_per_epoch
        )
        metrics_file = self.output_dir / METRICS_FILE
        if accelerator.is_main_process:
            _truncate_metrics(metrics_file, step)
        show = self.progress and accelerator.is_local_main_process
        label = "dpo" if self.objective_name == "ddpo" and config.is_vanilla_dpo else self.objective_name
        bar = tqdm(total=total_steps, initial=step, desc=label, disable=not show, unit="step")
        window = _MetricWindow(accelerator)
        last_checkpoint = _latest_checkpoint(self.output_dir)
        saved_step, epoch, stop = step, 0, False  # a resumed run's step is saved already
        while step < total_steps and not stop:
            epoch = self._optimizer_step(
                accelerator, model, objective, optimizer, scheduler, batches, step, window, last_checkpoint
            )
            step += 1
            bar.update(1)
            logged: dict[str, float] = {}
            if step % config.logging_steps == 0 or step == total_steps:
                logged = window.flush(step, epoch)
                self.history.append(logged)
                accelerator.log({k: v for k, v in logged.items() if k != "step"}, step=step)
                shown = ("loss", "rewards/margins", "rewards/accuracies", "lr", "tokens_per_second")
                bar.set_postfix({k.split("/")[-1]: f"{logged[k]:.4g}" for k in shown if k in logged})
                if accelerator.is_main_process:
                    with metrics_file.open("a") as fh:
                        fh.write(json.dumps(logged) + "\n")
            if step % config.save_steps == 0 and step < total_steps:
                last_checkpoint = self._save_checkpoint(accelerator, model, step, epoch)
                saved_step = step
            state = TrainState(step=step, total_steps=total_steps, epoch=epoch, metrics=logged)
            stop = any(bool(cb(state)) for cb in self.callbacks)
        bar.close()
        # the end is a checkpoint too (unless turned off): a finished run can be resumed to extend it
        if step != saved_step and (config.save_final_checkpoint or step % config.save_steps == 0):
            self._save_checkpoint(accelerator, model, step, epoch)
        self._save_model(accelerator, model, self.output_dir)
        accelerator.wait_for_everyone()
        if config.report_to:
            accelerator.end_training()
        return TrainResult(
            output_dir=self.output_dir,
            global_step=step,
            model=accelerator.unwrap_model(model),
            history=self.history,
            checkpoints=list(self.checkpoints),
        )


class _MetricWindow:
    """Metrics summed over the micro-batches since the last log, averaged over them and the processes."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.tokens = torch.zeros((), device=self.accelerator.device)
        self.tick = time.perf_counter()
        self.lr = float("nan")
        self.grad_norm: Any = None

    def add(self, metrics: Mapping[str, torch.Tensor], tokens: torch.Tensor) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.count += 1
        self.tokens += tokens

    def flush(self, step: int, epoch: int) -> dict[str, float]:
        accelerator = self.accelerator
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k] / max(self.count, 1) for k in keys]).to(accelerator.device)
        several = accelerator.num_processes > 1
        averaged = accelerator.reduce(local, reduction="mean") if several else local
        tokens = accelerator.reduce(self.tokens.float(), reduction="sum") if several else self.tokens
        elapsed = max(time.perf_counter() - self.tick, 1e-9)
        logged = {k: float(v) for k, v in zip(keys, averaged.tolist(), strict=True)}
        logged["lr"] = self.lr
        logged["tokens_per_second"] = float(tokens) / elapsed
        if self.grad_norm is not None:
            logged["grad_norm"] = float(self.grad_norm)
        logged["epoch"] = epoch
        logged["step"] = step
        self._reset()
        return logged


# ------------------------------------------------------------------ helpers


def _mismatch_hint(metadata: Mapping[str, Any]) -> str:
    return (
        f"the prepared data (processor {metadata.get('processor', '?')!r}) does not fit this model: "
        "prepare it again with `rlhfv data prepare ... --processor <this model>`"
    )


def _check_vocabulary(model, batch: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    # checked before the forward: on a GPU an id past the embedding table is a device assert
    embeddings = unwrap_model(model).get_input_embeddings()
    if embeddings is not None and int(batch["input_ids"].max()) >= embeddings.num_embeddings:
        raise InputError(
            f"{_mismatch_hint(metadata)} (token id beyond the vocabulary)",
            field="--data",
            reason="processor_mismatch",
        )


@contextlib.contextmanager
def _data_must_fit_model(metadata: Mapping[str, Any]):
    """Image-token count errors from the model become an InputError naming the cause."""
    try:
        yield
    except ValueError as err:
        if "image tokens" in str(err) or "Image features" in str(err):
            raise InputError(
                f"{_mismatch_hint(metadata)} ({err})", field="--data", reason="processor_mismatch"
            ) from None
        raise


def _run_objective(objective, model, batch, metadata: Mapping[str, Any]):
    """The objective on one batch; data prepared for another processor is an InputError, not a traceback."""
    _check_vocabulary(model, batch, metadata)
    with _data_must_fit_model(metadata):
        return objective(model, batch)


def _check_finite(
    accelerator, loss: torch.Tensor, step: int, micro: int, last_checkpoint: Path | None
) -> None:
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite).min().reshape(1)
    if finite.item() < 1:
        where = (
            f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
        )
        raise InputError(
            f"loss is {loss.item()} at step {step} (micro-batch {micro}); training stopped before the update, {where}. "
            "Try a lower learning_rate, mixed_precision bf16 instead of fp16, or max_grad_norm",
            field="loss",
            reason="non_finite_loss",
        )


def _warn_if_half_precision_training(model: torch.nn.Module) -> None:
    """AdamW updates trained weights in their own dtype: in bfloat16 (8 bits of mantissa) an
    update below about 1/256 of the weight rounds away, and at the paper's lr 5e-7 nearly all
    do (float16: below 1/2048). LoRA adapters are created in float32 and are not affected."""
    half = sorted(
        {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}
        & {"bfloat16", "float16"}
    )
    if half:
        logger.warning(
            "training %s weights directly: AdamW updates smaller than a weight's rounding step (about "
            "1/256 of it in bfloat16, 1/2048 in float16) are lost, at the paper's learning rate 5e-7 "
            "nearly all; load the model in float32 (--dtype float32, the default; mixed_precision bf16 "
            "still computes in bf16), train LoRA adapters (--lora), or use DeepSpeed (it keeps float32 "
            "master weights)",
            " and ".join(half),
        )


def _follow_schedule(scheduler) -> None:
    """Give the optimizer this run's learning rate at the restored step. It holds the
    checkpoint's, from the schedule of that run's length: a run extended with a larger
    ``max_steps`` would take one step at the old schedule's rate (0 at the end of a cosine)."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    rates = [base * fn(inner.last_epoch) for base, fn in zip(inner.base_lrs, inner.lr_lambdas, strict=True)]
    for group, rate in zip(inner.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    inner._last_lr = rates  # what get_last_lr() logs


def _metrics_record(line: str) -> dict[str, Any] | None:
    """One metrics.jsonl line as a dict; None for one that is not a JSON object."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the logged steps up to ``step`` (a resumed run rewrites what came after its checkpoint).

    A run killed while appending leaves a partial last line: lines that are not JSON objects
    are dropped, with a warning, rather than stopping the resume.
    """
    if not path.is_file():
        return
    kept, dropped = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        record = _metrics_record(line)
        if record is None:
            dropped.append(number)
        elif record.get("step", 0) <= step:
            kept.append(line)
    if dropped:
        logger.warning(
            "%s: dropped line(s) %s, not JSON objects (a run stopped while writing them)",
            path,
            ", ".join(map(str, dropped)),
        )
    path.write_text("".join(line + "\n" for line in kept))


def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [
        p
        for p in output_dir.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]


def previous_run(output_dir: Path) -> list[str]:
    """Names of an earlier run's checkpoints, metrics and trained model in ``output_dir``."""
    if not output_dir.is_dir():
        return []
    checkpoints = [p.name for p in sorted(_checkpoint_dirs(output_dir), key=_checkpoint_step)]
    return checkpoints + [name for name in RUN_FILES if (output_dir / name).is_file()]


def refuse_earlier_run(output_dir: str | Path) -> None:
    """An ``InputError`` if ``output_dir`` holds an earlier run (a fresh run would mix with it)."""
    found = previous_run(Path(output_dir))
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise InputError(
            f"already holds a training run ({shown}); continue it with --resume (resume_from=), "
            "replace it with --overwrite (overwrite=True), or choose another output directory",
            path=str(output_dir),
            field="--output",
            reason="output_exists",
        )


def _refuse_resume_and_overwrite(resume: str | Path | None, overwrite: bool) -> None:
    if overwrite and resume is not None:
        raise InputError("resume a run or overwrite it, not both", field="--overwrite", reason="usage")


def _refuse_file_output(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(
            "is a file, not a directory: give a folder for the run (it is created if missing)",
            path=str(output_dir),
            field="--output",
            reason="usage",
        )


def check_output_use(
    output_dir: str | Path,
    *,
    resume: str | Path | None,
    overwrite: bool,
    config: TrainConfig | None = None,
    run: Mapping[str, Any] | None = None,
) -> Path | None:
    """Before any work (the CLI calls it before a large model loads; the trainer checks again):
    resume or overwrite, not both; ``output_dir`` not a file; a fresh run needs an
    ``output_dir`` without an earlier run. With ``config``, a resume is checked as far as it
    can be without the model and data: a complete checkpoint of the run in ``output_dir``, the
    same settings and ``run`` identity (``RUN_IDENTITY`` keys known so far), and, when
    ``max_steps`` is set, steps left to train. Returns that checkpoint (None without ``config``)."""
    _refuse_resume_and_overwrite(resume, overwrite)
    _refuse_file_output(Path(output_dir))
    if resume is None:
        if not overwrite:
            refuse_earlier_run(output_dir)
        return None
    if config is None:
        return None
    checkpoint = resolve_checkpoint(Path(output_dir), resume)
    _refuse_other_settings(
        checkpoint,
        _identity_differences(_trainer_state(checkpoint), run or {})
        + _config_differences(checkpoint, config),
    )
    if config.max_steps is not None:  # else the length follows from the data (the trainer checks)
        _refuse_nothing_to_train(checkpoint, _checkpoint_global_step(checkpoint), config.max_steps)
    return checkpoint


def resolve_checkpoint(output_dir: Path, resume_from: str | Path) -> Path:
    """The complete checkpoint ``resume_from`` names (``"latest"``: the newest in ``output_dir``).

    A named one must lie in ``output_dir``: a resumed run appends to its folder's metrics and
    checkpoints, so resuming run A's checkpoint into run B's folder would mix the two runs.
    """
    if str(resume_from) == "latest":
        found = sorted(_checkpoint_dirs(output_dir), key=_checkpoint_step)
        for path in reversed(found):
            missing = _checkpoint_missing(path)
            if not missing:
                return path
            logger.warning(
                "skipping incomplete %s (no %s: the run was stopped while saving it)",
                path,
                ", ".join(missing),
            )
        what = "complete checkpoint-N" if found else "checkpoint-N"
        raise InputError(f"no {what} folder to resume from", path=str(output_dir), field="--resume")
    path = Path(resume_from)
    missing = _checkpoint_missing(path)
    if not path.is_dir() or (len(missing) == 2 and not path.name.startswith(CHECKPOINT_PREFIX)):
        raise InputError("not a checkpoint folder (no training_state/)", path=str(path), field="--resume")
    if missing:
        raise InputError(
            f"incomplete checkpoint: no {', '.join(missing)} (the run was stopped while saving it); "
            "resume from an earlier one (--resume picks the latest complete checkpoint) or delete this folder",
            path=str(path),
            field="--resume",
        )
    if path.resolve().parent != output_dir.resolve():
        raise InputError(
            f"belongs to the run in {path.parent}, not to --output {output_dir}: a resumed run goes on "
            f"in its own folder, so resume it with --output {path.parent}; to start a new run from "
            f"this checkpoint's weights, pass --model {path} without --resume",
            path=str(path),
            field="--resume",
            reason="resume_mismatch",
        )
    return path


def _trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAINER_STATE_FILE).read_text())


def _checkpoint_global_step(checkpoint: Path) -> int:
    return int(_trainer_state(checkpoint)["global_step"])


def _refuse_nothing_to_train(checkpoint: Path, step: int, total_steps: int) -> None:
    """A resume whose run would end at or before the checkpoint's step would train nothing."""
    if total_steps <= step:
        raise InputError(
            f"the checkpoint is at step {step} and this run ends at step {total_steps}: nothing to train; "
            f"to extend the run give --max-steps (max_steps) above {step}, or a larger num_epochs",
            path=str(checkpoint),
            field="--max-steps",
            reason="resume_mismatch",
        )


# What a checkpoint's trainer_state.json records of its run besides the config, and how a
# difference is named. A resume under another process count sees other global batches
# (and another data position); another model or weights dtype is another starting point
# (and reference). Keys a checkpoint lacks (written before they were recorded) are not checked.
RUN_IDENTITY = {
    "objective": "objective",
    "data": "prepared data",
    "processes": "processes",
    "model": "model",
    "dtype": "weights dtype",
}


def _identity_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return [
        f"{label} {saved[key]} -> {current[key]}"
        for key, label in RUN_IDENTITY.items()
        if key in saved and key in current and saved[key] != current[key]
    ]


def _config_differences(checkpoint: Path, config: TrainConfig) -> list[str]:
    saved = _saved_config(checkpoint)
    if saved is None:
        return []
    return [
        f"{name} {saved[name]!r} -> {value!r}"
        for name, value in config.to_dict().items()
        if name not in RESUME_MAY_CHANGE and name in saved and not _same_value(saved[name], value)
    ]


def _refuse_other_settings(checkpoint: Path, differences: Sequence[str]) -> None:
    if differences:
        raise InputError(
            f"the checkpoint was trained with other settings ({'; '.join(differences)}); resume with the "
            "checkpoint's settings, or start a new run (--overwrite or another --output)",
            path=str(checkpoint),
            field="--resume",
            reason="resume_mismatch",
        )


def model_identity(name: str) -> str:
    """How a run records its model: a local folder by its absolute path, a hub id or type as is."""
    path = Path(name)
    return str(path.resolve()) if name and path.exists() else name


def _weights_dtype(model: torch.nn.Module) -> str:
    """``"float32"``, ``"bfloat16"``...: the dtype of the model's first floating-point parameter."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return str(dtype).removeprefix("torch.")


def clear_previous_run(output_dir: Path) -> None:
    """Delete an earlier run's checkpoints, metrics, config, TensorBoard logs and model files
    (``model-0000N-of-0000M.safetensors`` shards included); anything else is left alone."""
    for path in _checkpoint_dirs(output_dir):
        shutil.rmtree(path)
    if (output_dir / "tb").is_dir():
        shutil.rmtree(output_dir / "tb")
    for name in CLEARED_FILES:
        (output_dir / name).unlink(missing_ok=True)
    for shard in output_dir.glob("model-*-of-*.safetensors"):
        shard.unlink()


def _saved_config(checkpoint: Path) -> dict[str, Any] | None:
    """The training config a checkpoint was saved under: its own copy, else (checkpoints
    written before it kept one) the run's ``train_config.yaml`` beside it."""
    import yaml

    for path in (checkpoint / CONFIG_FILE, checkpoint.parent / CONFIG_FILE):
        if path.is_file():
            loaded = yaml.safe_load(path.read_text())
            return loaded if isinstance(loaded, dict) else None
    return None


def _same_value(saved: Any, current: Any) -> bool:
    if isinstance(saved, bool) or isinstance(current, bool):
        return saved is current
    if isinstance(saved, int | float) and isinstance(current, int | float):
        return float(saved) == float(current)
    return saved == current


def _checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def _checkpoint_missing(path: Path) -> list[str]:
    """What ``path`` lacks to be a complete checkpoint (empty when complete)."""
    missing = [] if (path / STATE_DIRNAME).is_dir() else [f"{STATE_DIRNAME}/"]
    return missing + ([] if (path / TRAINER_STATE_FILE).is_file() else [TRAINER_STATE_FILE])


def _latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (an incomplete one is no good state to point to)."""
    found = sorted(_checkpoint_dirs(output_dir), key=_checkpoint_step)
    return next((p for p in reversed(found) if not _checkpoint_missing(p)), None)


def _model_name(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(
        getattr(config, "_name_or_path", "") or getattr(config, "model_type", "") or type(model).__name__
    )


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """Tracker-friendly hyper-parameters (TensorBoard takes scalars and strings only)."""
    return {
        k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in config.to_dict().items()
    }
