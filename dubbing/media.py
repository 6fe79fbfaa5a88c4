"""Media in and out: probing, audio extraction, muxing. ffmpeg is always called with argument lists."""

from __future__ import annotations

import io
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.tools import display_size, ffmpeg_audio_args, ffmpeg_input, ffprobe, require_tool, run, run_on_samples
from dubbing.types import ANALYSIS_RATE, MIX_RATE, MediaInfo, Stretch, stretched_time


def probe(path: Path) -> MediaInfo:
    """Read duration and stream properties; a clear error for missing, empty or non-media files."""
    path = Path(path)
    if not path.exists():
        raise DubbingError(f"input not found: {path}")
    if path.is_dir():
        raise DubbingError(f"input is a folder, not a media file: {path}")
    if path.stat().st_size == 0:
        raise DubbingError(f"input is empty (0 bytes): {path}")
    fmt, video, audio = ffprobe(path)
    if video is None and audio is None:
        raise DubbingError(f"no audio or video stream in {path}")
    duration = float(fmt.get("duration") or 0.0)
    if duration <= 0:
        raise DubbingError(f"media has no duration (truncated or corrupt?): {path}")
    fps = None
    width, height = display_size(video) if video is not None else (None, None)  # a phone video's, upright
    if video is not None:
        rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"
        fps = float(Fraction(rate)) if rate not in ("0/0", "") else None
    return MediaInfo(
        path=str(path),
        duration_s=duration,
        has_video=video is not None,
        has_audio=audio is not None,
        width=width,
        height=height,
        fps=fps,
        video_codec=video.get("codec_name") if video else None,
        pix_fmt=video.get("pix_fmt") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        channels=audio.get("channels") if audio else None,
    )


def extract_audio(
    path: Path, out: Path, *, rate: int, mono: bool, track: int = 1, duration_s: float | None = None
) -> Path:
    """Decode audio stream `track` (from 1) to a WAV at `rate` (float32 for analysis, 16-bit stereo for mixing),
    its first `duration_s` seconds when given."""
    codec = ["-c:a", "pcm_f32le"] if mono else ["-c:a", "pcm_s16le"]
    if duration_s is not None:
        codec += ["-t", f"{duration_s:.3f}"]
    with atomic_path(out) as tmp:
        run(
            [*ffmpeg_audio_args(path, rate, channels=1 if mono else 2, track=track), *codec, "-f", "wav", str(tmp)],
            f"extracting audio from {path}",
        )
    return Path(out)


def extract_analysis_audio(path: Path, out: Path, track: int = 1, duration_s: float | None = None) -> Path:
    """16 kHz mono: what ASR, VAD and speaker models read."""
    return extract_audio(path, out, rate=ANALYSIS_RATE, mono=True, track=track, duration_s=duration_s)


def extract_mix_audio(path: Path, out: Path, track: int = 1, duration_s: float | None = None) -> Path:
    """48 kHz stereo: kept at full quality for separation and mixing."""
    return extract_audio(path, out, rate=MIX_RATE, mono=False, track=track, duration_s=duration_s)


def audio_tracks(path: Path) -> int:
    """How many audio streams `path` has (an mkv may carry several languages or a commentary)."""
    proc = run(
        [require_tool("ffprobe", "ffmpeg"), "-v", "error", "-select_streams", "a", "-show_entries", "stream=index",
         "-of", "csv=p=0", ffmpeg_input(path)],
        f"reading the audio tracks of {path}",
    )  # fmt: skip
    return len(proc.stdout.split())


def check_audio_track(path: Path, track: int) -> None:
    """A track number the file has, or one line saying which it has."""
    count = audio_tracks(path)
    if not 1 <= track <= count:
        raise DubbingError(
            f"{path} has {count} audio track{'s' if count != 1 else ''}; --audio-track {track} is not one of them"
            + (f" (choose 1 to {count})" if count > 1 else "")
        )


