"""Voice matching: give each original speaker a TTS voice that sounds like them, the same one for every line.

Offline there is no cloning model, so the `embedding` matcher (the default) embeds the speaker's reference clip
with CAM++, picks the bank voice (or, where the backend can blend style vectors, the blend of the two best) whose
embedding is closest, then moves pitch and formants toward the speaker with praat's PSOLA "Change gender",
choosing the formant shift that brings the embedding closest. Different speakers get different bank voices
when the bank has enough. The chosen voice, shifts and similarities are recorded so they can be reused.

The stage never calls TTS itself: the caller passes `speak(voice) -> (audio, rate)`, which says a fixed probe
sentence in the target language with that voice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from dubbing import speaker_embedding
from dubbing.errors import DubbingError
from dubbing.types import SourceSpeaker, VoiceMatch

log = logging.getLogger(__name__)

PITCH_FLOOR, PITCH_CEILING = 60.0, 500.0
FORMANT_GRID = (0.9, 1.0, 1.1, 1.2)
BLEND_WEIGHTS = (0.6,)  # weight of the best voice in blends tried with the second best
# About three seconds of varied speech: long enough for a stable embedding, short enough to synthesise often.
PROBE_TEXT = {
    "en": "We walked along the river and talked about our plans for the summer.",
    "es": "Paseamos junto al río y hablamos de nuestros planes para el verano.",
    "pt": "Caminhamos ao longo do rio e falamos dos nossos planos para o verão.",
    "it": "Abbiamo camminato lungo il fiume parlando dei nostri progetti per l'estate.",
    "fr": "Nous avons marché le long de la rivière en parlant de nos projets pour l'été.",
    "de": "Wir gingen am Fluss entlang und sprachen über unsere Pläne für den Sommer.",
    "ca": "Vam passejar vora el riu i vam parlar dels nostres plans per a l'estiu.",
    "gl": "Paseamos á beira do río e falamos dos nosos plans para o verán.",
}

Speak = Callable[[str], tuple[np.ndarray, int]]


@dataclass
class VoiceBank:
    """The voices a backend offers for one language, and how to hear them."""

    backend: str
    speak: Speak  # voice -> probe sentence spoken with it
    voices: list[str]
    default_voice: str
    can_blend: bool = False
    clones: bool = False  # the backend imitates a reference clip itself: no bank search
    _cache: dict[str, tuple[np.ndarray, int, np.ndarray, float | None, float]] = field(default_factory=dict)

    def _heard(self, voice: str) -> tuple[np.ndarray, int, np.ndarray, float | None, float]:
        if voice not in self._cache:
            audio, rate = self.speak(voice)
            median, spread = pitch_stats(audio, rate)
            self._cache[voice] = (audio, rate, speaker_embedding.embed(audio, rate), median, spread)
        return self._cache[voice]

    def probe(self, voice: str) -> tuple[np.ndarray, float | None, float]:
        """(embedding, median pitch, pitch range in semitones) of the voice saying the probe sentence."""
        return self._heard(voice)[2:]

    def audio(self, voice: str) -> tuple[np.ndarray, int]:
        """The probe sentence as spoken by the voice (synthesised once)."""
        return self._heard(voice)[:2]


class VoiceMatcher(Protocol):
    name: str

    def match(self, speakers: list[SourceSpeaker], bank: VoiceBank, fixed: dict[str, str]) -> dict[str, VoiceMatch]:
        """A voice for every speaker; `fixed` holds voices the user named (used as they are)."""
        ...


def pitch_stats(audio: np.ndarray, rate: int) -> tuple[float | None, float]:
    """Median pitch (Hz) of the voiced frames and their spread (standard deviation in semitones)."""
    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    f0 = sound.to_pitch(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING).selected_array["frequency"]
    f0 = f0[f0 > 0]
    if f0.size < 10:
        return None, 0.0
    median = float(np.median(f0))
    return median, float(np.std(12 * np.log2(f0 / median)))


def shift_voice(audio: np.ndarray, rate: int, match: VoiceMatch) -> np.ndarray:
    """Move a clip's pitch median, pitch range and formants as `match` says (PSOLA; duration unchanged)."""
    if match.pitch_hz is None and abs(match.formant_ratio - 1) < 1e-3 or len(audio) < rate // 20:
        return audio
    import parselmouth
    from parselmouth.praat import call

    peak = float(np.max(np.abs(audio))) or 1.0
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    try:
        out = call(
            sound,
            "Change gender",
            PITCH_FLOOR,
            PITCH_CEILING,
            match.formant_ratio,
            match.pitch_hz or 0.0,
            match.pitch_range,
            1.0,
        )
    except parselmouth.PraatError as exc:  # e.g. a clip with no voiced frame: keep it as it is
        log.debug("voice shift skipped: %s", exc)
        return audio
    shifted = out.values[0].astype(np.float32)
    if len(shifted) != len(audio):
        shifted = np.pad(shifted, (0, max(0, len(audio) - len(shifted))))[: len(audio)]
    return shifted * (peak / (float(np.max(np.abs(shifted))) or 1.0))  # same peak as before


