"""``rlhfv data prepare``: corrections -> a prepared, memory-mapped preference dataset.

The output folder holds a ``datasets`` dataset saved with ``save_to_disk`` (one row per
preference pair, fields in docs/architecture.md, plus ``num_segments`` and
``pair_index``) and ``rlhfv_prepared.json`` (how it was made and what came out). Rows
are streamed from the input through ``Dataset.from_generator``: a large input is never
held in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.data.encode import (
    PromptEncoder,
    encode_correction,
    has_offsets,
    image_token,
    no_offsets_error,
    processor_label,
)
from rlhfv.data.io import is_json_array, jsonl_lines, read_corrections_with_rows, sniff_format
from rlhfv.data.weights import ALIGNMENTS, CHANGE_KINDS
from rlhfv.errors import InputError

METADATA_FILE = "rlhfv_prepared.json"
FORMAT_VERSION = 1
EXAMPLE_PATH = Path(__file__).parent / "example" / "corrections.jsonl"
# `--processor` / `--model` names of the tiny built-ins (rlhfv.tiny): name -> architecture
TINY_MODELS = {
    "tiny-llava": "llava",
    "tiny-llava-next": "llava_next",
    "tiny-qwen2-vl": "qwen2_vl",
    "tiny-idefics3": "idefics3",
}


@dataclass
class PrepareSummary:
    """What ``prepare`` read, wrote and skipped (printed by the CLI, stored in the metadata)."""

    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    mean_changed_segments: float = 0.0
    changed_token_share: float = 0.0  # changed answer tokens / answer tokens, both sides
    answer_tokens: int = 0
    changed_tokens: int = 0
    max_sequence_length: int = 0
    seconds: float = 0.0
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_input(spec: str | Path) -> Path:
    """``"example"`` names the small example shipped with the package, unless a file or folder
    ``example`` exists in the current directory (a local path wins); anything else is a path."""
    return EXAMPLE_PATH if str(spec) == "example" and not Path(spec).exists() else Path(spec)


def load_processor(spec: str):
    """A processor from ``spec``: a tiny built-in (``tiny-llava``...), a local folder saved
    with ``save_pretrained``, or a hub id (``AutoProcessor.from_pretrained``)."""
    if spec in TINY_MODELS:
        from rlhfv.tiny import build_tiny

        return build_tiny(TINY_MODELS[spec])[1]
    from transformers import AutoProcessor

    from rlhfv.data.pretrained import load_pretrained

    return load_pretrained(
        lambda source, **kw: AutoProcessor.from_pretrained(source, **kw),
        spec,
        field="--processor",
        what="processor",
        hint=f"; give a folder saved with save_pretrained, a hub id, or one of {', '.join(TINY_MODELS)}",
    )


def check_chat_template(processor, name: str | None = None) -> None:
    """Every prompt is rendered with the processor's chat template: refuse a processor without one.

    Checked before any row is read, so the cause is named instead of surfacing as a failure
    on the first row.
    """
    if getattr(processor, "chat_template", None) is None:
        raise InputError(
            "the processor has no chat template (rlhfv renders every prompt with it); use the model's own "
            "processor, or add one (a chat_template.jinja in the processor folder, or set processor.chat_template)",
            path=processor_label(processor, name),
            field="--processor",
            reason="no_chat_template",
        )


def count_rows(path: Path, fmt: str) -> int | None:
    """Rows in the input, cheaply (line count / parquet metadata), for the progress bar."""
    try:
        if fmt == "jsonl":
            if is_json_array(path):
                return None  # rows are array elements, not lines
            with path.open("rb") as f:
                return sum(1 for _ in jsonl_lines(f))
        import pyarrow.parquet as pq

        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # only a progress bar total
        return None


class _Job:
    """State shared with the generator that ``Dataset.from_generator`` drives."""

    def __init__(self, path, fmt, processor, alignment, kinds, max_length, skip_bad, progress):
        self.path, self.fmt, self.processor = path, fmt, processor
        self.alignment, self.kinds, self.max_length = alignment, tuple(kinds), max_length
        self.skip_bad, self.progress = skip_bad, progress
        self.summary = PrepareSummary()
        self.skipped: Counter[str] = Counter()
        self.segments = 0
        self.error: InputError | None = None
        self.failure: Exception | None = None  # anything else the generator raised
        self.digest = hashlib.sha256()
        self.reader_skips = 0
        self.prompts = PromptEncoder(processor)

    def skip(self, err: InputError) -> None:
        self.skipped[err.reason] += 1
        self.reader_skips += 1

    def rows(self) -> Iterator[dict[str, Any]]:
        from tqdm.auto import tqdm

        total = count_rows(self.path, self.fmt)
        bar = tqdm(
            total=total,
            unit="row",
            desc="prepare",
            disable=None if self.progress is None else not self.progress,
            leave=False,
        )
        on_error = self.skip if self.skip_bad else None
        seen = 0
        try:
            for row_no, c in read_corrections_with_rows(self.path, format=self.fmt, on_error=on_error):
                seen += 1
                bar.update(seen + self.reader_skips - bar.n)
                try:
                    row = encode_correction(
                        c,
                        self.processor,
                        alignment=self.alignment,
                        kinds=self.kinds,
                        max_length=self.max_length,
                        path=str(self.path),
                        row=row_no,
                        prompt_encoder=self.prompts,
                    )
                except InputError as err:
                    if not self.skip_bad:
                        raise
                    self.skipped[err.reason] += 1
                    continue
                row["pair_index"] = self.summary.rows_written
                self._account(row)
                yield row
        except InputError as err:
            # raised inside a datasets generator it would arrive wrapped in a library
            # error; keep it and re-raise it after the builder returns
            self.error = err
        except Exception as err:
            # likewise any other error (a processor failing, a bug): kept and re-raised as is,
            # never mistaken for an empty input
            self.failure = err
        finally:
            bar.close()

    def _account(self, row: dict[str, Any]) -> None:
        s = self.summary
        s.rows_written += 1
        self.segments += row["num_segments"]
        for side in ("chosen", "rejected"):
            start, ids, changed = (
                row[f"{side}_labels_start"],
                row[f"{side}_input_ids"],
                row[f"{side}_changed"],
            )
            s.answer_tokens += len(ids) - start
            s.changed_tokens += sum(changed[start:])
            s.max_sequence_length = max(s.max_sequence_length, len(ids))
        # what the reference model sees: token ids and image, in row order
        for part in (row["id"] or "", row["chosen_input_ids"], row["rejected_input_ids"]):
            self.digest.update(json.dumps(part).encode())
        self.digest.update(hashlib.sha256(row["image"]).digest())


def _features():
    import datasets

    ids = datasets.Sequence(datasets.Value("int32"))
    mask = datasets.Sequence(datasets.Value("int8"))
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Value("binary"),
            "chosen_input_ids": ids,
            "rejected_input_ids": ids,
            "chosen_labels_start": datasets.Value("int32"),
            "rejected_labels_start": datasets.Value("int32"),
            "chosen_changed": mask,
            "rejected_changed": mask,
            "num_segments": datasets.Value("int32"),
            "pair_index": datasets.Value("int64"),
        }
    )


def _generate(job: _Job) -> Iterator[dict[str, Any]]:
    yield from job.rows()


def prepare(
    input_path: str | Path,
    output: str | Path,
    processor,
    *,
    processor_name: str | None = None,
    gamma: float = 5.0,
    alignment: str = "paper",
    kinds: tuple[str, ...] = CHANGE_KINDS,
    max_length: int | None = None,
    skip_bad: bool = False,
    input_format: str | None = None,
    progress: bool | None = None,
) -> PrepareSummary:
    """Encode every correction in ``input_path`` for ``processor`` and save to ``output``.

    ``gamma`` (a positive number) is only recorded: the data hold 0/1 "changed" masks and
    training applies its own ``TrainConfig.gamma`` (warning when it differs from this one).
    Bad rows raise :class:`InputError`, or are skipped and counted by reason with
    ``skip_bad``. ``output`` is checked before any work (:func:`check_output`): an existing
    prepared dataset there is replaced only once the new one is complete, in two renames
    (:func:`_move_into_place`); any other non-empty folder, a symbolic link or the current
    folder is refused.
    """
    import datasets

    if alignment not in ALIGNMENTS:
        raise InputError(
            f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}", field="--alignment"
        )
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma > 0):
        raise InputError(f"must be a positive number, got {gamma!r}", field="--gamma", reason="usage")
    bad_kinds = [k for k in kinds if k not in CHANGE_KINDS]
    if bad_kinds or not kinds:
        raise InputError(f"change kinds must be some of {', '.join(CHANGE_KINDS)}", field="--kinds")
    start_time = time.perf_counter()
    input_path = resolve_input(input_path)
    shown = str(output)  # as the user wrote it, for the summary
    output = check_output(output, input_path)
    fmt = input_format or sniff_format(input_path)
    check_chat_template(processor, processor_name)
    if alignment == "paper" and not has_offsets(processor.tokenizer):
        raise no_offsets_error(processor, processor_name)  # before any row: not a row to skip
    job = _Job(input_path, fmt, processor, alignment, kinds, max_length, skip_bad, progress)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.staging-{uuid.uuid4().hex[:8]}"
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own bar counts rows
    try:
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.cache-") as cache:
            try:
                ds = datasets.Dataset.from_generator(
                    _generate,
                    features=_features(),
                    gen_kwargs={"job": job},
                    cache_dir=cache,
                    # a fresh cache folder and a fresh id: never reuse an earlier run's rows
                    fingerprint=uuid.uuid4().hex,
                )
            except Exception as err:
                if job.failure is not None:
                    raise job.failure from None
                # datasets refuses to build an empty split (a ValueError): report why it is
                # empty instead; anything else is a real error
                empty = job.summary.rows_written == 0 and isinstance(err, ValueError)
                if job.error is None and not empty:
                    raise
            if job.failure is not None:
                raise job.failure
            if job.error is not None:
                raise job.error
            if job.summary.rows_written == 0:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(job.skipped.items()))
                raise InputError(
                    "no usable rows" + (f" (skipped {reasons})" if reasons else " (the input is empty)"),
                    path=str(input_path),
                    reason="no_rows",
                )
            ds.save_to_disk(str(staging))
            del ds
        summary = _finish(job, shown, start_time)
        meta = {
            "format_version": FORMAT_VERSION,
            "processor": processor_name
            or getattr(processor, "name_or_path", None)
            or type(processor).__name__,
            "processor_class": type(processor).__name__,
            "image_token": image_token(processor),
            "alignment": alignment,
            "change_kinds": list(kinds),
            "max_length": max_length,
            "gamma": gamma,
            "source": str(input_path),
            "source_format": fmt,
            "fingerprint": job.digest.hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "summary": summary.to_dict(),
        }
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _move_into_place(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if was_enabled:
            datasets.enable_progress_bars()
    return summary


def check_output(output: str | Path, input_path: Path | None = None) -> Path:
    """The absolute output folder, checked before any work: a new path, an empty folder or a
    prepared dataset (which is replaced); never a symbolic link, the current folder or one
    above it, a folder holding the input, or anything else that exists."""
    given = Path(output)

    def refuse(message: str) -> InputError:
        return InputError(message, path=str(given), field="OUT", reason="output_exists")

    if given.is_symlink():
        raise refuse(f"is a symbolic link (to {os.readlink(given)}); give the folder itself or a new name")
    out = Path(os.path.abspath(given))  # "." and ".." resolved, so the folder has a name
    real, cwd = out.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise refuse("is the current folder or holds it; give a new folder name for the prepared dataset")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / METADATA_FILE).is_file())):
        raise refuse("exists and is not a prepared dataset; choose a new or empty folder")
    if input_path is not None and out.exists():
        source = Path(input_path).resolve()
        if source == real or real in source.parents:
            raise refuse(f"holds the input {input_path}, which replacing it would delete")
    return out


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename the finished ``staging`` folder to ``output``. An existing ``output`` (checked
    by :func:`check_output`: a prepared dataset or an empty folder) is first renamed aside
    and put back if the second rename fails or is interrupted, so there is no moment when
    an interrupt loses both the old and the new dataset; it is deleted only after."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        output.rename(old)
        staging.rename(output)
    except BaseException:
        if old.exists() and not output.exists():
            old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _finish(job: _Job, output: str, start_time: float) -> PrepareSummary:
    s = job.summary
    s.skipped_reasons = dict(sorted(job.skipped.items()))
    s.rows_skipped = sum(job.skipped.values())
    s.rows_read = s.rows_written + s.rows_skipped
    s.mean_changed_segments = round(job.segments / s.rows_written, 4) if s.rows_written else 0.0
    s.changed_token_share = round(s.changed_tokens / s.answer_tokens, 4) if s.answer_tokens else 0.0
    s.seconds = round(time.perf_counter() - start_time, 3)
    s.output = output
    return s


def load_prepared(path: str | Path):
    """``(dataset, metadata)`` of a folder written by :func:`prepare` (dataset memory-mapped)."""
    import datasets

    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise InputError(
            f"not a prepared dataset (no {METADATA_FILE}); make one with `rlhfv data prepare`",
            path=str(path),
            reason="not_prepared",
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"prepared with format version {meta.get('format_version')}, this rlhfv reads {FORMAT_VERSION}; prepare again",
            path=str(path),
            reason="not_prepared",
        )
    return datasets.load_from_disk(str(path)), meta
