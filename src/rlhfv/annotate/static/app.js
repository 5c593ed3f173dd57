// rlhfv annotate: the browser side. Plain JS, no build step, no network beyond this server.
// Model text (question, answer, corrections) is only ever put in the page with
// textContent / createTextNode, never parsed as HTML.
// Offsets are Unicode code points of the original answer (Python's str indices), not
// UTF-16 units: the server validates and stores exactly these.
"use strict";

const $ = (id) => document.getElementById(id);
const CATEGORIES = ["object", "position", "number", "attribute", "action", "other"];

const state = {
  user: null,
  lockSeconds: 1800,
  task: null, // assignment view from the server
  chars: [], // the answer as code points
  edits: [], // {start, end, text, category}, kept sorted by start
  correct: false,
  history: [], // undo stack of {edits, correct}
  selection: null, // {start, end} in code points, or null
  category: null,
  pendingKey: null, // idempotency key of a submit not yet answered
  heartbeat: null,
  lockLost: false, // the task's lock went to someone else: nothing to submit into
  reviewing: null,
};

// ------------------------------------------------------------------ helpers

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function cpLen(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function slice(chars, a, b) {
  return chars.slice(a, b).join("");
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (res.status === 401 && path !== "/api/login") {
    // work in progress stays in its draft, restored when the task comes back after login
    showLogin(state.user ? "Your session has ended: log in again. Your unsubmitted corrections are kept." : "");
  }
  return { ok: res.ok, status: res.status, data };
}

function detail(res) {
  const d = res.data && res.data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d) && d.length) return d.map((x) => x.msg).join("; ");
  return `error ${res.status}`;
}

function setStatus(id, text, bad) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("bad", !!bad);
}

function showOnly(view) {
  for (const id of ["login-view", "task-view", "done-view", "review-view"]) {
    $(id).hidden = id !== view;
  }
}

// ------------------------------------------------------------------ drafts

// Corrections not yet submitted are kept in this browser (localStorage), per user and
// assignment, so a page refresh or an expired login loses nothing; a submit or a skip
// clears them, and drafts left behind are dropped after DRAFT_DAYS.
const DRAFT_PREFIX = "rlhfv-draft:";
const DRAFT_DAYS = 14;

function draftKey(assignmentId) {
  return `${DRAFT_PREFIX}${state.user ? state.user.name : ""}:${assignmentId}`;
}

function saveDraft() {
  if (!state.task || !state.user) return;
  const draft = {
    answer: state.task.answer, edits: state.edits, correct: state.correct,
    pendingKey: state.pendingKey, savedAt: Date.now(),
  };
  try {
    localStorage.setItem(draftKey(state.task.assignment_id), JSON.stringify(draft));
  } catch (_) {
    // storage full or disabled: the page works as before, without drafts
  }
}

// the draft of this task, if it is one of this answer with edits that still fit it
function loadDraft(task) {
  let d = null;
  try {
    d = JSON.parse(localStorage.getItem(draftKey(task.assignment_id)));
  } catch (_) {
    return null;
  }
  if (!d || d.answer !== task.answer || !Array.isArray(d.edits)) return null;
  const n = cpLen(task.answer);
  const fits = (e) => Number.isInteger(e.start) && Number.isInteger(e.end) && 0 <= e.start &&
    e.start <= e.end && e.end <= n && typeof e.text === "string" && CATEGORIES.includes(e.category);
  return d.edits.every(fits) ? d : null;
}

function clearDraft(assignmentId) {
  try {
    localStorage.removeItem(draftKey(assignmentId));
  } catch (_) {
    // nothing stored
  }
}

function pruneDrafts() {
  try {
    const old = Date.now() - DRAFT_DAYS * 86400 * 1000;
    for (const key of Object.keys(localStorage)) {
      if (!key.startsWith(DRAFT_PREFIX)) continue;
      let savedAt = 0;
      try {
        savedAt = JSON.parse(localStorage.getItem(key)).savedAt || 0;
      } catch (_) {
        // unreadable: drop it
      }
      if (savedAt < old) localStorage.removeItem(key);
    }
  } catch (_) {
    // no storage
  }
}

// ------------------------------------------------------------------ edits -> segments

