"""Object mentions in free text: a deterministic, offline, rule-based extractor.

The text is lower-cased and split into words; each word is reduced to its singular noun
lemma (lemminflect, whose tables ship inside the wheel: nothing is downloaded); phrases
are matched longest first (so "hot dog" wins over "dog", "teddy bear" over "bear") and
each matched phrase maps to its canonical class through a :class:`SynonymTable`.

:class:`ExtractionRules` carries the special cases of the reference CHAIR code
(``toilet seat`` -> toilet, ``bow tie`` -> tie, ``baby``/``adult`` + animal -> the animal,
``passenger jet``/``passenger train`` -> the vehicle, ``home plate`` and ``train track``
consumed without naming an object, "seat" ignored when a toilet is mentioned).
:data:`COCO_RULES` holds them for COCO; other vocabularies (the scene world) pass their
own table and ``ExtractionRules()`` or nothing.

>>> ex = coco_extractor()
>>> ex.objects("Two hot dogs and a teddy bear sit on the toilet seat next to a baby elephant.")
['hot dog', 'teddy bear', 'toilet', 'elephant']
>>> table = SynonymTable.from_dict({"cube": ["cube", "block"], "ball": ["ball", "sphere"]})
>>> ObjectExtractor(table).objects("Three red blocks and one sphere.")
['cube', 'ball']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from rlhfv.errors import InputError

_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=200_000)
def singular(word: str) -> str:
    """The singular noun lemma of a lower-case word ("giraffes" -> "giraffe", "mice" -> "mouse")."""
    import lemminflect

    lemmas = lemminflect.getLemma(word, upos="NOUN", lemmatize_oov=True)
    return lemmas[0] if lemmas else word


def normalize_phrase(phrase: str) -> str:
    """Lower-case, split into words and singularise each: the key phrases are matched by."""
    return " ".join(singular(w) for w in _WORD.findall(phrase.lower()))


@dataclass(frozen=True)
class SynonymTable:
    """Canonical class -> the surface forms that name it (the canonical name included).

    Build with :meth:`from_dict`, :meth:`from_file` (the reference format: one class per
    line, comma-separated, the first entry canonical) or :meth:`coco` (the project's own
    COCO-80 table).
    """

    classes: Mapping[str, tuple[str, ...]]
    # normalised surface form -> canonical class (first class wins when a form is listed
    # twice, as the reference table does)
    forms: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        forms: dict[str, str] = {}
        for canonical, names in self.classes.items():
            for name in (canonical, *names):
                forms.setdefault(normalize_phrase(name), canonical)
        object.__setattr__(self, "forms", forms)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Iterable[str]]) -> SynonymTable:
        classes: dict[str, tuple[str, ...]] = {}
        for canonical, forms in mapping.items():
            canonical = canonical.strip().lower()
            if not canonical:
                raise InputError("empty class name in synonym table", reason="bad_synonyms")
            seen = dict.fromkeys([canonical, *(f.strip().lower() for f in forms if f.strip())])
            classes[canonical] = tuple(seen)
        return cls(classes)

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, path: str | None = None) -> SynonymTable:
        mapping: dict[str, list[str]] = {}
        for row, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            forms = [f.strip() for f in line.split(",") if f.strip()]
            if not forms:
                raise InputError("line has no class name", path=path, row=row, reason="bad_synonyms")
            mapping.setdefault(forms[0].lower(), []).extend(forms)
        if not mapping:
            raise InputError("synonym table is empty", path=path, reason="bad_synonyms")
        return cls.from_dict(mapping)

    @classmethod
    def from_file(cls, path: str | Path) -> SynonymTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(f"cannot read synonym table: {err.strerror}", path=str(path)) from err
        except UnicodeDecodeError as err:
            raise InputError(
                "not a text synonym table (not UTF-8 text; expected one class per line, comma-separated)",
                path=str(path),
                reason="bad_synonyms",
            ) from err
        return cls.from_lines(text.splitlines(), path=str(path))

    @classmethod
    def coco(cls) -> SynonymTable:
        """The project's COCO-80 table (``rlhfv/eval/data/coco80_synonyms.txt``)."""
        text = resources.files("rlhfv.eval").joinpath("data/coco80_synonyms.txt").read_text("utf-8")
        return cls.from_lines(text.splitlines(), path="coco80_synonyms.txt")

    def canonical(self, name: str) -> str | None:
        """The class a name (canonical or synonym, any number) belongs to, or None."""
        return self.forms.get(normalize_phrase(name))


@dataclass(frozen=True)
class ExtractionRules:
    """Vocabulary-specific special cases, applied on top of a synonym table.

    ``phrases``: extra phrase -> the word it stands for (looked up in the table), or None
    for a phrase consumed without naming an object. ``suppressed_by``: word -> class; the
    word is not counted when that class is mentioned anywhere in the same text.
    """

    phrases: Mapping[str, str | None] = field(default_factory=dict)
    suppressed_by: Mapping[str, str] = field(default_factory=dict)


_ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
# young-animal words: "baby kitten" is a cat, not a person and a cat
_YOUNG_ANIMALS = ("kitten", "puppy", "pup", "lamb", "calf", "foal", "pony", "duck", "duckling", "chick")


def _coco_rules() -> ExtractionRules:
    phrases: dict[str, str | None] = {
        "toilet seat": "toilet",
        "bow tie": "tie",
        "passenger jet": "jet",
        "passenger train": "train",
        "home plate": None,
        "train track": None,
    }
    for animal in (*_ANIMAL_WORDS, *_YOUNG_ANIMALS, "animal", "cub"):
        phrases[f"baby {animal}"] = animal
        phrases[f"adult {animal}"] = animal
    return ExtractionRules(phrases=phrases, suppressed_by={"seat": "toilet"})


COCO_RULES = _coco_rules()


@dataclass(frozen=True)
class Mention:
    """One object mention: the text span, the matched key phrase and its class."""

    cls: str
    key: str
    start: int
    end: int


def _lower_with_origins(text: str) -> tuple[str, list[int]]:
    """``text.lower()`` and, per character of it, the index of the character of ``text`` it
    came from: lower-casing can lengthen text ("İ" becomes two characters), which would
    shift spans found in the lower-cased text.

    >>> _lower_with_origins("İa")
    ('i̇a', [0, 0, 1])
    """
    parts: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        low = ch.lower()
        parts.append(low)
        origin.extend([i] * len(low))
    return "".join(parts), origin


class ObjectExtractor:
    """Finds object mentions in text with a synonym table and optional special-case rules.

    Matching is longest-phrase-first, left to right, over singularised words; each word
    belongs to at most one mention.
    """

    def __init__(self, table: SynonymTable, rules: ExtractionRules | None = None) -> None:
        self.table = table
        self.rules = rules or ExtractionRules()
        # key phrase (normalised) -> class, or None for consumed non-object phrases
        targets: dict[str, str | None] = dict(table.forms)
        for phrase, word in self.rules.phrases.items():
            key = normalize_phrase(phrase)
            targets[key] = None if word is None else targets.get(normalize_phrase(word))
        self._targets = targets
        self._suppressed = {normalize_phrase(w): c for w, c in self.rules.suppressed_by.items()}
        self._lengths = sorted({k.count(" ") + 1 for k in targets}, reverse=True)
        # words that start a multi-word key: only there do we try longer phrases
        self._starts = {k.split(" ", 1)[0] for k in targets if " " in k}

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.table.classes)

    def mentions(self, text: str) -> list[Mention]:
        """All object mentions, in text order, with character spans into ``text``."""
        lower, origin = _lower_with_origins(text)
        spans = [
            (origin[m.start()], origin[m.end() - 1] + 1, singular(m.group())) for m in _WORD.finditer(lower)
        ]
        words = [s[2] for s in spans]
        found = self._match(words)
        return [
            Mention(cls=c, key=k, start=spans[i][0], end=spans[j - 1][1])
            for i, j, k, c in found
            if c is not None
        ]

    def objects(self, text: str) -> list[str]:
        """Canonical classes of the mentions, in text order, repeats kept."""
        words = [singular(w) for w in _WORD.findall(text.lower())]
        return [c for _, _, _, c in self._match(words) if c is not None]

    def _match(self, words: Sequence[str]) -> list[tuple[int, int, str, str | None]]:
        targets, starts, n = self._targets, self._starts, len(words)
        found: list[tuple[int, int, str, str | None]] = []
        i = 0
        while i < n:
            word = words[i]
            if word in starts:
                for length in self._lengths:
                    if length == 1 or i + length > n:
                        continue
                    key = " ".join(words[i : i + length])
                    if key in targets:
                        found.append((i, i + length, key, targets[key]))
                        i += length
                        break
                else:
                    if word in targets:
                        found.append((i, i + 1, word, targets[word]))
                    i += 1
                continue
            if word in targets:
                found.append((i, i + 1, word, targets[word]))
            i += 1
        if self._suppressed and found:
            present = {c for _, _, _, c in found if c is not None}
            found = [
                f for f in found if f[2] not in self._suppressed or self._suppressed[f[2]] not in present
            ]
        return found


def coco_extractor(synonyms: str | Path | None = None) -> ObjectExtractor:
    """The COCO extractor: the project's table (or a reference-format file) + COCO rules."""
    table = SynonymTable.coco() if synonyms is None else SynonymTable.from_file(synonyms)
    return ObjectExtractor(table, COCO_RULES)
