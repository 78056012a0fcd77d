"""Domain exceptions of the airlock.

Every exception carries the message a user may see (``message``), a stable
machine-readable ``code`` and the HTTP ``status`` the web edge maps it to;
``log_message`` holds detail for the log only (paths, hashes of other users'
files). Business logic raises them; it never returns booleans for a caller to
ignore.
"""

from __future__ import annotations

from ..hubservice import ServiceError


class AirlockError(ServiceError):
    """An error the user may see (dask-gateway's ``PublicException`` pattern)."""


class InvalidInput(AirlockError):
    """A field, filename or body is malformed."""

    status = 400
    code = "invalid_input"


class NotAuthenticated(AirlockError):
    status = 401
    code = "not_authenticated"


class PermissionDenied(AirlockError):
    """The user may not do this (who)."""

    status = 403
    code = "permission_denied"


class NotFound(AirlockError):
    status = 404
    code = "not_found"


class InvalidTransition(AirlockError):
    """The request's state does not allow this action (what)."""

    status = 409
    code = "invalid_state"


class StillChecking(InvalidTransition):
    """A file of the request is still being checked: submit once every file has its
    verdict (409, code ``still_checking``)."""

    code = "still_checking"


class PolicyViolation(AirlockError):
    """A review rule forbids this (block file, missing override reason...)."""

    status = 422
    code = "policy_violation"


class TooLarge(AirlockError):
    status = 413
    code = "too_large"


class QuotaExceeded(TooLarge):
    """The user's staging quota would be passed (refused like a file too large)."""

    status = 413
    code = "quota_exceeded"


class IntegrityFailure(AirlockError):
    """A staged file no longer matches its recorded sha256."""

    status = 409
    code = "integrity_failure"


class IdentityUnavailable(AirlockError):
    """The directory cannot say who someone is, and the decision depends on it."""

    status = 503
    code = "directory_unavailable"
