"""Errors that say what is wrong, where, and how to fix it."""

from __future__ import annotations


class TfodError(Exception):
    """Base error: ``what`` is wrong, ``where`` (file, key, image), ``fix``.

    Example:
        >>> raise DatasetError("box 2 lies outside the image", where="a.xml",
        ...                    fix="fix the box or run with --clip-boxes")
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        text = f"{where}: {what}" if where else what
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class DatasetError(TfodError):
    """Bad annotations or images."""


class ConfigError(TfodError):
    """A pipeline.config or option that cannot work."""


class TrainError(TfodError):
    """Training or evaluation could not run."""


class ExportError(TfodError):
    """An export could not be written or checked."""


class ZooError(TfodError):
    """A zoo model that cannot be found, downloaded, verified or extracted."""
