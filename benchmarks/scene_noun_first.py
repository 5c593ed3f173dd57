"""Trial: a grammar whose object sentences open with the noun, the token where the doubt is.

`scene_noun_confidence.py --probe` found that the model's doubt about an object appears only
at the noun, after the sentence is committed to a count and colour ("Two blue ..."), while
the sentence start, where it could leave the object out, carries almost none of it. This
trial puts the two at one token: every object sentence opens with its noun ("Boats are in
the top left, two blue ones."), so choosing a noun and choosing to say the sentence are one
decision that a preference pair can reach.

Three steps, each a subcommand, all under the trial grammar (the package's grammar is
patched in this process only, and restored afterwards):

- ``sft``: the shipped model, its vocabulary grown by "ones" (the one new word), continued
  for one epoch of captions naming every object and one of subset captions, on fresh scenes
  (seeds 4 and 5, lr 1.5e-3), then scored on the demo's 1,000 held-out scenes;
- ``demo``: ``rlhfv demo`` from that model, with the shipped annotator (``rename``: a
  hallucinated object is rewritten into one the answer left out) or one that deletes every
  sentence naming an absent object (``delete``);
- ``frontier``: ``scene_noun_confidence.py`` (the noun probabilities and the abstention
  frontier) on any of the resulting models.

    .venv/bin/python benchmarks/scene_noun_first.py sft --output runs/nf_sft
    .venv/bin/python benchmarks/scene_noun_first.py demo --sft-model runs/nf_sft/model \\
        --annotator delete --output runs/nf_delete
    .venv/bin/python benchmarks/scene_noun_first.py frontier runs/nf_sft/model runs/nf_delete/ddpo \\
        --scenes 1000 --frontier --threads 2

Measured (docs/scene_world.md, "A noun-first grammar"): it does not meet the target. With
the noun first, its token also chooses which object comes next, so its probability is split
among the objects still to name (median 0.34 for correct nouns, 0.94 in the shipped
grammar); the renaming annotator moves nothing (-1.5%, +5%), the deleting one cuts 29-38%
by saying less (recall 10-13 points lower, answers 18-22% shorter). ``sft --reading-order``
(captions always in reading order) makes the doubt cleaner, but the deleting annotator's
pairs then teach stopping early (-21% at 12.6 points of recall).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import runpy
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import rlhfv.scenes.annotator as annotator
import rlhfv.scenes.language as language

NEW_WORD = "ones"
# every object sentence opens with its noun; one agreeing slot besides BE ("one"/"ones")
NOUN_FIRST_TEMPLATES = (
    "{O} {BE} in the {P}, {N} {C} {V:one}.",
    "{O} can be seen in the {P}, {N} {C} {V:one}.",
    "{O}, {N} {C} {V:one}, {BE} in the {P}.",
    "{O} in the {P}, {N} {C} {V:one}.",
)
NOUN_FIRST_LATER = (
    "{O} {BE} also in the {P}, {N} {C} {V:one}.",
    "{O} can also be seen in the {P}, {N} {C} {V:one}.",
    "{O} {BE} in the {P} as well, {N} {C} {V:one}.",
)
ANNOTATORS = ("rename", "delete")


def deleting_edits(answer: str, scene):
    """The annotator's edits when every sentence naming an absent object is deleted (never renamed)."""
    from rlhfv.scenes.world import Scene

    named = {c.cls for c in language.claims_of(answer)}
    present = tuple(o for o in scene.objects if o.cls in named)
    if present:  # the shipped policy with no unnamed object to rename into deletes instead
        return _shipped_edits(answer, Scene(present, seed=scene.seed))
    sentences = language.parse_answer(answer)
    return annotator.sorted_edits(
        [annotator.delete_sentence(answer, s.start, s.end) for s in sentences if s.claims]
    )


_shipped_edits = annotator.correction_edits


