"""The scene world's language: prompts, paragraph descriptions, and the exact parser back to facts.

Descriptions come from a small grammar: an opening sentence with no facts, one sentence
per object from a set of templates (``{N}`` count phrase, ``{C}`` colour, ``{O}`` noun,
``{P}`` position, ``{BE}``/``{V:verb}`` agreeing with the count), and sometimes a closing
sentence with no facts. Because the grammar is ours, :func:`parse_answer` recovers from any
grammatical text (a model's answer included) exactly which facts each sentence claims,
with the character span of every slot: that is what the simulated annotator rewrites and
what the hallucination metrics count. Sentences outside the grammar still yield the
object nouns they mention (``Claim`` with only ``cls`` set).

Matching is case-insensitive and tolerant of spaces before punctuation, because a
word-level tokenizer lower-cases text and its decoder re-joins punctuation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rlhfv.scenes.world import COLOURS, OBJECT_CLASSES, POSITIONS, Scene, SceneObject

PROMPTS: tuple[str, ...] = (
    "Describe this image in detail.",
    "What is in this picture? Please describe it in detail.",
    "Provide a detailed description of the image.",
    "Can you describe what you see in the picture?",
    "Explain what is shown in this image in detail.",
    "Write a detailed description of the given image.",
    "What objects can you see in the image and where are they?",
    "Describe the scene shown in the picture.",
    "Give a thorough account of everything in this image.",
    "Tell me what this picture shows, object by object.",
)
# the model is trained and corrected on the first prompts and evaluated on held-out ones
TRAIN_PROMPTS: tuple[str, ...] = PROMPTS[:8]
TEST_PROMPTS: tuple[str, ...] = PROMPTS[8:]

INTROS: tuple[str, ...] = (
    "The image shows a simple scene on a dark background.",
    "This picture contains some simple drawings on a dark background.",
    "Here is a simple drawing on a plain dark background.",
    "The picture is a small scene made of simple shapes.",
)
OUTROS: tuple[str, ...] = (
    "The rest of the picture is empty.",
    "Nothing else stands out in the image.",
    "The background is plain and dark.",
)

# one sentence per object; FIRST for the first object, any of ALL afterwards
FIRST_TEMPLATES: tuple[str, ...] = (
    "In the {P} there {BE} {N} {C} {O}.",
    "{N} {C} {O} {BE} in the {P}.",
    "{N} {C} {O} can be seen in the {P}.",
    "The {P} holds {N} {C} {O}.",
    "{N} {C} {O} {V:sit} in the {P}.",
    "I can see {N} {C} {O} in the {P}.",
    "At the {P} of the picture there {BE} {N} {C} {O}.",
)
LATER_TEMPLATES: tuple[str, ...] = (
    "There {BE} also {N} {C} {O} in the {P}.",
    "I can also see {N} {C} {O} in the {P}.",
    "Next to that, {N} {C} {O} {V:rest} in the {P}.",
    "{N} {C} {O} {V:appear} in the {P} as well.",
)
TEMPLATES: tuple[str, ...] = FIRST_TEMPLATES + LATER_TEMPLATES

# count -> phrases ("a single" before "a" so the longest alternative wins in the regex)
COUNT_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("a", "one", "a single"),
    2: ("two", "a pair of"),
    3: ("three",),
}
VERBS: dict[str, tuple[str, str]] = {
    "sit": ("sits", "sit"),
    "rest": ("rests", "rest"),
    "appear": ("appears", "appear"),
}
BE: tuple[str, str] = ("is", "are")

# a slot's change category (rlhfv.data.schema.CHANGE_CATEGORIES) when only its fact is wrong
SLOT_CATEGORY: dict[str, str] = {
    "N": "number",
    "BE": "number",
    "V": "number",
    "O": "number",
    "C": "attribute",
    "P": "position",
}

_PHRASE_COUNT: dict[str, int] = {p: n for n, ps in COUNT_PHRASES.items() for p in ps}
_NOUN_CLASS: dict[str, str] = {s: s for s in OBJECT_CLASSES} | {p: s for s, p in OBJECT_CLASSES.items()}
_SLOT = re.compile(r"\{(N|C|O|P|BE|V:\w+)\}")


def noun_class(word: str) -> str | None:
    """The object class a noun names ("houses" -> "house"), or None for other words."""
    return _NOUN_CLASS.get(word.lower())


@dataclass(frozen=True)
class Claim:
    """What one sentence says about one object; ``spans`` are absolute ``[start, end)`` per slot.

    A sentence outside the grammar gives a Claim with only ``cls`` (and ``template`` None).
    """

    cls: str
    colour: str | None = None
    count: int | None = None
    position: str | None = None
    template: int | None = None
    spans: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Sentence:
    """One sentence of an answer: its span and the claims it makes (0 or 1 in the grammar)."""

    start: int
    end: int
    claims: tuple[Claim, ...]

    def text(self, answer: str) -> str:
        return answer[self.start : self.end]


def _alternation(options) -> str:
    return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))


_GROUPS = {
    "N": _alternation(_PHRASE_COUNT).replace(r"\ ", r"\s+"),
    "C": _alternation(COLOURS),
    "O": _alternation(_NOUN_CLASS),
    "P": _alternation(POSITIONS).replace(r"\ ", r"\s+"),
    "BE": _alternation(BE),
}


def _literal_regex(text: str) -> str:
    out = []
    for ch in text:
        if ch == " ":
            out.append(r"\s+")
        elif ch in ".,!?":
            out.append(r"\s*" + re.escape(ch))
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _template_regex(template: str) -> re.Pattern[str]:
    # the final full stop is optional: a generation cut at its token limit still parses
    template = template.removesuffix(".")
    pattern, pos = [], 0
    for m in _SLOT.finditer(template):
        pattern.append(_literal_regex(template[pos : m.start()]))
        slot = m.group(1)
        if slot.startswith("V:"):
            pattern.append(f"(?P<V>{_alternation(VERBS[slot[2:]])})")
        else:
            pattern.append(f"(?P<{slot}>{_GROUPS[slot]})")
        pos = m.end()
    pattern.append(_literal_regex(template[pos:]) + r"(?:\s*\.)?")
    return re.compile("".join(pattern), re.IGNORECASE)


_TEMPLATE_RES: tuple[re.Pattern[str], ...] = tuple(_template_regex(t) for t in TEMPLATES)
_SENTENCE = re.compile(r"[^.!?]*[.!?]|[^.!?]+$")
_WORD = re.compile(r"[a-zA-Z]+")


def render_slot(slot: str, obj: SceneObject, *, count_style: str | None = None) -> str:
    """The text of one template slot for ``obj`` (``slot`` like "N", "O", "V:sit").

    ``count_style`` keeps an answer's wording when only the count changes: a phrase of
    ``COUNT_PHRASES`` whose style ("a"/"one") is reused where it exists for the new count.
    """
    singular = obj.count == 1
    if slot == "N":
        if count_style is not None and _PHRASE_COUNT.get(count_style.lower()) == obj.count:
            return count_style
        if count_style is not None and count_style.lower() == "one" and singular:
            return "one"
        return COUNT_PHRASES[obj.count][0]
    if slot == "C":
        return obj.colour
    if slot == "O":
        return obj.cls if singular else OBJECT_CLASSES[obj.cls]
    if slot == "P":
        return obj.position
    if slot == "BE":
        return BE[0] if singular else BE[1]
    if slot.startswith("V:"):
        return VERBS[slot[2:]][0 if singular else 1]
    raise ValueError(f"unknown slot {slot!r}")


def render_sentence(template: str, obj: SceneObject, rng: random.Random | None = None) -> str:
    """One sentence about ``obj`` from ``template``, capitalised; a random count phrase if ``rng``."""

    def fill(m: re.Match[str]) -> str:
        slot = m.group(1)
        if slot == "N" and rng is not None:
            return rng.choice(COUNT_PHRASES[obj.count])
        return render_slot(slot, obj)

    text = _SLOT.sub(fill, template)
    return text[0].upper() + text[1:]


def describe(
    scene: Scene,
    rng: random.Random,
    *,
    outro_prob: float = 0.5,
    follow: Mapping[str, SceneObject] | None = None,
) -> str:
    """A paragraph describing every object of ``scene`` once, in a random order and wording.

    ``follow`` maps a class to an object the paragraph names right after it (a caption that
    names a usual partner from habit, ``rlhfv.scenes.world.absent_partner``).
    """
    if not 0.0 <= outro_prob <= 1.0:
        raise ValueError(f"outro_prob must be in [0, 1], got {outro_prob!r}")
    objects = list(scene.objects)
    if rng.random() < 0.5:
        objects.sort(key=lambda o: POSITIONS.index(o.position))  # reading order
    else:
        rng.shuffle(objects)
    sentences = [rng.choice(INTROS)]
    for i, obj in enumerate(objects):
        template = rng.choice(FIRST_TEMPLATES if i == 0 else TEMPLATES)
        sentences.append(render_sentence(template, obj, rng))
        if follow and obj.cls in follow:
            sentences.append(render_sentence(rng.choice(TEMPLATES), follow[obj.cls], rng))
    if rng.random() < outro_prob:
        sentences.append(rng.choice(OUTROS))
    return " ".join(sentences)


def caption_objects(scene: Scene, rng: random.Random) -> Scene:
    """The objects one caption names: a random non-empty subset of ``scene``'s (as a person
    describing a picture names some objects, not always all), size uniform in 1..n."""
    k = rng.randint(1, len(scene.objects))
    return Scene(tuple(rng.sample(list(scene.objects), k)), seed=scene.seed)


def _parse_sentence(answer: str, start: int, end: int) -> tuple[Claim, ...]:
    text = answer[start:end]
    for index, regex in enumerate(_TEMPLATE_RES):
        m = regex.fullmatch(text)
        if m is None:
            continue
        groups = m.groupdict()
        spans = {k: (start + m.start(k), start + m.end(k)) for k, v in groups.items() if v is not None}
        return (
            Claim(
                cls=_NOUN_CLASS[groups["O"].lower()],
                colour=groups["C"].lower(),
                count=_PHRASE_COUNT[re.sub(r"\s+", " ", groups["N"].lower())],
                position=re.sub(r"\s+", " ", groups["P"].lower()),
                template=index,
                spans=spans,
            ),
        )
    # outside the grammar: every object noun it names (no attributes)
    claims = []
    for w in _WORD.finditer(text):
        cls = noun_class(w.group())
        if cls is not None:
            claims.append(Claim(cls=cls, spans={"O": (start + w.start(), start + w.end())}))
    return tuple(claims)


def parse_answer(answer: str) -> list[Sentence]:
    """Split ``answer`` into sentences and parse each one's claims (see the module docstring)."""
    sentences = []
    for m in _SENTENCE.finditer(answer):
        raw = m.group()
        lead = len(raw) - len(raw.lstrip())
        start, end = m.start() + lead, m.start() + len(raw.rstrip())
        if start >= end:
            continue
        sentences.append(Sentence(start, end, _parse_sentence(answer, start, end)))
    return sentences


def claims_of(answer: str) -> list[Claim]:
    """All claims of ``answer``, in order."""
    return [c for s in parse_answer(answer) for c in s.claims]


def facts_of(answer: str) -> set[tuple[str, str | None, int | None, str | None]]:
    """The ``(class, colour, count, position)`` facts ``answer`` claims."""
    return {(c.cls, c.colour, c.count, c.position) for c in claims_of(answer)}


def scene_facts(scene: Scene) -> set[tuple[str, str, int, str]]:
    """The ground-truth facts of ``scene``, in the shape of :func:`facts_of`."""
    return {(o.cls, o.colour, o.count, o.position) for o in scene.objects}


def world_vocabulary() -> list[str]:
    """Every word the world's prompts and descriptions use (for the word-level tokenizer)."""
    texts = [*PROMPTS, *INTROS, *OUTROS, *TEMPLATES, *COLOURS, *POSITIONS, *BE]
    texts += [*OBJECT_CLASSES, *OBJECT_CLASSES.values(), *_PHRASE_COUNT]
    texts += [w for forms in VERBS.values() for w in forms]
    seen: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(_SLOT.sub(" ", text).lower()):
            seen.setdefault(word, None)
    return list(seen)
