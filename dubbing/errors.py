"""The one error type for failures a user can fix (bad input, missing tools or models).

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""

from pathlib import Path


class DubbingError(Exception):
    """A user-facing failure with a message that says what to do. Known secrets in the message (a server that
    echoes the API key back, say) are masked before it goes anywhere."""

    def __init__(self, message: str = "") -> None:
        from dubbing.secrets import redact

        super().__init__(redact(str(message)))


class LanguagesFailed(DubbingError):
    """Some target languages failed while the others finished: their outputs, the manifest and the review page are
    written; the message names each failed language and why."""

    def __init__(self, failed: dict[str, str], manifest: str, finished: list[str]) -> None:
        self.failed, self.manifest = failed, manifest
        reasons = "; ".join(f"{lang} failed: {why}" for lang, why in failed.items())
        done = f" ({', '.join(finished)} done: {manifest})" if finished else ""
        super().__init__(reasons + done)


class BatchFailed(DubbingError):
    """Some videos of a batch failed while the others were dubbed: the batch run ends Failed, naming them; `results`
    holds every video's row of the summary."""

    def __init__(self, results: list[dict]) -> None:
        self.results = results
        failed = [row for row in results if row["status"] == "failed"]
        names = "; ".join(f"{Path(row['video']).name}: {row['detail']}" for row in failed)
        super().__init__(f"{len(failed)} of {len(results)} videos failed: {names}")
