"""Secrets (API keys, Hugging Face tokens): read from the environment or a Prefect Secret block, never from
config files, and kept out of logs, errors, artifacts and reports.

Every value read here, and the value of every environment variable whose name says it holds a secret, is
remembered and replaced by `***` in log records (`protect_logs`) and in every `DubbingError` message, the text that
reaches the terminal, Prefect's task states and the reports.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import cast

from dubbing.errors import DubbingError

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
MASK = "***"
MIN_LENGTH = 6  # shorter values are too likely to be ordinary words to mask

_values: set[str] = set()
_lock = threading.Lock()
_installed = False


def remember(value: str | None) -> str | None:
    """Mark a value as secret from now on; returns it."""
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _values.add(value)
    return value


def remember_environment() -> None:
    """Remember the values of environment variables named like secrets (OPENAI_API_KEY, HF_TOKEN, ...)."""
    for name, value in os.environ.items():
        if SECRET_NAME.search(name):
            remember(value)


def redact(text: str) -> str:
    """`text` with every remembered secret replaced by ***."""
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def read_secret(*, env: str | None = None, block: str | None = None, what: str) -> str | None:
    """The secret from environment variable `env` or, failing that, Prefect Secret block `block`; None when neither
    is configured. `what` names the config key in errors."""
    if env:
        value = os.environ.get(env)
        if value:
            return remember(value)
        if not block:
            raise DubbingError(f"environment variable {env} ({what}) is not set")
    if block:
        from prefect.blocks.system import Secret

        try:
            # Secret.load is sync or async by context (its type says either); called from sync code, it is the block
            value = cast("Secret[str]", Secret.load(block)).get()
        except ValueError:
            raise DubbingError(
                f"Prefect Secret block {block!r} ({what}) not found; create it in the UI (Blocks > Secret) or with "
                f"`prefect block create secret`"
            ) from None
        return remember(str(value))
    return None


def protect_logs() -> None:
    """Redact remembered secrets from every log record made in this process (all loggers and handlers, Prefect's
    API log handler included), by wrapping the log record factory once."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    remember_environment()
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # malformed arguments: logging reports those itself when the record is emitted
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(redacting_record)
