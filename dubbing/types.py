"""Shared data types: the only thing stages exchange."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

ANALYSIS_RATE = 16_000  # what ASR, VAD and speaker models read
MIX_RATE = 48_000  # full quality, for separation and mixing
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "km", "yue", "bo"}  # words joined without spaces


class MediaInfo(BaseModel):
    path: str
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    pix_fmt: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = None


class Utterance(BaseModel):
    start: float
    end: float
    text: str
    speaker: str = "S1"
    words: list[Word] = Field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @classmethod
    def from_words(cls, words: list[Word], language: str | None = None) -> Utterance:
        """An utterance spanning `words`, spoken by the first word's speaker (S1 when unknown)."""
        sep = "" if language in NO_SPACE_LANGUAGES else " "
        return cls(
            start=words[0].start,
            end=words[-1].end,
            text=sep.join(w.word for w in words).strip(),
            speaker=words[0].speaker or "S1",
            words=list(words),
        )


class Transcript(BaseModel):
    language: str
    duration_s: float
    utterances: list[Utterance] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})


class SpeakerTurn(BaseModel):
    """A stretch of time in which one speaker talks (diarization's output)."""

    start: float
    end: float
    speaker: str


class SpeakerProfile(BaseModel):
    """One source speaker, for the voice stage to match: embedding, pitch and a clean reference clip.
    `speaker`, `reference_clip` and `median_pitch_hz` carry the same meaning as in `SourceSpeaker`."""

    speaker: str
    reference_clip: str  # WAV of their longest speech nobody else talks over
    reference_start: float
    reference_end: float
    median_pitch_hz: float | None = None
    talk_time_s: float
    utterances: int
    embedding: list[float] = Field(default_factory=list)  # L2-normalised CAM++ (192 dims)
    embedding_model: str = "campplus"


# What fitting did to a line (voice.timing and voice.track; the report counts each): a shorter rendering from the
# translator (by the translate stage's estimate, or asked by the voice stage when the line measured too long even
# with the silence around it at the maximum speed-up), the silence after it, the silence before it (it starts
# early), a speed-up up to the limit, a slight slow-down of the picture and sound over its span (config
# `timing.slow_picture`: the output grows by the time added), and, with that switch, when the slow-down's limit is
# not enough, a hold of the picture at the span's end for the rest (so nothing is dropped); "cut" when all that
# was not enough (only without the switch).
FIT_ACTIONS = ("shortened", "borrowed_after", "borrowed_before", "sped_up", "picture_slowed", "picture_held", "cut")


class ScriptLine(BaseModel):
    """One translated line and the slot it must fit."""

    index: int
    speaker: str
    start: float
    end: float
    source_text: str
    text: str
    estimated_s: float | None = None  # spoken length of `text` predicted by the translate stage, at speed 1.0
    slot_s: float | None = None  # time from start to the next line's start (or the end): what the estimate must fit
    length_action: str | None = None  # fits | shortened | shortened_over | over | empty (see translate.isochrony)
    first_text: str | None = None  # the translation before it was shortened
    synth_s: float | None = None
    natural_s: float | None = None  # length of the synthesised line at speed 1.0 (voice stage)
    fit_end: float | None = None  # latest end the timing fit allowed (next line's start, less a guard)
    speed: float | None = None
    over_limit: bool = False  # the line could not fit its slot even at the maximum speed-up: its end is cut
    dub_start: float | None = None  # where the dub of the line starts (before `start` when it borrowed silence)
    fit: list[str] = Field(default_factory=list)  # what fitting did (FIT_ACTIONS)
    cut_s: float | None = None  # seconds of speech lost at the end (over the limit)
    voice: str | None = None
    notes: list[str] = Field(default_factory=list)


class Script(BaseModel):
    source_language: str
    language: str
    translator: str
    pivot: str | None = None  # the language(s) translated through when no direct route exists
    length_basis: str | None = None  # what the lines' estimated_s were computed for (TTS backend, speed-up)
    lines: list[ScriptLine] = Field(default_factory=list)


class PlacedClip(BaseModel):
    """A synthesised line placed on the dub timeline."""

    index: int
    start: float
    end: float
    speed: float
    over_limit: bool = False
    fit: list[str] = Field(default_factory=list)  # what fitting did to the line (FIT_ACTIONS)
    cut_s: float = 0.0  # seconds lost at the end when over the limit


class Stretch(BaseModel):
    """A span of the source slowed down (picture and sound together) so that a line fits: the source's
    `start`..`end` lasts `added_s` longer in the dub (config `timing.slow_picture`). A span of no length
    (`start` == `end`) is a hold: the picture stops on its frame at `start` for `added_s` and the sound pauses."""

    start: float  # source seconds
    end: float
    added_s: float

    @property
    def held(self) -> bool:
        return self.end <= self.start

    @property
    def factor(self) -> float:
        """How much slower the span plays (1.1: 10% slower; a hold: infinitely)."""
        return float("inf") if self.held else (self.end - self.start + self.added_s) / (self.end - self.start)


