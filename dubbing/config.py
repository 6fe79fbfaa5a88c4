"""Configuration: YAML defaults, presets and one file per target language, validated by pydantic.

Order of precedence (later wins): configs/defaults.yaml, configs/presets/<preset>.yaml, the user's
config file, then per language configs/languages/<lang>.yaml and the user's `languages: {<lang>: ...}`.
Every file is validated on its own first, so an error names the file that holds the bad key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dubbing.errors import DubbingError, quoted, read_user_text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# `backend` names a stage's backend; `options` are that backend's own settings, validated by its `Options` model
# when the backend is built (dubbing.backends.build): config knows no backend by name.
BackendOptions = dict[str, Any]


class ASRConfig(Section):
    backend: str = "faster-whisper"  # faster-whisper | openai-whisper | transformers
    model: str = "whisper-base"
    # CTranslate2's (faster-whisper); the other backends run float32 on CPU whatever it says
    compute_type: Literal[
        "default",
        "auto",
        "int8",
        "int8_float16",
        "int8_float32",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    ] = "int8"
    language: str | None = None  # None: detect
    beam_size: int = Field(5, ge=1, le=10)
    vad: bool = True
    options: BackendOptions = Field(default_factory=dict)


class DiarizeConfig(Section):
    """Who speaks when, and how words are grouped into dubbing lines."""

    backend: str = "campplus"  # campplus | pyannote | none (one speaker, S1)
    options: BackendOptions = Field(default_factory=dict)  # campplus: merge_cos; pyannote: token_secret
    speakers: int | None = Field(None, ge=1, le=20)  # None: estimate the count
    min_line_s: float = Field(1.0, ge=0, le=10)  # utterance (dubbing line) length bounds
    max_line_s: float = Field(10.0, ge=2, le=30)
    pause_s: float = Field(0.6, gt=0, le=5)  # a silence this long ends a line


class TranslateConfig(Section):
    backend: str = "apertium"  # apertium | bergamot | llama | transformers | openai-compatible
    model: str | None = None  # apertium modes ("eng-spa+es-fr"), a model name from `dub models`, or a folder
    options: BackendOptions = Field(default_factory=dict)  # e.g. openai-compatible: base_url, api_key_env, formality
    glossary: dict[str, str] = Field(default_factory=dict)  # source term -> forced translation (same: keep)
    pivot: str | None = None  # go through this language: `backend` into it, `pivot_backend` out of it
    pivot_backend: str | None = None  # default: `backend`
    pivot_model: str | None = None
    pivot_options: BackendOptions | None = None  # default: `options` when the pivot backend is `backend`
    length_aware: bool = True  # estimate each line's spoken length; ask for shorter renderings that fit
    post_edit: str | None = None  # a backend that corrects the route's output (one with "post-edit": llama)
    post_edit_options: BackendOptions = Field(default_factory=dict)
    # The model asked for a shorter line when the translator's own shorter renderings do not fit once spoken (any
    # language; used when this machine has it; none: only the translator's own)
    shorten_backend: str | None = "llama"


class TTSConfig(Section):
    backend: str = "espeak"  # espeak | kokoro | piper | xtts (dubbing.tts.BACKENDS)
    # Each TTS backend's own options for this language, by backend name: a language record tunes the backend it
    # uses and the ones it may fall back to (espeak's voice and words per minute next to Kokoro's phonemizer). The
    # chosen backend's block is validated by its `Options` when it is built.
    options: dict[str, BackendOptions] = Field(default_factory=dict)
    # Characters (whitespace not counted) spoken per second at speed 1.0, by TTS backend: the translation
    # stage's length estimate (dubbing.tts.estimator). Measured with benchmarks/calibrate_speech_rate.py.
    rates: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    voice: str | None = None  # backend voice for every speaker unless `voices` names one
    voices: dict[str, str] = Field(default_factory=dict)  # speaker -> voice
    match: Literal["embedding", "clone", "none"] = "embedding"  # voice matching (named voices are kept as named)
    clone_when_available: bool = True  # use xtts (cloning each speaker) whenever its weights are cached


class TimingConfig(Section):
    max_speedup: float = Field(1.25, ge=1.0, le=1.4)
    far_gap_s: float = Field(0.6, ge=0.0, le=10.0)  # a silence this long before the next line may be borrowed
    guard_s: float = Field(0.05, ge=0.0, le=1.0)  # kept free before the next line
    shorten: bool = True  # a line that cannot fit goes back to translation once for a shorter version
    max_lead_s: float = Field(0.25, ge=0.0, le=1.0)  # a line that still does not fit may start this early
    # a line that still does not fit slows the picture and sound over its span (the dub gets longer) instead of
    # being cut: by as little as it needs, at most `max_picture_slowdown` (0.1: the span plays 10% slower), and
    # what it still needs at that limit the picture holds at the span's end (the sound pauses): nothing is cut
    slow_picture: bool = False
    max_picture_slowdown: float = Field(0.10, ge=0.0, le=0.10)


class MixConfig(Section):
    loudness_lufs: float = Field(-16.0, ge=-40, le=-5)
    duck_db: float = Field(8.0, ge=0.0, le=40.0)  # background lowered this much while the dub speaks


class SeparateConfig(Section):
    """Splitting the original audio into speech and background (kept under the dub)."""

    backend: str = "classical"  # classical | demucs | none (the dub alone, no background kept)
    options: BackendOptions = Field(default_factory=dict)


MouthBox = tuple[int, int, int, int]  # x, y, width, height in source pixels
MIN_MOUTH_SIDE = 4  # px: a smaller box cannot hold a mouth


def mouth_box_problem(box: MouthBox) -> str | None:
    """What is wrong with a marked mouth box (`lipsync.mouth_box`, `--mouth-box`), or None."""
    if min(box[:2]) < 0 or min(box[2:]) < MIN_MOUTH_SIDE:
        return f"a mouth box is x, y, width, height: x and y 0 or more, width and height at least {MIN_MOUTH_SIDE} px"
    return None


class LipsyncConfig(Section):
    """Re-animating the speaking face's mouth to the dub (dubbing/lipsync)."""

    enabled: bool = True
    backend: str = "classical"  # classical | wav2lip | drawn (cartoon faces the mesh tracks)
    options: BackendOptions = Field(default_factory=dict)  # classical: strength; wav2lip: model_path
    max_faces: int = Field(2, ge=1, le=8)  # faces tracked per frame
    phonemes: bool = True  # shape width, rounding and p/b/m closures from the script's phonemes (espeak-ng)
    # [x, y, width, height] in source pixels: a drawn face's mouth, animated in every frame instead of the tracked
    # face (for faces the mesh does not find: `dub inspect --mouth-box` shows it)
    mouth_box: MouthBox | None = None
    # the dub's voice moves the face too, subtly: brows rise on its stressed words, blinks are added in its pauses
    expression: bool = False
    crf: int = Field(17, ge=0, le=51)  # x264 quality of the re-rendered picture
    # x264 speed preset (veryfast: files about 3x smaller, encoding 1.7x slower)
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
    ] = "superfast"

    @field_validator("mouth_box")
    @classmethod
    def _a_box(cls, box: MouthBox | None) -> MouthBox | None:
        if box is not None and (problem := mouth_box_problem(box)):
            raise ValueError(problem)
        return box


