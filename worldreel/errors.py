"""The one exception type a user sees.

A ``UserError`` is bad input (a prompt, size, file, video, request), named by ``param``:
the CLI prints it as one line and exits with status 2, the service answers it as a 400 in
OpenAI's error shape. Anything else escaping to the user is a bug.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; ``param`` names the offending parameter."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __str__(self) -> str:
        return f"{self.param}: {self.message}" if self.param and not self.message.startswith(self.param) else self.message
