"""Where a ``--model`` / ``--processor`` comes from: a local folder or a hub id.

Every model and processor rlhfv loads goes through :func:`load_pretrained`:

* a string that is a path (``/...``, ``./...``, ``../...``, ``~...``, or with a path
  separator and not of the hub's ``namespace/name`` form), or that names something on disk,
  must be an existing folder; it is loaded by its absolute path, so what is saved from it
  (e.g. a LoRA adapter's ``base_model_name_or_path``) still points at it from anywhere;
* anything else is a hub id: from the local cache when ``HF_HUB_OFFLINE`` is set or the hub
  cannot be reached (checked with one short connection, not the hub client's retries),
  otherwise from the hub.

A failure is one :class:`~rlhfv.errors.InputError` line saying which of these it was.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlhfv.errors import InputError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "on", "yes", "true"}


def looks_like_path(spec: str) -> bool:
    """``True`` for ``/a``, ``./a``, ``../a``, ``~/a``, ``a/b/c``; ``False`` for ``name`` and ``namespace/name``."""
    if spec.startswith(("/", "./", "../", "~")) or spec in (".", ".."):
        return True
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(s in spec for s in separators) and not HUB_ID.match(spec)


def resolve_source(spec: str | os.PathLike, *, field: str, what: str = "model") -> str:
    """The absolute path of a local folder, or ``spec`` unchanged as a hub id.

    A path that does not exist (or is not a folder) is an ``InputError`` at once: no hub
    lookup for something that was meant to be on disk.
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise InputError(
            f"is a file, not a {what} directory (a folder saved with save_pretrained)",
            path=spec,
            field=field,
            reason="missing_model",
        )
    if looks_like_path(spec):
        raise InputError(f"no such {what} directory", path=spec, field=field, reason="missing_model")
    return spec


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set."""
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub endpoint within ``timeout`` seconds."""
    url = urlparse(hub_endpoint())
    if not url.hostname:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_pretrained(
    loader: Callable[..., Any], spec: str | os.PathLike, *, field: str, what: str = "model", hint: str = ""
) -> Any:
    """``loader(source, local_files_only=...)`` for a local folder or a hub id (see the module docstring).

    ``loader`` is e.g. ``lambda src, **kw: AutoProcessor.from_pretrained(src, **kw)``; its
    ``OSError`` / ``ValueError`` become one ``InputError`` line, ``hint`` appended.
    """
    spec = str(spec)
    source = resolve_source(spec, field=field, what=what)
    local = Path(source).is_dir()
    offline = not local and hub_offline()
    unreachable = not local and not offline and not hub_reachable()
    try:
        return loader(source, local_files_only=offline or unreachable)
    except (OSError, ValueError) as err:  # transformers: OSError, ValueError, HFValidationError...
        if local:
            why = f"cannot load a {what} from this directory ({_first_line(err)})"
        elif offline:
            why = (
                "not a local directory, and not in the Hugging Face cache "
                "(HF_HUB_OFFLINE is set, so the hub was not asked)"
            )
        elif unreachable:
            why = (
                f"not a local directory, not in the Hugging Face cache, and the hub ({hub_endpoint()}) "
                "cannot be reached"
            )
        else:
            why = f"not a local directory, and the hub cannot load it as a {what} ({_first_line(err)})"
        raise InputError(why + hint, path=spec, field=field, reason="bad_" + what) from None


def load_model_and_processor(spec: str | os.PathLike, *, dtype: Any = "auto", field: str = "--model"):
    """``(model, processor)`` through ``AutoModelForImageTextToText`` / ``AutoProcessor``,
    each via :func:`load_pretrained` (a local folder by its absolute path, so a LoRA adapter
    saved from it records a base model that loads from any directory)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    resolve_source(spec, field=field, what="model")  # a missing folder is named as the model's
    processor = load_pretrained(
        lambda source, **kw: AutoProcessor.from_pretrained(source, **kw), spec, field=field, what="processor"
    )
    model = load_pretrained(
        lambda source, **kw: AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kw),
        spec,
        field=field,
        what="image-text-to-text model",
    )
    return model, processor
