"""Scene-world targets: does DDPO cut hallucination, beat DPO, and does cropping hurt SFT?

Measures, on held-out scenes and prompts (see docs/scene_world.md):

1. DDPO with N corrections vs the SFT model: relative change of ``chair_s_mentioned``
   (target: -35% at N = 1,400), recall difference (within 5 points), answer length
   (not shorter by more than 15%);
2. DDPO vs vanilla DPO (gamma 1, weighted sum) on the same 1,400 corrections;
3. a sweep over N (default 100, 200, 400, 800, 1,400) with a plot of the rate against N;
4. several seeds (feedback scenes, data order): mean and spread;
5. ``--crop-ablation``: SFT with the paper's random-crop augmentation vs without, both arms
   continuing the shipped SFT model on the same fresh scenes (``--crop-base scratch``:
   both from a fresh model).

Usage::

    .venv/bin/python benchmarks/scene_world.py --output runs/scene_bench [--seeds 0 1 2]
        [--sweep 100 200 400 800 1400] [--crop-ablation [--crop-base shipped|scratch|DIR]]
        [--n-eval 1000] [--json]
    .venv/bin/python benchmarks/scene_world.py --seeds --crop-ablation   # the ablation alone

Every number printed is measured by this run; nothing is assumed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path


def run_seed(seed: int, sweep: list[int], n_eval: int, out: Path, sft_model: str | None = None) -> dict:
    """SFT baseline, DDPO at each sweep size, DPO at the largest, for one seed."""
    import torch

    from rlhfv.scenes.demo import DemoConfig, train_arm
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model
    from rlhfv.scenes.pipeline import collect_corrections, evaluate_model, prepare_corrections

    config = DemoConfig(seed=seed)
    sft, processor = load_scene_model(sft_model or CHECKPOINT_DIR)
    corrections, counts = collect_corrections(sft, processor, max(sweep), seed=seed)
    if len(corrections) < max(sweep):  # a sweep point would be labelled with more than it used
        raise SystemExit(
            f"seed {seed}: only {len(corrections)} corrections, fewer than the sweep's {max(sweep)}"
        )
    rows = {}
    with torch.inference_mode():
        rows["sft"], _ = evaluate_model(sft, processor, n_eval, seed=0)
    for n in sweep:
        prepared = prepare_corrections(corrections[:n], processor, out / f"seed{seed}" / f"data{n}")
        model = train_arm(config, "ddpo", sft, processor, prepared, out / f"seed{seed}" / f"ddpo{n}")
        with torch.inference_mode():
            rows[f"ddpo_{n}"], _ = evaluate_model(model, processor, n_eval, seed=0)
        if n == max(sweep):
            model = train_arm(config, "dpo", sft, processor, prepared, out / f"seed{seed}" / f"dpo{n}")
            with torch.inference_mode():
                rows[f"dpo_{n}"], _ = evaluate_model(model, processor, n_eval, seed=0)
    return {"seed": seed, "feedback": counts, "rows": rows}


def crop_ablation(n_eval: int, out: Path, n_scenes: int, epochs: float, base: str, seed: int = 4) -> dict:
    """The paper's Table 3 in the scene world: SFT with random crops vs without.

    Both arms start from the same model (``base``: "shipped", the shipped SFT checkpoint;
    "scratch", a fresh model; or a saved model directory) and train on the same fresh
    described scenes (``seed``; 4 by default: the shipped v5 saw seeds 0-3) for the same steps,
    training seed and learning rate; only the image pipeline differs ("pad" vs "random_crop").
    """
    import torch

    from rlhfv.scenes.model import CHECKPOINT_DIR, build_scene_model, load_scene_model
    from rlhfv.scenes.pipeline import (
        SFTSettings,
        evaluate_model,
        prepare_corrections,
        sft_corrections,
        sft_pass,
    )

    if base == "scratch":
        start, processor = build_scene_model()
        learning_rate = SFTSettings().learning_rate
    else:
        start, processor = load_scene_model(CHECKPOINT_DIR if base == "shipped" else base)
        learning_rate = SFTSettings().second_learning_rate
    prepared = prepare_corrections(sft_corrections(n_scenes, seed), processor, out / "crop_data")
    rows = {}
    if base != "scratch":
        with torch.inference_mode():
            rows["base"], _ = evaluate_model(start, processor, n_eval, seed=0)
    for pipeline in ("pad", "random_crop"):
        settings = SFTSettings(image_pipeline=pipeline)
        model = sft_pass(
            copy.deepcopy(start),
            processor,
            prepared,
            settings,
            epochs,
            learning_rate,
            seed,
            out / f"sft_{pipeline}",
        )
        with torch.inference_mode():
            rows[pipeline], _ = evaluate_model(model, processor, n_eval, seed=0)
    rows["setup"] = {
        "base": base,
        "seed": seed,
        "n_scenes": n_scenes,
        "epochs": epochs,
        "learning_rate": learning_rate,
    }
    rows["crop_hallucinates_more"] = (
        rows["random_crop"]["chair_s_mentioned"] > rows["pad"]["chair_s_mentioned"]
    )
    return rows


def summarise(seeds: list[dict], sweep: list[int]) -> dict:
    """Per-model mean and standard deviation over seeds, and the target checks."""
    top = max(sweep)
    names = ["sft", *(f"ddpo_{n}" for n in sweep), f"dpo_{top}"]
    table = {}
    for name in names:
        table[name] = {}
        for key in seeds[0]["rows"]["sft"]:
            values = [s["rows"][name][key] for s in seeds]
            table[name][key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }

    def m(name, key):
        return table[name][key]["mean"]

    sft, ddpo, dpo = "sft", f"ddpo_{top}", f"dpo_{top}"
    checks = {
        "chair_s_mentioned_relative_change": m(ddpo, "chair_s_mentioned") / m(sft, "chair_s_mentioned") - 1,
        "recall_change_points": 100 * (m(ddpo, "recall") - m(sft, "recall")),
        "length_relative_change": m(ddpo, "mean_words") / m(sft, "mean_words") - 1,
        "ddpo_minus_dpo_chair_s_mentioned": m(ddpo, "chair_s_mentioned") - m(dpo, "chair_s_mentioned"),
    }
    checks["targets_met"] = {
        "cut_35pct": checks["chair_s_mentioned_relative_change"] <= -0.35,
        "recall_within_5": abs(checks["recall_change_points"]) <= 5,
        "length_not_15pct_shorter": checks["length_relative_change"] >= -0.15,
        "ddpo_beats_dpo": checks["ddpo_minus_dpo_chair_s_mentioned"] < 0,
    }
    return {"table": table, "checks": checks}


def plot_sweep(seeds: list[dict], sweep: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    xs = [0, *sweep]
    for s in seeds:
        ys = [
            s["rows"]["sft"]["chair_s_mentioned"],
            *(s["rows"][f"ddpo_{n}"]["chair_s_mentioned"] for n in sweep),
        ]
        ax.plot(xs, ys, marker="o", label=f"DDPO, seed {s['seed']}")
        top = max(sweep)
        ax.scatter([top], [s["rows"][f"dpo_{top}"]["chair_s_mentioned"]], marker="x", color="k")
    ax.scatter([], [], marker="x", color="k", label="vanilla DPO")
    ax.set_xlabel("corrections (0 = SFT model)")
    ax.set_ylabel("chair_s_mentioned (lower is better)")
    ax.set_title("Scene world: hallucination vs number of corrections")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/scene_bench")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="feedback seeds (none: skip the DDPO runs)"
    )
    parser.add_argument("--sweep", type=int, nargs="+", default=[100, 200, 400, 800, 1400])
    parser.add_argument(
        "--n-eval",
        type=int,
        default=1000,
        help="held-out scenes (default 1000, as the demo; docs' older runs: 300)",
    )
    parser.add_argument(
        "--crop-ablation", action="store_true", help="also run SFT with random crops vs without"
    )
    parser.add_argument(
        "--crop-base",
        default="shipped",
        help="where both crop-ablation arms start: 'shipped' (the shipped SFT checkpoint), 'scratch', or a model dir",
    )
    parser.add_argument(
        "--sft-scenes", type=int, default=12000, help="described scenes for the crop ablation"
    )
    parser.add_argument(
        "--crop-seed",
        type=int,
        default=4,
        help="scene seed of the crop-ablation data (default 4: the shipped model saw 0-3; the documented "
        "run from v4 used 3)",
    )
    parser.add_argument("--sft-epochs", type=float, default=2.0, help="epochs of each crop-ablation arm")
    parser.add_argument(
        "--sft-model", default=None, help="SFT model the DDPO runs start from (default: the shipped one)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    sweep = sorted(set(args.sweep))
    start = time.time()
    summary: dict = {"n_eval": args.n_eval}
    if args.seeds:
        seeds = [run_seed(seed, sweep, args.n_eval, out, args.sft_model) for seed in args.seeds]
        summary |= {"seeds": seeds, **summarise(seeds, sweep)}
        plot_sweep(seeds, sweep, out / "sweep.png")
    if args.crop_ablation:
        summary["crop_ablation"] = crop_ablation(
            args.n_eval, out, args.sft_scenes, args.sft_epochs, args.crop_base, args.crop_seed
        )
    summary["seconds"] = round(time.time() - start, 1)
    from rlhfv.eval.metrics import json_safe

    # a NaN rate (no answer named an object) is written as null, not as invalid JSON
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(json_safe(summary), default=str))
    else:
        for name, row in summary.get("table", {}).items():
            cells = "  ".join(f"{k}={v['mean']:.3f}±{v['std']:.3f}" for k, v in row.items())
            print(f"{name:<10} {cells}")
        if "checks" in summary:
            print(json.dumps(summary["checks"], indent=2))
        if "crop_ablation" in summary:
            print(json.dumps(summary["crop_ablation"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
