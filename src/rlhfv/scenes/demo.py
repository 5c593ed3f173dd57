"""``rlhfv demo``: the RLHF-V loop end to end on the scene world, on a CPU.

Stages (each with a progress bar):

1. the SFT model: the shipped checkpoint, or trained from scratch (``--from-scratch``);
2. feedback: the SFT model answers training scenes and prompts, the simulated annotator
   corrects the answers (1,400 corrections by default, the paper's count);
3. the data layer prepares the dense preference data (``rlhfv.data.prepare``);
4. DDPO (the paper's beta 0.5, gamma 5, weighted mean) and vanilla DPO (gamma 1,
   weighted sum) train from the SFT model on the same data (``rlhfv.ddpo.trainer``);
5. SFT, DPO and DDPO answer held-out scenes with held-out prompts and are scored.

Writes to ``OUTPUT``: ``results.json`` (one row per model: ``model`` + the metrics of
``rlhfv.scenes.metrics.METRIC_KEYS``), ``report.html`` (example answers before and after,
the annotator's changed segments and the evaluator's hallucinated objects highlighted),
``rates.png`` (the rates per model), ``feedback/`` (the corrections JSONL and the
prepared data), ``ddpo/`` and ``dpo/`` (the trained models, loadable by transformers),
``answers.jsonl`` (every evaluated answer), ``objhal/`` (the held-out set as an Object
HalBench set, for ``rlhfv eval objhal --model OUTPUT/ddpo --questions OUTPUT/objhal/questions.jsonl
--annotations OUTPUT/objhal/annotations.jsonl --synonyms OUTPUT/objhal/synonyms.txt --preset greedy``),
and ``sft/`` when the SFT model is trained here.

``OUTPUT`` is a new or empty folder or an earlier demo's (anything else is refused before
any work). A run starts by removing an earlier demo's results, feedback and models (not an
SFT model trained from scratch unless it trains one), and writes ``summary.json`` last: an
interrupted run leaves no results at all, never an earlier run's beside its own models.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import html
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rlhfv.data.schema import Correction
from rlhfv.errors import InputError
from rlhfv.scenes.metrics import HIGHER_IS_BETTER, METRIC_KEYS, hallucinated_spans
from rlhfv.scenes.pipeline import SFTSettings, renamed_fields
from rlhfv.scenes.world import Scene, is_whole

ARMS = ("ddpo", "dpo")
# the most corrections or held-out scenes one run takes (each is a rendered scene in memory;
# 1,400 and 1,000 are the defaults)
MAX_SCENES = 100_000
RATE_KEYS = ("chair_s_mentioned", "chair_i", "attribute_error", "count_error", "position_error")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and hyper-parameters of one demo run (defaults: the full demo)."""

    n_corrections: int = 1400
    n_eval: int = 1000  # standard error of a rate near 0.15: about 0.011 (0.021 at 300)
    epochs: float = 4.0
    batch_size: int = 16
    # the perceiver frozen (train_vision False): -18% over 3 feedback seeds at 6e-6, recall 0.9
    # points lower (the whole model at 3e-6: -8%); frozen, larger steps still cut (1e-5: -29%;
    # the whole model: 0%); docs/scene_world.md, "Only the language model trained"
    learning_rate: float = 6e-6
    beta: float = 0.5
    ddpo_gamma: float = 5.0
    seed: int = 0
    from_scratch: bool = False
    sft_model: str | None = None  # a saved SFT model directory (default: the shipped checkpoint)
    # False: DDPO and DPO leave the vision tower and projector as SFT left them (the paper
    # trains every parameter; on this 0.66 M model the corrections' gradient through the
    # perceiver makes it name more objects and misname more of them)
    train_vision: bool = False
    sft: SFTSettings = SFTSettings()

    def __post_init__(self) -> None:
        """Refuse what would fail minutes into a run (an ``InputError`` naming the field)."""
        if not isinstance(self.sft, SFTSettings):
            raise InputError(f"must be an SFTSettings, got {type(self.sft).__name__}", field="sft")
        if not isinstance(self.train_vision, bool):  # "no" would train the vision tower
            raise InputError(f"must be True or False, got {self.train_vision!r}", field="train_vision")
        for arm in ARMS:  # the training settings, as the trainer checks them
            with renamed_fields(_TRAIN_FIELDS):
                train_config(self, arm)
        for name, low in (("n_corrections", self.batch_size), ("n_eval", 1)):
            value = getattr(self, name)
            if not is_whole(value) or not low <= value <= MAX_SCENES:
                short = name == "n_corrections" and is_whole(value) and value < low
                why = " (training needs one full batch)" if short else ""
                raise InputError(
                    f"must be a whole number in {low}..{MAX_SCENES}, got {value!r}{why}",
                    field=name,
                    reason="usage",
                )
        if self.sft_model is not None and self.from_scratch:
            raise InputError(
                "choose one: from_scratch trains the SFT model, sft_model loads one", field="sft_model"
            )

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A small run (< 3 minutes on 2 cores) that exercises every stage."""
        base = cls(
            n_corrections=160,
            n_eval=64,
            # the full demo's 4 epochs: 40 steps move a few answers; 1 epoch (10) changed none
            # --from-scratch: about 450 steps learn the grammar (256 scenes for one epoch, 8
            # steps, gave "the bottom the bottom ...", nothing to correct)
            sft=SFTSettings(n_scenes=4096, epochs=3.0, second_epochs=0.0, subset_epochs=0.5),
        )
        return replace(base, **overrides)


# the trainer's name of a DemoConfig field -> the DemoConfig's
_TRAIN_FIELDS = {"num_epochs": "epochs", "per_device_batch_size": "batch_size", "gamma": "ddpo_gamma"}


def train_config(config: DemoConfig, arm: str):
    """The trainer's config of one arm: ``"ddpo"`` (gamma ``ddpo_gamma``, weighted mean) or
    ``"dpo"`` (gamma 1, weighted sum); the vision tower and projector frozen unless
    ``train_vision``."""
    from rlhfv.ddpo.config import TrainConfig

    gamma, normalisation = {"ddpo": (config.ddpo_gamma, "mean"), "dpo": (1.0, "sum")}[arm]
    return TrainConfig(
        beta=config.beta,
        gamma=gamma,
        normalisation=normalisation,
        learning_rate=config.learning_rate,
        num_epochs=config.epochs,
        per_device_batch_size=config.batch_size,
        freeze_vision_tower=not config.train_vision,
        freeze_projector=not config.train_vision,
        gradient_accumulation_steps=1,
        mixed_precision="no",
        save_steps=10**9,
        logging_steps=5,
        report_to=[],
        seed=config.seed,
    )


def train_arm(
    config: DemoConfig, name: str, sft_model: Any, processor: Any, prepared: Path, output: Path
) -> Any:
    """The trained policy of one arm, ``"ddpo"`` (gamma 5, weighted mean) or ``"dpo"`` (gamma 1,
    weighted sum), started from a copy of ``sft_model`` (which stays the reference); eval mode."""
    from rlhfv.ddpo.trainer import train_ddpo

    result = train_ddpo(
        train_config(config, name),
        copy.deepcopy(sft_model),
        processor,
        prepared,
        output,
        overwrite=True,  # the caller owns its output folder: a rerun replaces the last one
    )
    return result.model.eval()


# what a run writes in its output folder; the results (summary.json last) when it finishes
RESULT_FILES = ("answers.jsonl", "rates.png", "report.html", "results.json", "summary.json")
RUN_FOLDERS = ("feedback", *ARMS, "objhal")
OUTPUT_NAMES = (*RESULT_FILES, *RUN_FOLDERS, "sft")


def check_output(output: str | Path, config: DemoConfig) -> Path:
    """Before any work, an ``InputError`` unless ``output`` is a folder the demo may fill: a new
    path (its nearest existing folder writable), an empty folder or an earlier demo's (only the
    names of ``OUTPUT_NAMES`` in it, which :func:`replace_earlier_run` removes); ``sft_model``
    must not lie in a part of it that the run replaces."""
    output = Path(output)

    def refuse(message: str, reason: str = "bad_output") -> InputError:
        return InputError(message, path=str(output), field="output", reason=reason)

    if output.exists() and not output.is_dir():
        raise refuse("is a file, not a directory: give a folder for the demo (it is created if missing)")
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise refuse(f"{existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise refuse(f"cannot write to directory {existing}")
    if output.is_dir():
        other = sorted(p.name for p in output.iterdir() if p.name not in OUTPUT_NAMES)
        if other:
            shown = ", ".join(other[:4]) + (", ..." if len(other) > 4 else "")
            raise refuse(
                f"holds files that are not an earlier demo's ({shown}); the demo writes results.json, "
                "report.html, feedback/, ddpo/, dpo/ ... there and a rerun replaces an earlier demo's: "
                "give a new or empty folder",
                reason="output_exists",
            )
    if config.sft_model is not None:
        model = Path(config.sft_model).resolve()
        for name in RUN_FOLDERS:
            if model.is_relative_to((output / name).resolve()):
                raise InputError(
                    f"is in {output / name}, which this run replaces: copy it elsewhere or choose "
                    "another output folder",
                    path=str(config.sft_model),
                    field="sft_model",
                    reason="usage",
                )
    return output


def trains_sft(config: DemoConfig) -> bool:
    """Whether the run trains its SFT model (into ``OUTPUT/sft``) rather than loading one."""
    from rlhfv.scenes.model import has_shipped_checkpoint

    return config.sft_model is None and (config.from_scratch or not has_shipped_checkpoint())


def replace_earlier_run(output: Path, config: DemoConfig) -> list[str]:
    """Create ``output`` and remove an earlier run's results, feedback and models from it, so
    that an interrupted run never leaves an earlier run's results beside its own models. An
    earlier SFT model trained from scratch (``sft/``) stays unless this run trains one.
    Returns the names removed."""
    removed = []
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name in (*RESULT_FILES[::-1], *RUN_FOLDERS, *(("sft",) if trains_sft(config) else ())):
            path = output / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(name)
    except OSError as err:
        raise InputError(
            f"cannot prepare the output folder ({err.strerror or err})", path=str(output), field="output"
        ) from err
    return removed


def run_demo(config: DemoConfig, output: str | Path) -> dict[str, Any]:
    """Run every stage; returns ``{"results": rows, "feedback": counts, "seconds": ...}``.

    ``output`` is checked before any work (:func:`check_output`); an earlier demo's results
    and models in it are removed when the run starts (:func:`replace_earlier_run`)."""
    from rlhfv.scenes.model import CHECKPOINT_DIR, load_scene_model
    from rlhfv.scenes.pipeline import sft_passes, train_scene_sft

    output = check_output(output, config)
    removed = replace_earlier_run(output, config)
    if removed:
        print(f"removed the earlier demo's {', '.join(removed)} from {output}", flush=True)
    start = time.time()
    timings: dict[str, float] = {}
    t = time.time()
    print("[1/5] SFT model", flush=True)
    if config.sft_model is not None:
        sft_model, processor = load_scene_model(config.sft_model)
    elif trains_sft(config):
        sft_model, processor = train_scene_sft(config.sft, output / "sft")
    else:
        sft_model, processor = load_scene_model(CHECKPOINT_DIR)
    timings["sft"] = round(time.time() - t, 1)
    t = time.time()
    try:
        return _after_sft(config, output, sft_model, processor, start, timings, t)
    except (KeyboardInterrupt, SystemExit):
        if trains_sft(config):  # 30 minutes of work a rerun need not redo
            saved = output / "sft" / f"model{len(sft_passes(config.sft)) - 1}"
            print(
                f"the trained SFT model is kept: --sft-model {saved} starts a rerun from it", file=sys.stderr
            )
        raise


def _after_sft(
    config: DemoConfig,
    output: Path,
    sft_model: Any,
    processor: Any,
    start: float,
    timings: dict[str, float],
    t: float,
) -> dict[str, Any]:
    """Stages 2-5 of :func:`run_demo`."""
    import torch

    from rlhfv.scenes.metrics import hallucination_kinds
    from rlhfv.scenes.pipeline import collect_corrections, eval_set, evaluate_model, prepare_corrections

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.time() - t0, 1)
        return time.time()

    print(f"[2/5] feedback: {config.n_corrections} corrections by the simulated annotator", flush=True)
    corrections, counts = collect_corrections(sft_model, processor, config.n_corrections, seed=config.seed)
    if len(corrections) < config.batch_size:
        raise InputError(
            f"the SFT model's answers to {counts['answered']} feedback scenes gave the annotator "
            f"{len(corrections) or 'nothing'} to correct, fewer than one training batch ({config.batch_size}): "
            "either they are nearly all right, or they are not in the scene world's grammar "
            + (
                "(is --sft-model a scene-world model? see docs/scene_world.md)"
                if config.sft_model is not None
                else f"(the SFT model trained in {output / 'sft'} did not learn it: train it longer)"
                if trains_sft(config)
                else "(see docs/scene_world.md)"
            )
        )
    t = lap("feedback", t)

    print("[3/5] dense preference data", flush=True)
    prepared = prepare_corrections(corrections, processor, output / "feedback")
    t = lap("prepare", t)

    print("[4/5] training DDPO (gamma 5, weighted mean) and DPO (gamma 1, weighted sum)", flush=True)
    trained = {}
    for name in ARMS:
        trained[name] = train_arm(config, name, sft_model, processor, prepared, output / name)
    t = lap("train", t)

    print(f"[5/5] evaluating on {config.n_eval} held-out scenes and prompts", flush=True)
    rows, answers = [], {}
    for name, model in (("sft", sft_model), *trained.items()):
        with torch.inference_mode():
            metrics, answers[name] = evaluate_model(model, processor, config.n_eval, seed=config.seed)
        rows.append({"model": name, **metrics})
    lap("evaluate", t)

    eval_scenes, eval_prompts = eval_set(config.n_eval, config.seed)  # what evaluate_model answered
    summary = {
        "results": rows,
        # misperceptions (a hallucinated object in a present one's place) vs the co-occurrence bias
        "hallucination_kinds": {name: hallucination_kinds(answers[name], eval_scenes) for name in answers},
        "feedback": {**counts, **_segment_stats(corrections)},
        "timings_s": timings,
        "seconds": round(time.time() - start, 1),
        "config": asdict(config),
    }
    write_outputs(output, summary, corrections, answers, eval_scenes, eval_prompts)
    return summary


def _segment_stats(corrections: list[Correction]) -> dict[str, Any]:
    by_category: dict[str, int] = {}
    for c in corrections:
        for s in c.segments or []:
            by_category[s.category or "none"] = by_category.get(s.category or "none", 0) + 1
    n = len(corrections)
    return {
        "segments_per_correction": round(sum(by_category.values()) / n, 3) if n else math.nan,
        "segments_by_category": by_category,
    }


# ------------------------------------------------------------------ outputs


def write_outputs(
    output: Path,
    summary: dict[str, Any],
    corrections: list[Correction],
    answers: dict[str, list[str]],
    scenes: list[Scene],
    prompts: list[str],
) -> None:
    """answers.jsonl (``answers[model][i]`` about ``scenes[i]`` asked with ``prompts[i]``),
    objhal/, rates.png, report.html, then results.json and summary.json in ``output``: each
    file whole or absent, summary.json last (its presence marks a finished run)."""
    from rlhfv.eval.metrics import json_safe
    from rlhfv.scenes.pipeline import write_objhal_set

    lines = []
    for i, (scene, prompt) in enumerate(zip(scenes, prompts, strict=True)):
        row = {"index": i, "prompt": prompt, "scene": scene.to_dict()}
        row |= {name: answers[name][i] for name in answers}
        lines.append(json.dumps(row) + "\n")
    _write_whole(output / "answers.jsonl", "".join(lines))
    write_objhal_set(scenes, prompts, output / "objhal")
    with _replacing(output / "rates.png") as tmp:
        plot_rates(summary["results"], tmp)
    _write_whole(output / "report.html", render_report(summary, corrections, answers, scenes, prompts))
    _write_whole(output / "results.json", json.dumps(json_safe(summary["results"]), indent=2) + "\n")
    _write_whole(output / "summary.json", json.dumps(json_safe(summary), indent=2) + "\n")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write, renamed to ``path`` when the block ends
    without an error and removed otherwise (an interrupted write leaves no half file)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_whole(path: Path, text: str) -> None:
    with _replacing(path) as tmp:
        tmp.write_text(text)


def print_table(rows: list[dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    head = f"{'model':<6}" + "".join(f"{k:>19}" for k in METRIC_KEYS)
    lines = [head]
    for row in rows:
        cells = "".join(
            f"{row[k]:>19.3f}" if isinstance(row[k], float) else f"{row[k]!s:>19}" for k in METRIC_KEYS
        )
        lines.append(f"{row['model']:<6}{cells}")
    return "\n".join(lines)


def plot_rates(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: each hallucination/error rate per model (lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    width = 0.8 / max(len(rows), 1)
    for j, row in enumerate(rows):
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(RATE_KEYS))]
        ax.bar(xs, [row[k] for k in RATE_KEYS], width, label=row["model"])
    ax.set_xticks(range(len(RATE_KEYS)))
    ax.set_xticklabels([k.replace("_", " ") for k in RATE_KEYS])
    ax.set_ylabel("rate (lower is better)")
    ax.set_title("Scene world: hallucination and error rates per model")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.hal{background:#f99;font-weight:bold}.seg-o{background:#fd8}.seg-c{background:#9e9}
img{image-rendering:pixelated;width:144px}.cat{font-size:70%;color:#555}
"""


