"""The avatar's expression follows the voice: blinks 2-10 s apart, jittered and drawn to the speech's pauses,
head motion that moves with the loudness; and `dub inspect`'s contact sheet keeps a portrait or landscape video's
shape instead of black bars. Measured on the animation's own parameters and on a generated sheet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from dubbing.errors import DubbingError
from dubbing.lipsync import DRIVE_RATE, analyse, load_audio, mouth_drive
from dubbing.lipsync.avatar import BrowLift, blink_track, brow_track, head_motion, load_portrait, loudness
from dubbing.lipsync.inspect import BACKGROUND, contact_sheet, sample_indices
from dubbing.lipsync.render import BROW_L, EYE_L_UP
from tests.conftest import make_speech, media_file

FPS = 25.0
PHRASES = ["good morning everybody", "thank you for coming today", "we will talk about the weather",
           "and then about the trains", "that is all for now", "see you again next week"]  # fmt: skip


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> np.ndarray:
    """About 40 s of espeak-ng speech: phrases with pauses of 0.4-1.6 s between them (mono, DRIVE_RATE)."""
    tmp = tmp_path_factory.mktemp("talk")
    rng = np.random.default_rng(7)
    parts = []
    for i in range(24):
        clip = load_audio(make_speech(tmp / f"p{i}.wav", PHRASES[i % len(PHRASES)]))
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        parts += [clip[loud[0] : loud[-1] + 1], np.zeros(int(rng.uniform(0.4, 1.6) * DRIVE_RATE), np.float32)]
    return np.concatenate(parts)


def frames_of(audio: np.ndarray) -> int:
    return int(np.ceil(audio.size / DRIVE_RATE * FPS))


def test_blinks_come_2_to_10_s_apart_jittered_and_mostly_in_pauses(talk):
    frames = frames_of(talk)
    speech = mouth_drive(talk, FPS, frames).speech
    intervals, in_pause = [], []
    for seed in range(4):
        closure = blink_track(frames, FPS, np.random.default_rng(seed), speech)
        starts = np.flatnonzero(np.diff((closure > 0.5).astype(int)) == 1) + 1
        assert len(starts) >= 4
        intervals += list(np.diff(starts) / FPS)
        in_pause += list(~speech[starts])
    intervals_s = np.array(intervals)
    assert intervals_s.min() >= 2.0 - 2 / FPS and intervals_s.max() <= 10.0 + 2 / FPS, intervals_s
    assert intervals_s.std() > 0.4  # jittered, not a metronome
    assert np.mean(in_pause) > (~speech).mean() + 0.15  # people blink at phrase ends more than mid-word


def head_speed(maps: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixels per frame that the mean of `points` moves under the per-frame affine maps."""
    moved = np.einsum("tij,kj->tki", maps, np.concatenate([points, np.ones((len(points), 1))], axis=1)).mean(axis=1)
    return np.r_[0.0, np.linalg.norm(np.diff(moved, axis=0), axis=1)]


def smooth(x: np.ndarray, frames: float) -> np.ndarray:
    kernel = np.exp(-0.5 * (np.arange(-3 * int(frames), 3 * int(frames) + 1) / frames) ** 2)
    return np.convolve(np.pad(x, 3 * int(frames), mode="edge"), kernel / kernel.sum(), mode="valid")


def test_head_motion_follows_the_voice_and_stays_still_without_expression(talk):
    frames = frames_of(talk)
    size, centre = (640, 480), np.array([320.0, 300.0])
    eyes_and_nose = np.array([[280.0, 200.0], [360.0, 200.0], [320.0, 240.0]])
    maps = head_motion(frames, FPS, size, centre, loudness(talk, FPS, frames), np.random.default_rng(0))
    speed = smooth(head_speed(maps, eyes_and_nose), 0.25 * FPS)
    # the loudness measured here on its own: each frame's RMS level in dB, floored 50 dB under the loudest
    per = DRIVE_RATE / FPS
    rms = [np.sqrt(np.mean(talk[int(i * per) : int((i + 1) * per)] ** 2) + 1e-12) for i in range(frames)]
    db = 20 * np.log10(rms)
    level = smooth(np.maximum(db, db.max() - 50), 0.25 * FPS)
    r, r_backwards = np.corrcoef(level, speed)[0, 1], np.corrcoef(level[::-1], speed)[0, 1]
    assert r >= 0.3 and r > r_backwards + 0.3, (r, r_backwards)
    assert 0.05 < np.median(speed) < 3.0  # moving, but a nod of a few pixels, not a shake
    still = head_motion(frames, FPS, size, centre, loudness(talk, FPS, frames), np.random.default_rng(0),
                        expression=False)  # fmt: skip
    assert np.allclose(head_speed(still, eyes_and_nose), 0.0)