// Same rule as the server (rlhfv.annotate.edits.apply_edits): sorted, non-overlapping.
function toSegments(chars, edits) {
  const segments = [];
  const out = [];
  let cursor = 0;
  let shift = 0;
  for (const e of [...edits].sort((a, b) => a.start - b.start || a.end - b.end)) {
    out.push(slice(chars, cursor, e.start), e.text);
    const kind = e.start === e.end ? "insert" : e.text === "" ? "delete" : "replace";
    const tl = cpLen(e.text);
    segments.push({
      kind, original_start: e.start, original_end: e.end,
      corrected_start: e.start + shift, corrected_end: e.start + shift + tl, category: e.category,
    });
    shift += tl - (e.end - e.start);
    cursor = e.end;
  }
  out.push(slice(chars, cursor, chars.length));
  return { corrected: out.join(""), segments };
}

function overlaps(sel, edits) {
  return edits.some((e) => {
    if (sel.start === sel.end || e.start === e.end) {
      // insertions may not touch another edit (the server rejects it as ambiguous)
      return sel.start <= e.end && e.start <= sel.end;
    }
    return sel.start < e.end && e.start < sel.end;
  });
}

// ------------------------------------------------------------------ rendering

function renderDiff(container, original, corrected, segments) {
  container.replaceChildren();
  const oChars = Array.from(original);
  const cChars = Array.from(corrected);
  const rowO = el("div", null, "row");
  const rowC = el("div", null, "row");
  rowO.append(el("span", "original", "label"));
  rowC.append(el("span", "corrected", "label"));
  let oCur = 0;
  let cCur = 0;
  const sorted = [...segments].sort((a, b) => a.original_start - b.original_start);
  sorted.forEach((s, i) => {
    rowO.append(document.createTextNode(slice(oChars, oCur, s.original_start)));
    rowC.append(document.createTextNode(slice(cChars, cCur, s.corrected_start)));
    if (s.original_end > s.original_start) rowO.append(el("del", slice(oChars, s.original_start, s.original_end)));
    if (s.corrected_end > s.corrected_start) rowC.append(el("ins", slice(cChars, s.corrected_start, s.corrected_end)));
    const tag = `${i + 1}:${s.category || "?"}`;
    rowO.append(el("sup", tag));
    rowC.append(el("sup", tag));
    oCur = s.original_end;
    cCur = s.corrected_end;
  });
  rowO.append(document.createTextNode(slice(oChars, oCur, oChars.length)));
  rowC.append(document.createTextNode(slice(cChars, cCur, cChars.length)));
  container.append(rowO, rowC);
}

function renderAnswer() {
  const box = $("answer");
  box.replaceChildren();
  let cursor = 0;
  const add = (start, end, cls) => {
    const span = el("span", slice(state.chars, start, end), cls);
    span.dataset.start = String(start);
    box.append(span);
  };
  for (const e of state.edits) {
    if (e.start > cursor) add(cursor, e.start);
    add(e.start, e.end, e.start === e.end ? "edited insert-point" : "edited");
    cursor = e.end;
  }
  if (cursor < state.chars.length || cursor === 0) add(cursor, state.chars.length);
}

function renderEdits() {
  const list = $("edit-list");
  list.replaceChildren();
  state.edits.forEach((e, i) => {
    const li = el("li");
    const orig = slice(state.chars, e.start, e.end);
    li.append(
      el("span", orig ? `“${orig}”` : "(insert)"),
      document.createTextNode(" → "),
      el("span", e.text ? `“${e.text}”` : "(delete)"),
      el("span", e.category, "cat"),
    );
    const rm = el("button", "remove");
    rm.type = "button";
    rm.addEventListener("click", () => change(() => state.edits.splice(i, 1)));
    li.append(rm);
    list.append(li);
  });
  if (state.correct) list.append(el("li", "Answer marked correct: no hallucination."));
}

function renderAll() {
  renderAnswer();
  renderEdits();
  const { corrected, segments } = toSegments(state.chars, state.edits);
  renderDiff($("diff"), state.task.answer, corrected, segments);
  $("mark-correct").setAttribute("aria-pressed", String(state.correct));
  $("undo").disabled = state.history.length === 0;
  renderSelection();
}

