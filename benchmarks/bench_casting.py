"""Casting benchmark (issue #18): is every real speaker of the shared media dubbed by a voice of their own gender,
native to the target language where the bank has one, and one voice per person?

For each clip: ASR (whisper base), diarization (campplus) and the words attributed to speakers, speaker profiles,
then voice matching into es, pt and fr as the match-voices step does it (the library's functions, not whole runs,
to stay within minutes on 2 shared cores). Printed: a table with, per speaker, their speech, median F0, the
estimated gender against the label, and per language the voice cast with whether its language and gender match.

Labels were written by hand from ../shared/media/MANIFEST.md, which names the speakers; where it does not say
the gender (the phone call, musetalk_eng, the French and German clips) it was decided from the speaker's F0
(printed by `--f0`): a median above 180 Hz with a 90th percentile above 230 Hz is taken as a woman's, below
140 Hz as a man's; Radio31 (median 168 Hz, in between) is left unlabelled and is not counted in the goal.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_casting.py [--only NAME ...] [--languages es pt fr]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubbing import asr, backends, diarize, models, tts, voice  # noqa: E402
from dubbing.config import load_settings  # noqa: E402
from dubbing.layout import layout_for  # noqa: E402
from dubbing.media import extract_analysis_audio  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


@dataclass(frozen=True)
class Clip:
    name: str
    source: str  # a file of ../shared/media; LOOP:file = that file's audio looped to a minute
    genders: tuple[str | None, ...]  # one per person, in order of first speech (None: unlabelled)
    why: str


CLIPS = (
    Clip("vrt_face1", "vrt_face1.mp4", ("male",), "MANIFEST: young man in a suit"),
    Clip("vrt_face2", "vrt_face2.mp4", ("male",), "MANIFEST: man in front of a world map"),
    Clip("vrt_face4", "vrt_face4.mp4", ("female",), "MANIFEST: woman on a blue backdrop"),
    Clip("katie_hill", "sadtalker_WDA_KatieHill.mp4", ("female",), "MANIFEST: Katie Hill, a woman"),
    Clip("latentsync", "latentsync_demo2_video.mp4", ("male",), "MANIFEST: bearded man (its track: Portuguese)"),
    Clip("latentsync_audio", "latentsync_demo2_audio.wav", ("male",), "F0 median 123 Hz, 90th percentile 149 Hz"),
    Clip("librivox", "librivox/sense_and_sensibility_01_austen_64kb-0870.wav", ("male",), "MANIFEST: one male reader"),
    Clip("musetalk_eng", "musetalk_eng.wav", ("male",), "F0 median 134 Hz, 90th percentile 191 Hz"),
    Clip("radio31", "sadtalker_RD_Radio31_000.wav", (None,), "F0 median 168 Hz: ambiguous, unlabelled"),
    Clip("pyannote_call", "pyannote_sample.wav", ("female", "female"), "2 speakers; F0 medians 195, 188 Hz"),
    Clip("loop_vrt_face1", "LOOP:vrt_face1.mp4", ("male",), "vrt_face1 looped to a minute: one man"),
    Clip("talk60m", "/work/speed/talk60m.mp4", ("male",), "musetalk_eng's minute under vrt_face4's picture"),
)


def source_file(clip: Clip, tmp: Path) -> Path:
    """The clip's media; a looped minute is made with ffmpeg (never copied into the repository)."""
    if clip.source.startswith("LOOP:"):
        out = tmp / f"{clip.name}.wav"
        src = MEDIA / clip.source.removeprefix("LOOP:")
        cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "9", "-i", str(src), "-vn", "-ac", "1", str(out)]
        subprocess.run(cmd, check=True)
        return out
    return Path(clip.source) if clip.source.startswith("/") else MEDIA / clip.source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="clip names")
    parser.add_argument("--languages", nargs="*", default=["es", "pt", "fr"])
    args = parser.parse_args()
    settings = load_settings()
    transcriber = backends.build(asr.BACKENDS, "faster-whisper", "ASR", model="whisper-base")
    diarizer = backends.build(diarize.BACKENDS, "campplus", "diarization")
    synths = {lang: tts.synthesizer_for(settings.for_language(lang)) for lang in args.languages}
    rows = [
        "| clip | speakers found / people | speaker | speech s | F0 median Hz | gender est. / label | "
        + " | ".join(f"{lang} voice (language, gender)" for lang in args.languages)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(args.languages),
    ]
    kept = total = native = cast = one_voice = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for clip in CLIPS:
            if args.only and clip.name not in args.only:
                continue
            path = source_file(clip, tmp)
            layout = layout_for(path, tmp / clip.name)
            layout.speakers_dir.mkdir(parents=True, exist_ok=True)
            extract_analysis_audio(path, layout.analysis_wav)
            transcript = transcriber.transcribe(layout.analysis_wav)
            transcript = diarize.attribute(transcript, diarizer.diarize(layout.analysis_wav))
            profiles = diarize.speaker_profiles(transcript, layout.analysis_wav, layout.speakers_dir)
            speakers = voice.source_speakers(transcript, profiles, layout.analysis_wav, layout.speakers_dir)
            by_lang = {}
            for lang, synth in synths.items():
                cfg = settings.for_language(lang)
                by_lang[lang] = voice.match_voices(
                    speakers,
                    lang,
                    synth,
                    cfg.tts,
                    probe_text=cfg.probe_text,
                    cache_dir=models.cache_root() / "voice-bank",
                )
            found = len(profiles)
            one_voice += found == len(clip.genders)
            talk = {p.speaker: p.talk_time_s for p in profiles}
            # each speaker found is labelled with the person whose order of first speech it has (a split speaker
            # beyond the people's count takes the last person's label)
            for i, profile in enumerate(profiles):
                label = clip.genders[min(i, len(clip.genders) - 1)]
                first = next(iter(by_lang.values())).get(profile.speaker)
                estimated = first.gender if first else None
                cells = []
                for lang in args.languages:
                    m = by_lang[lang].get(profile.speaker)
                    if m is None:
                        cells.append("default voice (too little speech)")
                        continue
                    lang_ok = m.voice_language is not None and m.voice_language.split("-")[0] == lang
                    gender_ok = label is None or m.voice_gender == label
                    native += lang_ok
                    cast += 1
                    kept += gender_ok and label is not None
                    total += label is not None
                    cells.append(
                        f"{m.voice} ({m.voice_language}{'' if lang_ok else ' ✗'}, {m.voice_gender}"
                        f"{'' if gender_ok else ' ✗'})"
                    )
                f0 = f"{profile.median_pitch_hz:.0f}" if profile.median_pitch_hz else "-"
                rows.append(
                    f"| {clip.name} | {found} / {len(clip.genders)} | {profile.speaker} | {talk[profile.speaker]:.1f} "
                    f"| {f0} | {estimated} / {label or 'unlabelled'} | " + " | ".join(cells) + " |"
                )
            print(f"{clip.name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print("\n".join(rows))
    print(
        f"\ngender kept: {kept}/{total} labelled speaker-language pairs; voice native to the language: "
        f"{native}/{cast}; speaker count right (one voice per person): {one_voice}/"
        f"{sum(1 for c in CLIPS if not args.only or c.name in args.only)} clips; "
        f"{time.perf_counter() - started:.0f} s wall"
    )


if __name__ == "__main__":
    main()
