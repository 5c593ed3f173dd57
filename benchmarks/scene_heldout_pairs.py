"""Do DDPO's learned preferences carry over to unseen pairs? Preference metrics on held-out feedback.

The shipped SFT model answers feedback scenes of another seed than the demo's (default 1:
scenes no policy trained on), the simulated annotator corrects them, and each policy
directory given is scored against the SFT model as the reference, with the demo's DDPO
settings (beta 0.5, gamma 5, weighted mean): reward accuracy (share of pairs where
the corrected answer gains more log-prob than the original) and mean reward margin.

Usage::

    .venv/bin/python benchmarks/scene_heldout_pairs.py rlhfv-demo/ddpo rlhfv-demo/dpo [--pairs 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def heldout_metrics(policy_dirs: list[str], pairs: int, seed: int, work: Path) -> dict[str, dict[str, float]]:
    """``{policy_dir: {"reward_accuracy": a, "reward_margin": m, "pairs": n}}`` on fresh corrections."""
    import torch
    from torch.utils.data import DataLoader

    from rlhfv.data import load_prepared
    from rlhfv.data.collator import PreferenceCollator
    from rlhfv.ddpo.batches import PreparedPairs
    from rlhfv.ddpo.config import TrainConfig
    from rlhfv.ddpo.objectives import DDPOObjective
    from rlhfv.ddpo.reference import ModelReference
    from rlhfv.scenes.demo import DemoConfig
    from rlhfv.scenes.model import load_scene_model
    from rlhfv.scenes.pipeline import collect_corrections, prepare_corrections

    demo = DemoConfig()
    sft, processor = load_scene_model()
    corrections, _ = collect_corrections(sft, processor, pairs, seed=seed)
    dataset, _ = load_prepared(prepare_corrections(corrections, processor, work / "heldout"))
    objective = DDPOObjective(
        TrainConfig(beta=demo.beta, gamma=demo.ddpo_gamma, normalisation="mean"), ModelReference(sft)
    )
    results = {}
    for path in policy_dirs:
        policy, _ = load_scene_model(path)
        loader = DataLoader(
            PreparedPairs(dataset),
            batch_size=32,
            collate_fn=PreferenceCollator(processor, gamma=demo.ddpo_gamma),
        )
        correct, margin, n = 0.0, 0.0, 0
        with torch.inference_mode():
            for batch in loader:
                _, metrics = objective(policy.eval(), batch)
                size = batch["input_ids"].shape[0] // 2  # stacked [chosen; rejected]
                correct += float(metrics["rewards/accuracies"]) * size
                margin += float(metrics["rewards/margins"]) * size
                n += size
        results[path] = {"reward_accuracy": correct / n, "reward_margin": margin / n, "pairs": n}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policies", nargs="+", help="trained scene-model directories (e.g. rlhfv-demo/ddpo)")
    parser.add_argument("--pairs", type=int, default=400, help="held-out corrections to score on")
    parser.add_argument("--seed", type=int, default=1, help="feedback seed (the demo trains on seed 0)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    # before the minutes of collecting corrections: a mistyped folder is a one-line usage error
    missing = [p for p in args.policies if not (Path(p) / "config.json").is_file()]
    if missing:
        parser.error(f"not a saved model directory (no config.json): {', '.join(missing)}")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        results = heldout_metrics(args.policies, args.pairs, args.seed, Path(work))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
