"""User-facing errors.

Every problem the user can fix raises a subclass of :class:`UADBrainError` whose message is one
line saying what is wrong and what to do. The CLI prints it without a traceback; the Slicer module
shows it in a message box.
"""


def first_line(text) -> str:
    """The first non-empty line of an error (or any text), for a one-line message."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return line or (type(text).__name__ if isinstance(text, BaseException) else "no reason given")


class UADBrainError(Exception):
    """Base class of errors whose message is meant for the user."""


class InputError(UADBrainError):
    """An input image or mask is unusable (missing, corrupt, wrong shape, bad values or geometry)."""


class ModelError(UADBrainError):
    """A model bundle is unknown, corrupt, or cannot handle the given inputs."""


class DeviceError(UADBrainError):
    """The requested compute device is not available."""


class Cancelled(UADBrainError):
    """The run was cancelled by the user."""
