"""The one error type for failures a user can fix (bad input, missing tools or models).

The CLI turns it into a one-line message and exit code 2 (`PartlyFailed`: 3); anything else is a bug and keeps its
traceback.
"""

from pathlib import Path


class DubbingError(Exception):
    """A user-facing failure with a message that says what to do. Known secrets in the message (a server that
    echoes the API key back, say) are masked before it goes anywhere."""

    exit_code = 2  # the user's mistake: nothing was dubbed

    def __init__(self, message: str = "") -> None:
        from dubbing.secrets import redact

        super().__init__(redact(str(message)))


class PartlyFailed(DubbingError):
    """Part of the work failed while the rest finished and was kept (a language of a run, a video of a batch): exit
    code 3, so a script can tell "some outputs are there" from a mistake that made none (2)."""

    exit_code = 3


class LanguagesFailed(PartlyFailed):
    """Some target languages failed while the others finished: their outputs, the manifest and the review page are
    written; the message names each failed language and why."""

    def __init__(self, failed: dict[str, str], manifest: str, finished: list[str]) -> None:
        self.failed, self.manifest = failed, manifest
        reasons = "; ".join(f"{lang} failed: {why}" for lang, why in failed.items())
        done = f" ({', '.join(finished)} done: {manifest})" if finished else ""
        super().__init__(reasons + done)


class BatchFailed(PartlyFailed):
    """Some videos of a batch failed while the others were dubbed: the batch run ends Failed, naming them; `results`
    holds every video's row of the summary."""

    def __init__(self, results: list[dict]) -> None:
        self.results = results
        failed = [row for row in results if row["status"] == "failed"]
        names = "; ".join(f"{Path(row['video']).name}: {row['detail']}" for row in failed)
        super().__init__(f"{len(failed)} of {len(results)} videos failed: {names}")


def quoted(value: object, limit: int = 80) -> str:
    """`value` as an error message shows it: its repr, cut to `limit` characters. The repr is built bounded
    (reprlib), so a huge input (a YAML alias bomb expanded to millions of items) is never rendered whole."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxdict, shown.maxlist, shown.maxtuple, shown.maxset = 2, 4, 4, 4, 4
    shown.maxstring = shown.maxother = limit
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_user_text(path: Path, what: str = "file") -> str:
    """A file the user wrote (config, batch manifest), as UTF-8 text: a missing one, a folder or other bytes are one
    line naming the file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DubbingError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DubbingError(f"{what} {path} is a folder, not a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DubbingError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); save it as UTF-8"
        ) from None
