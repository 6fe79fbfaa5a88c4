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

import functools
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
# Gender from three cues, each a vote in units of a clear difference (+ female, - male), summed: the median F0
# against 160 Hz (between typical adult men, ~120 Hz, and women, ~210 Hz; per 0.2 octave), the vocal tract's
# formants (sqrt(F2*F3) of voiced frames against 2100 Hz, between Peterson & Barney's male and female vowel means,
# ~1940 and ~2290 Hz; per 0.05 octave), and the CAM++ embedding (the mean cosine to the three closest female bank
# voices less the three closest male ones; per 0.1: studio voices saying Spanish are far from a phone or a room,
# and the margin leaned female for two of seven men). F0 alone misjudges: a woman at 148 Hz and a man at 167 Hz
# among the shared media (benchmarks/bench_casting.py).
GENDER_F0_HZ, GENDER_F0_OCTAVE = 160.0, 0.2
GENDER_FORMANT_HZ, GENDER_FORMANT_OCTAVE = 2100.0, 0.05
GENDER_EMBEDDING_SCALE, GENDER_NEIGHBOURS = 0.1, 3
BAND_LIMITED_DB = -50.0  # power at 4-5 kHz below this (of the whole): telephone audio, its formants unreliable
# Age register from the speaker's speaking F0 (Titze, Principles of Voice Production, 1994, speaking fundamental
# frequency: adult men about 85-180 Hz, adult women about 165-255 Hz, children about 250-300 Hz and up): below the
# women's range "adult-low", within it "adult-high", above it (the median, with the 10th percentile still above the
# men's range, so an adult's raised voice is not taken for a child's) "child". Bank voices are adults' recordings
# (no Kokoro or espeak voice is a child's), so a voice's own register is adult-low or adult-high from its pitch.
REGISTERS = ("adult-low", "adult-high", "child")
REGISTER_BOUNDS_HZ = (165.0, 255.0)  # adult-low | adult-high | child
REGISTER_DISTANCE = 1  # voices at most this many registers from the speaker's are cast when the pool has any
CHILD_FORMANTS = (1.1, 1.2)  # a child's shorter vocal tract: an adult voice shifted to a child's pitch gets these
PITCH_PENALTY = 0.01  # per semitone between a voice's own pitch and the speaker's: less shifting, fewer artefacts
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


def bank_cache_key(language: str, probe_text: str, revision: str) -> str:
    """What besides the voice decides how a bank's probe clip sounds (VoiceBank.cache_key)."""
    return f"{language}|{probe_text}|{revision}"


