"""End to end in headless Chromium: log in, correct two segments, submit, export.

The server is the real ``rlhfv annotate serve`` in a subprocess on 127.0.0.1 and a
free port; tasks and accounts are made with the CLI. Takes the README's screenshots;
with RLHFV_UPDATE_SCREENSHOTS=1 they are written to docs/img/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, update
from sqlalchemy import select as sql_select

from rlhfv.annotate.db import Assignment, AuthSession, Database, Submission, User
from rlhfv.data.io import read_jsonl
from tests.annotate.conftest import (
    ANSWERS,
    APPLES_CORRECTED,
    APPLES_SEGMENTS,
    IMAGES,
    PASSWORD,
    REPO,
    ServerProcess,
    cli,
)

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
EVIL = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1"> a cat & <b>dog</b>'

# select [start, end) of the answer, as a user's mouse would: a DOM Range over its text
SELECT_JS = """([start, end]) => {
  const box = document.getElementById('answer');
  const at = (off) => {
    for (const span of box.children) {
      const s = Number(span.dataset.start), node = span.firstChild;
      if (node && off >= s && off <= s + node.data.length) return [node, off - s];
    }
    throw new Error('offset ' + off);
  };
  const range = document.createRange();
  range.setStart(...at(start));
  range.setEnd(...at(end));
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}"""


def start_server(home: Path, tasks: list[tuple[str, str, str]], users: dict[str, str]) -> ServerProcess:
    """``rlhfv annotate serve`` over ``(id, question, answer)`` tasks and ``{name: role}`` accounts."""
    gen = home.parent / "gen.jsonl"
    rows = [
        {"id": task_id, "image": str(IMAGES[i]), "question": q, "answer": a}
        for i, (task_id, q, a) in enumerate(tasks)
    ]
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli("import", str(gen), home=home).returncode == 0
    for name, role in users.items():
        res = cli("user", "add", name, "--role", role, stdin=PASSWORD + "\n", home=home)
        assert res.returncode == 0, res.stderr
    return ServerProcess(home).wait_ready()


@pytest.fixture
def server(tmp_path: Path):
    home = tmp_path / "home"
    tasks = [("apples", *ANSWERS[0]), ("evil", EVIL, EVIL)]
    proc = start_server(home, tasks, {"ann": "annotator", "rita": "reviewer"})
    yield proc, home
    proc.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_until(page, js: str, timeout: float = 15.0) -> None:  # noqa: ANN001
    """Poll a JS predicate with ``page.evaluate`` (``wait_for_function`` evals a string,
    which the app's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        time.sleep(0.05)


def select(page, start: int, end: int, answer: str = ANSWERS[0][1]) -> None:  # noqa: ANN001
    """Select ``[start, end)`` of the answer and wait for the page to take it: the
    ``selectionchange`` event comes later and would overwrite a correction typed before it."""
    page.evaluate(SELECT_JS, [start, end])
    text = answer[start:end]
    wait_until(page, f"document.getElementById('selected').textContent === {json.dumps(text)}")


def login(page, url: str, name: str) -> None:  # noqa: ANN001
    page.goto(url)
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")


def test_annotate_two_segments_submit_and_export(server, browser, tmp_path: Path) -> None:
    proc, home = server
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))
    # console errors, except the expected 401 of the "am I logged in?" probe before login
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    login(page, proc.url, "ann")
    answer = ANSWERS[0][1]  # "There are two red apples and a knife on the wooden table."
    wait_until(page, "document.getElementById('answer').textContent.includes('apples')")
    wait_until(page, "document.getElementById('task-image').naturalWidth > 0")
    assert page.text_content("#progress") == "done 0 · remaining 2"

    # segment 1: mouse-style selection, typed correction, category by click, Enter adds it
    two = answer.index("two")
    select(page, two, two + 3)
    assert page.text_content("#selected") == "two"
    page.fill("#correction", "one")
    page.click("#categories button[data-category=number]")
    page.press("#correction", "Enter")
    # segment 2: category by keyboard (Alt+4 = attribute in the text box)
    red = answer.index("red")
    select(page, red, red + 3)
    page.fill("#correction", "green")
    page.press("#correction", "Alt+4")
    page.press("#correction", "Enter")
    # a third edit, then undo it with the keyboard
    knife = answer.index("knife")
    select(page, knife, knife + 5)
    page.fill("#correction", "spoon")
    page.press("#correction", "Enter")
    assert page.locator("#edit-list li").count() == 3
    page.press("#correction", "Escape")
    page.keyboard.press("u")
    assert page.locator("#edit-list li").count() == 2

    # live diff: original with deletions, corrected with insertions
    assert page.locator("#diff del").all_text_contents() == ["two", "red"]
    assert page.locator("#diff ins").all_text_contents() == ["one", "green"]
    corrected_row = page.locator("#diff .row").nth(1).text_content()
    assert "There are one1:number green2:attribute apples" in corrected_row

    # the image zooms
    before = page.get_attribute("#task-image", "style")
    page.click("#zoom-in")
    assert page.get_attribute("#task-image", "style") != before

    # the README's screenshots are refreshed on request only, so a test run leaves the tree clean
    shots = REPO / "docs" / "img" if os.environ.get("RLHFV_UPDATE_SCREENSHOTS") else tmp_path / "img"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "annotate.png"))

    page.keyboard.press("Control+Enter")
    # the next task is the one with HTML in its text: shown as text, never run
    wait_until(page, "document.getElementById('question').textContent.includes('<script>')")
    assert page.text_content("#progress") == "done 1 · remaining 1"
    assert page.text_content("#status") == "Saved. Next task: evil."  # not wiped by loading it
    assert page.text_content("#answer") == EVIL and page.text_content("#question") == EVIL
    assert page.locator("#answer img, #answer script, #answer b, #question img").count() == 0
    assert page.evaluate("window.__xss") is None

    # a narrow window: one column, nothing wider than the window
    page.set_viewport_size({"width": 420, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    page.screenshot(path=str(shots / "annotate-narrow.png"), full_page=True)
    assert errors == []

    out = tmp_path / "export.jsonl"
    res = cli("export", str(out), home=home)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert {k: rec[k] for k in ("id", "question", "original", "corrected", "annotator")} == {
        "id": "apples",
        "question": ANSWERS[0][0],
        "original": answer,
        "corrected": APPLES_CORRECTED,
        "annotator": "ann",
    }
    assert rec["segments"] == APPLES_SEGMENTS
    assert (out.parent / rec["image"]).read_bytes() == IMAGES[0].read_bytes()  # relative to the file
    # and the data layer reads it back as that one Correction
    (back,) = list(read_jsonl(out))
    assert back.corrected == rec["corrected"] and [s.category for s in back.segments] == [
        "number",
        "attribute",
    ]
    assert [s.original_text(back.original) for s in back.segments] == ["two", "red"]
    assert [s.corrected_text(back.corrected) for s in back.segments] == ["one", "green"]

    # a reviewer sees the diff and accepts it
    review = browser.new_page(viewport={"width": 1280, "height": 800})
    login(review, proc.url, "rita")
    review.click("#review-queue button")
    wait_until(review, "document.querySelectorAll('#review-diff ins').length === 2")
    review.wait_for_load_state("networkidle")
    review.screenshot(path=str(shots / "annotate-review.png"))
    review.click("#review-accept")
    wait_until(review, "document.getElementById('review-status').textContent === 'Accepted.'")
    res = cli("export", str(out), "--accepted-only", home=home)
    assert json.loads(out.read_text())["source"]["review_status"] == "accepted"

    # the last task, marked correct: "Saved." stays in sight over "No tasks left"
    page.click("#mark-correct")
    page.keyboard.press("Control+Enter")
    wait_until(page, "!document.getElementById('done-view').hidden")
    assert page.text_content("#done-status") == "Saved."


def test_changed_edits_after_a_lost_answer_get_a_new_key(server, browser) -> None:
    """The server saves a submit but its answer is lost; the annotator then changes the
    edits. The next submit must not reuse the key, or the server would take it for the
    first one and the change would be silently dropped."""
    proc, _home = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # the retry back-off (0.5 s .. 8 s), cut short
    page.add_init_script(
        "{ const st = window.setTimeout; window.setTimeout = (f, ms, ...a) => st(f, Math.min(ms, 20), ...a); }"
    )
    keys: list[str] = []

    def lose_the_answer(route) -> None:  # noqa: ANN001
        keys.append(json.loads(route.request.post_data)["idempotency_key"])
        route.fetch()  # the server records it...
        route.fulfill(status=503, body="{}")  # ...and the browser never hears

    page.route("**/submit", lose_the_answer)
    login(page, proc.url, "ann")
    wait_until(page, "document.getElementById('answer').textContent.includes('apples')")
    answer = ANSWERS[0][1]
    for word, text, category in [("two", "one", "number"), ("red", "green", "attribute")]:
        at = answer.index(word)
        select(page, at, at + len(word))
        page.fill("#correction", text)
        page.click(f"#categories button[data-category={category}]")
        page.press("#correction", "Enter")
        if word == "two":
            page.click("#submit")
            wait_until(page, "document.getElementById('status').textContent.startsWith('Could not save')")
            page.unroute("**/submit")
            page.on(
                "request",
                lambda r: (
                    keys.append(json.loads(r.post_data)["idempotency_key"])
                    if r.url.endswith("/submit")
                    else None
                ),
            )
    assert len(keys) == 5 and len(set(keys)) == 1  # the automatic retries share the key
    page.click("#submit")
    # a new key: the server says the task was already submitted, nothing is lost silently
    wait_until(page, "document.getElementById('status').classList.contains('bad')")
    assert "is submitted" in page.text_content("#status") and len(keys) == 6 and keys[5] != keys[0]
    # undo is an edit too
    page.evaluate("state.pendingKey = 'stale-key'")
    page.keyboard.press("u")
    assert page.evaluate("state.pendingKey") is None


LINES = "There are two red apples.\nA knife lies on the table."


def test_work_survives_a_refresh_and_a_new_login_and_a_lost_lock_is_shown(tmp_path: Path, browser) -> None:
    """Corrections keep the answer's line breaks; unsubmitted work survives a page refresh
    and an expired session; a lock lost to another annotator is said, and not submitted into."""
    home = tmp_path / "home"
    tasks = [("lines", "Q?", LINES), ("apples", *ANSWERS[0])]
    proc = start_server(home, tasks, {"ann": "annotator", "bob": "annotator"})
    db = Database(f"sqlite:///{home / 'annotate.db'}")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        # the lock heartbeat (every 5 s or more), cut short
        page.add_init_script(
            "{ const si = window.setInterval; window.setInterval = (f, ms, ...a) => si(f, Math.min(ms, 100), ...a); }"
        )
        login(page, proc.url, "ann")
        ready = "document.getElementById('answer').textContent.includes('apples') && !document.getElementById('task-view').hidden"
        wait_until(page, ready)

        # a selection across the line break: the box keeps it, and so does the correction
        start, end = LINES.index("red"), LINES.index("knife") + len("knife")
        select(page, start, end, LINES)
        assert page.input_value("#correction") == "red apples.\nA knife"
        page.fill("#correction", "green apples.\nA knife")
        page.click("#categories button[data-category=attribute]")
        page.press("#correction", "Enter")
        assert page.locator("#diff ins").all_text_contents() == ["green apples.\nA knife"]

        # a refresh keeps the unsubmitted correction
        page.reload()
        wait_until(page, ready)
        assert page.locator("#edit-list li").count() == 1
        assert page.text_content("#status").startswith("Restored your unsubmitted work")

        # the session ends: the next request (the heartbeat) asks to log in again, and the
        # work is there after it
        with db.write() as s:
            s.execute(update(AuthSession).values(expires_at=0))
        wait_until(page, "!document.getElementById('login-view').hidden")
        assert "log in again" in page.text_content("#login-error")
        page.fill("#login-name", "ann")
        page.fill("#login-password", PASSWORD)
        page.click("#login-form button[type=submit]")
        wait_until(page, ready + " && document.querySelectorAll('#edit-list li').length === 1")
        page.click("#submit")
        wait_until(
            page, "document.getElementById('answer').textContent.startsWith('There are two red apples and')"
        )
        with db.read() as s:
            assert s.scalar(sql_select(Submission.corrected)) == LINES.replace("red", "green")
        assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('rlhfv-draft:'))") == []

        # the next task's lock goes to bob (as his claim of it, expired, would): the page says so
        two = ANSWERS[0][1].index("two")
        select(page, two, two + 3)
        page.fill("#correction", "one")
        page.press("#correction", "Alt+3")
        page.press("#correction", "Enter")
        assert page.locator("#edit-list li").count() == 1
        with db.write() as s:
            bob = s.scalar(sql_select(User.id).where(User.name == "bob"))
            s.execute(
                update(Assignment)
                .where(Assignment.status == "locked")
                .values(annotator_id=bob, expires_at=time.time() + 600)
            )
        wait_until(
            page, "document.getElementById('status').textContent.startsWith('You no longer hold this task')"
        )
        assert page.is_disabled("#submit")
        page.keyboard.press("Control+Enter")
        time.sleep(0.3)
        assert page.text_content("#status").startswith("You no longer hold this task")
        with db.read() as s:
            assert s.scalar(sql_select(func.count()).select_from(Submission)) == 1
    finally:
        db.dispose()
        proc.stop()