class QAConfig(Section):
    """The quality report's checks and the thresholds that flag a line (see dubbing.qa)."""

    enabled: bool = True
    back_transcribe: bool = True  # ASR of the dub voice (intelligibility); the slowest check
    asr_backend: str = "faster-whisper"  # what hears the dub back (an ASR backend; its model below)
    asr_model: str = "whisper-base"
    lipsync: bool = True  # track the dubbed picture's mouth against the dub audio
    max_error_rate: float = Field(0.5, ge=0, le=2)  # a line heard worse than this is flagged
    min_similarity: float = Field(0.4, ge=-1, le=1)  # dubbed speaker vs source speaker (CAM++ cosine)
    min_lip_sync: float = Field(0.2, ge=-1, le=1)  # mouth-opening vs dub-audio correlation over a line
    loudness_tolerance_lu: float = Field(2.0, gt=0, le=20)  # integrated loudness this far from the target
    max_true_peak_db: float = Field(-1.0, ge=-20, le=0)
    meaning: bool = True  # translate what was heard back to the source language and compare (chrF)
    meaning_backend: str = "auto"  # what translates back: auto = Apertium/Bergamot with the pair, else llama
    meaning_options: dict[str, Any] = Field(default_factory=dict)  # that backend's options
    min_meaning_chrf: float = Field(25.0, ge=0, le=100)  # a line whose back-translation scores under this
    wrong_language: bool = True  # flag words of another language in the script (wordfreq word lists)