def _mark(text: str, spans: list[tuple[int, int, str, str]]) -> str:
    """HTML of ``text`` with ``(start, end, css class, title)`` spans wrapped in <span>."""
    out, pos = [], 0
    for start, end, cls, title in sorted(spans):
        if start < pos:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(
            f'<span class="{cls}" title="{html.escape(title)}">{html.escape(text[start:end]) or "&#8203;"}</span>'
        )
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _img(data: bytes) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def report_examples(answers: dict[str, list[str]], scenes: list[Scene], n: int) -> list[int]:
    """Indices of ``n`` held-out scenes worth showing, in scene order: first those where the
    models' answers differ and one of them hallucinates, then those where they differ, then any."""

    def rank(i: int) -> int:
        texts = [answers[name][i] for name in answers]
        if len(set(texts)) == 1:
            return 2
        return 0 if any(hallucinated_spans(t, scenes[i]) for t in texts) else 1

    return sorted(sorted(range(len(scenes)), key=lambda i: (rank(i), i))[:n])


def render_report(
    summary: dict[str, Any],
    corrections: list[Correction],
    answers: dict[str, list[str]],
    scenes: list[Scene],
    prompts: list[str],
    n_examples: int = 12,
) -> str:
    """A self-contained HTML page: results table, corrections, answers before/after."""
    from rlhfv.scenes.pipeline import png_bytes

    rows = summary["results"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>rlhfv demo</title><style>{_CSS}</style></head><body>"
    ]
    parts.append(
        "<h1>rlhfv demo: the scene world</h1><h2>Results on held-out scenes and prompts</h2><table><tr><th>model</th>"
    )
    parts += [f"<th>{k}{' (higher better)' if HIGHER_IS_BETTER[k] else ''}</th>" for k in METRIC_KEYS]
    parts.append("</tr>")
    for row in rows:
        cells = "".join(
            f"<td>{row[k]:.3f}</td>" if isinstance(row[k], float) else f"<td>{row[k]}</td>"
            for k in METRIC_KEYS
        )
        parts.append(f"<tr><td>{row['model']}</td>{cells}</tr>")
    parts.append("</table><p><img src='rates.png' style='width:700px'></p>")
    fb = summary["feedback"]
    parts.append(
        f"<h2>Feedback: the simulated annotator's corrections</h2><p>{fb['corrected']} corrections from "
        f"{fb['answered']} answers; {fb['segments_per_correction']} changed segments per correction; by category: "
        f"{html.escape(json.dumps(fb['segments_by_category']))}. Original (rejected) with "
        "<span class='seg-o'>changed segments</span>, corrected (chosen) with <span class='seg-c'>rewrites</span>.</p>"
    )
    parts.append("<table><tr><th>image</th><th>original answer</th><th>corrected answer</th></tr>")
    for c in corrections[:n_examples]:
        segs = c.segments or []
        orig = _mark(
            c.original, [(s.original_start, s.original_end, "seg-o", s.category or "") for s in segs]
        )
        corr = _mark(
            c.corrected, [(s.corrected_start, s.corrected_end, "seg-c", s.category or "") for s in segs]
        )
        cats = ", ".join(s.category or "?" for s in segs)
        parts.append(
            f"<tr><td>{_img(c.image)}</td><td>{orig}<div class='cat'>{cats}</div></td><td>{corr}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<h2>Held-out answers before and after</h2><p>Scenes where the models' answers differ, those "
        "with a hallucination first. <span class='hal'>Hallucinated objects</span> "
        "(not in the scene) as the evaluator finds them.</p><table><tr><th>image</th>"
    )
    parts += [f"<th>{name}</th>" for name in answers]
    parts.append("</tr>")
    for i in report_examples(answers, scenes, n_examples):
        cells = []
        for name in answers:
            text = answers[name][i]
            spans = [
                (s, e, "hal", f"not in the scene: {cls}") for s, e, cls in hallucinated_spans(text, scenes[i])
            ]
            cells.append(f"<td>{_mark(text, spans)}</td>")
        parts.append(
            f"<tr><td>{_img(png_bytes(scenes[i]))}<div class='cat'>{html.escape(prompts[i])}</div></td>{''.join(cells)}</tr>"
        )
    parts.append("</table></body></html>")
    return "".join(parts)