def black_share(img: np.ndarray) -> float:
    return float((img.max(axis=2) < 24).mean())


def tile_spans(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D mask (the tiles between the sheet's gutters)."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    return list(edges[1::2] - edges[::2])


@pytest.mark.parametrize(("crop", "size"), [("394:700:153:0", "360:640"), ("700:394:0:40", "640:360")])
def test_contact_sheet_keeps_the_videos_shape_without_black_bars(tmp_path, crop, size):
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(media_file("vrt_face1.mp4")), "-t", "1.2", "-an",
                    "-vf", f"crop={crop},scale={size},fps=25", str(video)], check=True)  # fmt: skip
    kept: dict = {}
    _faces, data = analyse(video, None, keep=tuple(sample_indices(30)), kept=kept)
    sheet_path = contact_sheet(kept, data, tmp_path / "sheet.png")
    sheet = cv2.imread(str(sheet_path))
    assert sheet is not None and len(kept) == 12
    source = np.concatenate([f.reshape(-1, 3) for f in kept.values()])[None]
    assert black_share(sheet) <= black_share(source) + 0.02  # the sheet adds no black of its own
    gutter = (sheet == np.array(BACKGROUND, np.uint8)).all(axis=2)
    widths, heights = tile_spans(~gutter.all(axis=0)), tile_spans(~gutter.all(axis=1))
    w, h = (int(v) for v in size.split(":"))
    assert len(widths) * len(heights) >= 12
    assert all(abs(tw / th - w / h) < 0.03 * w / h for tw in widths for th in heights), (widths, heights)
    assert min(widths + heights) >= 300  # each tile large enough to read, whichever way the video stands
    assert 1.2 < sheet.shape[1] / sheet.shape[0] < 2.4  # a screen-shaped sheet, not a strip
    assert Path(sheet_path).stat().st_size > 1000


def test_brows_rise_on_stressed_words_and_rest_in_silence(tmp_path, talk):
    frames = frames_of(talk)
    brows = brow_track(loudness(talk, FPS, frames), FPS)
    quiet = ~mouth_drive(talk, FPS, frames).speech
    assert brows.max() > 0.3 and np.median(brows[quiet]) < 0.05
    photo = tmp_path / "face.png"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", "0.5", "-i", str(media_file("vrt_face1.mp4")),
                    "-frames:v", "1", "-vf", "scale=480:480", str(photo)], check=True)  # fmt: skip
    portrait = load_portrait(photo)
    lift = BrowLift(portrait.image, portrait.landmarks)
    raised = lift(1.0).astype(np.float32)
    still = portrait.image.astype(np.float32)
    # a strip through the middle of the left brow: the raised one matches the still one moved up by the shift
    x = int(portrait.landmarks[BROW_L, 0].mean())
    y = int(portrait.landmarks[BROW_L, 1].mean())
    strip = slice(x - 8, x + 8)
    want = round(-lift.shift(1.0)[1])
    errors = {
        d: np.abs(raised[y - 12 - d : y + 12 - d, strip] - still[y - 12 : y + 12, strip]).mean() for d in range(8)
    }
    assert want >= 2 and abs(min(errors, key=errors.get) - want) <= 1, (want, errors)
    lids = portrait.landmarks[EYE_L_UP[2:-2]].round().astype(int)
    assert np.abs(raised[lids[:, 1], lids[:, 0]] - still[lids[:, 1], lids[:, 0]]).mean() < 12  # the eye stays put


def test_a_script_is_spoken_sentence_by_sentence_by_a_voice_of_its_language():
    from dubbing import steps, tts
    from dubbing.config import load_settings

    settings = load_settings()
    synth, voice = steps.script_speaker(settings, "ko")  # no Kokoro for Korean: the language's own backend
    assert synth.name == settings.for_language("ko").tts.backend and voice in synth.voices("ko")
    assert (tts.voice_traits(synth, voice)[0] or "").startswith("ko")
    audio, rate = steps.speak_script(synth, voice, "ko", "안녕하세요.\n감사합니다!")
    quiet = np.abs(audio) < 1e-3
    edge = int(steps.SCRIPT_EDGE_S * rate)
    assert quiet[: edge - 1].all() and quiet[-edge + 1 :].all()  # the mouth starts and ends closed
    voiced = np.flatnonzero(~quiet[edge:-edge])
    longest_gap = np.diff(voiced).max() / rate  # the pause between the two sentences
    assert steps.SCRIPT_PAUSE_S - 0.01 <= longest_gap < steps.SCRIPT_PAUSE_S + 0.3
    with pytest.raises(DubbingError, match="nothing to say"):
        steps.speak_script(synth, voice, "ko", " ... !")
