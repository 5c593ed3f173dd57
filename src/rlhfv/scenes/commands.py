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
        help="retrain the SFT model (4 passes, about 30 minutes on 2 cores) instead of the shipped one",
    )
    p.add_argument("--sft-model", default=None, help="start from this saved SFT model directory instead")
    p.add_argument("--output", default="rlhfv-demo", help="output directory (default: %(default)s)")
    p.add_argument(
        "--corrections", type=int, default=None, help="number of corrections (default 1400; 160 with --quick)"
    )
    p.add_argument(
        "--eval-scenes",
        type=int,
        default=None,
        help="held-out scenes to evaluate (default 1000; 64 with --quick)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the feedback and held-out scenes and of the training order (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest on a busy machine; use 2+ on idle cores)",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from rlhfv.errors import InputError
    from rlhfv.scenes.demo import DemoConfig, print_table, run_demo

    for name in ("corrections", "eval_scenes", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"must be at least 1, got {value}", field=f"--{name.replace('_', '-')}")
    if args.sft_model is not None:
        if args.from_scratch:
            raise InputError("choose one: --from-scratch trains the SFT model, --sft-model loads one")
        if not (Path(args.sft_model) / "config.json").is_file():
            raise InputError(
                "not a saved model directory (no config.json); pass a folder written by save_pretrained",
                field="--sft-model",
                path=args.sft_model,
            )
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InputError("output exists and is not a directory", path=str(output))
    torch.set_num_threads(args.threads)
    overrides = {"seed": args.seed, "from_scratch": args.from_scratch, "sft_model": args.sft_model}
    if args.corrections is not None:
        overrides["n_corrections"] = args.corrections
    if args.eval_scenes is not None:
        overrides["n_eval"] = args.eval_scenes
    config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    summary = run_demo(config, output)
    print(print_table(summary["results"]))
    print(f"done in {summary['seconds']:.0f} s; see {output / 'report.html'}")
    return 0
