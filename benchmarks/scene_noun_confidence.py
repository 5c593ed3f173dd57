"""How sure is a scene model when it names an object that is not there?

Greedy answers on the demo's held-out scenes, with the probability the model gave each
object noun it emitted, split into nouns of objects in the scene and hallucinated ones.
If hallucinated nouns are low-confidence picks among similar icons, the model's errors are
perception errors (what corrections can only slowly teach), not a language prior.
Also reports what dropping every noun below ``--threshold`` would remove on each side.

``--frontier`` adds the abstention frontier: for each threshold t, the demo's metrics after
deleting from every answer each sentence that names an object with probability below t.
That is what "say less when unsure", learned perfectly from the model's own confidence,
would give without seeing any better: a reference line for what preference training
does to hallucination and recall (``--plot`` draws it, with each model's own point).

Usage::

    .venv/bin/python benchmarks/scene_noun_confidence.py [MODEL_DIR ...] [--scenes 300] [--threshold 0.5]
        [--frontier] [--plot FILE.png] [--seed S] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from typing import Any

FRONTIER_THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_WORD = re.compile(r"[a-zA-Z]+")


def answers_with_noun_probs(
    model_dir: str | None, n_scenes: int, seed: int = 0, batch_size: int = 64
) -> tuple[list[Any], list[str], list[list[float]]]:
    """Held-out scenes, the model's greedy answers to them (decoded as the demo decodes), and
    per answer the probability of each object noun it emitted, in order."""
    import torch

    from rlhfv.eval.generate import _prompt
    from rlhfv.scenes.language import noun_class
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model
    from rlhfv.scenes.pipeline import MAX_NEW_TOKENS, eval_set
    from rlhfv.scenes.render import render_scene

    model, processor = load_scene_model(model_dir or CHECKPOINT_DIR)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    scenes, prompts = eval_set(n_scenes, seed)
    answers: list[str] = []
    noun_probs: list[list[float]] = []
    # batches of 64 as in the demo's evaluation, so that padding gives the same answers
    for start in range(0, n_scenes, batch_size):
        inputs = processor(
            text=[_prompt(processor, q) for q in prompts[start : start + batch_size]],
            images=[[render_scene(s)] for s in scenes[start : start + batch_size]],
            return_tensors="pt",
            padding=True,
        )
        with torch.inference_mode():
            generated = model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                num_beams=1,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated.sequences[:, inputs["input_ids"].shape[1] :]
        probs = torch.stack(generated.scores, dim=1).softmax(-1)
        for b, token_ids in enumerate(new_tokens.tolist()):
            answers.append(tokenizer.decode(token_ids, skip_special_tokens=True).strip())
            noun_probs.append(
                [
                    probs[b, t, token_id].item()
                    for t, token_id in enumerate(token_ids)
                    if noun_class(tokenizer.convert_ids_to_tokens(token_id)) is not None
                ]
            )
    return scenes, answers, noun_probs


def object_nouns(answer: str) -> list[tuple[int, str]]:
    """``(start, class)`` of each object noun in ``answer``, in order: the words whose tokens
    :func:`answers_with_noun_probs` gives a probability, one per word (word-level tokenizer)."""
    from rlhfv.scenes.language import noun_class

    return [(w.start(), cls) for w in _WORD.finditer(answer) if (cls := noun_class(w.group())) is not None]


def noun_confidences(
    scenes: Sequence[Any], answers: Sequence[str], noun_probs: Sequence[Sequence[float]]
) -> dict[str, list[float]]:
    """``{"present": [p, ...], "hallucinated": [p, ...]}``: probability of each emitted object noun."""
    out: dict[str, list[float]] = {"present": [], "hallucinated": []}
    for scene, answer, probs in zip(scenes, answers, noun_probs, strict=True):
        for (_, cls), p in zip(object_nouns(answer), probs, strict=True):
            out["present" if cls in scene.classes else "hallucinated"].append(p)
    return out


def drop_unsure_sentences(answer: str, noun_probs: Sequence[float], threshold: float) -> str:
    """``answer`` without the sentences that name an object whose noun had probability < ``threshold``.

    ``noun_probs[k]`` belongs to the k-th of :func:`object_nouns`. Kept sentences are joined
    by one space.
    """
    from rlhfv.scenes.language import parse_answer

    nouns = object_nouns(answer)
    if len(nouns) != len(noun_probs):
        raise ValueError(f"{len(nouns)} object nouns in the answer but {len(noun_probs)} probabilities")
    unsure = [start for (start, _), p in zip(nouns, noun_probs, strict=True) if p < threshold]
    kept = [s.text(answer) for s in parse_answer(answer) if not any(s.start <= u < s.end for u in unsure)]
    return " ".join(kept)


def abstention_frontier(
    scenes: Sequence[Any],
    answers: Sequence[str],
    noun_probs: Sequence[Sequence[float]],
    thresholds: Sequence[float] = FRONTIER_THRESHOLDS,
) -> list[dict[str, float]]:
    """The demo's metrics (``score_answers``) after :func:`drop_unsure_sentences` at each threshold."""
    from rlhfv.scenes.metrics import score_answers

    return [
        {
            "threshold": t,
            **score_answers(
                [drop_unsure_sentences(a, p, t) for a, p in zip(answers, noun_probs, strict=True)], scenes
            ),
        }
        for t in thresholds
    ]


