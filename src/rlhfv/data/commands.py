"""``rlhfv data``: ``prepare`` (corrections -> prepared preference dataset) and ``show``."""

from __future__ import annotations

import argparse
import json
import math
import sys

from rlhfv.data.io import FORMATS


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default=None, help="input format (default: sniffed)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rlhfv data prepare`` and ``rlhfv data show``."""
    data = subparsers.add_parser(
        "data",
        help="prepare dense preference data from corrections; show a record",
        description="Turn fine-grained corrections into dense preference data, or look at one record.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    p = sub.add_parser(
        "prepare",
        help="encode corrections for a model's processor and save a prepared dataset",
        description=(
            "Read corrections (JSONL, parquet, RLHF-V-Dataset or RLAIF-V-Dataset layout), find the changed "
            "segments, encode prompt (with the image placeholders expanded by the processor) and both answers, "
            "mark the changed tokens, and save a datasets folder plus rlhfv_prepared.json. "
            "Try it: rlhfv data prepare example OUT --processor tiny-llava"
        ),
    )
    p.add_argument(
        "input",
        metavar="IN",
        help="input file or folder, or 'example' (the small example shipped with rlhfv; a file or folder "
        "named example in the current directory is used instead when there is one, --example never does)",
    )
    p.add_argument(
        "output",
        metavar="OUT",
        nargs="?",
        help="output folder (a prepared dataset already there is replaced)",
    )
    p.add_argument(
        "--example", action="store_true", help="use the shipped example as input (then give only OUT)"
    )
    p.add_argument(
        "--processor",
        required=True,
        help="processor folder (save_pretrained), hub id, or tiny-llava | tiny-llava-next | tiny-qwen2-vl | tiny-idefics3",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=5.0,
        help="weight of changed tokens you mean to train with (a positive number; paper: 5): only recorded in "
        "rlhfv_prepared.json, the data hold 0/1 changed-token masks; training uses its own gamma "
        "(--set gamma=...) and warns when it differs from this one (default: %(default)g)",
    )
    p.add_argument(
        "--alignment",
        choices=("paper", "reference"),
        default="paper",
        help="how changed tokens are found: paper: word-level segments mapped to tokens; reference: the "
        "RLHF-V code's token-id diff (default: %(default)s)",
    )
    p.add_argument(
        "--kinds",
        default="replace,insert,delete",
        help="change kinds that count as changed, comma-separated (paper alignment; the reference code counts "
        "replace only) (default: %(default)s)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest prompt + answer in tokens; longer rows are bad input",
    )
    _add_format_option(p)
    p.add_argument(
        "--skip-bad", action="store_true", help="skip bad rows and count them by reason instead of stopping"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_prepare)

    s = sub.add_parser(
        "show",
        help="print one correction with its changed segments highlighted",
        description=(
            "Print one record: [-removed-]{+added+} (coloured on a terminal), with segment categories; "
            "for a prepared dataset, its answer tokens with the changed (gamma-weighted) ones in [brackets]."
        ),
    )
    s.add_argument(
        "file",
        metavar="FILE",
        help="corrections file or folder (any format prepare reads), or 'example' (the shipped example, "
        "unless a file or folder named example exists in the current directory)",
    )
    s.add_argument("--index", type=int, default=0, help="which record (0-based, in file order)")
    _add_format_option(s)
    s.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="ANSI colours (auto: when stdout is a terminal)",
    )
    s.set_defaults(func=_show)


def _prepare(args: argparse.Namespace) -> int:
    from rlhfv.data.io import sniff_format
    from rlhfv.data.prepare import EXAMPLE_PATH, TINY_MODELS, load_processor, prepare, resolve_input
    from rlhfv.data.pretrained import resolve_source
    from rlhfv.errors import InputError

    source, output = args.input, args.output
    if args.example:
        if output is not None:
            raise InputError("with --example give only OUT", field="IN OUT", reason="usage")
        source, output = str(EXAMPLE_PATH), source  # the shipped one, even beside a local ./example
    if output is None:
        raise InputError("give IN and OUT (or --example OUT)", field="OUT", reason="usage")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not (math.isfinite(args.gamma) and args.gamma > 0):
        raise InputError(f"must be a positive number, got {args.gamma!r}", field="--gamma", reason="usage")
    if args.max_length is not None and args.max_length <= 0:
        raise InputError("must be a positive number of tokens", field="--max-length", reason="usage")
    if args.format is None:  # a missing or unknown input fails before a processor loads
        sniff_format(resolve_input(source))
    processor = load_processor(args.processor)
    # recorded for `rlhfv data show`: a local folder by its absolute path, found from anywhere
    name = args.processor
    if name not in TINY_MODELS:
        name = resolve_source(name, field="--processor", what="processor")
    summary = prepare(
        source,
        output,
        processor,
        processor_name=name,
        gamma=args.gamma,
        alignment=args.alignment,
        kinds=kinds,
        max_length=args.max_length,
        skip_bad=args.skip_bad,
        input_format=args.format,
        progress=None if not args.json else False,
    )
    if args.json:
        print(json.dumps(summary.to_dict()))
        return 0
    print(f"prepared {summary.rows_written} of {summary.rows_read} rows -> {summary.output}")
    if summary.rows_skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary.skipped_reasons.items())
        print(f"skipped {summary.rows_skipped} ({reasons})")
    print(
        f"changed segments per pair: {summary.mean_changed_segments:.2f}; "
        f"changed answer tokens: {100 * summary.changed_token_share:.1f}% of {summary.answer_tokens}; "
        f"longest sequence: {summary.max_sequence_length} tokens; {summary.seconds:.1f} s"
    )
    return 0


