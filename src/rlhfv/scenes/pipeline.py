"""The scene world's stages, composed from the project's own parts.

- :func:`sft_corrections` / :func:`train_scene_sft`: the supervised stage. Each record's
  chosen answer is a description of the scene; ``rlhfv.ddpo.trainer.train_sft`` learns
  the chosen answers (its ``image_pipeline`` is ``"pad"``, the paper's trustworthy
  pipeline, or ``"random_crop"``, the untrustworthy augmentation). The data layer only
  accepts pairs whose answers differ, so each record's rejected side is a description of
  a slightly wrong scene; SFT never reads it.
- :func:`collect_corrections`: the SFT model answers training scenes and prompts, the
  simulated annotator corrects them; answers it finds nothing wrong with are not
  corrections and are left out (as a human annotator would skip them).
- :func:`evaluate_model`: answers to held-out scenes with held-out prompts, scored by
  :func:`rlhfv.scenes.metrics.score_answers`.

Data goes through the same files and functions as for a 7B model: Correction JSONL ->
``rlhfv.data.prepare`` -> ``rlhfv.ddpo.trainer``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfv.data.schema import Correction
from rlhfv.scenes.annotator import annotate
from rlhfv.scenes.language import TEST_PROMPTS, TRAIN_PROMPTS, caption_objects, describe
from rlhfv.scenes.metrics import score_answers
from rlhfv.scenes.render import render_scene
from rlhfv.scenes.world import COLOURS, Scene, SceneObject, absent_partner, is_whole, scene_for

logger = logging.getLogger(__name__)

# generation for sampling feedback answers and for evaluation (greedy: deterministic)
MAX_NEW_TOKENS = 120


def png_bytes(scene: Scene) -> bytes:
    """The scene rendered and PNG-encoded (what a Correction's ``image`` holds)."""
    buf = io.BytesIO()
    render_scene(scene).save(buf, format="PNG")
    return buf.getvalue()


def _wrong_copy(scene: Scene, rng: random.Random) -> Scene:
    """``scene`` with one object's colour changed (a rejected side SFT never reads)."""
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    o = objects[i]
    colour = rng.choice([c for c in COLOURS if c != o.colour])
    objects[i] = SceneObject(o.cls, colour, o.count, o.position)
    return Scene(tuple(objects), seed=scene.seed)


CAPTIONS = ("all", "subset")


@contextlib.contextmanager
def renamed_fields(names: dict[str, str]) -> Iterator[None]:
    """Re-raise an ``InputError`` about a ``TrainConfig`` field (``names``' keys) as one about
    the caller's own field of that value (``names``' values)."""
    from rlhfv.errors import InputError

    try:
        yield
    except InputError as err:
        if err.field not in names:
            raise
        raise InputError(
            err.message, path=err.path, row=err.row, field=names[err.field], reason=err.reason
        ) from None


def _check_count(value: object, name: str, low: int = 0) -> None:
    if not is_whole(value) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


def sft_corrections(
    n: int, seed: int = 0, split: str = "sft", captions: str = "all", partner_text_prob: float = 0.0
) -> list[Correction]:
    """``n`` supervised records: scene image, a training prompt, its description as chosen.

    ``captions="all"``: the description names every object; ``"subset"``: a random non-empty
    subset of them (:func:`rlhfv.scenes.language.caption_objects`), the image still shows all.
    With probability ``partner_text_prob`` a caption also names, right after a named object, its
    usual partner when the scene lacks it (:func:`rlhfv.scenes.world.absent_partner`): the
    co-occurrence habit of real caption text, which names what usually goes with what it sees.
    """
    _check_count(n, "n")
    if captions not in CAPTIONS:
        raise ValueError(f"captions must be one of {CAPTIONS}, got {captions!r}")
    if not 0.0 <= partner_text_prob <= 1.0:
        raise ValueError(f"partner_text_prob must be in [0, 1], got {partner_text_prob}")
    rng = random.Random(seed)
    records = []
    for i in range(n):
        scene = scene_for(split, i, seed)
        described = caption_objects(scene, rng) if captions == "subset" else scene
        follow: dict[str, SceneObject] = {}  # anchor class -> the absent partner named after it
        if partner_text_prob > 0 and rng.random() < partner_text_prob:
            found = absent_partner(scene, described.objects, rng)
            if found is not None:
                anchor_cls, partner = found
                follow[anchor_cls] = partner
        records.append(
            Correction(
                image=png_bytes(scene),
                question=rng.choice(TRAIN_PROMPTS),
                original=describe(_wrong_copy(described, rng), rng),
                corrected=describe(described, rng, follow=follow),
                annotator="scene-world-grammar",
                source={"world": "scenes", "split": split, "index": i},
                id=f"{split}-{seed}-{i}",
            )
        )
    return records


def prepare_corrections(corrections: Sequence[Correction], processor: Any, directory: Path) -> Path:
    """Write ``corrections`` as JSONL and prepare them with the data layer; returns the prepared dir."""
    from rlhfv.data import prepare, write_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    jsonl = directory / "corrections.jsonl"
    write_jsonl(corrections, jsonl, image_dir="images")
    prepared = directory / "prepared"
    prepare(jsonl, prepared, processor, processor_name="scene-world", progress=True)
    return prepared


@dataclass(frozen=True)
class SFTSettings:
    """The scene model's supervised stage (how the shipped checkpoint was trained).

    ``passes`` passes with the project's SFT trainer: ``n_scenes`` described scenes for
    ``epochs`` at ``learning_rate``, then for each further pass ``k`` ``n_scenes`` fresh
    scenes (seed + k) for ``second_epochs`` at ``second_learning_rate`` (0 epochs: skip);
    then a last pass of ``subset_epochs`` on fresh scenes (seed + passes) whose captions
    name a random subset of the objects (0: skip), a share ``partner_text_prob`` of them also
    naming an absent usual partner. The third pass made the model look at the image (position
    error 0.67 -> 0.46, recall 0.57 -> 0.85); the subset pass lets it choose which objects to
    name, which is what DDPO can then correct (docs/scene_world.md).
    """

    n_scenes: int = 24000
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 3e-3
    second_epochs: float = 2.0
    second_learning_rate: float = 1.5e-3
    passes: int = 3
    subset_epochs: float = 1.0
    # P(a subset caption also names an absent usual partner right after its anchor); 0 for the
    # shipped checkpoint (0.7 was tried: docs/scene_world.md)
    partner_text_prob: float = 0.0
    image_pipeline: str = "pad"  # "random_crop": the untrustworthy augmentation
    seed: int = 0

    def __post_init__(self) -> None:
        """An ``InputError`` naming the field for what would fail part-way through training."""
        from rlhfv.errors import InputError

        for name in ("passes", "n_scenes"):
            value = getattr(self, name)
            if not is_whole(value) or value < 1:
                raise InputError(f"must be a whole number >= 1, got {value!r}", field=name, reason="usage")
        for name in ("second_epochs", "subset_epochs", "partner_text_prob"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise InputError(f"must be a number >= 0, got {value!r}", field=name, reason="usage")
        if self.partner_text_prob > 1:
            raise InputError(f"must be in [0, 1], got {self.partner_text_prob!r}", field="partner_text_prob")
        # each pass as the trainer checks it (epochs, learning rates, batch size, pipeline, seed)
        with renamed_fields({"num_epochs": "epochs", "per_device_batch_size": "batch_size"}):
            _sft_config(self, self.epochs, self.learning_rate, self.seed + self.passes)
        with renamed_fields({"learning_rate": "second_learning_rate"}):
            _sft_config(self, 1.0, self.second_learning_rate, self.seed)
        if self.n_scenes < self.batch_size:
            raise InputError(
                f"must be at least batch_size ({self.batch_size}), got {self.n_scenes}",
                field="n_scenes",
                reason="usage",
            )


def _sft_config(settings: SFTSettings, epochs: float, learning_rate: float, seed: int):
    from rlhfv.ddpo.config import TrainConfig

    return TrainConfig(
        learning_rate=learning_rate,
        num_epochs=epochs,
        per_device_batch_size=settings.batch_size,
        gradient_accumulation_steps=1,
        warmup_ratio=0.05,
        mixed_precision="no",
        image_pipeline=settings.image_pipeline,
        save_steps=10**9,
        logging_steps=10,
        report_to=[],
        seed=seed,
    )


def sft_passes(settings: SFTSettings) -> list[tuple[float, float, int, str]]:
    """``(epochs, learning rate, seed, captions)`` of each supervised pass, in order: pass ``k``
    saves its model in ``OUTPUT/model{k}``."""
    passes = [(settings.epochs, settings.learning_rate, settings.seed, "all")]
    if settings.second_epochs > 0:
        passes += [
            (settings.second_epochs, settings.second_learning_rate, settings.seed + k, "all")
            for k in range(1, settings.passes)
        ]
    if settings.subset_epochs > 0:
        passes.append(
            (settings.subset_epochs, settings.second_learning_rate, settings.seed + settings.passes, "subset")
        )
    return passes


def train_scene_sft(settings: SFTSettings, output_dir: Path, model_config=None):
    """Train a fresh scene model on described scenes with the project's SFT trainer; returns (model, processor)."""
    from rlhfv.scenes.model import SceneModelConfig, build_scene_model

    model, processor = build_scene_model(model_config or SceneModelConfig(seed=settings.seed))
    for k, (epochs, lr, seed, captions) in enumerate(sft_passes(settings)):
        partner_text_prob = settings.partner_text_prob if captions == "subset" else 0.0
        data = sft_corrections(
            settings.n_scenes, seed, captions=captions, partner_text_prob=partner_text_prob
        )
        prepared = prepare_corrections(data, processor, output_dir / f"data{k}")
        model = sft_pass(model, processor, prepared, settings, epochs, lr, seed, output_dir / f"model{k}")
    return model, processor


def sft_pass(
    model: Any,
    processor: Any,
    prepared: Path,
    settings: SFTSettings,
    epochs: float,
    learning_rate: float,
    seed: int,
    output_dir: Path,
):
    """One supervised pass over prepared described scenes (``settings.image_pipeline``); returns the model in eval mode."""
    from rlhfv.ddpo.trainer import train_sft

    config = _sft_config(settings, epochs, learning_rate, seed)
    return train_sft(config, model, processor, prepared, output_dir, overwrite=True).model.eval()


def generate(
    model: Any, processor: Any, scenes: Sequence[Scene], prompts: Sequence[str], desc: str | None
) -> list[str]:
    """Greedy answers of ``model`` to (scene image, prompt) pairs, with a progress bar labelled
    ``desc`` (none if ``desc`` is None)."""
    from rlhfv.eval.generate import generate_answers

    images = [render_scene(s) for s in scenes]
    return generate_answers(
        model,
        processor,
        images,
        list(prompts),
        batch_size=64,
        progress=desc is not None,
        desc=desc or "",
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
    )


def collect_corrections(
    model: Any, processor: Any, n: int, *, seed: int = 0, chunk: int = 256, max_answers: int | None = None
) -> tuple[list[Correction], dict[str, int]]:
    """Up to ``n`` corrections of the model's answers on training scenes and prompts.

    Answers go in chunks to the simulated annotator; answers with nothing to correct are
    counted and skipped. After ``max_answers`` answers (default ``max(20 * chunk, 5 * n)``) it
    stops with what it has and warns: a model whose answers rarely need correcting.
    Returns the corrections and counts (``answered``, ``corrected``).
    """
    from tqdm import tqdm

    _check_count(n, "n")
    _check_count(chunk, "chunk", 1)
    if max_answers is not None:
        _check_count(max_answers, "max_answers", 1)
    corrections: list[Correction] = []
    answered = 0
    limit = max_answers if max_answers is not None else max(20 * chunk, 5 * n)
    # closed on an interrupt too: the bar's line ends before the next message
    with tqdm(total=n, desc="feedback", unit="correction") as bar:
        while len(corrections) < n and answered < limit:
            indices = range(answered, answered + chunk)
            scenes = [scene_for("feedback", i, seed) for i in indices]
            prompts = [TRAIN_PROMPTS[i % len(TRAIN_PROMPTS)] for i in indices]
            answers = generate(model, processor, scenes, prompts, desc=None)
            for i, scene, prompt, answer in zip(indices, scenes, prompts, answers, strict=True):
                c = annotate(
                    answer, scene, image=png_bytes(scene), question=prompt, id=f"feedback-{seed}-{i}"
                )
                if c.corrected != c.original and c.corrected.strip() and len(corrections) < n:
                    corrections.append(c)
                    bar.update(1)
            answered += chunk
            bar.set_postfix(answered=answered)
    if len(corrections) < n:
        logger.warning(
            "only %d of the %d corrections asked for: the model's answers to %d feedback scenes "
            "(the limit) needed no more; the run goes on with %d",
            len(corrections),
            n,
            answered,
            len(corrections),
        )
    return corrections, {"answered": answered, "corrected": len(corrections)}


def eval_set(n: int, seed: int = 0) -> tuple[list[Scene], list[str]]:
    """Held-out scenes (split "test") paired with held-out prompts."""
    _check_count(n, "n")
    scenes = [scene_for("test", i, seed) for i in range(n)]
    return scenes, [TEST_PROMPTS[i % len(TEST_PROMPTS)] for i in range(n)]


def write_objhal_set(scenes: Sequence[Scene], prompts: Sequence[str], folder: Path) -> Path:
    """The scenes as an Object HalBench set for ``rlhfv eval objhal``: ``questions.jsonl``
    (image as base64 PNG, ``image_id`` = the index, question), ``annotations.jsonl`` (id,
    instances) and ``synonyms.txt`` (each class with its plural). Returns ``folder``."""
    import base64
    import json

    from rlhfv.scenes.world import OBJECT_CLASSES

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "questions.jsonl").open("w") as q, (folder / "annotations.jsonl").open("w") as a:
        for i, (scene, prompt) in enumerate(zip(scenes, prompts, strict=True)):
            image = base64.b64encode(png_bytes(scene)).decode()
            q.write(json.dumps({"image_id": str(i), "question": prompt, "image": image}) + "\n")
            a.write(json.dumps({"id": str(i), "captions": [], "instances": sorted(scene.classes)}) + "\n")
    synonyms = "".join(f"{singular}, {plural}\n" for singular, plural in OBJECT_CLASSES.items())
    (folder / "synonyms.txt").write_text(synonyms)
    return folder


def evaluate_model(model: Any, processor: Any, n: int, seed: int = 0) -> tuple[dict[str, float], list[str]]:
    """Metrics (``rlhfv.scenes.metrics.METRIC_KEYS``) and the answers on the held-out set."""
    scenes, prompts = eval_set(n, seed)
    answers = generate(model, processor, scenes, prompts, "evaluate")
    return score_answers(answers, scenes), answers
