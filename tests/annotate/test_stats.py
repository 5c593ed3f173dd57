"""Statistics against hand-worked numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfv.annotate import service
from rlhfv.annotate.edits import Edit
from rlhfv.annotate.service import CurrentCorrection
from rlhfv.annotate.stats import annotation_stats, changed_places, cohen_kappa, f1, format_stats
from tests.annotate.conftest import make_env


def seg(os_: int, oe: int, cat: str) -> dict:
    return {
        "kind": "replace",
        "original_start": os_,
        "original_end": oe,
        "corrected_start": os_,
        "corrected_end": oe,
        "category": cat,
    }


def rec(
    task: int, slot: int, who: str, segments: list[dict], n: int = 2, t0: float = 0.0, t1: float = 60.0
) -> CurrentCorrection:
    return CurrentCorrection(
        task_id=task, external_id=f"t{task}", slot=slot, n_annotations=n, image_name="x.jpg", question="q",
        answer="a b c d e f g h", source={}, annotator=who, status="submitted", corrected="c" if segments else "a",
        is_correct=not segments, segments=segments, started_at=t0, submitted_at=t1,
    )  # fmt: skip


def test_changed_places_grid() -> None:
    # chars 2,3 -> points 5,7 and the gap between them 6; an insertion at 4 -> point 8
    assert changed_places([seg(2, 4, "object")]) == {5, 6, 7}
    assert changed_places([{"original_start": 4, "original_end": 4}]) == {8}


def test_kappa_hand_worked() -> None:
    # A: 1 1 0 0, B: 1 0 0 0 -> p_o = 3/4, pA1 = 1/2, pB1 = 1/4, p_e = 1/8 + 3/8 = 1/2, kappa = 1/2
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)
    assert cohen_kappa([True, True], [True, True]) is None  # chance agreement is 1
    assert cohen_kappa([], []) is None


def test_agreement_and_counts_hand_worked() -> None:
    current = [
        # task 1: both change chars [2,4); A says object, B says attribute -> F1 1, category 0/1
        rec(1, 0, "ann", [seg(2, 4, "object")]),
        rec(1, 1, "bob", [seg(2, 4, "attribute")]),
        # task 2: A changes [0,2) (points 1,2,3), B changes [1,3) (points 3,4,5) -> F1 = 2*1/6 = 1/3
        rec(2, 0, "ann", [seg(0, 2, "number")], t0=100, t1=130),
        rec(2, 1, "bob", [seg(1, 3, "number")]),
        # task 3: A marks correct, B changes -> F1 0
        rec(3, 0, "ann", []),
        rec(3, 1, "bob", [seg(6, 7, "object")]),
        # a single-annotated task: counted, but not in agreement
        rec(4, 0, "cy", [seg(0, 1, "action"), seg(4, 5, "object")], n=1, t0=0, t1=7200),
    ]
    stats = annotation_stats(current)
    ag = stats["agreement"]
    assert ag["pairs"] == 3
    assert ag["span_f1"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert ag["category_agreement"] == pytest.approx(1 / 2)  # overlapping pairs: (obj, attr), (num, num)
    # needed correction: A 1 1 0, B 1 1 1 -> p_o 2/3, p_e = 2/3*1 + 1/3*0 = 2/3 -> kappa 0
    assert ag["hallucination_kappa"] == pytest.approx(0.0)
    assert ag["exact_match"] == pytest.approx(2 / 3)  # corrected "c" == "c" twice, "a" vs "c" once
    assert stats["categories"] == {
        "object": 3,
        "position": 0,
        "number": 2,
        "attribute": 1,
        "action": 1,
        "other": 0,
    }
    assert stats["answers"] == 7 and stats["marked_correct"] == 1 and stats["segments"] == 7
    assert stats["segments_per_corrected_answer"] == pytest.approx(7 / 6)
    assert stats["segments_per_answer_histogram"] == {"0": 1, "1": 5, "2": 1}
    ann = stats["per_annotator"]["ann"]
    # ann: tasks 60 s, 30 s, 60 s -> median 60; first start 0, last submit 130 s -> 3 / (130/3600) per hour
    assert ann["submitted"] == 3 and ann["median_seconds_per_task"] == 60
    assert ann["tasks_per_hour"] == pytest.approx(3 / (130 / 3600))
    assert stats["per_annotator"]["cy"]["tasks_per_hour"] == pytest.approx(0.5)
    text = format_stats(stats)
    assert "object" in text and "agreement on 3 double-annotated tasks" in text


def test_f1() -> None:
    assert f1(set(), set()) == 1.0
    assert f1({1, 2}, {2, 3}) == pytest.approx(0.5)


def test_task_progress_on_a_known_database(db_url: str, tmp_path: Path) -> None:
    # 6 tasks; with share 0.55 only gen-0001 (task 2, hash point 0.517) has two slots
    env = make_env(db_url, tmp_path, n_tasks=6, double_share=0.55)
    ann, bob, ada, rita = (env.user(n) for n in ("ann", "bob", "ada", "rita"))

    def annotate(user: service.CurrentUser, key: str) -> int:
        aid = service.claim_next(env.db, user)
        service.submit(env.db, user, aid, key, [Edit(0, 5, "Here", "object")], False)
        return aid

    annotate(ann, "k-t1")  # task 1: its one slot submitted -> completed
    annotate(ann, "k-t2")  # task 2: slot 0 submitted, slot 1 free -> still open
    t3 = annotate(ann, "k-t3")
    service.review(env.db, rita, t3, accept=False, comment="look again")  # task 3: back to ann
    expected = {"imported": 6, "completed": 1, "in_progress": 1, "open": 4}
    assert service.task_progress(env.db) == expected
    service.claim_next(env.db, bob)  # task 2, slot 1: locked -> in progress
    service.claim_next(env.db, ada, lock_seconds=-1)  # task 4: a lock that ran out -> open
    expected = {"imported": 6, "completed": 1, "in_progress": 2, "open": 3}
    assert service.task_progress(env.db) == expected
    stats = annotation_stats(service.current_corrections(env.db), service.task_progress(env.db))
    assert stats["tasks"] == expected and stats["per_annotator"]["ann"]["submitted"] == 2
    assert format_stats(stats).splitlines()[0] == "tasks: 6 imported, 1 completed, 2 in progress, 3 open"
    assert env.client("ada").get("/api/admin/stats").json()["tasks"] == expected
    env.db.dispose()


def test_task_progress_of_an_empty_database(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path, n_tasks=0)
    assert service.task_progress(env.db) == {"imported": 0, "completed": 0, "in_progress": 0, "open": 0}
    env.db.dispose()