def stretched_time(t: float, stretches: list[Stretch]) -> float:
    """Where source time `t` falls on the dub's timeline once `stretches` are slowed down (each stretches
    linearly over its span; everything after it moves by its added time; a hold moves `t` from its `start` on)."""
    return t + sum(added_before(t, s) for s in stretches)


def added_before(t: float, stretch: Stretch) -> float:
    """What `stretch` adds before source time `t` on the dub's timeline."""
    if stretch.held:
        return stretch.added_s if t >= stretch.start else 0.0
    return min(max(t - stretch.start, 0.0), stretch.end - stretch.start) * (stretch.factor - 1.0)


class DubTrack(BaseModel):
    language: str
    voice_path: str
    sample_rate: int
    duration_s: float  # of the dub's timeline: the source's, plus the time the stretches add
    clips: list[PlacedClip] = Field(default_factory=list)  # on the dub's timeline
    voices: dict[str, VoiceMatch] = Field(default_factory=dict)  # speaker -> the voice it was given
    stretches: list[Stretch] = Field(default_factory=list)  # spans of the source slowed down, in order


class VoiceMatch(BaseModel):
    """The TTS voice chosen for one speaker and how it is moved toward the original (voice matching)."""

    speaker: str
    backend: str
    voice: str  # a bank voice, a blend ('a*0.7+b*0.3'), or for cloning backends the reference clip path
    pitch_hz: float | None = None  # target median pitch (None: leave the voice's own)
    formant_ratio: float = 1.0  # praat "Change gender" formant shift (1: unchanged)
    pitch_range: float = 1.0  # scale of pitch movement around the median
    eq_db: list[float] = Field(default_factory=list)  # gains per band of voice.EQ_EDGES_HZ (timbre/channel match)
    seconds_per_char: float | None = None  # speaking rate of the voice at speed 1 (from its probe sentence)
    similarity_default: float | None = None  # cosine(source, backend's default voice)
    similarity_bank: float | None = None  # cosine(source, chosen voice before pitch/formant shifts)
    similarity_after: float | None = None  # cosine(source, voice after matching)
    # Casting (voice matching's record of why, shown in the report): the speaker as measured, the voice as cast.
    gender: str | None = None  # the speaker's: 'female' | 'male', estimated (gender_cues) or from the named voice
    gender_cues: dict[str, float] = Field(default_factory=dict)  # f0/formants/embedding votes (+ female, - male)
    f0_hz: list[float] = Field(default_factory=list)  # the speaker's F0 10th, 50th and 90th percentile
    age_register: str | None = None  # the speaker's age register: 'child' | 'adult-high' | 'adult-low' (from F0)
    register_reason: str = ""  # the F0 figures and the bounds that put the speaker in it
    voice_register: str | None = None  # the cast voice's own, from its pitch (bank voices are adults')
    voice_language: str | None = None  # the language (accent) the voice was recorded in, from its name
    voice_gender: str | None = None
    candidates: list[str] = Field(default_factory=list)  # the voices considered, best first, with their similarity
    reason: str = ""  # why this voice (native or not, gender kept, closest timbre, named by the user)

    @property
    def label(self) -> str:
        """How script.json names the voice (enough to reproduce it)."""
        extra = f" pitch={self.pitch_hz:.0f}Hz formant={self.formant_ratio:.2f}" if self.pitch_hz else ""
        return f"{self.backend}:{self.voice}{extra}{' eq' if self.eq_db else ''}"


class SourceSpeaker(BaseModel):
    """What voice matching needs about an original speaker: a clip of their speech and its median pitch
    (filled from diarization's speaker profile when there is one, else cut from the source audio)."""

    speaker: str
    reference_clip: str
    median_pitch_hz: float | None = None


class LanguageOutputs(BaseModel):
    video: str | None = None
    audio: str | None = None  # None (and voice): subtitles only, nothing was voiced
    voice: str | None = None
    srt: str
    vtt: str
    script: str
    report: str
    # what the video holds (config `output`): its subtitles (soft: a track of `srt`; bilingual: a track of
    # `bilingual_srt`; burn: drawn into the picture; none), its audio tracks in order (ISO 639-2, the dub first)
    subtitles: str | None = None
    audio_tracks: list[str] = Field(default_factory=list)
    bilingual_srt: str | None = None  # the source line over the translation in each cue
    bilingual_vtt: str | None = None
    # spans of the source slowed down so lines fit (config `timing.slow_picture`): the video is longer by their
    # added_s; the subtitles, script and report times are on the dub's (stretched) timeline
    stretched: list[Stretch] = Field(default_factory=list)

    def files(self) -> dict[str, str]:
        """The files this language made, by key (paths relative to the run folder): every field but `subtitles`,
        `audio_tracks` and `stretched`, which say what the video holds."""
        return {
            key: value
            for key, value in self.model_dump(exclude={"subtitles", "audio_tracks", "stretched"}).items()
            if value is not None
        }


