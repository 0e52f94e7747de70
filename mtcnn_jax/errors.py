"""Errors that carry a one-line message meant for the user."""


class UserError(Exception):
    """Bad input or settings the user can fix; ``str(err)`` is a single line."""


class ImageError(UserError):
    """An image that cannot be used: ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