class _ReadingOrder:
    """``rng`` for :func:`rlhfv.scenes.language.describe`, whose shuffle of the objects keeps
    reading order (every other draw is ``rng``'s own)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __getattr__(self, name: str):
        return getattr(self._rng, name)

    def shuffle(self, objects: list) -> None:
        from rlhfv.scenes.world import POSITIONS

        objects.sort(key=lambda o: POSITIONS.index(o.position))


@contextlib.contextmanager
def captions_in_reading_order() -> Iterator[None]:
    """SFT captions (``rlhfv.scenes.pipeline``) always name their objects in reading order."""
    import rlhfv.scenes.pipeline as pipeline

    shipped = pipeline.describe
    pipeline.describe = lambda scene, rng, **kwargs: shipped(scene, _ReadingOrder(rng), **kwargs)
    try:
        yield
    finally:
        pipeline.describe = shipped


@contextlib.contextmanager
def noun_first_grammar(annotator_policy: str = "rename") -> Iterator[None]:
    """The trial grammar (and annotator policy) in this process while the block runs."""
    if annotator_policy not in ANNOTATORS:
        raise ValueError(f"annotator_policy must be one of {ANNOTATORS}, got {annotator_policy!r}")
    saved_language = {
        name: getattr(language, name)
        for name in ("FIRST_TEMPLATES", "LATER_TEMPLATES", "TEMPLATES", "_TEMPLATE_RES", "VERBS")
    }
    saved_annotator = {name: getattr(annotator, name) for name in ("TEMPLATES", "correction_edits")}
    templates = NOUN_FIRST_TEMPLATES + NOUN_FIRST_LATER
    try:
        language.VERBS = {**language.VERBS, "one": ("one", NEW_WORD)}
        language.FIRST_TEMPLATES = NOUN_FIRST_TEMPLATES
        language.LATER_TEMPLATES = NOUN_FIRST_LATER
        language.TEMPLATES = templates
        language._TEMPLATE_RES = tuple(language._template_regex(t) for t in templates)
        annotator.TEMPLATES = templates
        if annotator_policy == "delete":
            annotator.correction_edits = deleting_edits
        yield
    finally:
        for name, value in saved_language.items():
            setattr(language, name, value)
        for name, value in saved_annotator.items():
            setattr(annotator, name, value)


def with_new_word(source: Path, target: Path, word: str = NEW_WORD):
    """``(model, processor)``: the scene model at ``source`` with ``word`` added to its
    vocabulary (the next id; a new embedding row), saved to ``target``."""
    from transformers import AutoProcessor

    from rlhfv.scenes.model import load_scene_model

    model, processor = load_scene_model(source)
    processor.save_pretrained(target)
    tokenizer_file = target / "tokenizer.json"
    spec = json.loads(tokenizer_file.read_text())
    vocab = spec["model"]["vocab"]
    if word in vocab:
        raise ValueError(f"{word!r} is already in the vocabulary of {source}")
    vocab[word] = max(vocab.values()) + 1
    tokenizer_file.write_text(json.dumps(spec))
    processor = AutoProcessor.from_pretrained(target)
    model.resize_token_embeddings(vocab[word] + 1)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return load_scene_model(target)


def _sibling(name: str):
    """Another script of this folder, as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_sft(args: argparse.Namespace) -> None:
    from rlhfv.scenes.model import CHECKPOINT_DIR
    from rlhfv.scenes.pipeline import (
        SFTSettings,
        prepare_corrections,
        sft_corrections,
        sft_pass,
    )

    start = time.time()
    model, processor = with_new_word(Path(args.base or CHECKPOINT_DIR), args.output / "base")
    for k, (captions, seed) in enumerate((("all", args.seed), ("subset", args.seed + 1))):
        data = sft_corrections(args.scenes, seed, captions=captions)
        prepared = prepare_corrections(data, processor, args.output / f"data{k}")
        model = sft_pass(
            model, processor, prepared, SFTSettings(), 1.0, args.learning_rate, seed, args.output / f"run{k}"
        )
    _sibling("scene_more_sft").save_and_score(model, processor, args.output, args.eval_scenes, start)


def run_demo(args: argparse.Namespace) -> None:
    from rlhfv.scenes.demo import DemoConfig, run_demo

    # every parameter trained, as the demo did when this trial was measured (session 10)
    config = DemoConfig(
        sft_model=str(args.sft_model), learning_rate=args.learning_rate, seed=args.seed, train_vision=True
    )
    result = run_demo(config, args.output)
    from rlhfv.eval.metrics import json_safe

    print(json.dumps(json_safe(result["results"])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sft = commands.add_parser("sft", help="continue the shipped model on noun-first captions")
    sft.add_argument("--output", type=Path, required=True, help="folder for data, runs and model/")
    sft.add_argument("--base", default=None, help="scene model to continue (default: the shipped one)")
    sft.add_argument("--scenes", type=int, default=24000, help="fresh scenes per epoch (default 24000)")
    sft.add_argument("--learning-rate", type=float, default=1.5e-3, help="(default 1.5e-3)")
    sft.add_argument("--seed", type=int, default=4, help="scene seed of the first epoch (default 4)")
    sft.add_argument("--eval-scenes", type=int, default=1000, help="held-out scenes (default 1000)")
    sft.add_argument(
        "--reading-order",
        action="store_true",
        help="captions always name their objects in reading order (the shipped ones: half the time)",
    )
    demo = commands.add_parser("demo", help="rlhfv demo from a noun-first SFT model")
    demo.add_argument("--sft-model", type=Path, required=True, help="the sft step's OUTPUT/model")
    demo.add_argument("--output", type=Path, required=True)
    demo.add_argument("--annotator", choices=ANNOTATORS, default="rename")
    demo.add_argument("--learning-rate", type=float, default=3e-6, help="DDPO and DPO (default 3e-6)")
    demo.add_argument("--seed", type=int, default=0)
    commands.add_parser(
        "frontier",
        help="scene_noun_confidence.py under the trial grammar: every later argument is its own",
        add_help=False,
    )
    for command in (sft, demo):
        command.add_argument("--threads", type=int, default=2)
    if sys.argv[1:2] == ["frontier"]:  # its arguments go to the other script untouched
        with noun_first_grammar():
            sys.argv = ["scene_noun_confidence.py", *sys.argv[2:]]
            runpy.run_path(str(Path(__file__).with_name("scene_noun_confidence.py")), run_name="__main__")
        return
    args = parser.parse_args()
    for name in ("scenes", "eval_scenes"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    order = captions_in_reading_order() if getattr(args, "reading_order", False) else contextlib.nullcontext()
    with noun_first_grammar(getattr(args, "annotator", "rename")), order:
        run_sft(args) if args.command == "sft" else run_demo(args)


if __name__ == "__main__":
    main()
