"""Lipsync stage: track faces once per video, then re-animate the speaking face's mouth to new speech.

Modules: `video` (ffmpeg frame pipes), `faces` (mesh tracking, cuts, speakers), `visemes` (mouth targets
from audio and phonemes), `render` (the `Renderer` protocol and its backends), `marked` (drawn mouths: a box
the user marks where the mesh finds no face, and the `drawn` renderer), `avatar` (a talking video from one
photo), `expression` (a dub's brows, head dips and blinks from its voice, with the avatar's pieces), `inspect` (input
checks and a contact sheet). This module composes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dubbing import backends, progress
from dubbing.config import MouthBox
from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.lipsync import visemes
from dubbing.lipsync.faces import FaceData, choose_active, face_box, mouth_gap, track_faces
from dubbing.lipsync.marked import MarkedMouth, fit_mouth_box, marked_mouth_check
from dubbing.lipsync.render import BACKENDS, Clip, Renderer
from dubbing.lipsync.video import (
    FrameWriter,
    VideoStream,
    changed_box,
    patch_yuv,
    probe_video,
    read_frames,
    read_frames_at,
    yuv_crop_bgr,
    yuv_supported,
)
from dubbing.tools import decode_audio
from dubbing.types import FaceTracks

__all__ = [
    "BACKENDS",
    "FaceData",
    "LipsyncResult",
    "analyse",
    "drawn_mouths",
    "mouths_path",
    "read_tracks",
    "speaking_faces",
    "track",
    "render_dub",
    "Renderer",
    "load_audio",
    "lipsync_video",
    "mouth_opening",
    "render_faces",
    "render_marked",
    "track_video",
]

log = logging.getLogger(__name__)
DRIVE_RATE = 16_000


@dataclass
class LipsyncResult:
    out: Path
    frames: int
    animated_frames: int
    faces: int
    renderer: str
    mouths: np.ndarray | None = None  # per frame, the inner-lip gap as drawn (NaN: no face); None: not known


def load_audio(path: Path, rate: int = DRIVE_RATE, offset_s: float = 0.0, track: int = 1) -> np.ndarray:
    """Any audio (or a video's audio: its audio stream `track`, from 1) as mono float32 at `rate`; a positive
    offset delays it."""
    audio = decode_audio(path, rate, track)
    shift = int(round(offset_s * rate))
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    return audio


def track_video(
    video: Path, *, max_faces: int = 2, keep: tuple[int, ...] = (), kept: dict | None = None
) -> tuple[FaceData, VideoStream]:
    stream = probe_video(video)
    frames = read_frames(video, stream)
    faces = track_faces(
        frames, stream.fps_float, max_faces=max_faces, keep=keep, kept=kept, expected_frames=stream.frames
    )
    return faces, stream


def mouth_opening(video: Path | None, *, max_faces: int = 2, landmarks: Path | None = None) -> tuple[np.ndarray, float]:
    """Per frame, the inner-lip gap of the face this stage would animate (NaN where there is none), and the frame
    rate: from landmarks already tracked (`landmarks`, the track-faces step's file) or else from the video's own
    pixels. What QA compares with the dub's loudness."""
    if landmarks is not None:
        faces = FaceData.load(landmarks)
    elif video is not None:
        faces, _stream = track_video(video, max_faces=max_faces)
        choose_active(faces)
    else:
        raise DubbingError("mouth_opening needs a video or tracked landmarks")
    gap = np.full(faces.frames, np.nan, np.float32)
    for t in range(min(faces.frames, len(faces.active))):
        face = faces.face_of(t, int(faces.active[t]))
        if face is not None:
            gap[t] = mouth_gap(face)
    return gap, faces.fps


def mouth_drive(
    audio: np.ndarray,
    fps: float,
    frames: int,
    *,
    lines: list[tuple[float, float, str]] | None = None,
    language: str | None = None,
) -> visemes.MouthDrive:
    """Per-frame mouth targets from the driving audio, shaped by the script's phonemes when given."""
    drive = visemes.drive_from_audio(audio, DRIVE_RATE, fps, frames)
    if lines and language:
        visemes.apply_script(drive, lines, language, fps)
    return drive


def work_box(face: np.ndarray, stream_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The even-aligned region a renderer works in: the face with margins wide enough for the warp's fixed
    ring (sides and below the chin) and the eyes (blinks). Work outside it costs nothing."""
    x0, y0, x1, y1 = face_box(face)
    fw, fh = x1 - x0, y1 - y0
    width, height = stream_size
    box = (x0 - 0.4 * fw, y0 - 0.1 * fh, x1 + 0.4 * fw, y1 + 0.5 * fh)
    x0, y0 = max(0, int(box[0])) & ~1, max(0, int(box[1])) & ~1
    x1, y1 = min(width, int(np.ceil(box[2])) + 1) & ~1, min(height, int(np.ceil(box[3])) + 1) & ~1
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def render_faces(
    frames: Iterable[np.ndarray],
    frames_at: Callable[[list[int]], dict[int, np.ndarray]],
    fps: float,
    faces: FaceData,
    drive: visemes.MouthDrive,
    audio: np.ndarray,
    writer: FrameWriter,
    renderer: Renderer,
    *,
    blink: np.ndarray | None = None,
    brows: np.ndarray | None = None,
    nod: np.ndarray | None = None,
    mouths: list[float] | None = None,
) -> int:
    """Stream every frame through the renderer into `writer`; returns how many frames had a face animated. A
    `mouths` list given gets, per frame written, the inner-lip gap of the face as the renderer drew it (NaN: no
    face); it is left empty when the renderer does not say what it drew (no `drawn`). `blink`: per-frame eye
    closure the renderer adds; `brows`: per-frame brow raise in [0, 1] and `nod`: the head's dip in face heights,
    both drawn before it (`expression`)."""
    tracks = {int(k): faces.track_frames(int(k)) for k in np.unique(faces.active) if k >= 0}
    draw: Callable[[np.ndarray, int, np.ndarray | None, int], np.ndarray] = renderer.render
    if brows is not None or nod is not None:
        # here: expression builds on avatar.py, which imports this module
        from dubbing.lipsync.expression import NOD_MIN, dip_head, raise_brows

        def expressive(image: np.ndarray, t: int, face: np.ndarray | None, track: int) -> np.ndarray:
            if face is not None and nod is not None and t < len(nod) and nod[t] >= NOD_MIN:
                image, face = dip_head(image, face, float(nod[t]))
            if face is not None and brows is not None and t < len(brows) and brows[t] >= 1 / 64:
                image, face = raise_brows(image, face, float(brows[t]))
            return renderer.render(image, t, face, track)

        draw = expressive

    clip = Clip(
        fps=fps, drive=drive, audio=audio, audio_rate=DRIVE_RATE, tracks=tracks, frames_at=frames_at, blink=blink
    )
    renderer.prepare(clip)
    animated = 0
    drawn: list[float] | None = [] if mouths is not None and hasattr(renderer, "drawn") else None

    def record(face: np.ndarray | None) -> None:
        if drawn is not None:
            now = getattr(renderer, "drawn", None) if face is not None else None
            drawn.append(np.nan if now is None else mouth_gap(now))

    for t, frame in enumerate(progress.counted(frames, faces.frames, "frames")):
        track = int(faces.active[t]) if t < faces.frames else -1
        face = faces.face_of(t, track)
        animated += face is not None
        if not writer.yuv:
            writer.write(draw(frame, t, face, track))
            record(face)
            continue
        if face is None:
            writer.write(frame)
            record(None)
            continue
        x0, y0, x1, y1 = work_box(face, stream_size=(frame.shape[1], frame.shape[0] * 2 // 3))
        writer.write(
            _patched(frame, (x0, y0, x1, y1), lambda crop: draw(crop, t, face - [x0, y0], track))  # noqa: B023
        )
        record(face)  # the gap does not depend on where the crop was cut
    if drawn is not None and mouths is not None:
        mouths.extend(drawn)
    return animated


def _patched(
    frame: np.ndarray, box: tuple[int, int, int, int], render: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The I420 `frame` with its even-aligned `box` rendered by `render` (BGR in, BGR out: the same array when
    nothing changed): only the pixels that changed are converted back, the rest stays bit-exact."""
    x0, y0, _x1, _y1 = box
    crop = yuv_crop_bgr(frame, box)
    new = render(crop)
    changed = None if new is crop else changed_box(crop, new)
    if changed is None:
        return frame
    bx0, by0, bx1, by1 = changed
    return patch_yuv(frame, new[by0:by1, bx0:bx1], x0 + bx0, y0 + by0)


def render_marked(frames: Iterable[np.ndarray], writer: FrameWriter, mouth: MarkedMouth, mouths: list[float]) -> int:
    """Stream every frame into `writer` with the marked mouth opened by the drive; `mouths` gets, per frame, the
    opening drawn (a fraction of the box's width). Returns the frames written."""
    x0, y0, x1, y1 = region = mouth.region
    count = 0
    for t, frame in enumerate(frames):
        if writer.yuv:
            writer.write(_patched(frame, region, lambda crop: mouth.render(crop, t)))  # noqa: B023
        else:
            out = frame.copy()
            out[y0:y1, x0:x1] = mouth.render(np.ascontiguousarray(frame[y0:y1, x0:x1]), t)
            writer.write(out)
        mouths.append(mouth.drawn)
        count += 1
    return count


def lipsync_video(
    video: Path,
    audio: Path,
    out: Path,
    *,
    offset_ms: float = 0.0,
    backend: str = "classical",
    backend_options: Mapping[str, Any] | None = None,
    fmt: str | None = None,
    resolution: str | None = None,
    max_faces: int = 2,
    crf: int = 17,
    preset: str = "superfast",
    faces: FaceData | None = None,
    lines: list[tuple[float, float, str]] | None = None,
    language: str | None = None,
    mux_audio: bool = True,
    audio_track: int = 1,
    mouth_box: MouthBox | None = None,
    expression: bool = False,
) -> LipsyncResult:
    """Re-voice VIDEO with AUDIO (its audio stream `audio_track`, from 1): the most prominent face (or the active
    speaker per line) mouths the new audio; with `mouth_box` (x, y, w, h: a drawn face the mesh does not find),
    the mouth marked there does in every frame, and no face is tracked. With `expression`, the tracked face's
    brows rise and the head dips on the audio's stressed words and it blinks in its pauses too
    (`expression.dub_expression`).
    A video without a face is passed through re-encoded, so the caller still gets a picture. `backend_options`
    are the renderer's own (only those set: another renderer's options are an error)."""
    stream = probe_video(video)
    renderer = None if mouth_box else backends.build(BACKENDS, backend, "lipsync", backend_options)
    if mouth_box:
        mouth_box = fit_mouth_box(mouth_box, stream.width, stream.height)
    offset_s = offset_ms / 1000.0
    speech = load_audio(audio, offset_s=offset_s, track=audio_track)
    if faces is None and renderer is not None:
        faces, _ = track_video(video, max_faces=max_faces)
        choose_active(faces)
    frames = faces.frames if faces is not None else stream.frames
    drive = mouth_drive(speech, stream.fps_float, frames, lines=lines, language=language)
    fmt = fmt or (Path(out).suffix.lstrip(".") or "mp4")
    duration = frames / stream.fps_float
    yuv = yuv_supported(stream)
    writer = FrameWriter(
        out,
        stream,
        yuv=yuv,
        audio=Path(audio) if mux_audio else None,
        audio_track=audio_track,
        audio_offset_s=offset_s,
        fmt=fmt,
        resolution=resolution,
        crf=crf,
        preset=preset,
        duration_s=duration,
    )
    mouths: list[float] = []
    with writer:
        if renderer is None or faces is None:
            assert mouth_box is not None
            mouth = MarkedMouth(mouth_box, (stream.width, stream.height), drive)
            animated = render_marked(read_frames(video, stream, yuv=yuv), writer, mouth, mouths)
            name, count = mouth.name, 0
        else:
            moves = None
            if expression:
                from dubbing.lipsync.expression import dub_expression  # here: it builds on avatar.py (imports us)

                moves = dub_expression(faces, speech, drive, stream.fps_float)
            animated = render_faces(
                read_frames(video, stream, yuv=yuv),
                lambda wanted: read_frames_at(video, stream, wanted),
                stream.fps_float,
                faces,
                drive,
                speech,
                writer,
                renderer,
                blink=moves.blink if moves else None,
                brows=moves.brows if moves else None,
                nod=moves.nod if moves else None,
                mouths=mouths,
            )
            name, count = renderer.name, len(faces.tracks())
    drawn = np.asarray(mouths, np.float32) if mouths else None
    return LipsyncResult(Path(out), writer.frames, animated, count, name, drawn)


def analyse(
    video: Path,
    landmarks: Path | None,
    *,
    lines: list[tuple[float, float]] | None = None,
    source_audio: Path | None = None,
    max_faces: int = 2,
    keep: tuple[int, ...] = (),
    kept: dict | None = None,
) -> tuple[FaceTracks, FaceData]:
    """Once per video: track faces, pick the speaking face of each line (by how its mouth follows the source
    speech), check the input, and save the landmarks for the per-language renders."""
    faces, _stream = track_video(video, max_faces=max_faces, keep=keep, kept=kept)
    return _choose_speakers(video, faces, landmarks, lines, source_audio), faces


def track(video: Path, landmarks: Path, *, max_faces: int = 2) -> FaceTracks:
    """The first half of `analyse`, which needs no transcript and so runs beside the transcription: every face
    tracked, saved to `landmarks`; no line has its face yet (`speaking_faces`)."""
    faces, _stream = track_video(video, max_faces=max_faces)
    faces.save(landmarks)
    return _summary(video, faces, landmarks, line_faces=[])


def untracked(video: Path, landmarks: Path) -> FaceTracks:
    """For a video whose mouth the user marked (lipsync.mouth_box): the render animates the box, not a face, so
    the face mesh is not run; an empty track is saved so the steps after read it as any other."""
    stream = probe_video(video)
    faces = FaceData.empty(stream.frames, stream.fps_float, stream.width, stream.height)
    faces.save(landmarks)
    return _summary(video, faces, landmarks, line_faces=[]).model_copy(update={"checks": [marked_mouth_check()]})


def read_tracks(video: Path, landmarks: Path) -> FaceTracks:
    """What `track` returned, read back from its landmarks file."""
    return _summary(video, FaceData.load(landmarks), landmarks, line_faces=[])


def speaking_faces(
    tracked: FaceTracks,
    landmarks: Path,
    *,
    lines: list[tuple[float, float]] | None = None,
    source_audio: Path | None = None,
) -> FaceTracks:
    """The second half of `analyse`: the speaking face of each line, from `track`'s landmarks, saved with the
    choice to `landmarks` (what the renders and QA read)."""
    if not tracked.landmarks:
        raise DubbingError(f"face landmarks missing for {tracked.video}: run the track-faces step first")
    faces = FaceData.load(Path(tracked.landmarks))
    return _choose_speakers(Path(tracked.video), faces, landmarks, lines, source_audio)


def _choose_speakers(
    video: Path,
    faces: FaceData,
    landmarks: Path | None,
    lines: list[tuple[float, float]] | None,
    source_audio: Path | None,
) -> FaceTracks:
    envelope = None
    if source_audio is not None and lines:
        envelope, _speech = visemes.envelope(load_audio(source_audio), DRIVE_RATE, faces.fps, faces.frames)
    line_faces = choose_active(faces, envelope, lines)
    if landmarks is not None:
        faces.save(landmarks)
    return _summary(video, faces, landmarks, line_faces)


def _summary(video: Path, faces: FaceData, landmarks: Path | None, line_faces: list[int | None]) -> FaceTracks:
    from dubbing.lipsync.inspect import check_faces

    present = (faces.ids >= 0).any(axis=1)
    return FaceTracks(
        video=str(video),
        landmarks=str(landmarks) if landmarks is not None else None,
        frames=faces.frames,
        fps=faces.fps,
        width=faces.width,
        height=faces.height,
        faces=len(faces.tracks()),
        face_frames=round(float(present.mean()), 4),
        scene_cuts=[round(c / faces.fps, 3) for c in faces.cuts],
        line_faces=line_faces,
        checks=check_faces(faces),
    )


def render_dub(
    video: Path,
    faces: FaceTracks,
    voice: Path,
    out: Path,
    *,
    lines: list[tuple[float, float, str]] | None = None,
    language: str | None = None,
    backend: str = "classical",
    backend_options: Mapping[str, Any] | None = None,
    crf: int = 17,
    preset: str = "superfast",
    mouth_box: MouthBox | None = None,
    expression: bool = False,
) -> LipsyncResult | None:
    """The lipsynced picture (no audio) of one language: the dub `voice` drives each line's speaking face, or
    the mouth marked at `mouth_box` (config `lipsync.mouth_box`) in every frame; with `expression` (config
    `lipsync.expression`) its brows, head and blinks follow the dub too. None when no face was tracked and none was
    marked: the original picture is kept (the report says so)."""
    data = None
    if mouth_box is None:
        if faces.faces == 0:
            return None
        if not faces.landmarks or not Path(faces.landmarks).is_file():
            raise DubbingError(f"face landmarks missing for {video}: run the track-faces step first")
        data = FaceData.load(Path(faces.landmarks))
    Path(mouths_path(out)).unlink(missing_ok=True)  # never left describing another picture
    result = lipsync_video(
        video,
        voice,
        out,
        backend=backend,
        backend_options=backend_options,
        crf=crf,
        preset=preset,
        faces=data,
        lines=lines,
        language=language,
        mux_audio=False,
        fmt="mp4",
        mouth_box=mouth_box,
        expression=expression,
    )
    if result.mouths is not None:
        save_drawn_mouths(result, faces.fps)
    return result


# ---------------------------------------------------------------- what the renderer drew (read by QA)


def mouths_path(picture: Path) -> Path:
    """Where `render_dub` saves the mouths it drew into `picture`: beside it, NAME.LANG.picture.mouths.npz."""
    picture = Path(picture)
    return picture.with_name(f"{picture.stem}.mouths.npz")


def save_drawn_mouths(result: LipsyncResult, fps: float) -> Path:
    """The per-frame inner-lip gap the renderer drew into `result.out`, with the frame rate, the renderer and the
    picture's size in bytes (a picture written again afterwards no longer matches)."""
    assert result.mouths is not None
    path = mouths_path(result.out)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                gap=result.mouths,
                fps=np.float64(fps),
                renderer=np.asarray(result.renderer),
                picture_bytes=np.int64(Path(result.out).stat().st_size),
            )
    return path


def drawn_mouths(picture: Path) -> tuple[np.ndarray, float, str]:
    """What the renderer drew into `picture` (the lipsynced picture of a run): per frame the inner-lip gap (NaN
    where no face), the frame rate and the renderer. DubbingError says why there is nothing usable: no file
    (a run from before it was saved, or a renderer that does not say what it drew), or one written for another
    picture. The caller then tracks the picture's pixels instead (`mouth_opening`)."""
    path = mouths_path(picture)
    if not path.is_file():
        raise DubbingError(f"no {path.name} beside the picture (an older run, or a renderer that does not report it)")
    try:
        with np.load(path) as z:
            gap, fps, renderer, size = z["gap"], float(z["fps"]), str(z["renderer"]), int(z["picture_bytes"])
    except (OSError, KeyError, ValueError) as error:
        raise DubbingError(f"{path.name} unreadable ({error})") from None
    if not Path(picture).is_file() or Path(picture).stat().st_size != size:
        raise DubbingError(f"{path.name} was written for another version of {Path(picture).name}")
    return gap.astype(np.float32), fps, renderer
