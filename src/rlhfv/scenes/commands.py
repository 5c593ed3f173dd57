"""``rlhfv demo``: the scene world's end-to-end run (see :mod:`rlhfv.scenes.demo`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rlhfv demo``."""
    p = subparsers.add_parser(
        "demo",
        help="run the RLHF-V loop end to end on the scene world, on a CPU",
        description=(
            "A tiny LLaVA model that hallucinates about simple rendered scenes is corrected by a "
            "simulated annotator, trained with DDPO and vanilla DPO, and evaluated: results.json, "
            "report.html and rates.png in OUTPUT."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small run of every stage (about 20 s; the full demo takes 3-5 minutes)",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help=(
            "retrain the SFT model into OUTPUT/sft instead of using the shipped one (4 passes, about "
            "30 minutes on 2 cores; with --quick 2 small passes, about 2.5 minutes in all, a model that "
            "speaks the grammar but names few of the right objects)"
        ),
    )
    p.add_argument(
        "--sft-model",
        default=None,
        help="start from this saved SFT model directory (e.g. OUTPUT/sft/model3 of a --from-scratch run) "
        "instead of the shipped one",
    )
    p.add_argument(
        "--output",
        default="rlhfv-demo",
        help="output directory, created if missing; a rerun replaces the earlier demo's results and "
        "models in it, and a folder holding anything else is refused (default: %(default)s)",
    )
    p.add_argument(
        "--corrections",
        type=int,
        default=None,
        help="number of corrections, 16..100000 (default 1400; 160 with --quick)",
    )
    p.add_argument(
        "--eval-scenes",
        type=int,
        default=None,
        help="held-out scenes to evaluate, 1..100000 (default 1000; 64 with --quick)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the feedback and held-out scenes and of the training order, 0..2^32-1 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--train-vision",
        action="store_true",
        help="let DDPO and DPO also train the vision tower and projector, as the paper does (default: "
        "frozen, so only the language model learns from the corrections; on the shipped model larger "
        "steps through the vision tower undo the cut, see docs/scene_world.md)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, at most the CPUs available (default 1: fastest on a busy machine; "
        "use 2+ on idle cores)",
    )
    p.set_defaults(func=_demo)


# a DemoConfig field -> the option that sets it
_OPTIONS = {
    "n_corrections": "--corrections",
    "n_eval": "--eval-scenes",
    "seed": "--seed",
    "output": "--output",
    "sft_model": "--sft-model",
}


def _demo(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from rlhfv.errors import InputError
    from rlhfv.scenes.demo import DemoConfig, check_output, print_table, run_demo

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not 1 <= args.threads <= cpus:
        raise InputError(
            f"must be in 1..{cpus} (the CPUs this process may use), got {args.threads}", field="--threads"
        )
    if args.sft_model is not None:
        if args.from_scratch:
            raise InputError("choose one: --from-scratch trains the SFT model, --sft-model loads one")
        if not (Path(args.sft_model) / "config.json").is_file():
            raise InputError(
                "not a saved model directory (no config.json); pass a folder written by save_pretrained",
                field="--sft-model",
                path=args.sft_model,
            )
    overrides = {
        "seed": args.seed,
        "from_scratch": args.from_scratch,
        "sft_model": args.sft_model,
        "train_vision": args.train_vision,
    }
    if args.corrections is not None:
        overrides["n_corrections"] = args.corrections
    if args.eval_scenes is not None:
        overrides["n_eval"] = args.eval_scenes
    output = Path(args.output)
    try:
        config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
        check_output(output, config)  # before torch loads
        import torch

        torch.set_num_threads(args.threads)
        summary = run_demo(config, output)
    except InputError as err:  # name the option, not the config field
        raise InputError(
            err.message, path=err.path, field=_OPTIONS.get(err.field or "", err.field), reason=err.reason
        ) from None
    print(print_table(summary["results"]))
    print(f"done in {summary['seconds']:.0f} s; see {output / 'report.html'}")
    return 0
