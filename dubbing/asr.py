"""Speech recognition: audio to utterances with word timings.

Backends implement `Transcriber`; `dubbing.backends.build(BACKENDS, name, "ASR", options, model=...,
compute_type=..., beam_size=..., vad=...)` makes one by its config name:
- `faster-whisper` (default): CTranslate2 Whisper, int8 on CPU, whisper base offline, silero VAD built in.
- `openai-whisper` (extra): the reference implementation; a model name from its cache or a .pt path.
- `transformers`: any Whisper checkpoint on the Hugging Face hub (from the local cache) or in a folder.
All give word-level timestamps, and all skip what silero VAD does not call speech, so music and silence do
not turn into invented text. Utterances here are Whisper's segments; diarization regroups the words later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from pydantic import Field, field_validator

from dubbing import models, progress
from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.types import ANALYSIS_RATE, Transcript, Utterance, Word
from dubbing.vad import cut_at_pauses, group_regions, read_analysis_audio, speech_regions

log = logging.getLogger(__name__)

NO_SPEECH = "no speech found: the transcript is empty"
HIGHPASS_HZ = 80.0
CHUNK_S = 240.0  # longer inputs are transcribed in pieces cut at pauses (memory flat with length)
FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's: a window that reads as a loop or unsure is decoded again hotter
MAX_AUTO_THREADS = 4  # CTranslate2's own default; whisper base gains little from more


def fallback(beam_size: int) -> tuple[float, ...]:
    """The decoding temperatures for a beam size when none are configured. Greedy decoding (beam_size 1, the draft
    preset) decodes each window once: on input that really repeats (a looped clip), every hotter decode fails
    Whisper's repetition test as well, so the ladder decoded each 30 s window 26 times (1 + 5 temperatures x 5
    samples: 53 CPU-s for 60 s) and kept the best-scoring random sample, which dropped words and changed from run
    to run. On the shared media the greedy transcripts were the same words without the fallback (docs/speech.md)."""
    return (0.0,) if beam_size == 1 else FALLBACK


def auto_threads() -> int:
    """CPU threads for Whisper when none are configured: the cores this process may use less one, which the flow
    gives to face tracking (it runs beside transcription), between 1 and `MAX_AUTO_THREADS`. CTranslate2's own
    default (4 threads) oversubscribes a 2-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_THREADS, cores - 1))


class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: Path, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        """Transcribe any audio or video file; `language=None` detects it. `prompt`: text in the language's own
        script that the decoder reads first (Hindi is otherwise often written in Urdu script); a backend without
        prompts ignores it."""
        ...


def check_language(language: str | None) -> str | None:
    """A Whisper language code, or a one-line error listing the valid ones."""
    if language is None:
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = language.strip().lower()
    if code not in _LANGUAGE_CODES:
        raise DubbingError(f"unknown source language {language!r}; Whisper knows: {', '.join(sorted(_LANGUAGE_CODES))}")
    return code


def make_word(start: float, end: float, text: str, probability: float | None = None) -> Word | None:
    """A cleaned Word (None for empty text); end is never before start."""
    text = text.strip()
    if not text:
        return None
    start = round(float(start), 3)
    end = round(max(float(end), start), 3)
    return Word(start=start, end=end, word=text, probability=None if probability is None else round(probability, 3))


def utterance(words: list[Word], text: str | None, language: str) -> Utterance | None:
    if not words:
        return None
    made = Utterance.from_words(words, language)
    return made.model_copy(update={"text": text.strip()}) if text and text.strip() else made


def read_speech(audio: Path) -> np.ndarray:
    """The 16 kHz analysis audio with rumble and hum below the voice removed (4th-order Butterworth high-pass at
    `HIGHPASS_HZ`). Measured with whisper base: phone-call WER 0.198 -> 0.160 (any cut-off from 60 to 150 Hz gave
    the same), LibriVox unchanged (benchmarks/bench_asr.py)."""
    from scipy.signal import butter, sosfilt

    samples = read_analysis_audio(audio)
    sos = butter(4, HIGHPASS_HZ, "highpass", fs=ANALYSIS_RATE, output="sos")
    return sosfilt(sos, samples).astype(np.float32)


