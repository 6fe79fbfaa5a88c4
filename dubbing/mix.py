"""Mixing: the dub voice (over the background, when there is one) normalised to a loudness target."""

from __future__ import annotations

from pathlib import Path

from dubbing.files import atomic_path
from dubbing.tools import ffmpeg_input, require_tool, run
from dubbing.types import MIX_RATE


def mix(voice: Path, out: Path, *, background: Path | None = None, loudness_lufs: float = -16.0) -> Path:
    """Sum voice and background, then normalise loudness (EBU R128, ffmpeg loudnorm) to 48 kHz stereo."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(voice)]
    if background is not None:
        cmd += ["-i", ffmpeg_input(background)]
        graph = f"[0:a][1:a]amix=inputs=2:duration=first:normalize=0,loudnorm=I={loudness_lufs}:TP=-1.5:LRA=11[out]"
    else:
        graph = f"[0:a]loudnorm=I={loudness_lufs}:TP=-1.5:LRA=11[out]"
    cmd += ["-filter_complex", graph, "-map", "[out]", "-ar", str(MIX_RATE), "-ac", "2", "-c:a", "pcm_s16le"]
    with atomic_path(out) as tmp:
        run(cmd + ["-f", "wav", str(tmp)], f"mixing {out}")
    return Path(out)
