"""The CPU floor of a 60 s dub: what each model alone costs on this machine; prints a markdown table.

  .venv/bin/python benchmarks/bench_floor.py [--preset draft|final] [--work DIR]

On bench_speed.py's 60 s 720p talking head (`talk60.mp4`, built in the same work folder), each model a run of
the preset runs, on its own, in this process, with the settings the preset gives it: Whisper base int8
transcribing the 60 s (the preset's beam), the face mesh tracking every frame, Kokoro speaking Spanish (bench_voice.py's
Spanish sentences, repeated to 60 s of speech), the classical renderer with its x264 encoder (the preset's)
re-animating the 60 s, CAM++ embedding the 60 s, and Whisper hearing 60 s of the Kokoro speech back (QA).
CPU seconds are this process's and its children's (the ffmpeg decoders and encoders), so they include every
thread. The sums are floors, since a run also reads, mixes, separates and writes: the whole run's against the CPU
seconds the 60 s goal allows on 2 cores (its wall goal x 2), the per-language steps' against an extra
language's (0.3x).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_speed import build_inputs  # this folder is the script's own: sys.path[0]
from bench_voice import SENTENCES

from dubbing import asr, media, speaker_embedding, steps, tts
from dubbing.config import load_settings
from dubbing.lipsync import choose_active, lipsync_video, track_video
from dubbing.types import ANALYSIS_RATE

SECONDS = 60.0
WALL_GOAL = {"draft": 0.6, "final": 1.0}  # of the video's duration, for one language
EXTRA_LANGUAGE = 0.3


def cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[[], object]) -> tuple[float, float, object]:
    cpu, wall = cpu_s(), time.perf_counter()
    result = work()
    return cpu_s() - cpu, time.perf_counter() - wall, result


def spanish_speech(seconds: float, preset: str) -> np.ndarray:
    """Kokoro's Spanish, sentence by sentence, until `seconds` of speech (16 kHz)."""
    synth = tts.synthesizer_for(load_settings(preset).for_language("es"))
    sentences = SENTENCES["es"]
    pieces, total, i = [], 0.0, 0
    while total < seconds:
        audio, rate = synth.synthesize(sentences[i % len(sentences)], language="es")
        pieces.append(media.resample(audio, rate, ANALYSIS_RATE))
        total += len(audio) / rate
        i += 1
    return np.concatenate(pieces)[: int(seconds * ANALYSIS_RATE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(WALL_GOAL), default="draft")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dub-bench-speed"), help="bench_speed's inputs")
    args = parser.parse_args()
    video = build_inputs(args.work, {"60"})["60"]
    settings = load_settings(args.preset)
    rows: list[tuple[str, float, float, bool]] = []  # name, CPU s, wall s, once per language
    with tempfile.TemporaryDirectory() as tmp:
        audio = media.extract_analysis_audio(video, Path(tmp) / "talk60.16k.wav")
        cfg = settings.asr
        transcriber = steps.transcriber(cfg)  # the run's own (pooled) model, with the preset's beam
        cpu, wall, _ = timed(lambda: transcriber.transcribe(audio, language="en"))
        rows.append((f"transcription: Whisper base int8, beam {cfg.beam_size}, VAD", cpu, wall, False))
        cpu, wall, tracked = timed(lambda: track_video(video))
        faces, _stream = tracked  # type: ignore[misc]
        choose_active(faces)
        rows.append(("face tracking: the face mesh on every frame (with its decoder)", cpu, wall, False))
        cpu, wall, speech = timed(lambda: spanish_speech(SECONDS, args.preset))
        rows.append(("synthesis: Kokoro int8, Spanish, 60 s of speech", cpu, wall, True))
        voice = media.write_audio(Path(tmp) / "voice.wav", speech, ANALYSIS_RATE)  # type: ignore[arg-type]
        x264 = settings.lipsync.preset
        cpu, wall, _ = timed(lambda: lipsync_video(video, voice, Path(tmp) / "out.mp4", faces=faces, mux_audio=False,
                                                   crf=settings.lipsync.crf, preset=x264))  # fmt: skip
        rows.append((f"lipsync render: classical renderer + x264 {x264} (with its decoder)", cpu, wall, True))
        samples, _ = media.read_audio(audio, ANALYSIS_RATE)
        cpu, wall, _ = timed(lambda: speaker_embedding.embed(samples, ANALYSIS_RATE))
        rows.append(("speaker embedding: CAM++ over the 60 s", cpu, wall, False))
        pieces = [(float(a), float(min(a + 10.0, SECONDS))) for a in np.arange(0.0, SECONDS, 10.0)]
        cpu, wall, _ = timed(lambda: asr.transcribe_pieces(transcriber, voice, pieces, language="es"))
        rows.append((f"QA hearing: Whisper base, beam {cfg.beam_size}, 60 s of dub speech in pieces", cpu, wall, True))
    total = sum(row[1] for row in rows)
    language = sum(row[1] for row in rows if row[3])
    print(f"{SECONDS:.0f} s 720p talking head, {args.preset} preset; each model alone, CPU s of this process and its "
          "children")  # fmt: skip
    print("| model | per | CPU s | CPU s per s of video | wall s |\n|---|---|---|---|---|")
    for name, cpu, wall, per_language in rows:
        print(f"| {name} | {'language' if per_language else 'video'} | {cpu:.1f} | {cpu / SECONDS:.2f} | {wall:.1f} |")
    print(f"| **sum** | | **{total:.1f}** | **{total / SECONDS:.2f}** | |")
    print("\n| goal | CPU s it allows on 2 cores | the floor of the models |\n|---|---|---|")
    wall_goal = WALL_GOAL[args.preset]
    for goal, allowed, floor in (
        (f"one language, {args.preset}: wall <= {wall_goal}x", 2 * wall_goal * SECONDS, total),
        (f"each extra language: wall <= {EXTRA_LANGUAGE}x", 2 * EXTRA_LANGUAGE * SECONDS, language),
    ):
        print(f"| {goal} | {allowed:.0f} | {floor:.0f} ({'under' if floor <= allowed else 'over'} it) |")
    print(f"\nloading the models not counted; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
