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
        [--frontier] [--plot FILE.png] [--probe [--probe-scenes 3000]] [--seed S] [--threads T]

``--probe`` asks where that confidence lives. Abstaining needs the model to decide before
the noun: at the start of a sentence (say one more, or stop). For each emitted noun it
trains probes (logistic regression and a small MLP) on the final hidden state that chose the
sentence's first token and on the state that chose the noun, to predict "hallucinated", and
compares them with the noun's own probability (AUC, and the metrics when each rule deletes
its most suspect 5-20% of nouns' sentences).
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


def _greedy_batches(model_dir: str | None, n_scenes: int, seed: int, batch_size: int, hidden_states: bool):
    """``(tokenizer, scenes, generated, new_tokens)`` per batch of held-out scenes: greedy
    generation as the demo evaluates (batches of 64, left padding, so the same answers)."""
    import torch

    from rlhfv.eval.generate import _prompt
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model
    from rlhfv.scenes.pipeline import MAX_NEW_TOKENS, eval_set
    from rlhfv.scenes.render import render_scene

    model, processor = load_scene_model(model_dir or CHECKPOINT_DIR)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    scenes, prompts = eval_set(n_scenes, seed)
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
                output_hidden_states=hidden_states,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated.sequences[:, inputs["input_ids"].shape[1] :]
        yield tokenizer, scenes[start : start + batch_size], generated, new_tokens.tolist()


def _is_noun(tokenizer: Any, token_id: int) -> bool:
    from rlhfv.scenes.language import noun_class

    return noun_class(tokenizer.convert_ids_to_tokens(token_id)) is not None


