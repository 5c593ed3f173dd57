"""How sure is a scene model when it names an object that is not there?

Greedy answers on the demo's held-out scenes, with the probability the model gave each
object noun it emitted, split into nouns of objects in the scene and hallucinated ones.
If hallucinated nouns are low-confidence picks among similar icons, the model's errors are
perception errors (what corrections can only slowly teach), not a language prior.
Also reports what dropping every noun below ``--threshold`` would remove on each side.

Usage::

    .venv/bin/python benchmarks/scene_noun_confidence.py [MODEL_DIR ...] [--scenes 300] [--threshold 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics


def noun_confidences(model_dir: str | None, n_scenes: int, seed: int = 0) -> dict[str, list[float]]:
    """``{"present": [p, ...], "hallucinated": [p, ...]}``: probability of each emitted object noun."""
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
    out: dict[str, list[float]] = {"present": [], "hallucinated": []}
    for start in range(0, n_scenes, 50):
        batch = scenes[start : start + 50]
        inputs = processor(
            text=[_prompt(processor, q) for q in prompts[start : start + 50]],
            images=[[render_scene(s)] for s in batch],
            return_tensors="pt",
            padding=True,
        )
        with torch.inference_mode():
            generated = model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated.sequences[:, inputs["input_ids"].shape[1] :]
        probs = torch.stack(generated.scores, dim=1).softmax(-1)
        for b, scene in enumerate(batch):
            for t, token_id in enumerate(new_tokens[b].tolist()):
                cls = noun_class(tokenizer.convert_ids_to_tokens(token_id))
                if cls is not None:
                    side = "present" if cls in scene.classes else "hallucinated"
                    out[side].append(probs[b, t, token_id].item())
    return out


def summary(confidences: dict[str, list[float]], threshold: float) -> dict[str, dict[str, float]]:
    return {
        side: {
            "nouns": len(ps),
            "median_p": round(statistics.median(ps), 3) if ps else float("nan"),
            f"below_{threshold}": sum(p < threshold for p in ps),
        }
        for side, ps in confidences.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="scene model directories (default: the shipped SFT model)")
    parser.add_argument("--scenes", type=int, default=300, help="held-out scenes (default 300)")
    parser.add_argument("--threshold", type=float, default=0.5, help="confidence cut to report (default 0.5)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for model_dir in args.models or [None]:
        result = summary(noun_confidences(model_dir, args.scenes), args.threshold)
        print(json.dumps({"model": model_dir or "shipped", **result}))


if __name__ == "__main__":
    main()