_COLOURS = {"del": "\033[31;9m", "ins": "\033[32;1m", "cat": "\033[2m", "end": "\033[0m"}


def render_diff(original: str, corrected: str, segments, *, color: bool) -> str:
    """``original`` with each segment shown as ``[-old-]{+new+}`` (or red/green ANSI)."""
    out, pos = [], 0
    for seg in sorted(segments, key=lambda s: s.original_start):
        out.append(original[pos : seg.original_start])
        old, new = seg.original_text(original), seg.corrected_text(corrected)
        tag = f"<{seg.category}>" if seg.category else ""
        if color:
            out.append(
                (f"{_COLOURS['del']}{old}{_COLOURS['end']}" if old else "")
                + (f"{_COLOURS['ins']}{new}{_COLOURS['end']}" if new else "")
                + (f"{_COLOURS['cat']}{tag}{_COLOURS['end']}" if tag else "")
            )
        else:
            out.append((f"[-{old}-]" if old else "") + (f"{{+{new}+}}" if new else "") + tag)
        pos = seg.original_end
    out.append(original[pos:])
    return "".join(out)


def _show(args: argparse.Namespace) -> int:
    from rlhfv.data.diff import changed_segments
    from rlhfv.data.io import image_extension
    from rlhfv.data.prepare import METADATA_FILE, resolve_input
    from rlhfv.errors import InputError

    if args.index < 0:
        raise InputError("must be 0 or more", field="--index", reason="usage")
    path = resolve_input(args.file)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if (path / METADATA_FILE).is_file():
        return _show_prepared(path, args.index, color)
    row, c = _record_at(path, args.format, args.index)
    segments = c.segments if c.segments is not None else changed_segments(c.original, c.corrected)
    image = (
        f"{len(c.image)} bytes ({image_extension(c.image).lstrip('.')})"
        if isinstance(c.image, bytes)
        else c.image
    )
    print(f"record {args.index} (row {row}) of {path}" + (f", id {c.id}" if c.id else ""))
    print(f"image:     {image}")
    print(f"question:  {c.question}")
    if c.annotator:
        print(f"annotator: {c.annotator}")
    print(f"changes:   {render_diff(c.original, c.corrected, segments, color=color)}")
    source = "annotator" if c.segments is not None else "diff"
    print(f"segments:  {len(segments)} (from the {source})")
    for seg in segments:
        cat = f" [{seg.category}]" if seg.category else ""
        print(
            f"  {seg.kind:<7} {seg.original_text(c.original)!r} -> {seg.corrected_text(c.corrected)!r}{cat}"
        )
    return 0


def _record_at(path, fmt: str | None, index: int):
    """``(row, correction)`` of record ``index`` in file order, counting bad rows too.

    A bad row before it is passed over (one warning on stderr says how many); a bad row
    at ``index`` is the error itself, naming its row and field.
    """
    from rlhfv.data.io import read_corrections_with_rows
    from rlhfv.errors import InputError

    bad: list[InputError] = []  # filled by the reader, in order, between good records
    k, passed = 0, []
    for item in read_corrections_with_rows(path, format=fmt, on_error=bad.append):
        for err in bad:
            if k == index:
                raise err
            passed.append(err)
            k += 1
        bad.clear()
        if k == index:
            if passed:
                print(
                    f"rlhfv: warning: passed over {len(passed)} bad row(s) before it (first: {passed[0]})",
                    file=sys.stderr,
                )
            return item
        k += 1
    if index < k + len(bad):
        raise bad[index - k]
    raise InputError(f"has no record {index}", path=str(path), field="--index", reason="usage")


def render_tokens(tokens: list[str], changed: list[int], *, color: bool) -> str:
    """Tokens joined by spaces, changed ones as ``[token]`` (or green on a terminal)."""
    if color:
        return " ".join(
            f"{_COLOURS['ins']}{t}{_COLOURS['end']}" if c else t for t, c in zip(tokens, changed, strict=True)
        )
    return " ".join(f"[{t}]" if c else t for t, c in zip(tokens, changed, strict=True))


def _show_prepared(path, index: int, color: bool) -> int:
    """One prepared row: its answer tokens, the ones weighted gamma in brackets."""
    from rlhfv.data.prepare import load_prepared, load_processor
    from rlhfv.errors import InputError

    dataset, meta = load_prepared(path)
    if index >= dataset.num_rows:
        raise InputError(
            f"has no record {index} ({dataset.num_rows} rows)",
            path=str(path),
            field="--index",
            reason="usage",
        )
    row = dataset[index]
    tokenizer = load_processor(meta["processor"]).tokenizer
    print(f"prepared row {index} of {path}" + (f", id {row['id']}" if row["id"] else ""))
    print(
        f"processor: {meta['processor']}; alignment: {meta['alignment']}; kinds: {','.join(meta['change_kinds'])};"
        f" gamma (recorded; training uses its own): {meta['gamma']}"
    )
    for side in ("chosen", "rejected"):
        start, ids = row[f"{side}_labels_start"], row[f"{side}_input_ids"]
        tokens = tokenizer.convert_ids_to_tokens(ids[start:])
        changed = row[f"{side}_changed"][start:]
        print(f"{side + ':':<9} {render_tokens(tokens, changed, color=color)}")
        print(f"{'':<9} {sum(changed)} of {len(tokens)} answer tokens changed; prompt {start} tokens")
    return 0