def speaker_stats(speaker: SourceSpeaker) -> tuple[np.ndarray, float | None, float]:
    """Embedding, median pitch and pitch spread of an original speaker's reference clip."""
    import soundfile as sf

    path = Path(speaker.reference_clip)
    if not path.exists():
        raise DubbingError(f"reference clip of speaker {speaker.speaker} not found: {path}")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    median, spread = pitch_stats(audio, rate)
    return speaker_embedding.embed(audio, rate), speaker.median_pitch_hz or median, spread


class EmbeddingMatcher:
    """Closest bank voice (or blend) by CAM++ embedding, then PSOLA pitch and formant shifts toward the speaker."""

    name = "embedding"

    def __init__(self, shift: bool = True) -> None:
        self.shift = shift

    def match(self, speakers: list[SourceSpeaker], bank: VoiceBank, fixed: dict[str, str]) -> dict[str, VoiceMatch]:
        if bank.clones:
            return CloneMatcher().match(speakers, bank, fixed)
        result: dict[str, VoiceMatch] = {}
        taken: set[str] = set()
        stats = {s.speaker: speaker_stats(s) for s in speakers}
        default_emb = bank.probe(bank.default_voice)[0]
        # Speakers with the most distinctive need choose first is overkill: order by their best similarity.
        ranked = {
            s: sorted(bank.voices, key=lambda v: -speaker_embedding.cosine(stats[s][0], bank.probe(v)[0]))
            for s in stats
        }
        for speaker in sorted(stats, key=lambda s: -speaker_embedding.cosine(stats[s][0], bank.probe(ranked[s][0])[0])):
            emb, median, spread = stats[speaker]
            if speaker in fixed:
                result[speaker] = VoiceMatch(
                    speaker=speaker,
                    backend=bank.backend,
                    voice=fixed[speaker],
                    similarity_default=speaker_embedding.cosine(emb, default_emb),
                    similarity_after=speaker_embedding.cosine(emb, bank.probe(fixed[speaker])[0]),
                )
                continue
            free = [v for v in ranked[speaker] if v not in taken] or ranked[speaker]
            candidates = [free[0]]
            if bank.can_blend and len(free) > 1:
                candidates += [f"{free[0]}*{w:.2f}+{free[1]}*{1 - w:.2f}" for w in BLEND_WEIGHTS]
            best = self._best(speaker, emb, median, spread, candidates, bank)
            best.similarity_default = speaker_embedding.cosine(emb, default_emb)
            taken.add(free[0])
            result[speaker] = best
        return result

    def _best(
        self, speaker: str, emb: np.ndarray, median: float | None, spread: float, candidates: list[str], bank: VoiceBank
    ) -> VoiceMatch:
        """Score each candidate voice before and after shifting (every formant ratio); keep the closest."""
        best: VoiceMatch | None = None
        for voice in candidates:
            v_emb, v_median, v_spread = bank.probe(voice)
            raw = speaker_embedding.cosine(emb, v_emb)
            options = [VoiceMatch(speaker=speaker, backend=bank.backend, voice=voice, similarity_bank=raw)]
            if self.shift and median and v_median:
                audio, rate = bank.audio(voice)
                pitch_range = float(np.clip(spread / v_spread, 0.6, 1.6)) if v_spread > 0 else 1.0
                for ratio in FORMANT_GRID:
                    option = VoiceMatch(
                        speaker=speaker,
                        backend=bank.backend,
                        voice=voice,
                        pitch_hz=round(median, 1),
                        formant_ratio=ratio,
                        pitch_range=round(pitch_range, 2),
                        similarity_bank=raw,
                    )
                    option.similarity_after = speaker_embedding.cosine(
                        emb, speaker_embedding.embed(shift_voice(audio, rate, option), rate)
                    )
                    options.append(option)
            options[0].similarity_after = raw
            top = max(options, key=lambda o: o.similarity_after or -1.0)
            if best is None or (top.similarity_after or -1) > (best.similarity_after or -1):
                best = top
        assert best is not None
        return best


class CloneMatcher:
    """For cloning backends (XTTS): the speaker's own reference clip is the voice."""

    name = "clone"

    def match(self, speakers: list[SourceSpeaker], bank: VoiceBank, fixed: dict[str, str]) -> dict[str, VoiceMatch]:
        return {
            s.speaker: VoiceMatch(speaker=s.speaker, backend=bank.backend, voice=fixed.get(s.speaker, s.reference_clip))
            for s in speakers
        }


class FixedMatcher:
    """No matching: every speaker gets the configured voice (or the backend default), unshifted."""

    name = "none"

    def match(self, speakers: list[SourceSpeaker], bank: VoiceBank, fixed: dict[str, str]) -> dict[str, VoiceMatch]:
        voice = bank.default_voice
        return {
            s.speaker: VoiceMatch(speaker=s.speaker, backend=bank.backend, voice=fixed.get(s.speaker, voice))
            for s in speakers
        }


BACKENDS: dict[str, type] = {"embedding": EmbeddingMatcher, "clone": CloneMatcher, "none": FixedMatcher}


def get_matcher(name: str, **options) -> VoiceMatcher:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise DubbingError(f"unknown voice matcher {name!r}; available: {', '.join(BACKENDS)}") from None
    return cls(**options)


def probe_text(language: str) -> str:
    return PROBE_TEXT.get(language, PROBE_TEXT["en"])
