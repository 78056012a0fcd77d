"""Domain exceptions of the batch service (the airlock's shape: message, code, status).

``str(error)`` / ``message`` is what the user may see; ``log_message`` holds
detail for the log only. The web edge maps ``status`` to the HTTP status.
"""

from __future__ import annotations

from ..hubservice import ServiceError


class BatchError(ServiceError):
    """An error of the batch service the user may see."""


class InvalidInput(BatchError):
    status = 400
    code = "invalid_input"


class NotAuthenticated(BatchError):
    status = 401
    code = "not_authenticated"


class PermissionDenied(BatchError):
    status = 403
    code = "permission_denied"


class NotFound(BatchError):
    status = 404
    code = "not_found"


class InvalidState(BatchError):
    """The run's status does not allow this (cancel a finished run, export a queued one)."""

    status = 409
    code = "invalid_state"


class TooLarge(BatchError):
    status = 413
    code = "too_large"


class Unavailable(BatchError):
    """A dependency (the directory) cannot answer: fail closed."""

    status = 503
    code = "unavailable"