SILENT_DB = -60.0
"""A track whose loudest moment is below this (dBFS) holds no sound worth dubbing (digital silence is -91)."""


def audible_tracks(path: Path) -> list[int]:
    """The audio tracks (from 1) with sound in them: each decoded once through ffmpeg's volumedetect, in bounded
    memory. What the "no speech found" error reads to point at another track."""
    found = []
    for track in range(1, audio_tracks(path) + 1):
        args = ffmpeg_audio_args(path, ANALYSIS_RATE, channels=1, track=track)
        measure = [*args, "-v", "info", "-af", "volumedetect", "-f", "null", "-"]
        proc = run(measure, f"measuring audio track {track} of {path}")
        peaks = re.findall(r"max_volume: (-?[0-9.]+|-inf) dB", proc.stderr)
        if peaks and peaks[-1] != "-inf" and float(peaks[-1]) > SILENT_DB:
            found.append(track)
    return found


def other_track_hint(path: Path, track: int) -> str:
    """For a track without speech: '; track 2 of 2 has audio: --audio-track 2' when another one has sound."""
    others = [t for t in audible_tracks(path) if t != track]
    if not others:
        return ""
    count = audio_tracks(path)
    return f"; track {others[0]} of {count} has audio: --audio-track {others[0]}"


def read_audio(path: Path, rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 (samples, or samples x channels when not `mono`), resampled to `rate` when
    given."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1) if mono else data
    if rate is not None and sr != rate:
        audio, sr = resample(audio, sr, rate, axis=0), rate
    return audio.astype(np.float32), sr


def resample(audio: np.ndarray, from_rate: int, to_rate: int, axis: int = -1) -> np.ndarray:
    """The one resampler for whole signals (float32), along `axis` (time): soxr at high quality, called as
    librosa.resample calls it, so the samples and the length (ceil(n * to / from)) are librosa's, without its
    slow import. mix.py resamples long files as a soxr stream, which gives the same samples."""
    import soxr

    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio
    length = int(np.ceil(audio.shape[axis] * to_rate / from_rate))
    out = np.apply_along_axis(soxr.resample, axis, audio, from_rate, to_rate, quality="soxr_hq")
    out = np.moveaxis(out, axis, 0)[:length]
    out = np.pad(out, [(0, length - len(out))] + [(0, 0)] * (out.ndim - 1))  # as librosa.util.fix_length
    return np.moveaxis(out, 0, axis).astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, rate: int, *, subtype: str = "PCM_16") -> Path:
    """The one audio writer: a WAV written atomically (`subtype` 'PCM_16' for outputs, 'FLOAT' for working files
    that are read again). The caller clips to [-1, 1] where its signal may exceed it. Encoded in memory, then
    written by Python: a full disk is then OSError ENOSPC (one line for the user), where libsndfile writing the file
    itself says only "System error"."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype=subtype)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # mux's output formats, by file suffix
TEXT_SUBTITLES = {"mp4": "mov_text", "mov": "mov_text", "matroska": "copy"}  # mkv keeps the SRT as written


def mux(
    video: Path,
    audio: Path,
    out: Path,
    *,
    subtitles: Path | None = None,
    language: str | None = None,
    duration_s: float | None = None,
    burn: Path | None = None,
    burn_style: str | None = None,
    original_audio: Path | None = None,
    original_language: str | None = None,
    crf: int = 17,
    preset: str = "superfast",
    encode: bool = False,
) -> Path:
    """Put new audio (and a soft subtitle track) under the original video stream, without re-encoding it
    unless `encode` (a picture browsers do not play: `plays_everywhere`) or `burn` asks for it.
    `language` is the ISO 639-2 code the container's metadata wants ('spa'; the language record's `iso639_2`).
    The container follows `out`'s suffix (.mp4, .mov: subtitles as mov_text; .mkv: as SRT). `burn`: an SRT file
    drawn into the picture by libass in `burn_style` (its `force_style`, e.g. 'FontSize=12'; the picture is then
    encoded once, with x264 at `crf` and `preset`).
    `original_audio`: a second audio track after the dub, tagged `original_language`; the dub is the default."""
    for code in (language, original_language):
        if code is not None and not (len(code) == 3 and code.isalpha()):
            raise DubbingError(f"mux needs an ISO 639-2 language code (three letters, e.g. 'spa'), got {code!r}")
    container = CONTAINERS.get(Path(out).suffix.lower())
    if container is None:
        raise DubbingError(f"{out}: a dubbed video is .mp4, .mov or .mkv")
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    inputs = [video, audio, *([original_audio] if original_audio else []), *([subtitles] if subtitles else [])]
    cmd = [ffmpeg, "-nostdin", "-y", "-v", "error"] + [arg for path in inputs for arg in ("-i", ffmpeg_input(path))]
    cmd += ["-map", "0:v:0", "-map", "1:a:0"] + (["-map", "2:a:0"] if original_audio else [])
    if subtitles is not None:
        cmd += ["-map", f"{len(inputs) - 1}:s:0", "-c:s", TEXT_SUBTITLES[container]]
        if language:
            cmd += ["-metadata:s:s:0", f"language={language}"]
    if burn is not None or encode:
        style = f":force_style={_filter_value(burn_style)}" if burn_style else ""
        drawn = [f"subtitles=filename={_filter_value(burn.name)}{style}"] if burn is not None else []
        cmd += ["-vf", ",".join([*drawn, EVEN_SIZE]), "-c:v", "libx264", "-crf", str(crf), "-preset", preset]
        cmd += ["-pix_fmt", "yuv420p", "-profile:v", "high"]
    else:
        cmd += ["-c:v", "copy"]
    cmd += ["-c:a", "aac", "-b:a", "192k"]
    tracks = [language, original_language] if original_audio is not None else [language]
    for i, code in enumerate(tracks):
        cmd += [f"-disposition:a:{i}", "default" if i == 0 else "0"]
        if code:
            cmd += [f"-metadata:s:a:{i}", f"language={code}"]
    if original_audio is not None:
        cmd += ["-metadata:s:a:0", "title=dub", "-metadata:s:a:1", "title=original"]
    if duration_s is not None:
        cmd += ["-t", f"{duration_s:.3f}"]
    if container != "matroska":
        cmd += ["-movflags", "+faststart"]
    with atomic_path(out) as tmp:
        # the subtitles filter reads `burn` by its name from its folder: no path to escape but the name
        run(cmd + ["-f", container, str(Path(tmp).absolute())], f"writing {out}", cwd=burn.parent if burn else None)
    return Path(out)


EVEN_SIZE = "pad=ceil(iw/2)*2:ceil(ih/2)*2"  # 4:2:0 needs even sizes: an odd one gets one row/column more


def plays_everywhere(info: MediaInfo) -> bool:
    """Whether the video stream can be copied into a dub as it is: 8-bit 4:2:0 at an even size, what browsers and
    players decode (a 10-bit or 4:4:4 source, or an odd size, is encoded again when no lipsync picture replaces it)."""
    even = (info.width or 0) % 2 == 0 and (info.height or 0) % 2 == 0
    return info.pix_fmt in ("yuv420p", "yuvj420p") and even


def _filter_value(text: str) -> str:
    """`text` as a value of a filter option inside an ffmpeg filter graph (both levels of escaping)."""
    for special in ("\\", "'", ":"):
        text = text.replace(special, "\\" + special)
    for special in ("\\", "'", "[", "]", ",", ";"):
        text = text.replace(special, "\\" + special)
    return text


# ---------------------------------------------------------------- slowing spans down (config timing.slow_picture)


def stretch_video(
    video: Path, out: Path, stretches: list[Stretch], *, duration_s: float, crf: int = 17, preset: str = "superfast"
) -> Path:
    """The picture of `video` (no sound) with each of `stretches` slowed down, on the dub's timeline: a frame at
    source time t is shown at `stretched_time(t)`, at the source's frame rate (frames repeated where it plays
    slower), `duration_s` long (the source's plus the added time); encoded once with x264 at `crf`/`preset`."""
    info = probe(video)
    if not info.has_video:
        raise DubbingError(f"{video} has no picture to slow down")
    fps = Fraction(info.fps or 25.0).limit_denominator(1001)
    shifted = "".join(
        f"+gte(T,{s.start:.6f})*{s.added_s:.6f}"  # a hold: every frame from it on later; fps repeats the one before
        if s.held
        else f"+clip(T-{s.start:.6f},0,{s.end - s.start:.6f})*{s.factor - 1.0:.9f}"
        for s in stretches
    )
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(video), "-map", "0:v:0", "-an", "-sn"]
    # the last frame held on (tpad) so the picture never ends before `duration_s` (a hold at the end included)
    tail = 1.0 + sum(s.added_s for s in stretches if s.held)
    graph = f"setpts='(T{shifted})/TB',fps={fps},tpad=stop_mode=clone:stop_duration={tail:.3f},{EVEN_SIZE}"
    cmd += ["-vf", graph, "-t", f"{duration_s:.6f}"]
    cmd += ["-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p", "-profile:v", "high"]
    with atomic_path(out) as tmp:
        run(cmd + ["-f", "mp4", str(Path(tmp).absolute())], f"slowing down the picture of {video}")
    return Path(out)


