"""`dub studio DIR`: a local web app to review and edit a finished run, regenerate one line and render again.

`session` is the model of a run folder (edits, one line regenerated, the render), `server` the HTTP layer,
`page` the page itself, `script_file` the script as SRT/WebVTT (import with `dub run --script`, export).
See docs/studio.md.
"""

from __future__ import annotations

from dubbing.studio.script_file import imported_script, read_cues, script_from_cues, to_srt
from dubbing.studio.server import StudioServer, inside
from dubbing.studio.session import Studio, StudioError, open_run

__all__ = [
    "Studio",
    "StudioError",
    "StudioServer",
    "imported_script",
    "inside",
    "open_run",
    "read_cues",
    "script_from_cues",
    "to_srt",
]
