"""One exception type for every failure a user can fix: it prints as one line with a hint."""


class EdgeError(Exception):
    """A user-facing error. The CLI prints `error: <message> (hint: <hint>)` and exits non-zero."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text

    def __str__(self) -> str:
        return self.one_line()