def probe_clip_path(cache_dir: Path, backend: str, voice: str, cache_key: str) -> Path:
    """Where a voice's probe clip is kept across runs (it exists once a match has heard the voice)."""
    digest = hashlib.sha256(f"{backend}|{voice}|{cache_key}".encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{backend}-{digest}.wav"


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
    language: str = ""  # the language the bank speaks (casting prefers voices native to it)
    traits: Callable[[str], tuple[str | None, str | None]] | None = None  # voice -> (its language, its gender)
    _cache: dict[str, tuple[np.ndarray, int, np.ndarray, float | None, float]] = field(default_factory=dict)
    _table: dict[str, tuple[np.ndarray, float | None, float]] | None = None

    def _screen(self) -> dict[str, tuple[np.ndarray, float | None, float]]:
        if self._table is None:
            self._table = load_probe_table(self.backend, self.table_key) if self.table_key else {}
            if self.table_key and not self._table:  # a language without a table of its own (fr): screen from
                # the same voices saying another language's probe, rather than synthesise every voice first (a
                # voice's timbre changes little with the language; the voice tried is judged by its own clip)
                self._table = load_probe_table(self.backend, None)
        return self._table

    def voice_traits(self, voice: str) -> tuple[str | None, str | None]:
        """(language, gender) of a bank voice as the backend names them; (None, None) when it does not say."""
        return self.traits(voice) if self.traits else (None, None)

    def native(self, voice: str) -> bool:
        """Whether the voice was recorded in the bank's language (it speaks it without a foreign accent)."""
        own = self.voice_traits(voice)[0]
        return own is not None and bool(self.language) and own.split("-")[0] == self.language.split("-")[0]

    def gender_references(self) -> list[tuple[np.ndarray, str]]:
        """(probe embedding, gender) of the bank voices whose gender is known and whose probe is in the packaged
        table (nothing is synthesised for them): what the embedding cue of `gender_cues` compares a speaker to."""
        table = load_probe_tables(self.backend)  # every language's: a speaker's gender is the same in each
        return [(emb, g) for v in self.voices for emb in table.get(v, []) if (g := self.voice_traits(v)[1])]

    def _clip_path(self, voice: str) -> Path | None:
        return None if self.cache_dir is None else probe_clip_path(self.cache_dir, self.backend, voice, self.cache_key)

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


def load_probe_table(backend: str, key: str | None) -> dict[str, tuple[np.ndarray, float | None, float]]:
    """The packaged probe table's entries for `key` ({} when there is no table or it was made otherwise); None:
    the first key's in sorted order, whatever it was made with."""
    path = _table_path(backend)
    if not path.exists():
        return {}
    with np.load(path) as table:
        if key is None:
            key = min((f.split("/")[0] for f in table.files), default="")
        if f"{key}/names" not in table.files:
            return {}
        names, emb, stats = (table[f"{key}/{part}"] for part in ("names", "embeddings", "pitch"))
    return {
        str(n): (e.astype(np.float32), float(m) if np.isfinite(m) else None, float(sp))
        for n, e, (m, sp) in zip(names, emb, stats, strict=True)
    }


@functools.lru_cache(maxsize=4)
def load_probe_tables(backend: str) -> dict[str, list[np.ndarray]]:
    """Every probe embedding of the packaged table, whatever language it was made for: voice -> embeddings."""
    path = _table_path(backend)
    out: dict[str, list[np.ndarray]] = {}
    if path.exists():
        with np.load(path) as table:
            for key in sorted({f.split("/")[0] for f in table.files}):
                for name, emb in zip(table[f"{key}/names"], table[f"{key}/embeddings"], strict=True):
                    out.setdefault(str(name), []).append(emb.astype(np.float32))
    return out


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


def voiced_f0(audio: np.ndarray, rate: int) -> np.ndarray:
    """F0 (Hz) of the voiced 10 ms frames, by Praat's autocorrelation tracker."""
    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    f0 = sound.to_pitch(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING).selected_array["frequency"]
    return f0[f0 > 0]


def pitch_stats(audio: np.ndarray, rate: int) -> tuple[float | None, float]:
    """Median pitch (Hz) of the voiced frames and their spread (standard deviation in semitones)."""
    f0 = voiced_f0(audio, rate)
    if f0.size < 10:
        return None, 0.0
    median = float(np.median(f0))
    return median, float(np.std(12 * np.log2(f0 / median)))


def formant_level(audio: np.ndarray, rate: int) -> float | None:
    """Median sqrt(F2*F3) (Hz) of the voiced frames: it scales with the vocal tract's length (shorter in women),
    whatever the vowel, more than F1 or F2 alone. None with under 20 voiced frames, or for telephone-band audio
    (nothing above 4 kHz: the phone call of the shared media is 72 dB down there), where F3 is cut and the
    tracker finds lower formants."""
    import parselmouth
    from scipy.signal import welch

    freqs, power = welch(np.asarray(audio, dtype=np.float64), fs=rate, nperseg=1024)
    above = power[(freqs > 4000) & (freqs < 5000)].sum() / (power[freqs > 100].sum() + 1e-20)
    if rate < 10_000 or above < 10 ** (BAND_LIMITED_DB / 10):
        return None
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    pitch = sound.to_pitch(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING)
    formants = sound.to_formant_burg(time_step=0.01, max_number_of_formants=5, maximum_formant=5500.0)
    levels = []
    for t in pitch.xs():
        if pitch.get_value_at_time(t) > 0:  # NaN (unvoiced) compares False
            f2, f3 = formants.get_value_at_time(2, t), formants.get_value_at_time(3, t)
            if np.isfinite(f2) and np.isfinite(f3):
                levels.append(np.sqrt(f2 * f3))
    return float(np.median(levels)) if len(levels) >= 20 else None


def gender_cues(
    median_f0: float | None,
    formants: float | None,
    embedding: np.ndarray,
    references: list[tuple[np.ndarray, str]],
) -> dict[str, float]:
    """The votes for a speaker's gender (+ female, - male; 1 = one clear difference, see GENDER_F0_HZ): from the
    median F0, the formant level and the embedding's nearest female and male bank voices; a cue that cannot be
    measured is left out."""
    cues: dict[str, float] = {}
    if median_f0:
        cues["f0"] = np.log2(median_f0 / GENDER_F0_HZ) / GENDER_F0_OCTAVE
    if formants:
        cues["formants"] = np.log2(formants / GENDER_FORMANT_HZ) / GENDER_FORMANT_OCTAVE
    by_gender = {
        g: np.sort([speaker_embedding.cosine(embedding, e) for e, gg in references if gg == g])[::-1]
        for g in ("female", "male")
    }
    if all(len(v) for v in by_gender.values()):
        near = {g: float(v[:GENDER_NEIGHBOURS].mean()) for g, v in by_gender.items()}
        cues["embedding"] = (near["female"] - near["male"]) / GENDER_EMBEDDING_SCALE
    return {k: round(float(v), 2) for k, v in cues.items()}


def estimate_gender(cues: dict[str, float]) -> str | None:
    """'female' or 'male' by the sum of the cues; None when none could be measured."""
    if not cues:
        return None
    return "female" if sum(cues.values()) > 0 else "male"


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
    f0_percentiles: tuple[float, ...] = ()  # 10th, 50th, 90th of the clip's voiced frames (Hz)
    formants: float | None = None  # formant_level of the clip


def speaker_stats(speaker: SourceSpeaker) -> SpeakerStats:
    """Embedding, pitch (median, spread, distribution), formant level and spectral balance of an original speaker's
    reference clip (the median from all their speech when diarization measured it)."""
    path = Path(speaker.reference_clip)
    if not path.exists():
        raise DubbingError(f"reference clip of speaker {speaker.speaker} not found: {path}")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    median, spread = pitch_stats(audio, rate)
    f0 = voiced_f0(audio, rate)
    percentiles = tuple(round(float(p), 1) for p in np.percentile(f0, (10, 50, 90))) if f0.size >= 10 else ()
    return SpeakerStats(
        speaker_embedding.embed(audio, rate),
        speaker.median_pitch_hz or median,
        spread,
        band_levels(audio, rate),
        percentiles,
        formant_level(audio, rate),
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
        references = bank.gender_references()
        cues = {
            s: gender_cues(st.median_pitch, st.formants, st.embedding, references) for s, st in sorted(stats.items())
        }
        genders = {s: estimate_gender(c) for s, c in cues.items()}
        registers = {
            s: speaker_register(st.median_pitch, st.f0_percentiles[0] if st.f0_percentiles else None)
            for s, st in stats.items()
        }

        def closeness(speaker: str, voice: str) -> float:
            """Timbre (embedding cosine), less a little for each semitone the voice's own pitch is off."""
            own, pitch = speaker_embedding.cosine(stats[speaker].embedding, bank.probe(voice)[0]), bank.probe(voice)[1]
            target = stats[speaker].median_pitch
            return own - (PITCH_PENALTY * abs(12 * np.log2(pitch / target)) if pitch and target else 0.0)

        chosen: dict[str, tuple[VoiceMatch, np.ndarray]] = {}
        for speaker in sorted(fixed.keys() & stats.keys()):
            named = parse_voice(fixed[speaker], bank.backend, speaker)
            emb = speaker_embedding.embed(shift_voice(*bank.audio(named.voice), named), bank.audio(named.voice)[1])
            similarity = speaker_embedding.cosine(stats[speaker].embedding, emb)
            chosen[speaker] = (named.model_copy(update={"similarity_after": similarity}), emb)
        options, considered, notes, natives = {}, {}, {}, {}
        for speaker in sorted(stats.keys() - fixed.keys()):  # sorted: the same order (and ties) in every process
            native, others, notes[speaker] = casting_pool(genders[speaker], stats[speaker].median_pitch, bank)
            wanted = registers[speaker][0]
            native, others = within_register(native, wanted, bank), within_register(others, wanted, bank)
            natives[speaker] = len(native)
            rank = partial(closeness, speaker)
            native, others = sorted(native, key=rank, reverse=True), sorted(others, key=rank, reverse=True)
            primary = native or others
            if len(stats) > 1:  # several people: enough voices to keep them apart, natives first
                same = sum(genders[s] == genders[speaker] for s in stats)
                candidates = native[:3] + (others[:2] if len(native[:3]) < same else [])
            else:
                candidates = primary[:1]
            if bank.can_blend and len(primary) > 1:
                candidates += [f"{primary[0]}*{w:.2f}+{primary[1]}*{1 - w:.2f}" for w in BLEND_WEIGHTS]
            considered[speaker] = [f"{v} {rank(v):.3f}" for v in (native[:3] + others[:3])]
            child = wanted == "child"
            options[speaker] = [o for v in candidates for o in self._variants(speaker, stats[speaker], v, bank, child)]
        # The speaker with the closest option chooses first; each later speaker takes its closest option that is
        # further from every voice already chosen than those voices are from their own speakers.
        for speaker in sorted(options, key=lambda s: -max(m.similarity_after or 0.0 for m, _ in options[s])):
            chosen[speaker] = max(options[speaker], key=lambda o: self._preference(o, chosen, bank))
        result = {}
        for speaker, (m, _) in chosen.items():
            m.similarity_default = speaker_embedding.cosine(stats[speaker].embedding, default_emb)
            m.seconds_per_char = bank.seconds_per_char(m.voice)
            m.voice_language, m.voice_gender = bank.voice_traits(m.voice)
            m.gender, m.gender_cues = genders[speaker], cues[speaker]
            m.f0_hz = list(stats[speaker].f0_percentiles)
            m.candidates = considered.get(speaker, [])
            m.age_register, m.register_reason = registers[speaker]
            m.voice_register = voice_register(bank.heard(m.voice)[1])
            m.reason = casting_reason(
                m, bank, named=speaker in fixed, natives=natives.get(speaker, 0), note=notes.get(speaker, "")
            )
            result[speaker] = m
        return result

    @staticmethod
    def _preference(
        option: tuple[VoiceMatch, np.ndarray], chosen: dict[str, tuple[VoiceMatch, np.ndarray]], bank: VoiceBank
    ) -> tuple:
        """Rank an option: best a free base voice that also stays distinct from every chosen voice (by a margin),
        then any free one (two people never share a voice, even if only one of them can have the language's
        own), then a voice native to the language, then any distinct one, then the least overlap; among equals
        the closest to its own speaker."""
        match, emb = option
        own = match.similarity_after or 0.0
        worst = max(
            (
                speaker_embedding.cosine(emb, e) - min(own, m.similarity_after or 0.0) + DISTINCT_MARGIN
                for m, e in chosen.values()
            ),
            default=-1.0,
        )
        free = all(base_voice(match.voice) != base_voice(m.voice) for m, _ in chosen.values())
        return (worst < 0 and free, free, bank.native(match.voice), worst < 0, -max(worst, 0.0), own)

    def _variants(
        self, speaker: str, target: SpeakerStats, voice: str, bank: VoiceBank, child: bool = False
    ) -> list[tuple[VoiceMatch, np.ndarray]]:
        """One voice as it is, and shifted to the speaker's pitch with each formant ratio, each with and without
        the EQ toward the speaker's spectrum; with their embeddings and similarities to the speaker. For a child
        (`child`) only the shifts to their pitch with raised formants (CHILD_FORMANTS): no bank voice is a child's,
        and an adult voice at its own pitch would age the speaker however close its timbre."""
        v_emb, v_median, v_spread = bank.heard(voice)  # the clip the variants are made from, not the table's
        raw = speaker_embedding.cosine(target.embedding, v_emb)
        audio, rate = bank.audio(voice)
        plain = VoiceMatch(speaker=speaker, backend=bank.backend, voice=voice, similarity_bank=raw)
        options = [plain]
        shifts = bool(self.shift and target.median_pitch and v_median)
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
                for r in (CHILD_FORMANTS if child else FORMANT_GRID)
            ]
        scored = [(plain.model_copy(update={"similarity_after": raw}), v_emb)]
        if child and shifts:  # only the shifted voices
            options, scored = options[1:], []
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


def base_voice(voice: str) -> str:
    """The heaviest voice of a blend (the voice itself otherwise): two speakers never share one."""
    return max(parse_weights(voice), key=lambda p: p[1])[0]


def casting_pool(gender: str | None, pitch_hz: float | None, bank: VoiceBank) -> tuple[list[str], list[str], str]:
    """(native voices, other voices, a note) that a speaker of `gender` may be cast with: only voices of their
    gender (no listener accepts a woman dubbed by a man however close the timbre); those recorded in the bank's
    language first. A bank whose voices say no gender (piper) falls back to the pitch register of their probes;
    one with no voice of the gender at all gives every voice, and the note says so."""
    if not any(bank.voice_traits(v)[1] for v in bank.voices):
        pool, note = same_register(pitch_hz, bank), "the bank's voices name no gender: kept to the pitch register"
    else:
        pool = [v for v in bank.voices if gender and bank.voice_traits(v)[1] == gender]
        note = "" if pool else f"the bank has no {gender} voice: any voice"
        pool = pool or list(bank.voices)
    native = [v for v in pool if bank.native(v)]
    return native, [v for v in pool if v not in native], note


def casting_reason(match: VoiceMatch, bank: VoiceBank, *, named: bool, natives: int = 0, note: str = "") -> str:
    """Why this voice, in a sentence a dubbing director can check (voices.json, the report)."""
    pitch = [f"F0 median {match.f0_hz[1]:.0f} Hz"] if len(match.f0_hz) == 3 else []
    cues = ", ".join(pitch + [f"{k} {v:+.1f}" for k, v in match.gender_cues.items()])
    heard = f"{match.gender or 'gender unknown'} ({cues})" if cues else (match.gender or "gender not measured")
    if named:
        cross = match.voice_gender and match.gender and match.voice_gender != match.gender
        child = "; a child's register, cast with the voice named" if match.age_register == "child" else ""
        return f"named by the user; speaker estimated {heard}" + ("; cross-gender, as named" if cross else "") + child
    accent = f"{match.voice_language or '?'} accent"
    if bank.native(match.voice):
        where = "native"
    elif natives:
        where = f"its native voices taken by other speakers: {accent}"
    else:
        where = f"no native {match.gender or ''} voice for {bank.language or '?'}: {accent}"
    similarity = f", similarity {match.similarity_after:.2f}" if match.similarity_after is not None else ""
    parts = [f"speaker {heard}", f"{where} {match.voice_gender or ''} voice".replace("  ", " "), note]
    parts.append(register_note(match))
    return "; ".join(p for p in parts if p) + f"; closest timbre among those{similarity}"


def register_note(match: VoiceMatch) -> str:
    """What the reason says of the register: always for a child (an adult's voice stands in), else when the
    voice's own register differs from the speaker's."""
    if match.age_register == "child":
        how = (
            f"PSOLA-shifted to {match.pitch_hz:.0f} Hz, formants x{match.formant_ratio:.2f}"
            if match.pitch_hz
            else ("not shifted (shifting is off)")
        )
        return f"a child's register, and the bank has no child's voice: an adult {match.voice_register} voice {how}"
    if match.age_register and match.voice_register and match.voice_register != match.age_register:
        return f"register {match.age_register}, the voice's own {match.voice_register}"
    return ""


def speaker_register(median_hz: float | None, p10_hz: float | None = None) -> tuple[str | None, str]:
    """The speaker's register (REGISTERS) from the median and 10th percentile of their F0, and why."""
    if median_hz is None:
        return None, "no voiced speech measured: register unknown"
    low, high = REGISTER_BOUNDS_HZ
    spread = f" (10th percentile {p10_hz:.0f} Hz)" if p10_hz is not None else ""
    heard = f"F0 median {median_hz:.0f} Hz{spread}"
    if median_hz > high and (p10_hz is None or p10_hz > low):
        return "child", f"{heard}: above the adult speaking range (over {high:.0f} Hz, Titze 1994)"
    if median_hz > high:
        return (
            "adult-high",
            f"{heard}: median above {high:.0f} Hz but much of the speech below {low:.0f} Hz: a raised adult voice",
        )
    if median_hz >= low:
        return "adult-high", f"{heard}: the higher adult speaking range ({low:.0f}-{high:.0f} Hz, Titze 1994)"
    return "adult-low", f"{heard}: the lower adult speaking range (under {low:.0f} Hz, Titze 1994)"


def voice_register(pitch_hz: float | None) -> str | None:
    """A bank voice's register from its own probe pitch: an adult's (the banks hold no child's voice)."""
    if pitch_hz is None:
        return None
    return "adult-low" if pitch_hz < REGISTER_BOUNDS_HZ[0] else "adult-high"


def register_distance(a: str | None, b: str | None) -> int:
    """How many registers apart two are (0 when either is unknown)."""
    return abs(REGISTERS.index(a) - REGISTERS.index(b)) if a and b else 0


def within_register(voices: list[str], wanted: str | None, bank: VoiceBank) -> list[str]:
    """The voices within REGISTER_DISTANCE of the speaker's register (all of them when none is)."""
    near = [v for v in voices if register_distance(voice_register(bank.probe(v)[1]), wanted) <= REGISTER_DISTANCE]
    return near or voices


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
