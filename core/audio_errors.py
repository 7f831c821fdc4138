"""Typed errors for bad user audio (raised by `core.audio.load_audio`); `str(error)` is for end users."""

from __future__ import annotations


class AudioInputError(ValueError):
    """Base class of every problem with user audio. `str(error)` is meant for the end user."""

    code = "invalid_audio"  # short machine-readable kind (logs, turn status, metrics)

    def __init__(self, message: str, *, detail: str | None = None):
        super().__init__(message)
        self.detail = detail  # technical detail for logs; never needed by the user

    @property
    def user_message(self) -> str:
        """The readable message to show in the UI."""
        return str(self.args[0])


class EmptyAudioError(AudioInputError):
    """No audio at all: None, a zero-length array or file, no channels."""

    code = "empty"


class TooShortAudioError(AudioInputError):
    """Shorter than the minimum duration."""

    code = "too_short"


class SilentAudioError(AudioInputError):
    """No frame louder than the silence threshold."""

    code = "silent"


class NonFiniteAudioError(AudioInputError):
    """NaN or infinite samples."""

    code = "non_finite"


class CorruptAudioError(AudioInputError):
    """Looks like an audio file (by its header or extension) but cannot be decoded."""

    code = "corrupt"


class UnsupportedAudioError(AudioInputError):
    """Not audio at all (text, image, PDF, ...), or an audio container libsndfile cannot read."""

    code = "unsupported"


class AudioTooLongError(AudioInputError):
    """Longer than `max_seconds`."""

    code = "too_long"


class AudioTooLargeError(AudioInputError):
    """The file is bigger than `max_bytes` (checked before reading it)."""

    code = "too_large"


class InvalidSampleRateError(AudioInputError):
    """Sample rate missing, not a whole number, <= 0, or outside [1 kHz, 384 kHz]."""

    code = "bad_sample_rate"


class InvalidAudioShapeError(AudioInputError):
    """An array that is not (samples,) or (samples, channels) with 1..32 channels."""

    code = "bad_shape"


class AudioFileNotFoundError(AudioInputError):
    """A path that does not name a readable file."""

    code = "not_found"