class OutputConfig(Section):
    """What the dubbed video holds (the .srt/.vtt files are written whatever is chosen)."""

    # soft: a subtitle track; burn: drawn into the picture; bilingual: a track with the source line over the
    # translation in each cue (NAME.LANG.bilingual.srt/.vtt); none: no subtitle track
    subtitles: Literal["soft", "burn", "bilingual", "none"] = "soft"
    keep_original_audio: bool = False  # the original audio as a second track, after the dub (the default)
    format: Literal["mp4", "mkv", "mov"] = "mp4"  # the dubbed video's container
    subtitles_only: bool = False  # translate and write subtitles only: no voices, no dubbed audio or video


class LanguageQuality(Section):
    """What the project measured for this language's configured route (benchmarks/bench_translate.py and
    benchmarks/bench_languages.py; docs/languages.md): compared with its goals by `shortfalls`."""

    chrf: float | None = None  # held-out chrF of the translate route (benchmarks/data/mt_en.tsv)
    heard_error: float | None = None  # WER (CER for metric: cer) of a real clip's dub heard back
    measured: str | None = None  # when and on what


# The goals of issue-level quality: chrF by language (others: measured and stated), heard-back error by voice kind.
CHRF_GOALS = {"es": 75.0, "pt": 75.0, "fr": 75.0, "de": 65.0, "it": 65.0, "ru": 65.0}
HEARD_ERROR_GOALS = {"kokoro": 0.20}
HEARD_ERROR_GOAL = 0.30  # any other voice (espeak-ng, MBROLA)


def shortfalls(cfg: LanguageConfig) -> list[str]:
    """Where the language's measured quality falls below its goal, one phrase each: `dub doctor` and the run's
    report label the language with them."""
    q, found = cfg.quality, []
    goal = CHRF_GOALS.get(cfg.code)
    if q.chrf is not None and goal is not None and q.chrf < goal:
        found.append(f"translation chrF {q.chrf:.1f} (goal {goal:g})")
    heard_goal = HEARD_ERROR_GOALS.get(cfg.tts.backend, HEARD_ERROR_GOAL)
    if q.heard_error is not None and q.heard_error > heard_goal:
        metric = (cfg.metric or "wer").upper()
        found.append(f"dub heard back with {metric} {q.heard_error:.2f} (goal {heard_goal:g})")
    return found


class LanguageConfig(Section):
    """Everything that is chosen per target language: one record, configs/languages/<code>.yaml. A record with a
    missing piece is reported by `check_language` (`dub doctor`)."""

    code: str = ""  # the record's language code: its file name (set by the loader)
    name: str = ""  # in English ("Spanish"): what a translator that takes instructions is told
    iso639_2: str | None = None  # "spa": the language tag of the dubbed video's audio and subtitle streams
    metric: Literal["wer", "cer"] | None = None  # QA's error rate of the dub heard back (cer: written without spaces)
    probe_text: str | None = None  # about three seconds of varied speech: what voice matching hears each voice say
    asr_prompt: str | None = None  # a phrase in the language's script, read first by the ASR that hears it
    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    quality: LanguageQuality = Field(default_factory=LanguageQuality)


def check_language(cfg: LanguageConfig) -> list[str]:
    """What the record lacks for a run (empty when it is complete); each problem names its key. Backend names and
    options are checked by their stages (`tts.check`, `translate.check`)."""
    problems = []
    if not cfg.name:
        problems.append("name: missing (the language's name in English)")
    if not (cfg.iso639_2 and len(cfg.iso639_2) == 3 and cfg.iso639_2.isalpha() and cfg.iso639_2.islower()):
        problems.append(f"iso639_2: {cfg.iso639_2!r} is not a three-letter ISO 639-2 code (e.g. spa)")
    if cfg.metric is None:
        problems.append("metric: missing (wer, or cer for a language written without spaces)")
    if not (cfg.probe_text or "").strip():
        problems.append("probe_text: missing (a sentence of about three seconds, for voice matching)")
    if cfg.tts.backend not in cfg.tts.rates:
        problems.append(
            f"tts.rates.{cfg.tts.backend}: no speech rate for the language's TTS backend "
            "(characters per second; measure it with benchmarks/calibrate_speech_rate.py)"
        )
    return problems


def language_name(code: str) -> str | None:
    """The name the language's record gives it ("Spanish"), None when it has no record (a source language)."""
    path = config_dir() / "languages" / f"{code.split('-')[0].lower()}.yaml"
    if not path.is_file():
        return None
    return str(_read_yaml(path).get("name") or "") or None


