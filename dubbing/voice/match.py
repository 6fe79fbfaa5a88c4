"""Voice matching: give each original speaker a TTS voice that sounds like them, the same one for every line.

Offline there is no cloning model, so the `embedding` matcher (the default) embeds the speaker's reference clip
with CAM++, picks the bank voice (or, where the backend can blend style vectors, the blend of the two best) whose
embedding is closest, then moves pitch and formants toward the speaker with praat's PSOLA "Change gender",
choosing the formant shift that brings the embedding closest. Different speakers get different bank voices
when the bank has enough. The chosen voice, shifts and similarities are recorded so they can be reused.

Matching never calls TTS itself: its caller (`track.match_voices`) passes `speak(voice) -> (audio, rate)`, which
says the language's probe sentence (its record's `probe_text`: about three seconds of varied speech, long enough
for a stable embedding, short enough to synthesise often) with that voice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from dubbing import media, speaker_embedding
from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.types import SourceSpeaker, VoiceMatch

log = logging.getLogger(__name__)

PITCH_FLOOR, PITCH_CEILING = 60.0, 500.0
FORMANT_GRID = (0.9, 1.0, 1.1, 1.2)
EQ_EDGES_HZ = tuple(float(f) for f in np.geomspace(80.0, 12_000.0, 25))  # 24 log-spaced bands
EQ_LIMIT_DB = (-12.0, 9.0)  # cut more freely than boost: boosting empty bands only raises noise
BLEND_WEIGHTS = (0.6,)  # weight of the best voice in blends tried with the second best
REGISTER_SPLIT_HZ = (150.0, 185.0)  # median pitch below: a low (usually male) voice; above: a high one
DISTINCT_MARGIN = 0.02  # two speakers' voices must be this much further apart than each is from its speaker
PRAAT_SEED = 16  # Praat's random pulses in a voice shift are seeded (see shift_voice)
_PRAAT_RANDOM = threading.Lock()
Speak = Callable[[str], tuple[np.ndarray, int]]
# Probe embeddings of a packaged voice bank, made once by `benchmarks/bench_voice.py --only probes`: with 54 voices,
# synthesising every probe on a machine's first run would cost minutes, so the bank is screened from this table and
# only the few closest voices are synthesised. Each table records what its numbers depend on (`key`).
PROBE_TABLE_DIR = Path(__file__).resolve().parent.parent / "data"  # dubbing/data (packaged with dubbing)


def write_clip(path: Path, audio: np.ndarray, rate: int) -> Path:
    """Keep a probe or line clip across runs as float32 samples, so reading it back gives exactly what was spoken
    (media.write_audio writes 16-bit by default)."""
    return media.write_audio(path, audio, rate, subtype="FLOAT")


@dataclass
class VoiceBank:
    """The voices a backend offers for one language, and how to hear them."""

    backend: str
    speak: Speak  # voice -> probe sentence spoken with it
    voices: list[str]
    default_voice: str
    can_blend: bool = False
    clones: bool = False  # the backend imitates a reference clip itself: no bank search
    cache_dir: Path | None = None  # probe clips, their embeddings and pitch kept here across runs
    cache_key: str = ""  # what else decides the probe's sound: the language and probe text
    probe_text: str = ""  # the sentence `speak` says (gives each voice's speaking rate)
    table_key: str = ""  # what a packaged probe table must have been made with to be used (see probe_table_key)
    _cache: dict[str, tuple[np.ndarray, int, np.ndarray, float | None, float]] = field(default_factory=dict)
    _table: dict[str, tuple[np.ndarray, float | None, float]] | None = None

    def _screen(self) -> dict[str, tuple[np.ndarray, float | None, float]]:
        if self._table is None:
            self._table = load_probe_table(self.backend, self.table_key) if self.table_key else {}
        return self._table

    def _clip_path(self, voice: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.backend}|{voice}|{self.cache_key}".encode()).hexdigest()[:24]
        return Path(self.cache_dir) / f"{self.backend}-{digest}.wav"

    def _spoken(self, voice: str) -> tuple[np.ndarray, int]:
        """The probe clip, from the disk cache when an earlier run made it."""
        path = self._clip_path(voice)
        if path is None:
            return self.speak(voice)
        if path.exists():
            audio, rate = sf.read(str(path), dtype="float32")
            return audio, rate
        audio, rate = self.speak(voice)
        write_clip(path, audio, rate)
        return audio, rate

    def _stats_path(self, audio: np.ndarray, rate: int) -> Path | None:
        """Where the embedding and pitch of a probe clip are kept: named by the clip's samples and the embedder, so
        a clip spoken again differently, or another embedder, never finds them."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        digest.update(f"|{rate}|{speaker_embedding.model_sha256()}|{PITCH_FLOOR}|{PITCH_CEILING}".encode())
        return Path(self.cache_dir) / f"{self.backend}-probe-{digest.hexdigest()[:24]}.npz"

    def _heard(self, voice: str) -> tuple[np.ndarray, int, np.ndarray, float | None, float]:
        """The probe clip with its embedding and pitch statistics, each made once and kept on disk (cache_dir):
        a later run, or another video, hears a voice again without synthesising or embedding it."""
        if voice not in self._cache:
            audio, rate = self._spoken(voice)
            path = self._stats_path(audio, rate)
            if path is not None and path.exists():
                with np.load(path) as kept:
                    emb, (median, spread) = kept["embedding"], kept["pitch"].tolist()
                median = float(median) if np.isfinite(median) else None
            else:
                median, spread = pitch_stats(audio, rate)
                emb = speaker_embedding.embed(audio, rate)
                if path is not None:
                    pitch = np.array([np.nan if median is None else median, spread], dtype=np.float64)
                    with atomic_path(path) as tmp:  # another process may be reading it
                        np.savez(tmp, embedding=emb, pitch=pitch)
            self._cache[voice] = (audio, rate, emb, median, float(spread))
        return self._cache[voice]

    def probe(self, voice: str) -> tuple[np.ndarray, float | None, float]:
        """(embedding, median pitch, pitch range in semitones) of the voice saying the probe sentence, for screening
        the bank: from the packaged table when it was made with this backend, model, voices and sentence (always,
        so the screening does not depend on which voices were heard before), else heard."""
        return self._screen().get(voice) or self.heard(voice)

    def heard(self, voice: str) -> tuple[np.ndarray, float | None, float]:
        """(embedding, median pitch, pitch range) of the probe clip itself, as synthesised here (see `audio`)."""
        return self._heard(voice)[2:]

    def audio(self, voice: str) -> tuple[np.ndarray, int]:
        """The probe sentence as spoken by the voice (synthesised once)."""
        return self._heard(voice)[:2]

    def seconds_per_char(self, voice: str) -> float | None:
        """The voice's speaking rate, when the bank knows its probe text (`probe_text`)."""
        if not self.probe_text.strip():
            return None
        audio, rate = self.audio(voice)
        return round(len(audio) / rate / len(self.probe_text.strip()), 5)