function renderSelection() {
  const s = state.selection;
  const node = $("selected");
  if (!s) node.textContent = "(nothing)";
  else if (s.start === s.end) node.textContent = `(insert at character ${s.start})`;
  else node.textContent = slice(state.chars, s.start, s.end);
}

function renderCategories() {
  const box = $("categories");
  box.replaceChildren();
  CATEGORIES.forEach((c, i) => {
    const b = el("button");
    b.type = "button";
    b.setAttribute("role", "radio");
    b.dataset.category = c;
    b.setAttribute("aria-checked", String(state.category === c));
    b.append(el("kbd", String(i + 1)), document.createTextNode(c));
    b.addEventListener("click", () => pickCategory(c));
    box.append(b);
  });
}

function pickCategory(c) {
  state.category = c;
  for (const b of $("categories").children) b.setAttribute("aria-checked", String(b.dataset.category === c));
}

async function refreshProgress() {
  const res = await api("GET", "/api/me");
  if (!res.ok) return;
  const p = res.data.progress;
  $("progress").textContent = `done ${p.done} · remaining ${p.remaining}` + (p.returned ? ` · returned ${p.returned}` : "");
}

// ------------------------------------------------------------------ undoable changes

// Every change (undo included) makes the next submit a new one: a key from an unanswered
// submit of other edits would make the server return that submit's record instead.
function change(fn) {
  state.history.push({ edits: state.edits.map((e) => ({ ...e })), correct: state.correct });
  state.pendingKey = null;
  fn();
  state.edits.sort((a, b) => a.start - b.start || a.end - b.end);
  saveDraft();
  renderAll();
}

function undo() {
  const prev = state.history.pop();
  if (!prev) return;
  state.pendingKey = null;
  state.edits = prev.edits;
  state.correct = prev.correct;
  saveDraft();
  renderAll();
  setStatus("status", `Undone: ${state.edits.length} correction(s).`);
}

function addEdit() {
  const sel = state.selection;
  const text = $("correction").value;
  if (!sel) return setStatus("status", "Select a span of the answer first.", true);
  if (!state.category) return setStatus("status", "Pick a category (1–6).", true);
  if (sel.start === sel.end && !text) return setStatus("status", "Type the text to insert.", true);
  if (slice(state.chars, sel.start, sel.end) === text) return setStatus("status", "The correction equals the original.", true);
  if (overlaps(sel, state.edits)) return setStatus("status", "This span overlaps a correction already made.", true);
  change(() => {
    state.edits.push({ start: sel.start, end: sel.end, text, category: state.category });
    state.correct = false;
  });
  state.selection = null;
  $("correction").value = "";
  window.getSelection().removeAllRanges();
  renderSelection();
  setStatus("status", `${state.edits.length} correction(s).`);
}

function toggleCorrect() {
  if (!state.correct && state.edits.length) {
    return setStatus("status", "Remove the corrections (undo) before marking the answer correct.", true);
  }
  change(() => (state.correct = !state.correct));
}

// ------------------------------------------------------------------ selection -> offsets

function pointToOffset(node, offset) {
  const box = $("answer");
  if (node === box) {
    const child = box.childNodes[offset];
    return child ? Number(child.dataset.start) : state.chars.length;
  }
  const span = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
  if (!span || span.parentElement !== box) return null;
  const base = Number(span.dataset.start);
  if (node.nodeType === Node.TEXT_NODE) return base + cpLen(node.data.slice(0, offset));
  return offset === 0 ? base : base + cpLen(span.textContent);
}

function onSelectionChange() {
  if (!state.task || $("task-view").hidden) return;
  const sel = window.getSelection();
  if (!sel.rangeCount) return;
  const range = sel.getRangeAt(0);
  const box = $("answer");
  if (!box.contains(range.startContainer) || !box.contains(range.endContainer)) return;
  let start = pointToOffset(range.startContainer, range.startOffset);
  let end = pointToOffset(range.endContainer, range.endOffset);
  if (start === null || end === null) return;
  if (start > end) [start, end] = [end, start];
  // a double-click also selects the space after the word: trim it
  while (end > start && /\s/.test(state.chars[end - 1])) end--;
  while (start < end && /\s/.test(state.chars[start])) start++;
  state.selection = { start, end };
  if (start !== end) $("correction").value = slice(state.chars, start, end);
  renderSelection();
}

