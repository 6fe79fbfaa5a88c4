"""The one error type for failures a user can fix (bad input, missing tools or models).

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""


class DubbingError(Exception):
    """A user-facing failure with a message that says what to do. Known secrets in the message (a server that
    echoes the API key back, say) are masked before it goes anywhere."""

    def __init__(self, message: str = "") -> None:
        from dubbing.secrets import redact

        super().__init__(redact(str(message)))