def probe_table_key(backend: str, model_sha256: str, voices_sha256: str, language: str, text: str) -> str:
    """Everything a bank voice's probe embedding depends on, besides the voice's name."""
    embedder = speaker_embedding.model_sha256()
    return hashlib.sha256(f"{backend}|{model_sha256}|{voices_sha256}|{embedder}|{language}|{text}".encode()).hexdigest()


def _table_path(backend: str) -> Path:
    return PROBE_TABLE_DIR / f"{backend}_probes.npz"


def load_probe_table(backend: str, key: str) -> dict[str, tuple[np.ndarray, float | None, float]]:
    """The packaged probe table's entries for `key` ({} when there is no table or it was made otherwise)."""
    path = _table_path(backend)
    if not path.exists():
        return {}
    with np.load(path) as table:
        if f"{key}/names" not in table.files:
            return {}
        names, emb, stats = (table[f"{key}/{part}"] for part in ("names", "embeddings", "pitch"))
    return {
        str(n): (e.astype(np.float32), float(m) if np.isfinite(m) else None, float(sp))
        for n, e, (m, sp) in zip(names, emb, stats, strict=True)
    }


def build_probe_table(backend: str, banks: dict[str, tuple[str, Speak, list[str]]]) -> Path:
    """Hear every voice of each bank (key -> (label, speak, voices)) and write their probe embeddings and pitch
    statistics to the packaged table (entries for other keys are kept)."""
    import fcntl

    path = _table_path(backend)
    arrays: dict[str, np.ndarray] = {}
    for key, (label, speak, voices) in banks.items():
        emb, stats = [], []
        for name in voices:
            audio, rate = speak(name)
            median, spread = pitch_stats(audio, rate)
            emb.append(speaker_embedding.embed(audio, rate))
            stats.append((np.nan if median is None else median, spread))
            log.info("%s %s: probe heard", label, name)
        arrays[f"{key}/names"] = np.array(voices)
        arrays[f"{key}/embeddings"] = np.array(emb, dtype=np.float32)
        arrays[f"{key}/pitch"] = np.array(stats, dtype=np.float32)
        arrays[f"{key}/label"] = np.array(label)
    PROBE_TABLE_DIR.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # builders for different languages may run at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            with np.load(path) as old:
                arrays = {k: old[k] for k in old.files if k.split("/")[0] not in banks} | arrays
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle
    path.with_suffix(".lock").unlink(missing_ok=True)
    return path


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