// ------------------------------------------------------------------ zoomable image

function makeZoomable(viewport, img) {
  const v = { scale: 1, x: 0, y: 0, fit: 1 };
  // size and position, not a CSS transform: plain layout, repainted everywhere
  const apply = () => {
    img.style.width = `${img.naturalWidth * v.scale}px`;
    img.style.height = `${img.naturalHeight * v.scale}px`;
    img.style.left = `${v.x}px`;
    img.style.top = `${v.y}px`;
  };
  const fit = () => {
    const w = viewport.clientWidth;
    const h = viewport.clientHeight;
    if (!img.naturalWidth) return;
    v.fit = Math.min(w / img.naturalWidth, h / img.naturalHeight);
    v.scale = v.fit;
    v.x = (w - img.naturalWidth * v.scale) / 2;
    v.y = (h - img.naturalHeight * v.scale) / 2;
    apply();
  };
  const zoomAt = (factor, cx, cy) => {
    const s = Math.min(Math.max(v.scale * factor, v.fit * 0.5), v.fit * 16);
    v.x = cx - ((cx - v.x) * s) / v.scale;
    v.y = cy - ((cy - v.y) * s) / v.scale;
    v.scale = s;
    apply();
  };
  img.addEventListener("load", fit);
  // refit when the pane changes size (window resize, one column <-> two)
  let size = "";
  const refit = () => {
    const now = `${viewport.clientWidth}x${viewport.clientHeight}`;
    if (now !== size) fit(); // only on a real size change: keep the user's zoom otherwise
    size = now;
  };
  if (window.ResizeObserver) new ResizeObserver(refit).observe(viewport);
  else window.addEventListener("resize", fit);
  viewport.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = viewport.getBoundingClientRect();
    zoomAt(ev.deltaY < 0 ? 1.2 : 1 / 1.2, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX - v.x, y: ev.clientY - v.y };
    viewport.setPointerCapture(ev.pointerId);
  });
  viewport.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    v.x = ev.clientX - drag.x;
    v.y = ev.clientY - drag.y;
    apply();
  });
  viewport.addEventListener("pointerup", () => (drag = null));
  const center = (f) => zoomAt(f, viewport.clientWidth / 2, viewport.clientHeight / 2);
  return { fit, zoomIn: () => center(1.25), zoomOut: () => center(0.8) };
}

// ------------------------------------------------------------------ annotating

// notice: what the last action did ("Saved."), kept in sight over the next task
async function loadNext(notice) {
  stopHeartbeat();
  setStatus("status", notice || "");
  setStatus("done-status", "");
  const res = await api("POST", "/api/next");
  if (!res.ok) return setStatus("status", [notice, detail(res)].filter(Boolean).join(" "), true);
  const task = res.data.assignment;
  await refreshProgress();
  if (!task) {
    state.task = null;
    setStatus("done-status", notice || "");
    return showOnly("done-view");
  }
  state.task = task;
  state.chars = Array.from(task.answer);
  state.edits = [];
  state.correct = false;
  state.history = [];
  state.selection = null;
  state.pendingKey = null;
  state.lockLost = false;
  $("submit").disabled = false;
  // a task returned by review starts from the annotator's previous correction
  if (task.status === "returned" && task.submission) {
    state.edits = task.submission.segments.map((s) => ({
      start: s.original_start, end: s.original_end, category: s.category,
      text: slice(Array.from(task.submission.corrected), s.corrected_start, s.corrected_end),
    }));
    state.correct = task.submission.is_correct;
  }
  // unsubmitted work on this task (before a refresh or a new login) comes before both
  const draft = loadDraft(task);
  if (draft) {
    state.edits = draft.edits;
    state.correct = !!draft.correct;
    state.pendingKey = draft.pendingKey || null; // a retry of a submit sent before the refresh
  }
  $("return-note").hidden = task.status !== "returned";
  $("return-note").textContent = task.status === "returned" ? `Returned by the reviewer: ${task.review_comment || ""}` : "";
  $("question").textContent = task.question;
  $("task-image").src = task.image_url;
  $("correction").value = "";
  showOnly("task-view");
  renderAll();
  const said = notice ? [`${notice} Next task: ${task.external_id}.`] : [];
  if (draft && (draft.edits.length || draft.correct)) {
    said.push(`Restored your unsubmitted work: ${draft.edits.length} correction(s).`);
  }
  setStatus("status", said.join(" "));
  if (task.status === "locked") startHeartbeat(task.assignment_id);
}

