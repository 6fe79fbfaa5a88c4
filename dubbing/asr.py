"""Speech recognition: audio to utterances with word timings.

Backends implement `Transcriber`; `get_transcriber(name, ...)` picks one by its config name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from dubbing import models
from dubbing.errors import DubbingError
from dubbing.types import Transcript, Utterance, Word

log = logging.getLogger(__name__)


class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: Path, *, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono audio; `language=None` detects it."""
        ...


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2), int8 on CPU, with silero VAD so silence and music yield no text."""

    name = "faster-whisper"

    def __init__(
        self,
        model: str = "whisper-base",
        *,
        compute_type: str = "int8",
        beam_size: int = 5,
        vad: bool = True,
        device: str = "cpu",
    ) -> None:
        from faster_whisper import WhisperModel

        path = Path(model) if Path(model).exists() else models.resolve(model)
        self.model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 1)
        self.beam_size = beam_size
        self.vad = vad

    def transcribe(self, audio: Path, *, language: str | None = None) -> Transcript:
        from faster_whisper.audio import decode_audio

        samples = decode_audio(str(audio), sampling_rate=16_000)
        duration = len(samples) / 16_000
        segments, info = self.model.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=self.vad,
            condition_on_previous_text=False,
        )
        utterances = []
        for seg in segments:
            words = [
                Word(
                    start=round(w.start, 3),
                    end=round(w.end, 3),
                    word=w.word.strip(),
                    probability=round(w.probability, 3),
                )
                for w in (seg.words or [])
                if w.word.strip()
            ]
            text = seg.text.strip()
            if not text or not words:
                continue
            utterances.append(Utterance(start=words[0].start, end=words[-1].end, text=text, words=words))
        transcript = Transcript(language=info.language, duration_s=round(duration, 3), utterances=utterances)
        if not utterances:
            transcript.warnings.append("no speech found: the transcript is empty")
        return transcript


BACKENDS: dict[str, type] = {"faster-whisper": FasterWhisperTranscriber}


def get_transcriber(backend: str, **options) -> Transcriber:
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise DubbingError(f"unknown ASR backend {backend!r}; available: {', '.join(BACKENDS)}") from None
    return cls(**options)