def stretch_audio(audio: Path, out: Path, stretches: list[Stretch]) -> Path:
    """The sound of `audio` (a WAV) with each of `stretches` slowed down at its own pitch (ffmpeg's atempo),
    sample-exact on the dub's timeline: source time t lands on sample round(stretched_time(t) * rate), so a
    background or an original track stays with the picture `stretch_video` makes. Written as float WAV."""
    samples, rate = sf.read(str(audio), dtype="float32", always_2d=True)
    edges = sorted({0.0, *(t for s in stretches for t in (s.start, s.end))})
    pieces, at = [], 0  # `at`: samples written so far
    for a, b in zip(edges, [*edges[1:], None], strict=True):
        lo = min(len(samples), int(round(a * rate)))
        hi = len(samples) if b is None else min(len(samples), int(round(b * rate)))
        piece = samples[lo:hi]
        begin = int(round(stretched_time(a, stretches) * rate))  # after any hold at `a`: there the sound pauses
        pieces.append(np.zeros((max(0, begin - at), samples.shape[1]), dtype=samples.dtype))
        span = next((s for s in stretches if b is not None and abs(s.start - a) < 1e-9 and abs(s.end - b) < 1e-9), None)
        if b is not None and hi == int(round(b * rate)):  # a whole segment: its exact place on the dub's timeline
            held = sum(s.added_s for s in stretches if s.held and abs(s.start - b) < 1e-9)  # a hold at `b` follows it
            want = int(round((stretched_time(b, stretches) - held) * rate)) - begin
        else:  # the sound ends inside it
            want = int(round(len(piece) * (span.factor if span else 1.0)))
        if span is not None and len(piece) and want > 0:
            piece = _atempo(piece, rate, len(piece) / want)
        pieces.append(np.pad(piece[:want], ((0, max(0, want - len(piece))), (0, 0))))
        at = max(at, begin) + max(0, want)
    result = np.concatenate(pieces) if pieces else samples[:0]
    return write_audio(out, result[:, 0] if samples.shape[1] == 1 else result, rate, subtype="FLOAT")


def _atempo(samples: np.ndarray, rate: int, tempo: float) -> np.ndarray:
    """`samples` (frames x channels) played at `tempo` (0.9: 10% slower), pitch kept: ffmpeg's atempo."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    command = [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", "{in}", "-af", f"atempo={tempo:.6f}", "-c:a", "pcm_f32le",
               "{out}"]  # fmt: skip
    return run_on_samples(samples, rate, command, "slowing down the sound")
