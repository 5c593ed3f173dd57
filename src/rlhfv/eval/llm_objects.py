"""Optional LLM step of Object HalBench: ask a chat model to list the objects an answer
claims are in the image, then map each listed phrase to classes with the rule extractor.

As in the reference evaluation, answers of three words or fewer get an empty list without
a call. Replies are cached by :class:`rlhfv.eval.judge.ChatClient`, so a rerun is free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from tqdm import tqdm

from rlhfv.eval.judge import ChatClient, EndpointError, EndpointUnreachable
from rlhfv.eval.objects import ObjectExtractor
from rlhfv.eval.problems import Problems

EXTRACTION_PROMPT = """\
Below is a description of an image written by an assistant. List the concrete, physical \
objects that the description says are present in the image. Write each object as a short \
noun phrase, one per line, without numbering or explanation. Leave out objects that the \
description says are absent, abstract things, colours, places and actions. If there are \
no such objects, write exactly: None

Description:
{response}

Objects:"""

TEMPERATURE = 0.2  # as the reference Object HalBench extraction
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def parse_object_list(reply: str) -> list[str]:
    """Phrases from a reply listing objects one per line or comma-separated; "None" -> [].

    >>> parse_object_list("1. a brown dog\\n2. frisbee, grass\\n")
    ['a brown dog', 'frisbee', 'grass']
    >>> parse_object_list("None")
    []
    """
    phrases = []
    for line in reply.splitlines():
        line = _BULLET.sub("", line).strip()
        for part in line.split(","):
            part = part.strip().strip(".;:").strip()
            if part and part.lower() not in {"none", "n/a", "no objects"}:
                phrases.append(part)
    return phrases


def llm_mentions(
    responses: Sequence[str],
    client: ChatClient,
    extractor: ObjectExtractor,
    problems: Problems,
    *,
    progress: bool = False,
) -> dict[str, list[str] | None]:
    """Response text -> classes the LLM lists (None where extraction failed).

    Each distinct text is asked once, but a failure is counted in ``problems`` once per
    response holding it, as ``score_chair`` counts the responses it leaves unscored. Once
    the endpoint is unreachable the remaining responses are counted as
    ``endpoint_unreachable`` without further calls; what was answered is cached.
    """
    out: dict[str, list[str] | None] = {}
    unreachable: str | None = None
    counts = Counter(r for r in responses if isinstance(r, str))
    for text in tqdm(counts, desc="extract", disable=not progress):
        if len(text.split()) <= 3:
            out[text] = []
            continue
        failure = None
        if unreachable is not None:
            failure = ("endpoint_unreachable", unreachable)
        else:
            messages = [{"role": "user", "content": EXTRACTION_PROMPT.format(response=text)}]
            try:
                reply = client.complete(messages, temperature=TEMPERATURE, max_tokens=512)
            except EndpointUnreachable as err:
                unreachable = str(err)
                failure = (err.kind, unreachable)
            except EndpointError as err:
                failure = (err.kind, str(err))
        if failure is not None:
            for _ in range(counts[text]):
                problems.add(*failure)
            out[text] = None
            continue
        out[text] = [cls for phrase in parse_object_list(reply) for cls in extractor.objects(phrase)]
    return out
