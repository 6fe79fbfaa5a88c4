"""Text to speech. Backends implement `Synthesizer`; each has a rate control and lists its voices."""

from __future__ import annotations

import io
import subprocess
from typing import Protocol

import numpy as np
import soundfile as sf

from dubbing.errors import DubbingError
from dubbing.tools import require_tool


class Synthesizer(Protocol):
    name: str

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak `text`; `speed` > 1 speaks faster. Returns mono float32 samples and their rate."""
        ...

    def voices(self, language: str) -> list[str]: ...


class EspeakSynthesizer:
    """espeak-ng: robotic but has 100+ languages, the fallback that makes any language work."""

    name = "espeak"
    base_wpm = 165

    def __init__(self) -> None:
        self.binary = require_tool("espeak-ng", "espeak-ng")

    def voices(self, language: str) -> list[str]:
        proc = subprocess.run([self.binary, f"--voices={language}"], capture_output=True, text=True)
        rows = proc.stdout.splitlines()[1:]
        return [row.split()[3] for row in rows if len(row.split()) > 3]

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        wpm = str(int(round(self.base_wpm * speed)))
        # Text goes through stdin, never the argument list: a line starting with '-' stays text.
        proc = subprocess.run(
            [self.binary, "-v", voice or language, "-s", wpm, "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
        )
        if proc.returncode != 0 or not proc.stdout:
            raise DubbingError(
                f"espeak-ng cannot speak {language!r} with voice {voice or language!r}: "
                f"{proc.stderr.decode(errors='replace').strip()[-200:]}"
            )
        audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        return _trim_silence(audio), rate


def _trim_silence(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing silence so a clip's length is its speech."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


BACKENDS: dict[str, type] = {"espeak": EspeakSynthesizer}


def get_synthesizer(backend: str, **options) -> Synthesizer:
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise DubbingError(f"unknown TTS backend {backend!r}; available: {', '.join(BACKENDS)}") from None
    return cls(**options)