function startHeartbeat(assignmentId) {
  const every = Math.max(5, Math.min(state.lockSeconds / 3, 300)) * 1000;
  state.heartbeat = setInterval(async () => {
    let res;
    try {
      res = await api("POST", `/api/assignments/${assignmentId}/extend`);
    } catch (_) {
      return; // offline for a moment: the next beat tries again
    }
    // 403: the lock ran out and someone else took the task; 404/409: it is gone or done
    const current = state.task && state.task.assignment_id === assignmentId;
    if (current && [403, 404, 409].includes(res.status)) lockLost();
  }, every);
}

function lockLost() {
  stopHeartbeat();
  state.lockLost = true;
  $("submit").disabled = true;
  setStatus(
    "status",
    "You no longer hold this task: its lock ran out and it went to someone else, so it cannot be submitted. " +
      "Press Skip for the next task.",
    true,
  );
}

function stopHeartbeat() {
  if (state.heartbeat) clearInterval(state.heartbeat);
  state.heartbeat = null;
}

async function submit() {
  if (!state.task) return;
  if (state.lockLost) return lockLost();
  if (!state.correct && !state.edits.length) {
    return setStatus("status", "Correct at least one span, or mark the answer correct.", true);
  }
  // one key per submit, reused by every retry of it until the edits change: the server
  // records it once, and answers 409 to the key with other edits
  state.pendingKey = state.pendingKey || newKey();
  saveDraft(); // with the key: a retry after a refresh is the same submit
  const body = { idempotency_key: state.pendingKey, edits: state.edits, correct: state.correct };
  $("submit").disabled = true;
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      let res;
      try {
        res = await api("POST", `/api/assignments/${state.task.assignment_id}/submit`, body);
      } catch (_) {
        setStatus("status", "Network error, retrying…", true);
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        continue;
      }
      if (res.ok) {
        state.pendingKey = null;
        clearDraft(state.task.assignment_id);
        // duplicate: an earlier try of this same submit was saved, its answer lost
        return loadNext(res.data.duplicate ? "Saved (by an earlier try)." : "Saved.");
      }
      if (res.status >= 500) {
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        continue;
      }
      state.pendingKey = null;
      if (res.status === 403) return lockLost();
      return setStatus("status", detail(res), true);
    }
    setStatus("status", "Could not save: the server does not answer. Your work is still here; try again.", true);
  } finally {
    $("submit").disabled = state.lockLost;
  }
}

async function skip() {
  if (!state.task || state.task.status !== "locked") return loadNext();
  clearDraft(state.task.assignment_id);
  await api("POST", `/api/assignments/${state.task.assignment_id}/release`);
  loadNext();
}

function onKey(ev) {
  if ($("task-view").hidden) return;
  const inText = ev.target.matches("input, textarea");
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault();
    return submit();
  }
  if (inText && ev.target.id === "correction") {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      return addEdit();
    }
    if (ev.altKey && /^[1-6]$/.test(ev.key)) {
      ev.preventDefault();
      return pickCategory(CATEGORIES[Number(ev.key) - 1]);
    }
    if (ev.key === "Escape") return ev.target.blur();
    return;
  }
  if (inText) return;
  if (/^[1-6]$/.test(ev.key)) return pickCategory(CATEGORIES[Number(ev.key) - 1]);
  if ((ev.key === "z" && (ev.ctrlKey || ev.metaKey)) || ev.key === "u") {
    ev.preventDefault();
    return undo();
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "c") return toggleCorrect();
  if (ev.key === "e") {
    ev.preventDefault();
    return $("correction").focus();
  }
  if (ev.key === "+" || ev.key === "=") return zoom.zoomIn();
  if (ev.key === "-") return zoom.zoomOut();
  if (ev.key === "0") return zoom.fit();
}

// ------------------------------------------------------------------ review

