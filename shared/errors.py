"""One base class for errors in what a user asked for: retrying cannot help, the message says what to fix."""

from __future__ import annotations


class UserError(Exception):
    """The request cannot run as given (bad data, missing model, unusable calibration, bad option).

    Celery tasks fail the job at once with the message (no retry); the CLI prints it and exits with status 2.
    Subclasses also derive from the builtin they used to be (ValueError, FileNotFoundError), so callers that
    catch those keep working.
    """