def answers_with_noun_probs(
    model_dir: str | None, n_scenes: int, seed: int = 0, batch_size: int = 64
) -> tuple[list[Any], list[str], list[list[float]]]:
    """Held-out scenes, the model's greedy answers to them (decoded as the demo decodes), and
    per answer the probability of each object noun it emitted, in order."""
    import torch

    scenes: list[Any] = []
    answers: list[str] = []
    noun_probs: list[list[float]] = []
    for tokenizer, batch_scenes, generated, new_tokens in _greedy_batches(
        model_dir, n_scenes, seed, batch_size, hidden_states=False
    ):
        probs = torch.stack(generated.scores, dim=1).softmax(-1)
        scenes += batch_scenes
        for b, token_ids in enumerate(new_tokens):
            answers.append(tokenizer.decode(token_ids, skip_special_tokens=True).strip())
            noun_probs.append(
                [probs[b, t, i].item() for t, i in enumerate(token_ids) if _is_noun(tokenizer, i)]
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


# -- does the model know before it speaks? -------------------------------------------------

PROBE_FRACTIONS = (0.05, 0.1, 0.15, 0.2)


def sentence_starts(token_ids: Sequence[int], period_id: int) -> list[int]:
    """For each position, the index of the first token of its sentence (0, or the token after a '.')."""
    starts, current = [], 0
    for t in range(len(token_ids)):
        if t > 0 and token_ids[t - 1] == period_id:
            current = t
        starts.append(current)
    return starts


def noun_decisions(
    model_dir: str | None, n_scenes: int, seed: int = 0, batch_size: int = 64
) -> dict[str, Any]:
    """Greedy answers as :func:`answers_with_noun_probs`, and for every object noun emitted
    (flat, in answer order): the final hidden state that chose its sentence's first token
    (``start_states``, where the model decides to say one more sentence), the state that
    chose the noun itself (``noun_states``), the noun's top logit, and whether it is
    hallucinated. Also ``scenes``, ``answers``, ``noun_probs`` (per answer)."""
    import torch

    from rlhfv.scenes.language import noun_class

    out: dict[str, Any] = {k: [] for k in ("scenes", "answers", "noun_probs", "hallucinated", "max_logits")}
    start_states, noun_states = [], []
    for tokenizer, batch_scenes, generated, new_tokens in _greedy_batches(
        model_dir, n_scenes, seed, batch_size, hidden_states=True
    ):
        logits = torch.stack(generated.scores, dim=1)
        probs = logits.softmax(-1)
        # generated.hidden_states[t][-1][:, -1]: the last layer's state that chose token t
        states = torch.stack([step[-1][:, -1] for step in generated.hidden_states], dim=1)
        period = tokenizer.convert_tokens_to_ids(".")
        out["scenes"] += batch_scenes
        for b, token_ids in enumerate(new_tokens):
            out["answers"].append(tokenizer.decode(token_ids, skip_special_tokens=True).strip())
            starts = sentence_starts(token_ids, period)
            nouns = [t for t, i in enumerate(token_ids) if _is_noun(tokenizer, i)]
            out["noun_probs"].append([probs[b, t, token_ids[t]].item() for t in nouns])
            for t in nouns:
                cls = noun_class(tokenizer.convert_ids_to_tokens(token_ids[t]))
                out["hallucinated"].append(cls not in batch_scenes[b].classes)
                out["max_logits"].append(logits[b, t].max().item())
                start_states.append(states[b, starts[t]])
                noun_states.append(states[b, t])
    hidden = states.shape[-1]
    out["start_states"] = torch.stack(start_states) if start_states else torch.zeros(0, hidden)
    out["noun_states"] = torch.stack(noun_states) if noun_states else torch.zeros(0, hidden)
    return out


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half
    (the Mann-Whitney U statistic over n_pos * n_neg); NaN without both classes."""
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average 1-based ranks over each run of tied scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, positive in zip(ranks, labels, strict=True) if positive)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def fit_probe(features: Any, labels: Sequence[bool], hidden: int = 0, steps: int = 300, seed: int = 0):
    """A probe predicting ``labels`` from ``features`` (n, d): logistic regression (``hidden``
    0) or one ReLU layer of ``hidden`` units, Adam on standardised features with a little
    weight decay. Returns ``score(features) -> P(label)`` as a 1-d tensor."""
    import torch

    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    layers = [torch.nn.Linear(features.shape[1], hidden), torch.nn.ReLU()] if hidden else []
    net = torch.nn.Sequential(*layers, torch.nn.Linear(hidden or features.shape[1], 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = (features - mean) / std, torch.tensor(labels, dtype=torch.float32)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y).backward()
        optimizer.step()

    def score(new_features: Any) -> Any:
        with torch.no_grad():
            return net((new_features - mean) / std).squeeze(-1).sigmoid()

    return score


def suspicion_ranks(noun_counts: Sequence[int], suspicion: Sequence[float]) -> list[list[int]]:
    """Per answer, each noun's rank among all nouns by ``suspicion`` (0 = most suspect; ties
    in answer order); ``suspicion`` is flat, ``noun_counts`` nouns per answer."""
    order = sorted(range(len(suspicion)), key=lambda i: -suspicion[i])
    rank = [0] * len(suspicion)
    for position, i in enumerate(order):
        rank[i] = position
    per_answer, k = [], 0
    for n in noun_counts:
        per_answer.append(rank[k : k + n])
        k += n
    return per_answer


def drop_most_suspect(
    scenes: Sequence[Any],
    answers: Sequence[str],
    noun_counts: Sequence[int],
    suspicion: Sequence[float],
    fractions: Sequence[float] = PROBE_FRACTIONS,
) -> list[dict[str, float]]:
    """The demo's metrics after deleting the sentences of the ``fraction`` of all nouns with
    the highest ``suspicion``, per fraction (``threshold`` holds the fraction)."""
    ranks = suspicion_ranks(noun_counts, suspicion)
    # a noun goes when its rank is below round(f * N): drop_unsure_sentences with ranks as "probabilities"
    rows = abstention_frontier(scenes, answers, ranks, [round(f * len(suspicion)) for f in fractions])
    return [{**row, "threshold": f} for row, f in zip(rows, fractions, strict=True)]


def probe_report(model_dir: str | None, n_train: int, n_test: int, seed: int = 0) -> dict[str, Any]:
    """Where could the model tell a noun will be wrong? AUC for "hallucinated" on the held-out
    scenes (seed ``seed``) of: the noun's own probability, its top logit (what a fixed-logit
    hedge word could use), and probes trained on ``n_train`` scenes of seed ``seed + 1`` on
    the sentence-start and the noun states; and the demo's metrics when each rule deletes
    the sentences of its most suspect 5-20% of nouns."""
    train = noun_decisions(model_dir, n_train, seed + 1)
    test = noun_decisions(model_dir, n_test, seed)
    rules = {
        "noun_probability": [1 - p for ps in test["noun_probs"] for p in ps],
        "top_logit": [-x for x in test["max_logits"]],
    }
    for where in ("start", "noun"):
        for name, hidden in (("linear", 0), ("mlp", 64)):
            probe = fit_probe(train[f"{where}_states"], train["hallucinated"], hidden=hidden)
            rules[f"{where}_state_{name}"] = probe(test[f"{where}_states"]).tolist()
    counts = [len(ps) for ps in test["noun_probs"]]
    return {
        "train_nouns": len(train["hallucinated"]),
        "test_nouns": len(test["hallucinated"]),
        "hallucinated_nouns": sum(test["hallucinated"]),
        "auc": {rule: round(roc_auc(s, test["hallucinated"]), 3) for rule, s in rules.items()},
        "dropping": {
            rule: drop_most_suspect(test["scenes"], test["answers"], counts, s) for rule, s in rules.items()
        },
    }


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
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also ask where the model could tell a noun will be wrong: AUCs of the noun's "
        "probability, its top logit and probes on the sentence-start and noun states, and the "
        "metrics when each deletes the sentences of its most suspect 5-20%% of nouns",
    )
    parser.add_argument(
        "--probe-scenes",
        type=int,
        default=3000,
        help="scenes (held-out stream, seed + 1) to train the probes on (default 3000)",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    if args.probe_scenes < 1:
        parser.error("--probe-scenes must be at least 1")
    import torch

    from rlhfv.eval.metrics import json_safe

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
        if args.probe:
            result["probe"] = probe_report(model_dir, args.probe_scenes, args.scenes, args.seed)
        results.append(result)
        print(json.dumps(json_safe(result)), flush=True)
    if args.plot:
        plot_frontiers(results, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