def speech_spans(samples: np.ndarray, vad: bool) -> list[tuple[float, float]]:
    """The stretches to decode: speech regions joined into Whisper-window spans, or everything without VAD."""
    return group_regions(speech_regions(samples)) if vad else [(0.0, len(samples) / ANALYSIS_RATE)]


def finish(utterances: Iterable[Utterance | None], language: str, duration_s: float) -> Transcript:
    """The Transcript, with a warning (not invented text) when nothing was said."""
    kept = [u for u in utterances if u is not None]
    transcript = Transcript(language=language, duration_s=round(duration_s, 3), utterances=kept)
    if not kept:
        transcript.warnings.append(NO_SPEECH)
    return transcript


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2), int8 on CPU, with silero VAD so silence and music yield no text."""

    name = "faster-whisper"
    capabilities: frozenset[str] = frozenset()

    class Options(NoOptions):
        device: str = "cpu"  # CTranslate2 device: cpu, cuda or auto
        threads: int = Field(0, ge=0)  # CPU threads; 0: `auto_threads()` (one core left for the step beside)
        workers: int = Field(1, ge=1)  # transcriptions that can run at once from different threads (one model)
        # decoding temperatures, tried in order while a window's text reads as a loop or unsure; default
        # `fallback(beam_size)`: Whisper's (0.0, 0.2, ... 1.0), or 0.0 alone for greedy decoding (beam_size 1)
        temperatures: tuple[float, ...] | None = Field(None, min_length=1)
        best_of: int | None = Field(None, ge=1)  # samples per temperature above 0 (default: beam_size)

        @field_validator("temperatures")
        @classmethod
        def _in_range(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
            if value is not None and any(not 0.0 <= t <= 1.0 for t in value):
                raise ValueError("each temperature is from 0.0 to 1.0")
            return value

    def __init__(
        self,
        model: str = "whisper-base",
        *,
        compute_type: str = "int8",
        beam_size: int = 5,
        vad: bool = True,
        device: str = "cpu",
        threads: int = 0,
        workers: int = 1,
        temperatures: tuple[float, ...] | None = None,
        best_of: int | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        path = Path(model) if Path(model).exists() else models.resolve(model)
        self.threads = threads or auto_threads()
        self.model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=self.threads, num_workers=workers
        )
        self.beam_size = beam_size
        self.vad = vad
        self.temperatures = tuple(temperatures) if temperatures is not None else fallback(beam_size)
        self.best_of = best_of or beam_size

    def transcribe(self, audio: Path, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        samples = read_speech(audio)
        duration = len(samples) / ANALYSIS_RATE
        regions = speech_regions(samples) if self.vad else []
        if self.vad and not regions:  # faster-whisper would still detect a language on noise
            return finish([], language or "und", duration)
        language = check_language(language)
        utterances = []
        for start, end in cut_at_pauses(regions, duration, CHUNK_S):  # one piece unless the input is long
            segments, info = self.model.transcribe(
                samples[int(start * ANALYSIS_RATE) : int(end * ANALYSIS_RATE)],
                language=language,
                beam_size=self.beam_size,
                best_of=self.best_of,
                temperature=list(self.temperatures),
                word_timestamps=True,
                vad_filter=self.vad,
                vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 200},
                condition_on_previous_text=False,
                initial_prompt=prompt,
            )
            language = language or info.language  # detected on the first piece, kept for the rest
            for seg in segments:
                words = [make_word(start + w.start, start + w.end, w.word, w.probability) for w in seg.words or []]
                utterances.append(utterance([w for w in words if w], seg.text, language))
                progress.advance(start + seg.end, duration, "s of audio")
        return finish(utterances, language or "und", duration)

    def transcribe_pieces(
        self, audio: Path, pieces: list[tuple[float, float]], *, language: str, prompt: str | None = None
    ) -> Transcript:
        """Each (start, end) piece of `audio` heard on its own, all in one batched call (the pieces encoded and
        decoded together, without the temperature fallback that re-decodes a repetitive piece up to six times);
        word times on the file's timeline, nothing outside the pieces."""
        from faster_whisper import BatchedInferencePipeline

        samples = read_speech(audio)
        length = len(samples) / ANALYSIS_RATE  # the decoder's reading of the file may be a sample shorter
        clips = [{"start": a, "end": min(b, length)} for a, b in pieces if min(b, length) > a]
        if not clips:
            return finish([], language, length)
        segments, _info = BatchedInferencePipeline(model=self.model).transcribe(
            samples,
            language=check_language(language),
            beam_size=self.beam_size,
            word_timestamps=True,
            without_timestamps=True,
            clip_timestamps=clips,
            initial_prompt=prompt,
            batch_size=2,  # 8 took 320 MB more at its peak for no less CPU (60 s of dub: 15.6 vs 14.6 CPU-s)
        )
        utterances = []
        for seg in segments:
            words = [make_word(w.start, w.end, w.word, w.probability) for w in seg.words or []]
            utterances.append(utterance([w for w in words if w], seg.text, language))
            progress.advance(seg.end, clips[-1]["end"], "s of audio")
        return finish(utterances, language, length)