class Manifest(BaseModel):
    source: str
    source_language: str
    duration_s: float
    speakers: list[str]
    transcript: str
    outputs: dict[str, LanguageOutputs] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)  # a language that did not finish -> why
    review: str | None = None  # report.html: the review page of every language (pipeline.review_page)

    def source_path(self, out: Path) -> Path:
        """The source video, from any folder: manifests store it absolute; an older one holds it relative to where
        its run started, tried from here and then from the manifest's folder `out`."""
        source = Path(self.source)
        if source.is_absolute() or source.exists():
            return source
        beside = Path(out) / source
        return beside if beside.exists() else source


class InputCheck(BaseModel):
    """A warning about an input that predicts a poor result (lipsync: faces, pose, resolution, cuts)."""

    code: str  # no-face, face-missing, profile, low-resolution, several-faces, mouth-covered, scene-cuts
    message: str
    value: float | None = None


class FaceTracks(BaseModel):
    """Faces tracked once per video by the lipsync stage; the landmarks themselves are in `landmarks` (npz)."""

    video: str
    landmarks: str | None = None
    frames: int
    fps: float
    width: int
    height: int
    faces: int  # distinct face tracks (a scene cut starts new ones)
    face_frames: float  # share of frames with at least one face
    scene_cuts: list[float] = Field(default_factory=list)  # seconds
    line_faces: list[int | None] = Field(default_factory=list)  # per transcript utterance: the face that speaks it
    checks: list[InputCheck] = Field(default_factory=list)


class StretchedSource(BaseModel):
    """The source on the dub's timeline when spans were slowed down (`DubTrack.stretches`): its picture, its
    background and original sound, and its faces tracked again on that picture; what the mix, the lipsync render
    and the mux use instead of the source's own."""

    video: str
    duration_s: float
    stretches: list[Stretch] = Field(default_factory=list)  # the spans slowed down (the track's)
    background: str | None = None
    original_audio: str | None = None
    faces: FaceTracks | None = None


class QAFlag(BaseModel):
    """One thing in a dub that failed a QA threshold, with the time to jump to."""

    check: str  # intelligibility | timing | voice | lipsync | loudness | input
    message: str
    start: float | None = None
    end: float | None = None
    line: int | None = None  # script line index, when the flag belongs to a line
    value: float | None = None


class LineQA(BaseModel):
    """The QA figures of one script line (the rows of the review page's table)."""

    index: int
    speaker: str
    start: float
    end: float  # where the dub of this line ends on the timeline
    source_text: str
    text: str
    heard: str | None = None  # back-transcription of the dub over this line
    error_rate: float | None = None  # word (or character) error of `heard` against `text`
    speed: float | None = None
    over_limit: bool = False
    fit: list[str] = Field(default_factory=list)  # what fitting did (FIT_ACTIONS)
    lip_sync: float | None = None  # correlation of mouth opening with the dub audio over this line
    back_translation: str | None = None  # `heard` (or `text` without back-transcription) in the source language
    meaning_chrf: float | None = None  # chrF (0-100) of `back_translation` against `source_text`
    foreign_words: list[str] = Field(default_factory=list)  # words of `text` in another language
    flags: list[str] = Field(default_factory=list)  # the checks this line failed


class QAReport(BaseModel):
    """report.json for one language. The first keys are the original summary (kept for readers of old reports);
    each check then has its own section, every failing line is in `flags` with its time."""

    language: str
    translator: str
    pivot: str | None = None
    lines: int
    max_speed: float
    lines_over_limit: list[int] = Field(default_factory=list)
    intelligibility: dict = Field(default_factory=dict)
    timing: dict = Field(default_factory=dict)
    voice: dict = Field(default_factory=dict)
    lipsync: dict = Field(default_factory=dict)
    loudness: dict = Field(default_factory=dict)
    meaning: dict = Field(default_factory=dict)
    wrong_language: dict = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    below_goal: list[str] = Field(default_factory=list)  # the language's measured shortfalls (config.shortfalls)
    thresholds: dict = Field(default_factory=dict)
    line_qa: list[LineQA] = Field(default_factory=list)
    flags: list[QAFlag] = Field(default_factory=list)
    dubbed: bool = True  # False: a subtitles-only run, nothing voiced and nothing to measure
