"""Speech understanding quality, speed and memory on the real media in ../shared/media.

    .venv/bin/python benchmarks/bench_asr.py                 # markdown table (2 threads, as CI)
    .venv/bin/python benchmarks/bench_asr.py --threads 1 --show

What it measures, each as a dub run does it (faster-whisper whisper-base int8 with silero VAD, then CAM++
diarization, then words grouped into dubbing lines):
- word error rate (jiwer) against pyannote_sample.stm and the LibriVox transcription, two ways: "plain"
  (lowercase, punctuation stripped) and "whisper-normalised" (Whisper's EnglishTextNormalizer from transformers,
  the normalisation the Whisper paper and the Open ASR Leaderboard report: contractions expanded, "Mr" and
  "mister" alike, numbers as digits; without the optional British-American spelling table);
- speakers found, and the share of words given the wrong speaker under the best label mapping (reference:
  pyannote_sample.rttm, words given speakers by the same overlap rule);
- real-time factor of ASR + diarization (processing seconds / audio seconds, model loading excluded and
  reported apart), the CPU seconds the worker spent per audio second (all its threads; on dedicated cores
  the wall-clock RTF of this compute-bound work is at most this), and peak resident memory of the worker
  process (getrusage of the child);
- a file with no speech (a tone over pink noise, then silence, made with ffmpeg) must give no text.
All work runs in one child process limited to `--threads` CPU threads. Timings are wall-clock on this
machine and are inflated when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def whisper_normaliser():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def references() -> list[tuple[str, Path, str | None, Path | None]]:
    """(label, audio, reference text or None (speed and speaker count only), rttm or None)."""
    items = []
    stm = MEDIA / "pyannote_sample.stm"
    text = " ".join(" ".join(line.split()[5:]) for line in stm.read_text().splitlines())
    items.append(
        ("pyannote_sample (2-speaker call)", MEDIA / "pyannote_sample.wav", text, MEDIA / "pyannote_sample.rttm")
    )
    for line in (MEDIA / "librivox" / "transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s> \((.*)\)", line.strip())
        if m:
            items.append((f"librivox {m.group(2)[-4:]}", MEDIA / "librivox" / f"{m.group(2)}.wav", m.group(1), None))
    items.append(("musetalk_eng (1 speaker, no reference)", MEDIA / "musetalk_eng.wav", None, None))
    video = MEDIA / "latentsync_demo2_video.mp4"
    items.append(("latentsync_demo2_video.mp4 (Portuguese, no reference)", video, None, None))
    return items


def no_speech_file(folder: Path) -> Path:
    path = folder / "no_speech.wav"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-y", "-v", "error",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=10",
            "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.2:duration=10",
            "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=5",
            "-filter_complex", "[0][1]amix=inputs=2[a];[a][2]concat=n=2:v=0:a=1", "-ar", "16000", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def worker(threads: int, files: list[str]) -> None:
    """Load the models, process every file, print one JSON line per file."""
    import torch

    torch.set_num_threads(threads)
    from dubbing import asr, backends, diarize

    t = time.perf_counter()
    transcriber = backends.build(asr.BACKENDS, "faster-whisper", "ASR", {"threads": threads}, model="whisper-base")
    # CAM++ runs on one torch thread (see diarize.torch_threads)
    diarizer = backends.build(diarize.BACKENDS, "campplus", "diarization")
    print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
    for path in files:
        t0, c0 = time.perf_counter(), time.process_time()
        transcript = transcriber.transcribe(Path(path))
        t1 = time.perf_counter()
        turns = diarizer.diarize(Path(path)) if transcript.utterances else []
        t2, c2 = time.perf_counter(), time.process_time()
        result = diarize.attribute(transcript, turns)
        print(
            json.dumps(
                {
                    "path": path,
                    "asr_s": t1 - t0,
                    "diarize_s": t2 - t1,
                    "cpu_s": c2 - c0,
                    "transcript": result.model_dump(),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print each hypothesis")
    parser.add_argument("--worker", nargs="*")
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.threads, args.worker)
        return
    if not MEDIA.is_dir():
        sys.exit(f"real test media not found at {MEDIA}")
    import jiwer

    from dubbing import diarize
    from dubbing.types import Transcript

    items = references()
    with tempfile.TemporaryDirectory() as tmp:
        silent = no_speech_file(Path(tmp))
        files = [str(p) for _, p, _, _ in items] + [str(silent)]
        env_threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        import os

        proc = subprocess.run(
            [sys.executable, __file__, "--threads", str(args.threads), "--worker", *files],
            capture_output=True,
            text=True,
            env={**os.environ, **env_threads},
        )
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    load_s = lines[0]["load_s"]
    results = {r["path"]: r for r in lines[1:]}

    standard = whisper_normaliser()
    rows = []
    total_audio = total_proc = total_cpu = 0.0
    libri_refs, libri_hyps, libri_std_refs, libri_std_hyps = [], [], [], []
    for label, path, ref, rttm in items:
        r = results[str(path)]
        transcript = Transcript.model_validate(r["transcript"])
        hyp = normalise(" ".join(u.text for u in transcript.utterances))
        raw_hyp = " ".join(u.text for u in transcript.utterances)
        wer = (
            f"{jiwer.wer(normalise(ref), hyp):.3f} / {jiwer.wer(standard(ref), standard(raw_hyp)):.3f}" if ref else "-"
        )
        words = [w for u in transcript.utterances for w in u.words]
        spk_err = f"{diarize.word_speaker_error(words, diarize.read_rttm(rttm)):.3f}" if rttm else "-"
        proc_s = r["asr_s"] + r["diarize_s"]
        total_audio += transcript.duration_s
        total_proc += proc_s
        total_cpu += r["cpu_s"]
        if label.startswith("librivox"):
            libri_refs.append(normalise(ref))
            libri_hyps.append(hyp)
            libri_std_refs.append(standard(ref))
            libri_std_hyps.append(standard(raw_hyp))
        lines_s = [u.duration for u in transcript.utterances]
        rows.append(
            f"| {label} | {transcript.duration_s:.1f} | {wer} | {len(transcript.speakers)} | {spk_err} "
            f"| {len(lines_s)} ({min(lines_s):.1f}-{max(lines_s):.1f} s) "
            f"| {r['asr_s']:.2f} | {r['diarize_s']:.2f} | {proc_s / transcript.duration_s:.3f} "
            f"| {r['cpu_s'] / transcript.duration_s:.3f} |"
        )
        if args.show:
            print(f"{label}\n  REF {normalise(ref or '')}\n  HYP {hyp}", file=sys.stderr)
    silent_result = Transcript.model_validate(results[files[-1]]["transcript"])
    print(
        f"ASR + diarization, {args.threads} threads (faster-whisper whisper-base int8, 80 Hz high-pass + silero VAD, "
        f"CAM++ windows 1.5 s, spectral clustering)\n"
    )
    print(
        "| file | audio s | WER (plain / whisper-normalised) | speakers | wrong-speaker words | lines (length range) "
        "| ASR s | diarize s "
        "| RTF (wall) | CPU s per audio s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"| **LibriVox, all 5 clips** | | **{jiwer.wer(libri_refs, libri_hyps):.3f} / "
        f"{jiwer.wer(libri_std_refs, libri_std_hyps):.3f}** | | | | | "
        f"| {total_proc / total_audio:.3f} (all files) | {total_cpu / total_audio:.3f} (all files) |"
    )
    print(
        f"\nModel loading: {load_s:.1f} s (once). Peak RSS of the worker: {peak_mb:.0f} MB. "
        f"No-speech file ({silent_result.duration_s:.0f} s of tone, pink noise and silence): "
        f"{len(silent_result.utterances)} utterances, warnings: {silent_result.warnings}."
    )


if __name__ == "__main__":
    main()