class Settings(Section):
    preset: str = "draft"
    asr: ASRConfig = Field(default_factory=ASRConfig)
    diarize: DiarizeConfig = Field(default_factory=DiarizeConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    lipsync: LipsyncConfig = Field(default_factory=LipsyncConfig)
    separate: SeparateConfig = Field(default_factory=SeparateConfig)
    qa: QAConfig = Field(default_factory=QAConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    language_defaults: LanguageConfig = Field(default_factory=LanguageConfig)
    languages: dict[str, LanguageConfig] = Field(default_factory=dict)
    max_parallel_languages: int = Field(2, ge=1, le=16)

    def for_language(self, code: str) -> LanguageConfig:
        try:
            return self.languages[code]
        except KeyError:
            raise DubbingError(
                f"no configuration for language {code!r}; available: "
                f"{', '.join(sorted(self.languages))} (add configs/languages/{code}.yaml)"
            ) from None


def config_dir() -> Path:
    if env := os.environ.get("DUBBING_CONFIG_DIR"):
        return Path(env)
    return Path(__file__).resolve().parent / "configs"  # package data: `configs/` at the top level links here


MAX_YAML_BYTES = 4 << 20  # a config or a batch manifest larger than this is not one
MAX_YAML_NODES = 200_000  # values in a YAML document once its aliases are expanded


def load_yaml(path: Path, what: str = "config file") -> Any:
    """A YAML file the user wrote, parsed safely and bounded: its size, and the number of values it holds once its
    aliases (`*a`) are expanded, so a "billion laughs" document is refused in milliseconds instead of growing to
    gigabytes in the validation or in an error message. Shared by configs and batch manifests."""
    text = read_user_text(path, what)
    if len(text) > MAX_YAML_BYTES:
        raise DubbingError(f"{path}: {len(text) >> 20} MB is too large for a {what} (at most {MAX_YAML_BYTES >> 20})")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise DubbingError(
                f"{path}: more than {MAX_YAML_NODES} values once its aliases (*name) are expanded; "
                "write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise DubbingError(f"{path}: not valid YAML ({str(exc).splitlines()[0][:200]})") from None
    except RecursionError:
        raise DubbingError(f"{path}: nested too deeply to be a {what}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with every alias expanded (an alias is the same node object again); each
    node is counted once and its size remembered, so this takes time linear in the document's text. A value that
    contains itself is refused: nothing in a config or a manifest is recursive."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise yaml.YAMLError("an alias refers to a value that contains it")
        return sizes[key]
    sizes[key] = -1  # being counted
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[key] = size = min(size, MAX_YAML_NODES + 1)
    return size


def _read_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise DubbingError(f"{path}: expected a mapping of keys at the top level")
    return data


def _validate(model: type[BaseModel], data: dict, source: Path) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            raise DubbingError(f"{source}: unknown key {quoted(key)}; allowed: {', '.join(allowed)}") from None
        raise DubbingError(
            f"{source}: key {quoted(key)}: {err['msg'][:200]} (got {quoted(err.get('input'))})"
        ) from None


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif args := getattr(annotation, "__args__", None):  # dict[str, LanguageConfig]: next part is the key
            inner = args[-1]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
    return sorted(model.model_fields)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def available_languages() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "languages").glob("*.yaml"))


def load_settings(preset: str = "draft", user_config: Path | None = None) -> Settings:
    root = config_dir()
    layers: list[tuple[Path, dict]] = [(root / "defaults.yaml", _read_yaml(root / "defaults.yaml"))]
    preset_file = root / "presets" / f"{preset}.yaml"
    if not preset_file.exists():
        presets = sorted(p.stem for p in (root / "presets").glob("*.yaml"))
        raise DubbingError(f"unknown preset {preset!r}; available: {', '.join(presets)}")
    layers.append((preset_file, _read_yaml(preset_file)))
    if user_config is not None:
        layers.append((Path(user_config), _read_yaml(Path(user_config))))
    merged: dict = {}
    for source, data in layers:
        _validate(Settings, data, source)
        merged = _merge(merged, data)
    merged["preset"] = preset
    user_languages = merged.pop("languages", {}) or {}
    language_defaults = merged.get("language_defaults", {})
    languages = {}
    for path in sorted((root / "languages").glob("*.yaml")):
        data = _read_yaml(path)
        _validate(LanguageConfig, data, path)
        if data.get("code", path.stem) != path.stem:
            raise DubbingError(f"{path}: key 'code' is {data['code']!r}; a record's code is its file name")
        languages[path.stem] = _merge(_merge(language_defaults, data), user_languages.get(path.stem, {}))
    for code, data in user_languages.items():  # languages only the user's file defines
        languages.setdefault(code, _merge(language_defaults, data))
    for code, data in languages.items():
        data["code"] = code
    merged["languages"] = languages
    return _validate(Settings, merged, user_config or root)  # type: ignore[return-value]