def summary(confidences: dict[str, list[float]], threshold: float) -> dict[str, dict[str, float]]:
    return {
        side: {
            "nouns": len(ps),
            "median_p": round(statistics.median(ps), 3) if ps else float("nan"),
            f"below_{threshold}": sum(p < threshold for p in ps),
        }
        for side, ps in confidences.items()
    }


def plot_frontiers(results: Sequence[dict[str, Any]], path: str) -> None:
    """Hallucination against recall: each model's abstention frontier (line) and its own answers (dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for result in results:
        rows = result["frontier"]
        line = ax.plot(
            [r["recall"] for r in rows], [r["chair_s_mentioned"] for r in rows], marker=".", alpha=0.7
        )
        ax.scatter(
            [rows[0]["recall"]],
            [rows[0]["chair_s_mentioned"]],
            s=60,
            color=line[0].get_color(),
            label=result["label"],
            zorder=3,
        )
    # the target, measured against the first model: 35% less hallucination, recall within 5 points
    first = results[0]["frontier"][0]
    right = max(r["recall"] for result in results for r in result["frontier"]) + 0.01
    ax.fill_between(
        [first["recall"] - 0.05, right],
        0,
        0.65 * first["chair_s_mentioned"],
        color="grey",
        alpha=0.15,
        label=f"target vs {results[0]['label']}",
    )
    ax.set_xlabel("recall")
    ax.set_ylabel("chair_s_mentioned")
    ax.set_title("Dropping sentences that name an object the model was unsure of", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints one JSON object per model.",
    )
    parser.add_argument(
        "models",
        nargs="*",
        help="scene model directories (default: the shipped SFT model); LABEL=DIR names a model in the plot",
    )
    parser.add_argument("--scenes", type=int, default=300, help="held-out scenes (default 300)")
    parser.add_argument(
        "--seed", type=int, default=0, help="held-out set seed, as the demo's --seed (default 0)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="confidence cut to report (default 0.5)")
    parser.add_argument(
        "--frontier",
        action="store_true",
        help=f"also score the abstention frontier (thresholds {', '.join(map(str, FRONTIER_THRESHOLDS))})",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="draw the frontiers (implies --frontier)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for spec in args.models or [None]:
        label, _, model_dir = spec.rpartition("=") if spec else ("", "", None)
        scenes, answers, noun_probs = answers_with_noun_probs(model_dir, args.scenes, args.seed)
        result: dict[str, Any] = {
            "model": model_dir or "shipped",
            "label": label or model_dir or "shipped",
            **summary(noun_confidences(scenes, answers, noun_probs), args.threshold),
        }
        if args.frontier or args.plot:
            result["frontier"] = abstention_frontier(scenes, answers, noun_probs)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.plot:
        plot_frontiers(results, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