async function loadReviewQueue() {
  const res = await api("GET", "/api/review/queue");
  const list = $("review-queue");
  list.replaceChildren();
  if (!res.ok) return setStatus("review-status", detail(res), true);
  if (!res.data.items.length) list.append(el("li", "Nothing to review."));
  for (const item of res.data.items) {
    const li = el("li");
    const b = el("button", `${item.external_id} (${item.annotator})`);
    b.type = "button";
    b.addEventListener("click", () => openReview(item.assignment_id));
    li.append(b);
    list.append(li);
  }
}

async function openReview(assignmentId) {
  const res = await api("GET", `/api/assignments/${assignmentId}`);
  if (!res.ok) return setStatus("review-status", detail(res), true);
  const t = res.data;
  state.reviewing = t;
  $("review-detail").hidden = false;
  $("review-image").src = t.image_url;
  $("review-question").textContent = t.question;
  $("review-annotator").textContent = `by ${t.annotator}` + (t.submission.is_correct ? " · marked correct" : "");
  renderDiff($("review-diff"), t.answer, t.submission.corrected, t.submission.segments);
  $("review-comment").value = "";
  setStatus("review-status", "");
}

async function decide(accept) {
  const t = state.reviewing;
  if (!t) return;
  const comment = $("review-comment").value;
  if (!accept && !comment.trim()) return setStatus("review-status", "Write a comment for the annotator.", true);
  const res = await api("POST", `/api/review/${t.assignment_id}`, { accept, comment });
  if (!res.ok) return setStatus("review-status", detail(res), true);
  setStatus("review-status", accept ? "Accepted." : "Returned to the annotator.");
  $("review-detail").hidden = true;
  state.reviewing = null;
  loadReviewQueue();
}

// ------------------------------------------------------------------ session

// message: why the user is asked to log in again (kept until the next login)
function showLogin(message) {
  stopHeartbeat();
  if (message) setStatus("login-error", message, true);
  state.user = null;
  $("who").textContent = "";
  $("progress").textContent = "";
  for (const id of ["logout", "to-annotate", "to-review"]) $(id).hidden = true;
  showOnly("login-view");
  $("login-name").focus();
}

async function start() {
  const res = await api("GET", "/api/me");
  if (!res.ok) return;
  state.user = res.data;
  state.lockSeconds = res.data.lock_seconds;
  $("who").textContent = `${res.data.name} (${res.data.role})`;
  $("logout").hidden = false;
  const canReview = res.data.role !== "annotator";
  $("to-annotate").hidden = !canReview;
  $("to-review").hidden = !canReview;
  if (canReview) {
    showOnly("review-view");
    loadReviewQueue();
    refreshProgress();
  } else {
    loadNext();
  }
}

let zoom;

document.addEventListener("DOMContentLoaded", () => {
  zoom = makeZoomable($("viewport"), $("task-image"));
  renderCategories();
  pruneDrafts();
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await api("POST", "/api/login", { name: $("login-name").value, password: $("login-password").value });
    if (!res.ok) return setStatus("login-error", detail(res), true);
    $("login-password").value = "";
    setStatus("login-error", "");
    start();
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/logout");
    showLogin();
  });
  $("add-edit").addEventListener("click", addEdit);
  $("undo").addEventListener("click", undo);
  $("mark-correct").addEventListener("click", toggleCorrect);
  $("skip").addEventListener("click", skip);
  $("submit").addEventListener("click", submit);
  $("zoom-in").addEventListener("click", () => zoom.zoomIn());
  $("zoom-out").addEventListener("click", () => zoom.zoomOut());
  $("zoom-fit").addEventListener("click", () => zoom.fit());
  $("check-again").addEventListener("click", () => loadNext());
  $("to-annotate").addEventListener("click", () => loadNext());
  $("to-review").addEventListener("click", () => {
    stopHeartbeat();
    showOnly("review-view");
    loadReviewQueue();
  });
  $("review-refresh").addEventListener("click", loadReviewQueue);
  $("review-accept").addEventListener("click", () => decide(true));
  $("review-return").addEventListener("click", () => decide(false));
  document.addEventListener("selectionchange", onSelectionChange);
  document.addEventListener("keydown", onKey);
  api("GET", "/api/me").then((res) => (res.ok ? start() : showLogin()));
});
