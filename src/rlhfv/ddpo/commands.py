"""`rlhfv train` (Dense DPO) and `rlhfv sft` (supervised fine-tuning on the chosen answers).

Both load the model with ``AutoModelForImageTextToText`` and ``AutoProcessor`` (a local
directory and a hub id take the same path), resolve the config (preset <- ``--config``
YAML <- ``--set key=value`` <- dedicated flags) and call ``rlhfv.ddpo.trainer``. Run them
under ``accelerate launch`` or ``torchrun`` for several GPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import fields

DTYPES = ("float32", "bfloat16", "float16", "auto")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``sft``."""
    for name, help_text in (
        ("train", "Dense DPO (DDPO) training on prepared preference data"),
        ("sft", "supervised fine-tuning on the chosen (corrected) answers: the paper's first stage"),
    ):
        settings = (
            "--config configs/paper.yaml"
            if name == "train"
            else "--set learning_rate=2e-5 --set num_epochs=1"
        )
        example = (
            f"example: rlhfv {name} --model llava-hf/llava-1.5-7b-hf --data data/prepared --output runs/{name} "
            f"{settings}; several GPUs: accelerate launch --config_file "
            f"configs/accelerate/deepspeed_zero3.yaml -m rlhfv.cli {name} ...; see docs/training.md"
        )
        parser = subparsers.add_parser(name, help=help_text, description=help_text + ".", epilog=example)
        _add_arguments(parser, ddpo=name == "train")
        parser.set_defaults(func=_run, objective="ddpo" if name == "train" else "sft")


DDPO_ONLY = ("--preset", "--reference-cache")  # sft takes them only to refuse them (_run)


def _add_arguments(parser: argparse.ArgumentParser, *, ddpo: bool = True) -> None:
    def ddpo_only(text: str) -> str:
        return text if ddpo else argparse.SUPPRESS

    parser.add_argument(
        "--model",
        help="(required) model directory or Hugging Face hub id (image-text-to-text), or tiny-llava etc. "
        "to try it out",
    )
    parser.add_argument("--data", help="(required) prepared data directory (`rlhfv data prepare`)")
    parser.add_argument(
        "--output", help="(required) output directory (checkpoints, metrics.jsonl, final model)"
    )
    parser.add_argument(
        "--config",
        help="training YAML, e.g. configs/paper.yaml or configs/reference.yaml in the repository checkout "
        "(not installed with the package" + ("; --preset gives their method settings)" if ddpo else ")"),
    )
    parser.add_argument(
        "--preset",
        choices=("paper", "reference"),
        help=ddpo_only("start from this preset (default paper)"),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (repeatable), e.g. --set beta=0.1 --set mixed_precision=no",
    )
    parser.add_argument("--max-steps", type=int, help="stop after N optimiser steps")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all parameters")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="resume from a checkpoint folder, or the latest in --output (refused if the checkpoint's "
        "settings or data differ)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --output (deletes its checkpoints, metrics and model first); "
        "without it (or --resume) an --output holding a run is refused",
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="weights dtype when loading (default float32)"
    )
    parser.add_argument(
        "--reference-cache", help=ddpo_only("folder for reference_logps/ (default: the --data folder)")
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--help-config", action="store_true", help="list every config field with its default and exit"
    )


def config_help() -> str:
    from rlhfv.ddpo.config import PRESETS, TrainConfig

    default = TrainConfig()
    lines = ["Config fields (YAML keys and --set KEY=VALUE); defaults are the paper's:"]
    for f in fields(TrainConfig):
        lines.append(f"  {f.name} = {getattr(default, f.name)!r}\n      {f.metadata['help']}")
    lines.append("Presets: " + "; ".join(f"{k}: {v or 'the defaults'}" for k, v in PRESETS.items()))
    return "\n".join(lines)


def _resolve_config(args: argparse.Namespace):
    from rlhfv.ddpo.config import load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.lora:
        overrides["lora"] = True
    return load_config(args.config, overrides, preset=args.preset)


