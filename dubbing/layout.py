"""Where every file of a run lives: the output contract (manifest.json names these) and the run's working files.

No other module spells a path inside an output folder; they all ask a `RunLayout`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from dubbing.files import write_text
from dubbing.types import LanguageOutputs


@dataclass(frozen=True)
class RunLayout:
    """The files of one video's run under `out` (paths relative to `out` are what the manifest records)."""

    out: Path
    name: str
    folder_id: str = ""  # changes when the output folder is deleted and made again (see `layout_for`)

    # ---- the run as a whole
    @property
    def manifest(self) -> Path:
        return manifest_of(self.out)

    @property
    def review_page(self) -> Path:
        return review_page_of(self.out)

    @property
    def lock(self) -> Path:
        return self.out / ".dub.lock"

    @property
    def folder_marker(self) -> Path:
        return self.out / ".dub-id"

    @property
    def run_record(self) -> Path:
        """The last complete `dub run`'s command key and every file it left (see flows.caching.unchanged_run)."""
        return self.out / ".dub-run.json"

    # ---- once per video
    @property
    def source_dir(self) -> Path:
        return self.out / "source"

    @property
    def analysis_wav(self) -> Path:
        return self.source_dir / "audio.16k.wav"

    @property
    def mix_wav(self) -> Path:
        return self.source_dir / "audio.48k.wav"

    @property
    def transcript(self) -> Path:
        return self.source_dir / "transcript.json"

    def source_subtitles(self, language: str, suffix: str) -> Path:
        """NAME.LANG.srt or .vtt of the source language (`suffix` '.srt' or '.vtt')."""
        return self.source_dir / f"{self.name}.{language}{suffix}"

    @property
    def speech_wav(self) -> Path:
        return self.source_dir / "speech.wav"

    @property
    def background_wav(self) -> Path:
        return self.source_dir / "background.wav"

    @property
    def speakers_dir(self) -> Path:
        return self.source_dir / "speakers"

    @property
    def speaker_profiles(self) -> Path:
        return self.source_dir / "speakers.json"

    @property
    def tracked_faces_npz(self) -> Path:
        """Every face's landmarks as tracked, before any line is given its speaking face (faces.npz)."""
        return self.source_dir / "faces.tracked.npz"

    @property
    def faces_npz(self) -> Path:
        return self.source_dir / "faces.npz"

    @property
    def faces_json(self) -> Path:
        return self.source_dir / "faces.json"

    @property
    def source_preview(self) -> Path:
        return self.source_dir / f"{self.name}.preview.mp4"

    # ---- per language
    def language_dir(self, lang: str) -> Path:
        return self.out / lang

    def output(self, lang: str, suffix: str) -> Path:
        """NAME.LANG<suffix> in the language's folder."""
        return self.language_dir(lang) / f"{self.name}.{lang}{suffix}"

    def video(self, lang: str, container: str = "mp4") -> Path:
        """The dubbed video, NAME.LANG.mp4 (or .mkv, .mov: config `output.format`)."""
        return self.output(lang, f".{container}")

    def audio(self, lang: str) -> Path:
        """The final mix: dub voice over the background."""
        return self.output(lang, ".wav")

    def voice(self, lang: str) -> Path:
        """The dub speech alone."""
        return self.output(lang, ".voice.wav")

    def srt(self, lang: str) -> Path:
        return self.output(lang, ".srt")

    def vtt(self, lang: str) -> Path:
        return self.output(lang, ".vtt")

    def bilingual(self, lang: str, suffix: str) -> Path:
        """NAME.LANG.bilingual.srt or .vtt: the source line over the translation in each cue."""
        return self.output(lang, f".bilingual{suffix}")

    def picture(self, lang: str) -> Path:
        """The lipsynced picture before muxing (exists only when a face was re-animated)."""
        return self.output(lang, ".picture.mp4")

    def picture_mouths(self, lang: str) -> Path:
        """The mouths the lipsync renderer drew into the picture (per-frame inner-lip gap), saved beside it for QA."""
        return self.output(lang, ".picture.mouths.npz")

    def preview(self, lang: str) -> Path:
        """An H.264 copy for the review page when the dub's own codecs do not play in browsers."""
        return self.output(lang, ".preview.mp4")

    def script(self, lang: str) -> Path:
        return self.language_dir(lang) / "script.json"

    def script_stamp(self, lang: str) -> Path:
        """The hash of script.json as the pipeline wrote it: a different file was edited by the user."""
        return self.language_dir(lang) / ".script.sha256"

    def script_edited(self, lang: str) -> Path:
        """Present once the user gave the script (edited script.json, `dub run --script`): later runs keep it."""
        return self.language_dir(lang) / ".script.edited"

    def voices(self, lang: str) -> Path:
        return self.language_dir(lang) / "voices.json"

    def track(self, lang: str) -> Path:
        """The dub track (a `DubTrack`): where each spoken line was placed on the timeline."""
        return self.language_dir(lang) / "track.json"

    # ---- the source on the dub's timeline, when spans were slowed down (config timing.slow_picture)
    def stretched_dir(self, lang: str) -> Path:
        return self.language_dir(lang) / "stretched"

    def stretched(self, lang: str) -> Path:
        """What the stretch step made (a `StretchedSource`); absent when nothing was slowed down."""
        return self.stretched_dir(lang) / "stretched.json"

    def stretched_picture(self, lang: str) -> Path:
        return self.stretched_dir(lang) / "picture.mp4"

    def stretched_background(self, lang: str) -> Path:
        return self.stretched_dir(lang) / "background.wav"

    def stretched_original(self, lang: str) -> Path:
        """The original sound (48 kHz): the video's second track with `output.keep_original_audio`."""
        return self.stretched_dir(lang) / "original.wav"

    def stretched_speech(self, lang: str) -> Path:
        """The analysis audio (16 kHz), which chooses each line's speaking face on the stretched picture."""
        return self.stretched_dir(lang) / "speech16k.wav"

    def stretched_tracked_faces(self, lang: str) -> Path:
        return self.stretched_dir(lang) / "faces.tracked.npz"

    def stretched_faces(self, lang: str) -> Path:
        return self.stretched_dir(lang) / "faces.npz"

    def clip_cache(self, lang: str) -> Path:
        """Spoken lines, reused when a rerun speaks the same text with the same voice and window."""
        return self.language_dir(lang) / "clips"

    def report(self, lang: str) -> Path:
        return self.language_dir(lang) / "report.json"

    def hearing(self, lang: str) -> Path:
        """What QA measured from the dub voice (heard back, its meaning, its voices) before the picture is done."""
        return self.language_dir(lang) / "hearing.json"

    # ---- the studio (`dub studio`): what it keeps beside the run's own files
    def studio_edits(self, lang: str) -> Path:
        """The studio's state for a language: voices picked per speaker, approved lines, the undo history."""
        return self.language_dir(lang) / "studio.json"

    def studio_dir(self, lang: str) -> Path:
        """Regenerated lines (line-N.wav), the scratch voice track they were cut from, the render's log."""
        return self.language_dir(lang) / "studio"

    def studio_line(self, lang: str, index: int) -> Path:
        return self.studio_dir(lang) / f"line-{index}.wav"

    @property
    def studio_config(self) -> Path:
        """The config a studio render passes to `dub run --config`: the run's own config plus the picked voices."""
        return self.out / "studio.config.yaml"

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    def outputs(
        self,
        lang: str,
        video: Path | None,
        *,
        dubbed: bool = True,
        subtitles: str | None = None,
        audio_tracks: list[str] | None = None,
        bilingual: bool = False,
    ) -> LanguageOutputs:
        """The manifest's entry for one language (`video` None when the source has no picture; `dubbed` False: a
        subtitles-only run, no audio). `subtitles`, `audio_tracks`: what the video holds; `bilingual`: the
        bilingual subtitle files were written."""
        return LanguageOutputs(
            video=self.relative(video) if video else None,
            audio=self.relative(self.audio(lang)) if dubbed else None,
            voice=self.relative(self.voice(lang)) if dubbed else None,
            srt=self.relative(self.srt(lang)),
            vtt=self.relative(self.vtt(lang)),
            script=self.relative(self.script(lang)),
            report=self.relative(self.report(lang)),
            subtitles=subtitles if video else None,
            audio_tracks=list(audio_tracks or []) if video else [],
            bilingual_srt=self.relative(self.bilingual(lang, ".srt")) if bilingual else None,
            bilingual_vtt=self.relative(self.bilingual(lang, ".vtt")) if bilingual else None,
        )


def manifest_of(out: Path) -> Path:
    """manifest.json of the run in `out`: what tools outside the project read."""
    return Path(out) / "manifest.json"


def review_page_of(out: Path) -> Path:
    return Path(out) / "report.html"


def layout_for(video: Path, out: Path) -> RunLayout:
    layout = RunLayout(out=Path(out), name=Path(video).stem)
    return RunLayout(out=layout.out, name=layout.name, folder_id=_folder_id(layout.folder_marker))


def _folder_id(marker: Path) -> str:
    """An id made when an output folder is first used. It is part of every stage's cache key, so a deleted and
    re-made folder starts afresh instead of being handed cached results whose files are gone."""
    if not marker.exists():
        write_text(marker, uuid.uuid4().hex)
    return marker.read_text().strip()
