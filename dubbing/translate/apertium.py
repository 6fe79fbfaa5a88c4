"""Debian's rule-based Apertium: offline and fast; weak on idiom. Unknown words pass through unmarked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.tools import require_tool
from dubbing.translate.base import LanguagePairError, ShortenRequest, translate_groups
from dubbing.translate.condense import condense_requests

APERTIUM_MODES = Path("/usr/share/apertium/modes")

# Debian's pairs, direct or through Spanish; each value is a chain of apertium modes. Debian ships no pair from
# English into French, Italian or Portuguese, and none at all into Romanian (only ro-es).
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
    ("pt", "fr"): ["pt-es", "es-fr"],
    ("pt", "it"): ["pt-es", "spa-ita"],
    ("pt", "en"): ["pt-es", "spa-eng"],
    ("fr", "es"): ["fr-es"],
    ("fr", "en"): ["fr-es", "spa-eng"],
    ("it", "es"): ["ita-spa"],
    ("it", "en"): ["ita-spa", "spa-eng"],
    ("ro", "es"): ["ro-es"],
    ("ro", "en"): ["ro-es", "spa-eng"],
    ("gl", "en"): ["gl-en"],
    ("ca", "en"): ["cat-eng"],
}

_MODE_TO_CODE = {"eng": "en", "spa": "es", "cat": "ca", "ita": "it", "por": "pt", "fra": "fr", "glg": "gl", "ron": "ro"}


def _code(part: str) -> str:
    return _MODE_TO_CODE.get(part, part.split("_")[0])


class ApertiumTranslator:
    """Apertium pairs chained where Debian has no direct one; shorter lines by condensing the source."""

    name = "apertium"
    capabilities = frozenset({"offline"})
    Options = NoOptions

    @staticmethod
    def routes() -> str:
        """The pairs it translates, for error messages."""
        return ", ".join(f"{s}->{t}" for s, t in APERTIUM_ROUTES)

    def __init__(self, *, source: str, target: str, model: str | None = None) -> None:
        self.source, self.target = source, target
        if model:
            self.modes = model.split("+")
            ends = (_code(self.modes[0].split("-")[0]), _code(self.modes[-1].split("-")[-1]))
            if ends != (source.split("-")[0], target.split("-")[0]):
                raise LanguagePairError(f"apertium modes {model} go {ends[0]}->{ends[1]}, not {source}->{target}")
        elif (source, target) in APERTIUM_ROUTES:
            self.modes = APERTIUM_ROUTES[(source, target)]
        else:
            raise LanguagePairError(f"apertium has no route {source}->{target}; it has: {self.routes()}")
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
        return "+".join(_code(mode.split("-")[1]) for mode in self.modes[:-1])

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
        out = text.removesuffix("\n").split("\n")  # one newline per line: a last line may be empty
        if len(out) != len(lines):
            raise RuntimeError(f"apertium returned {len(out)} lines for {len(lines)}")
        return out

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        return translate_groups(condense_requests(lines, requests, self.source), self.translate)
