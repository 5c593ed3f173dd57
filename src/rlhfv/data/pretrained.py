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

A folder holding a peft adapter (``adapter_config.json``, e.g. the output of
``rlhfv train --lora``) is loaded by :func:`load_model_and_processor` as its base model (the
``base_model_name_or_path`` the adapter records, itself possibly such a folder) with the
adapter merged in (``merge_and_unload``): full weights, for training and evaluation alike.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlhfv.errors import InputError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
)
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


def load_model_and_processor(
    spec: str | os.PathLike, *, dtype: Any = "auto", field: str = "--model", _adapters: tuple[str, ...] = ()
):
    """``(model, processor)`` through ``AutoModelForImageTextToText`` / ``AutoProcessor``,
    each via :func:`load_pretrained` (a local folder by its absolute path, so a LoRA adapter
    saved from it records a base model that loads from any directory).

    A peft adapter folder gives its base model with the adapter merged in
    (:func:`load_merged_adapter`).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = resolve_source(spec, field=field, what="model")  # a missing folder is named as the model's
    if (Path(source) / ADAPTER_CONFIG).is_file():
        return load_merged_adapter(spec, dtype=dtype, field=field, _adapters=_adapters)
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


def adapter_base_model(folder: str | os.PathLike, *, field: str = "--model") -> str:
    """The base model a peft adapter folder records (``base_model_name_or_path`` of its
    ``adapter_config.json``); an ``InputError`` when it records none."""
    path = Path(folder).expanduser() / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot read the adapter config ({_first_line(err)})", path=str(path), field=field
        ) from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise InputError(
            f"is a LoRA adapter folder whose {ADAPTER_CONFIG} names no base model (base_model_name_or_path "
            "is empty, as for an adapter trained on a model built in memory); set it to the base model's "
            "folder or hub id (or tiny-llava etc. for rlhfv's tiny models)",
            path=str(folder),
            field=field,
            reason="bad_model",
        )
    return base


def adapter_model_class(folder: str | os.PathLike) -> str | None:
    """The class name of the model a peft adapter was trained on, when its config records it."""
    config = json.loads((Path(folder).expanduser() / ADAPTER_CONFIG).read_text())
    mapping = config.get("auto_mapping") if isinstance(config, dict) else None
    return mapping.get("base_model_class") if isinstance(mapping, dict) else None


def load_merged_adapter(
    spec: str | os.PathLike, *, dtype: Any = "auto", field: str = "--model", _adapters: tuple[str, ...] = ()
):
    """``(model, processor)`` for a peft adapter folder: its base model (:func:`adapter_base_model`;
    ``tiny-llava`` etc. are built as ``rlhfv.tiny`` builds them) in ``dtype`` with the adapter
    merged in (``PeftModel.from_pretrained(base, folder).merge_and_unload()``), and the folder's
    processor (the base's when the folder holds none).

    The merged model's ``name_or_path`` is the adapter folder, so an adapter trained on it
    records that folder as its base (and loads the same way).
    """
    from peft import PeftModel

    source = resolve_source(spec, field=field, what="model")
    if source in _adapters:
        raise InputError(
            f"is a LoRA adapter folder whose base model leads back to itself ({' -> '.join([*_adapters, source])})",
            path=str(spec),
            field=field,
            reason="bad_model",
        )
    base_name = adapter_base_model(spec, field=field)
    from rlhfv.data.prepare import TINY_MODELS

    try:
        if base_name in TINY_MODELS and not Path(base_name).exists():  # as `rlhfv train --model tiny-...`
            import torch

            from rlhfv.tiny import build_tiny

            base, processor = build_tiny(TINY_MODELS[base_name])
            if dtype != "auto":
                base = base.to(dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype))
        else:
            base, processor = load_model_and_processor(
                base_name, dtype=dtype, field=field, _adapters=(*_adapters, source)
            )
    except InputError as err:
        why = ": ".join(str(x) for x in (err.path, err.message) if x)
        raise InputError(
            f"is a LoRA adapter folder, and the base model its {ADAPTER_CONFIG} names cannot be loaded: {why}",
            path=str(spec),
            field=field,
            reason=err.reason,
        ) from None
    trained_on = adapter_model_class(spec)
    if trained_on and trained_on != type(base).__name__:
        raise InputError(
            f"is a LoRA adapter folder trained on a {trained_on}, but the base model its {ADAPTER_CONFIG} "
            f"names ({base_name}) is a {type(base).__name__}",
            path=str(spec),
            field=field,
            reason="bad_model",
        )
    try:
        with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            adapted = PeftModel.from_pretrained(base, source)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(
            f"is a LoRA adapter folder, and its adapter does not fit its base model {base_name} "
            f"({_first_line(err)})",
            path=str(spec),
            field=field,
            reason="bad_model",
        ) from None
    try:
        model = adapted.merge_and_unload()
    except AttributeError:
        kind = adapted.peft_config[adapted.active_adapter].peft_type
        raise InputError(
            f"is a {getattr(kind, 'value', kind)} adapter folder; only adapters that merge into the "
            "base model's weights (LoRA and the like) can be loaded",
            path=str(spec),
            field=field,
            reason="bad_model",
        ) from None
    model.requires_grad_(True)  # peft froze the base for inference; a plain load leaves it trainable
    model.name_or_path = source  # what an adapter trained on this model records as its base
    if any((Path(source) / name).is_file() for name in PROCESSOR_FILES):
        from transformers import AutoProcessor

        processor = load_pretrained(
            lambda src, **kw: AutoProcessor.from_pretrained(src, **kw), spec, field=field, what="processor"
        )
    logger.warning(
        "%s: a LoRA adapter folder: loaded its base model %s and merged the adapter into it", spec, base_name
    )
    return model, processor