def _run_identity(args: argparse.Namespace) -> dict[str, object]:
    """The ``rlhfv.ddpo.trainer.RUN_IDENTITY`` values known before the model loads."""
    from pathlib import Path

    from rlhfv.data.prepare import TINY_MODELS
    from rlhfv.ddpo.trainer import model_identity

    run: dict[str, object] = {
        "objective": args.objective,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # as the trainer's accelerator finds it
    }
    tiny = args.model in TINY_MODELS and not Path(args.model).exists()  # as load_model decides
    if not tiny:  # a tiny model records its type, known once it is built
        run["model"] = model_identity(args.model)  # also what the trainer records (model_name)
    if args.dtype != "auto":
        run["dtype"] = args.dtype
    return run


def load_model(name: str, dtype: str = "float32"):
    """``(model, processor)`` through the Auto classes; a missing path or id is an InputError.

    ``tiny-llava`` | ``tiny-llava-next`` | ``tiny-qwen2-vl`` | ``tiny-idefics3`` build the
    randomly initialised tiny models of ``rlhfv.tiny`` (the processors match
    ``rlhfv data prepare --processor tiny-...``), for trying the commands on a CPU. A LoRA
    adapter folder (the output of ``rlhfv train --lora``) gives its base model with the
    adapter merged in (``rlhfv.data.pretrained.load_merged_adapter``): the starting point and
    the reference of the run.
    """
    from pathlib import Path

    import torch

    from rlhfv.data.prepare import TINY_MODELS
    from rlhfv.data.pretrained import load_model_and_processor

    if name in TINY_MODELS and not Path(name).exists():
        from rlhfv.tiny import build_tiny

        model, processor = build_tiny(TINY_MODELS[name])
        if dtype != "auto":  # built in float32; --dtype applies as to any other model
            model = model.to(getattr(torch, dtype))
        return model.train(), processor
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    # a local folder is loaded by its absolute path: a LoRA adapter saved from it records
    # that path as its base model, which then loads from any directory
    model, processor = load_model_and_processor(name, dtype=torch_dtype)
    return model, processor


@contextlib.contextmanager
def library_progress_bars(enabled: bool) -> Iterator[None]:
    """With ``enabled`` False, transformers' (and so huggingface_hub's) and datasets' own bars
    (loading weights, writing model shards, saving datasets) are off in the block, then restored."""
    if enabled:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on[0]:
            hf_logging.enable_progress_bar()
        if was_on[1]:
            datasets.enable_progress_bars()


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlhfv.errors import InputError

    if args.objective == "sft":
        for flag in DDPO_ONLY:
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise InputError(
                    f"{flag} is for `rlhfv train` (DDPO) only; sft has no reference model or DDPO preset",
                    reason="usage",
                )
    if args.help_config:
        print(config_help())
        return 0
    for flag in ("model", "data", "output"):
        if not getattr(args, flag):
            raise InputError(f"--{flag} is required", field=f"--{flag}")
    if not Path(args.data).is_dir():
        raise InputError("prepared data directory not found", path=args.data, field="--data")
    config = _resolve_config(args)
    from rlhfv.ddpo.trainer import Trainer, check_output_use

    # before the model loads (minutes for a large one): what a resume can be checked against now
    run = _run_identity(args)
    checkpoint = check_output_use(
        args.output, resume=args.resume, overwrite=args.overwrite, config=config, run=run
    )

    with library_progress_bars(not args.no_progress):
        model, processor = load_model(args.model, args.dtype)
        result = Trainer(
            config,
            model,
            processor,
            args.data,
            args.output,
            objective=args.objective,
            reference_cache=args.reference_cache,
            resume_from=checkpoint,  # "latest" resolved once (its warnings too)
            model_name=run.get("model"),  # recorded as the check above reads it
            overwrite=args.overwrite,
            progress=not args.no_progress,
        ).train()
    last = result.history[-1] if result.history else {}
    summary = ", ".join(
        f"{k} {v:.4g}" for k, v in last.items() if k in ("loss", "rewards/margins", "rewards/accuracies")
    )
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process
        print(f"trained {result.global_step} steps ({summary}); model saved in {result.output_dir}")
    return 0
