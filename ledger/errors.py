"""The errors a caller of the ledger can act on.

Every error carries a short, member-facing message that says what to do. Database errors are
translated into these by SQLSTATE in `ledger.store`, never by matching message text.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    code = "ledger_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(LedgerError):
    """An argument is out of range, malformed or refers to nothing sensible."""

    code = "invalid_input"


class InvalidAmount(InvalidInput):
    """An amount is zero, negative, not an integer or above the configured maximum."""

    code = "invalid_amount"


class InsufficientFunds(LedgerError):
    """The member's balance (or item count) does not cover the operation."""

    code = "insufficient_funds"


class CooldownActive(LedgerError):
    """The action was taken too recently; `retry_after` seconds until it is allowed."""

    code = "cooldown"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotPermitted(LedgerError):
    """The actor lacks the role or permission the command needs."""

    code = "not_permitted"


class UnknownMember(LedgerError):
    """The member has never interacted with the economy."""

    code = "unknown_member"


class UnknownItem(LedgerError):
    """The item does not exist or the member holds none of it."""

    code = "unknown_item"


class Conflict(LedgerError):
    """A stream changed between read and append; retry from fresh state."""

    code = "conflict"


class DatabaseUnavailable(LedgerError):
    """PostgreSQL could not be reached or timed out; nothing was written."""

    code = "database_unavailable"
