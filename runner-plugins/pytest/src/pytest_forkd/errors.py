"""The one error type: a stable code to match on, a message, a hint, and the HTTP status."""

from typing import Optional


class ForkdError(Exception):
    """An error from the engine (or on the way to it), as the TypeScript client's ForkdError."""

    def __init__(
        self,
        code: str,
        message: str,
        hint: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        hint = f"\n  hint: {self.hint}" if self.hint else ""
        return f"{self.code}{where}: {self.message}{hint}"
