"""``rlhfv demo --quick``: every stage's outputs are well formed."""

from __future__ import annotations

import json
import math

import pytest

from rlhfv.cli import main
from rlhfv.scenes.metrics import METRIC_KEYS


def test_bad_arguments_are_one_line_errors(capsys, tmp_path):
    assert main(["demo", "--quick", "--corrections", "0", "--output", str(tmp_path)]) == 2
    assert "corrections" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_outputs(tmp_path, caplog):
    from transformers import AutoModelForImageTextToText

    from rlhfv.data import load_prepared, read_jsonl

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output", str(out), "--corrections", "48", "--eval-scenes", "24"]) == 0

    # vanilla DPO's gamma 1 on data prepared for DDPO is the demo's design, not a mismatch to report
    assert not [r for r in caplog.records if "prepared data records gamma" in r.getMessage()]

    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["sft", "ddpo", "dpo"]
    for row in rows:
        assert set(row) == {"model", *METRIC_KEYS}
        for key in METRIC_KEYS:
            value = row[key]
            assert value is None or (isinstance(value, float) and not math.isinf(value)), (key, value)
            if value is not None and key != "mean_words":
                assert 0.0 <= value <= 1.0
        assert row["mean_words"] > 0

    corrections = list(read_jsonl(out / "feedback" / "corrections.jsonl"))
    assert len(corrections) == 48
    for c in corrections:
        assert c.original != c.corrected and c.segments
        assert all(s.category in ("object", "attribute", "number", "position") for s in c.segments)
    dataset, meta = load_prepared(out / "feedback" / "prepared")
    assert len(dataset) == 48
    assert any(sum(r) > 0 for r in dataset["chosen_changed"])

    for name in ("ddpo", "dpo"):
        model = AutoModelForImageTextToText.from_pretrained(out / name)
        assert type(model).__name__ == "LlavaForConditionalGeneration"
        assert (out / name / "metrics.jsonl").read_text().strip()

    assert (out / "rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.html").read_text()
    assert report.count("<tr>") > 10 and 'class="seg-o"' in report and "results" in report.lower()
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 24 and {"sft", "ddpo", "dpo"} <= set(answers[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings_s"]) == {"sft", "feedback", "prepare", "train", "evaluate"}
    kinds = summary["hallucination_kinds"]
    assert set(kinds) == {"sft", "ddpo", "dpo"}
    for model_kinds in kinds.values():
        assert model_kinds["answers"] == 24
        for kind in ("partner", "last_claim", "colour_of_missed"):
            assert 0 <= model_kinds[kind] <= model_kinds["hallucinated"]
        assert 0 <= model_kinds["same_count_answers"] <= 24

    # the demo owns its output folder: running it again replaces the last run
    assert main(["demo", "--quick", "--output", str(out), "--corrections", "16", "--eval-scenes", "8"]) == 0
    assert len((out / "answers.jsonl").read_text().splitlines()) == 8
