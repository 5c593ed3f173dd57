"""CHAIR scoring speed: 50,000 responses of about 60 words on one core.

Responses are built from the 80 COCO val2014 images' captions in ../shared/data (so
objects and vocabulary are realistic), each padded to ~60 words with words from other
captions, deterministic (seed 0). Timed: object extraction + CHAIR scoring of all
responses (ground truth loaded beforehand). Run:

    .venv/bin/python benchmarks/chair_speed.py [--n 50000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rlhfv.eval.chair import load_ground_truth, score_chair
from rlhfv.eval.objects import coco_extractor, singular

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco2014_val_80_caps_boxes.jsonl"


def make_responses(n: int, words_per_response: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    rng = random.Random(seed)
    vocabulary = [w for r in rows for c in r["captions"] for w in c.split()]
    out = []
    for _ in range(n):
        row = rng.choice(rows)
        words = " ".join(row["captions"][:2]).split()
        words += rng.choices(vocabulary, k=max(0, words_per_response - len(words)))
        out.append((row["id"], " ".join(words[:words_per_response])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    extractor = coco_extractor()
    ground_truth = load_ground_truth([DATA], extractor)
    responses = make_responses(args.n)
    n_words = sum(len(r.split()) for _, r in responses)
    singular.cache_clear()  # time the lemmatisation too, from a cold cache
    start, cpu_start = time.perf_counter(), time.process_time()
    result = score_chair(responses, ground_truth, extractor)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU time is the figure to quote on a shared machine; wall time includes waiting for a core
    print(
        f"scored {result.n_responses} responses ({n_words / len(responses):.1f} words each, "
        f"{result.n_mentions} mentions) in {cpu:.2f} s CPU on one core, {seconds:.2f} s wall "
        f"({result.n_responses / cpu:,.0f} responses per CPU second); chair_i={result.metrics['chair_i']:.4f}"
    )


if __name__ == "__main__":
    main()