def band_levels(audio: np.ndarray, rate: int) -> np.ndarray:
    """Long-term average spectrum in the EQ bands (dB); bands above the Nyquist frequency are NaN."""
    from scipy.signal import welch

    freqs, power = welch(np.asarray(audio, dtype=np.float64), fs=rate, nperseg=2048)
    levels = []
    for lo, hi in zip(EQ_EDGES_HZ[:-1], EQ_EDGES_HZ[1:], strict=True):
        band = power[(freqs >= lo) & (freqs < hi)]
        levels.append(10 * np.log10(band.mean() + 1e-20) if band.size and hi <= rate / 2 else np.nan)
    return np.array(levels)


def eq_toward(source_levels: np.ndarray, voice_levels: np.ndarray) -> list[float]:
    """Band gains that give the voice the source's spectral balance (timbre and recording channel), smoothed,
    limited, and with no overall gain (loudness is set by the mix)."""
    diff = source_levels - voice_levels
    known = np.isfinite(diff)
    if known.sum() < 4:
        return []
    diff = np.interp(np.arange(len(diff)), np.flatnonzero(known), diff[known])  # beyond a band limit: hold
    diff = np.convolve(np.pad(diff, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    diff -= np.median(diff)
    return [round(float(g), 2) for g in np.clip(diff, *EQ_LIMIT_DB)]


def apply_eq(audio: np.ndarray, rate: int, eq_db: list[float]) -> np.ndarray:
    """Linear-phase FIR through the band gains (centre frequencies), same length and no delay."""
    from scipy.signal import firwin2, oaconvolve

    if not eq_db or len(audio) < 64:
        return audio
    centres = np.sqrt(np.array(EQ_EDGES_HZ[:-1]) * np.array(EQ_EDGES_HZ[1:]))
    nyquist = rate / 2
    keep = centres < nyquist * 0.98
    freqs = np.concatenate([[0.0], centres[keep], [nyquist]])
    gains_db = np.array(eq_db)[keep]
    gains = 10 ** (np.concatenate([[gains_db[0]], gains_db, [gains_db[-1]]]) / 20)
    taps = firwin2(511, freqs / nyquist, gains)
    return oaconvolve(audio, taps, mode="same").astype(np.float32)


def shift_voice(audio: np.ndarray, rate: int, match: VoiceMatch) -> np.ndarray:
    """Move a clip's pitch median, pitch range and formants as `match` says (PSOLA; duration unchanged), then
    apply its EQ."""
    if match.pitch_hz is None and abs(match.formant_ratio - 1) < 1e-3 or len(audio) < rate // 20:
        return apply_eq(audio, rate, match.eq_db)
    import parselmouth
    from parselmouth.praat import call

    peak = float(np.max(np.abs(audio))) or 1.0
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    try:
        # Praat's PSOLA places the pulses of unvoiced stretches at random: unseeded, the same clip shifted twice
        # differed by up to 0.3 in a sample, enough to move a variant's similarity by 0.004 and the voice chosen.
        # Seeded (Praat's random state is global: one shift at a time), a match is the same in every run.
        with _PRAAT_RANDOM:
            parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({PRAAT_SEED})")
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
            finally:
                parselmouth.praat.run("random_initializeSafelyAndUnpredictably ()")
    except parselmouth.PraatError as exc:  # e.g. a clip with no voiced frame: keep its pitch as it is
        log.debug("voice shift skipped: %s", exc)
        return apply_eq(audio, rate, match.eq_db)
    shifted = out.values[0].astype(np.float32)
    if len(shifted) != len(audio):
        shifted = np.pad(shifted, (0, max(0, len(audio) - len(shifted))))[: len(audio)]
    shifted = apply_eq(shifted, rate, match.eq_db)
    return shifted * (peak / (float(np.max(np.abs(shifted))) or 1.0))  # same peak as before


@dataclass(frozen=True)
class SpeakerStats:
    """What matching compares a voice against: the original speaker's embedding, pitch and spectrum."""

    embedding: np.ndarray
    median_pitch: float | None
    pitch_spread: float
    levels: np.ndarray  # band_levels of the reference clip


def speaker_stats(speaker: SourceSpeaker) -> SpeakerStats:
    """Embedding, median pitch, pitch spread and spectral balance of an original speaker's reference clip."""
    path = Path(speaker.reference_clip)
    if not path.exists():
        raise DubbingError(f"reference clip of speaker {speaker.speaker} not found: {path}")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    median, spread = pitch_stats(audio, rate)
    return SpeakerStats(
        speaker_embedding.embed(audio, rate), speaker.median_pitch_hz or median, spread, band_levels(audio, rate)
    )


class EmbeddingMatcher:
    """Closest bank voice (or blend) by CAM++ embedding, then PSOLA pitch and formant shifts and an EQ toward the
    speaker, keeping whichever variant the embedding says is closest."""

    name = "embedding"

    class Options(NoOptions):
        shift: bool = True  # try pitch and formant shifts toward the speaker
        eq: bool = True  # try an EQ toward the speaker's spectrum

    def __init__(self, shift: bool = True, eq: bool = True) -> None:
        self.shift, self.eq = shift, eq

    def match(self, speakers: list[SourceSpeaker], bank: VoiceBank, fixed: dict[str, str]) -> dict[str, VoiceMatch]:
        if bank.clones:
            return CloneMatcher().match(speakers, bank, fixed)
        stats = {s.speaker: speaker_stats(s) for s in speakers}
        default_emb = bank.probe(bank.default_voice)[0]

        def closeness(speaker: str, voice: str) -> float:
            return speaker_embedding.cosine(stats[speaker].embedding, bank.probe(voice)[0])

        chosen: dict[str, tuple[VoiceMatch, np.ndarray]] = {}
        for speaker in sorted(fixed.keys() & stats.keys()):
            named = parse_voice(fixed[speaker], bank.backend, speaker)
            emb = speaker_embedding.embed(shift_voice(*bank.audio(named.voice), named), bank.audio(named.voice)[1])
            similarity = speaker_embedding.cosine(stats[speaker].embedding, emb)
            chosen[speaker] = (named.model_copy(update={"similarity_after": similarity}), emb)
        options = {}
        for speaker in sorted(stats.keys() - fixed.keys()):  # sorted: the same order (and ties) in every process
            register = same_register(stats[speaker].median_pitch, bank)
            ranked = sorted(register, key=partial(closeness, speaker), reverse=True)  # stable: ties keep bank order
            candidates = ranked[: 3 if len(stats) > 1 else 1]
            if bank.can_blend and len(ranked) > 1:
                candidates += [f"{ranked[0]}*{w:.2f}+{ranked[1]}*{1 - w:.2f}" for w in BLEND_WEIGHTS]
            options[speaker] = [o for v in candidates for o in self._variants(speaker, stats[speaker], v, bank)]
        # The speaker with the closest option chooses first; each later speaker takes its closest option that is
        # further from every voice already chosen than those voices are from their own speakers.
        for speaker in sorted(options, key=lambda s: -max(m.similarity_after or 0.0 for m, _ in options[s])):
            chosen[speaker] = max(options[speaker], key=lambda o: self._preference(o, chosen))
        result = {}
        for speaker, (m, _) in chosen.items():
            m.similarity_default = speaker_embedding.cosine(stats[speaker].embedding, default_emb)
            m.seconds_per_char = bank.seconds_per_char(m.voice)
            result[speaker] = m
        return result

    @staticmethod
    def _preference(option: tuple[VoiceMatch, np.ndarray], chosen: dict[str, tuple[VoiceMatch, np.ndarray]]) -> tuple:
        """Rank an option: best a free base voice that also stays distinct from every chosen voice (by a margin),
        then any distinct one, then the least overlap; among equals the closest to its own speaker."""
        match, emb = option
        own = match.similarity_after or 0.0
        worst = max(
            (
                speaker_embedding.cosine(emb, e) - min(own, m.similarity_after or 0.0) + DISTINCT_MARGIN
                for m, e in chosen.values()
            ),
            default=-1.0,
        )
        base = lambda voice: max(parse_weights(voice), key=lambda p: p[1])[0]  # noqa: E731
        free = all(base(match.voice) != base(m.voice) for m, _ in chosen.values())
        return (worst < 0 and free, worst < 0, -max(worst, 0.0), free, own)

    def _variants(
        self, speaker: str, target: SpeakerStats, voice: str, bank: VoiceBank
    ) -> list[tuple[VoiceMatch, np.ndarray]]:
        """One voice as it is, and shifted to the speaker's pitch with each formant ratio, each with and without
        the EQ toward the speaker's spectrum; with their embeddings and similarities to the speaker."""
        v_emb, v_median, v_spread = bank.heard(voice)  # the clip the variants are made from, not the table's
        raw = speaker_embedding.cosine(target.embedding, v_emb)
        audio, rate = bank.audio(voice)
        plain = VoiceMatch(speaker=speaker, backend=bank.backend, voice=voice, similarity_bank=raw)
        options = [plain]
        if self.shift and target.median_pitch and v_median:
            pitch_range = float(np.clip(target.pitch_spread / v_spread, 0.6, 1.6)) if v_spread > 0 else 1.0
            options += [
                plain.model_copy(
                    update={
                        "pitch_hz": round(target.median_pitch, 1),
                        "formant_ratio": r,
                        "pitch_range": round(pitch_range, 2),
                    }
                )
                for r in FORMANT_GRID
            ]
        scored = [(plain.model_copy(update={"similarity_after": raw}), v_emb)]
        for option in options:
            shifted = shift_voice(audio, rate, option)
            variants = [option] if option is not plain else []
            if self.eq:
                variants.append(
                    option.model_copy(update={"eq_db": eq_toward(target.levels, band_levels(shifted, rate))})
                )
            for variant in variants:
                emb = speaker_embedding.embed(apply_eq(shifted, rate, variant.eq_db), rate)
                sim = speaker_embedding.cosine(target.embedding, emb)
                scored.append((variant.model_copy(update={"similarity_after": sim}), emb))
        return scored


def register(pitch_hz: float | None) -> str | None:
    """'low' or 'high' for a median pitch clearly in the usual male or female range; None in between."""
    if pitch_hz is None:
        return None
    return "low" if pitch_hz < REGISTER_SPLIT_HZ[0] else "high" if pitch_hz > REGISTER_SPLIT_HZ[1] else None


def same_register(pitch_hz: float | None, bank: VoiceBank) -> list[str]:
    """The bank voices whose own pitch is in the speaker's register (all of them when the speaker's is ambiguous
    or none matches): the embedding alone, at these similarity levels, would sometimes give a man a woman's
    voice, which no listener accepts however close the numbers are."""
    wanted = register(pitch_hz)
    if wanted is None:
        return list(bank.voices)
    own = [v for v in bank.voices if register(bank.probe(v)[1]) in (wanted, None)]
    return own or list(bank.voices)


def parse_voice(spec: str, backend: str, speaker: str) -> VoiceMatch:
    """A voice named in config: a bank voice ('jf_alpha', 'es+m3', a blend 'jf_alpha*0.6+jm_kumo*0.4'), or a label
    copied from an earlier run's voices.json or script.json ('kokoro:jf_alpha pitch=190Hz formant=1.10'), which
    gives the speaker the same voice, shifts included, in every video."""
    words = spec.strip().split()
    if not words:
        raise DubbingError(f"empty voice name for speaker {speaker}")
    name = words[0].removeprefix(f"{backend}:")
    match = VoiceMatch(speaker=speaker, backend=backend, voice=name)
    for word in words[1:]:
        key, _, value = word.partition("=")
        try:
            if key == "pitch":
                match.pitch_hz = float(value.removesuffix("Hz"))
            elif key == "formant":
                match.formant_ratio = float(value)
            elif key != "eq":  # the EQ fitted the original recording; a new video gets none
                raise ValueError(key)
        except ValueError:
            raise DubbingError(
                f"voice {spec!r} for speaker {speaker}: expected 'VOICE [pitch=HZHz] [formant=RATIO]'"
            ) from None
    return match


def parse_weights(voice: str) -> list[tuple[str, float]]:
    """'a*0.6+b*0.4' -> [('a', 0.6), ('b', 0.4)]; a plain name -> [(name, 1.0)] (for telling voices apart)."""
    parts = []
    for term in voice.split("+") if "*" in voice else [voice]:
        name, _, weight = term.partition("*")
        parts.append((name, float(weight) if weight else 1.0))
    return parts


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
        return {s.speaker: parse_voice(fixed.get(s.speaker, voice), bank.backend, s.speaker) for s in speakers}


MATCHERS: dict[str, type] = {"embedding": EmbeddingMatcher, "clone": CloneMatcher, "none": FixedMatcher}
"""The voice matchers by name (`tts.match`), built with `dubbing.backends.build(MATCHERS, name, "voice matching")`."""
