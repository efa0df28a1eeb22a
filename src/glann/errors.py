"""Errors a user can cause and fix (bad config, missing data, missing weights).

The command line prints these as one line, ``error: <message>``, and exits with
status 2, without a traceback: the message itself names the file or key and
the fix.
"""


class GlannError(Exception):
    """A problem the user can fix; the message says what and how."""


class DataError(GlannError):
    """Missing, corrupt or unreadable dataset files."""


class CorruptFileError(GlannError):
    """A file an earlier step wrote is truncated, corrupted or not ours."""


class WeightsError(GlannError):
    """A pretrained weights file (VGG16, InceptionV3) is missing or unusable."""


class DivergedError(GlannError):
    """Training produced a NaN or inf loss."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch
