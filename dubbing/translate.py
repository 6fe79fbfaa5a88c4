"""Machine translation: source lines to target-language lines, one out for every one in.

Backends implement `Translator`; `get_translator(name, source=..., target=..., model=...)` picks one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Protocol

from dubbing.errors import DubbingError
from dubbing.tools import require_tool


class Translator(Protocol):
    name: str
    source: str
    target: str

    def translate(self, lines: list[str]) -> list[str]:
        """Translate each line; the result has exactly as many lines as the input."""
        ...

    @property
    def pivot(self) -> str | None:
        """The intermediate language when the pair is chained, else None."""
        ...


APERTIUM_MODES = Path("/usr/share/apertium/modes")

# Debian's pairs from English, direct or through Spanish; each value is a chain of apertium modes.
APERTIUM_ROUTES: dict[tuple[str, str], list[str]] = {
    ("en", "es"): ["eng-spa"],
    ("en", "ca"): ["eng-cat"],
    ("en", "gl"): ["en-gl"],
    ("en", "pt"): ["eng-spa", "es-pt"],
    ("en", "fr"): ["eng-spa", "es-fr"],
    ("en", "it"): ["eng-spa", "spa-ita"],
    ("es", "en"): ["spa-eng"],
    ("es", "pt"): ["es-pt"],
    ("es", "fr"): ["es-fr"],
    ("es", "it"): ["spa-ita"],
    ("pt", "es"): ["pt-es"],
    ("fr", "es"): ["fr-es"],
    ("it", "es"): ["ita-spa"],
    ("ro", "es"): ["ro-es"],
    ("gl", "en"): ["gl-en"],
    ("ca", "en"): ["cat-eng"],
}

_MODE_TO_CODE = {"eng": "en", "spa": "es", "cat": "ca", "ita": "it"}


class ApertiumTranslator:
    """Debian's rule-based Apertium: offline and fast; weak on idiom. Unknown words pass through unmarked."""

    name = "apertium"

    def __init__(self, *, source: str, target: str, model: str | None = None) -> None:
        self.source, self.target = source, target
        if model:
            self.modes = model.split("+")
        elif (source, target) in APERTIUM_ROUTES:
            self.modes = APERTIUM_ROUTES[(source, target)]
        else:
            pairs = ", ".join(f"{s}->{t}" for s, t in APERTIUM_ROUTES)
            raise DubbingError(f"apertium has no route {source}->{target}; available: {pairs}")
        self.binary = require_tool("apertium", "apertium")
        for mode in self.modes:
            if not (APERTIUM_MODES / f"{mode}.mode").exists():
                raise DubbingError(
                    f"apertium pair {mode} is not installed; install it with: "
                    f"apt-get install apertium-{mode} (or run scripts/setup)"
                )

    @property
    def pivot(self) -> str | None:
        if len(self.modes) < 2:
            return None
        middle = self.modes[0].split("-")[1]
        return _MODE_TO_CODE.get(middle, middle)

    def translate(self, lines: list[str]) -> list[str]:
        if not lines:
            return []
        # One line per input line: newlines inside a line would break the alignment.
        text = "\n".join(" ".join(line.split()) for line in lines) + "\n"
        for mode in self.modes:
            proc = subprocess.run([self.binary, "-u", "-f", "txt", mode], input=text, capture_output=True, text=True)
            if proc.returncode != 0:
                raise DubbingError(f"apertium {mode} failed: {proc.stderr.strip()[-200:]}")
            text = proc.stdout
        out = text.rstrip("\n").split("\n")
        if len(out) != len(lines):
            raise RuntimeError(f"apertium returned {len(out)} lines for {len(lines)}")
        return [_tidy(line) for line in out]


def _tidy(line: str) -> str:
    """Apertium leaves spaces before punctuation and around line starts."""
    line = re.sub(r"\s+([.,;:!?])", r"\1", line)
    return " ".join(line.split())


BACKENDS: dict[str, type] = {"apertium": ApertiumTranslator}


def get_translator(backend: str, *, source: str, target: str, model: str | None = None) -> Translator:
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise DubbingError(f"unknown translation backend {backend!r}; available: {', '.join(BACKENDS)}") from None
    return cls(source=source, target=target, model=model)
