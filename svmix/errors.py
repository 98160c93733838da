"""User-facing errors: CLIs print these as one line on stderr and exit non-zero."""


class SvmixError(Exception):
    """A user mistake or bad input (missing file, unknown id, wrong format)."""


class AudioError(SvmixError):
    """Audio that cannot be used; the message names the utterance and the path."""