def transcribe_pieces(
    transcriber: Transcriber,
    audio: Path,
    pieces: list[tuple[float, float]],
    *,
    language: str,
    prompt: str | None = None,
) -> Transcript:
    """Pieces of `audio` heard each on its own (QA hears the dub's lines, not the silence between): in one batched
    call where the backend has one (`transcribe_pieces`), else each piece cut into a file and heard in a call of
    its own. Word times on the file's timeline."""
    batched = getattr(transcriber, "transcribe_pieces", None)
    if batched is not None:
        return batched(audio, pieces, language=language, prompt=prompt)
    import tempfile

    from dubbing import media

    samples, rate = media.read_audio(audio, ANALYSIS_RATE)
    utterances = []
    with tempfile.TemporaryDirectory(prefix="dub-pieces-") as tmp:
        for start, end in pieces:
            piece = media.write_audio(Path(tmp) / "piece.wav", samples[int(start * rate) : int(end * rate)], rate)
            for u in transcriber.transcribe(piece, language=language, prompt=prompt).utterances:
                words = [w.model_copy(update={"start": w.start + start, "end": w.end + start}) for w in u.words]
                utterances.append(u.model_copy(update={"start": u.start + start, "end": u.end + start, "words": words}))
    return Transcript(language=language, duration_s=round(len(samples) / rate, 3), utterances=utterances)


