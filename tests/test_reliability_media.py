"""Reliability of media and native engines: an engine used from threads that end, rotated and odd-sized video,
a picture shorter than its audio, the audio track to dub, a full disk while encoding, and what a killed run leaves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

TWO_THREADS = textwrap.dedent(
    """
    import threading
    from dubbing.translate.bergamot import BergamotTranslator

    made, said = [], []
    def make():  # a step's thread: it makes the translator, uses it, and ends
        made.append(BergamotTranslator(source="en", target="pt"))
        said.append(made[0].translate(["Good morning, my friend."]))
    def use():  # the next step, in a new thread
        said.append(made[0].translate(["Good morning, my friend.", "", "See you tomorrow."]))
    for target in (make, use, use):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    print(repr(said))
    """
)


def test_bergamot_translator_survives_the_thread_that_made_it():
    """A translator made in a thread that ends, then used from a new one (as `dub batch` does with its steps):
    no segfault, and the same words each time."""
    proc = subprocess.run([sys.executable, "-c", TWO_THREADS], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    said = eval(proc.stdout)  # noqa: S307 - our own repr
    assert len(said) == 3 and said[0][0] and said[1][0] == said[2][0] == said[0][0]
    assert said[1][1] == "" and said[1][2]