class OpenAIWhisperTranscriber:
    """The reference `openai-whisper` package (extra; install with --no-deps or it pulls triton). Models load
    from its cache (~/.cache/whisper/<name>.pt) or a .pt path; silero VAD picks the stretches it reads."""

    name = "openai-whisper"
    Options = NoOptions
    capabilities: frozenset[str] = frozenset()
    ALIASES = {"whisper-base": "base", "whisper-tiny.en": "tiny.en"}  # registry names -> openai-whisper names

    def __init__(
        self, model: str = "base", *, compute_type: str = "float32", beam_size: int = 5, vad: bool = True
    ) -> None:
        """`compute_type` (CTranslate2's, from asr.compute_type) does not apply: this backend runs fp32 on CPU."""
        try:
            import whisper
        except ImportError as exc:
            raise DubbingError(
                f"the openai-whisper backend needs the `openai-whisper` package ({exc}); "
                f"install it with `pip install --no-deps openai-whisper tiktoken` or use asr.backend: faster-whisper"
            ) from None
        name = self.ALIASES.get(model, model)
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"
        if not Path(name).exists() and not (root / f"{name}.pt").exists():
            raise DubbingError(
                f"openai-whisper model {name!r} is not at {root / (name + '.pt')} and this machine is offline; "
                f"run `python -c \"import whisper; whisper.load_model('{name}')\"` on a connected machine"
            )
        self.model = whisper.load_model(name, device="cpu", download_root=str(root))
        self.beam_size = beam_size
        self.vad = vad

    def transcribe(self, audio: Path, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        samples = read_speech(audio)
        duration = len(samples) / ANALYSIS_RATE
        spans = speech_spans(samples, self.vad)
        language = check_language(language)
        utterances: list[Utterance | None] = []
        for start, end in spans:
            piece = samples[int(start * ANALYSIS_RATE) : int(end * ANALYSIS_RATE)]
            result = self.model.transcribe(
                piece,
                language=language,
                beam_size=self.beam_size,
                word_timestamps=True,
                condition_on_previous_text=False,
                fp16=False,
                initial_prompt=prompt,
            )
            language = language or result.get("language")
            for seg in result.get("segments", []):
                words = [
                    make_word(start + w["start"], start + w["end"], w["word"], w.get("probability"))
                    for w in seg.get("words", [])
                ]
                utterances.append(utterance([w for w in words if w], seg.get("text"), language or "und"))
        return finish(utterances, language or "und", duration)


class TransformersWhisperTranscriber:
    """A Whisper checkpoint through transformers (hub id from the local cache, registry name, or a folder),
    word timestamps from cross-attention alignment (`return_timestamps="word"`)."""

    name = "transformers"
    Options = NoOptions
    capabilities: frozenset[str] = frozenset()

    def __init__(
        self, model: str = "whisper-small-hf", *, compute_type: str = "float32", beam_size: int = 1, vad: bool = True
    ) -> None:
        """`compute_type` (CTranslate2's, from asr.compute_type) does not apply: this backend runs fp32 on CPU."""
        from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

        path = self._locate(model)
        try:
            processor = WhisperProcessor.from_pretrained(str(path))
            net = WhisperForConditionalGeneration.from_pretrained(str(path))
        except OSError as exc:
            raise DubbingError(f"cannot load Whisper checkpoint from {path}: {str(exc).splitlines()[0]}") from None
        net.eval()
        self.pipe = pipeline(
            "automatic-speech-recognition",
            model=net,
            tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor,
            chunk_length_s=30,
            device="cpu",
            ignore_warning=True,
        )
        self.model, self.processor = net, processor
        self.beam_size = beam_size
        self.vad = vad

    def detect_language(self, samples: np.ndarray) -> str:
        """The language code Whisper finds most likely in the first 30 s of speech."""
        import torch

        features = self.processor.feature_extractor(
            samples[: 30 * ANALYSIS_RATE], sampling_rate=ANALYSIS_RATE, return_tensors="pt"
        ).input_features
        with torch.no_grad():
            token_id = int(self.model.detect_language(features.to(self.model.dtype))[0])
        return self.processor.tokenizer.convert_ids_to_tokens(token_id).strip("<|>")

    @staticmethod
    def _locate(model: str) -> Path:
        if Path(model).exists():
            return Path(model)
        if model in models.REGISTRY:
            return models.resolve(model)
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not cached: the hub is unreachable offline
            raise DubbingError(
                f"Whisper checkpoint {model!r} is not in the Hugging Face cache; "
                f"fetch it online with `hf download {model}`"
            ) from None

    def transcribe(self, audio: Path, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        samples = read_speech(audio)
        duration = len(samples) / ANALYSIS_RATE
        spans = speech_spans(samples, self.vad)
        if not spans:
            return finish([], language or "und", duration)
        speech = np.concatenate([samples[int(s * ANALYSIS_RATE) : int(e * ANALYSIS_RATE)] for s, e in spans])
        language = check_language(language) or self.detect_language(speech)
        utterances: list[Utterance | None] = []
        for start, end in spans:
            piece = samples[int(start * ANALYSIS_RATE) : int(end * ANALYSIS_RATE)]
            out = cast(  # one input gives one result (the stub also allows a list, for a list of inputs)
                dict[str, Any],
                self.pipe(
                    {"raw": piece, "sampling_rate": ANALYSIS_RATE},
                    return_timestamps="word",
                    generate_kwargs={"task": "transcribe", "language": language, "num_beams": self.beam_size},
                ),
            )
            words = [self._word(c, start, end) for c in out.get("chunks", [])]
            utterances.append(utterance([w for w in words if w], None, language))
        return finish(utterances, language, duration)

    @staticmethod
    def _word(chunk: dict, offset: float, span_end: float) -> Word | None:
        begin, finish_ = chunk.get("timestamp") or (None, None)
        text = chunk.get("text", "").strip()
        if begin is None or (text.startswith("<|") and text.endswith("|>")):  # a special token, not a word
            return None
        end = finish_ if finish_ is not None else begin
        return make_word(min(offset + begin, span_end), min(offset + end, span_end), text)


BACKENDS: dict[str, type] = {
    "faster-whisper": FasterWhisperTranscriber,
    "openai-whisper": OpenAIWhisperTranscriber,
    "transformers": TransformersWhisperTranscriber,
}
