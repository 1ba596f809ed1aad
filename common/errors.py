"""One exception type for every failure a user can fix: it prints as one line with a hint, and the
exit codes every command shares (README: "Conventions")."""

EXIT_OK = 0
EXIT_BAD_INPUT = 2          # usage errors and every input a user can fix
EXIT_RUNTIME_REFUSED = 3    # the interpreter refused the graph (op too new, custom op, damaged file)
EXIT_VALIDATION_FAILED = 4  # edge-convert: the artifact did not answer like its source model
EXIT_INTERRUPTED = 130      # SIGINT or SIGTERM, after flushing what was finished


class EdgeError(Exception):
    """A user-facing error. The CLI prints `PROG: error: <message> (hint: <hint>)` and exits non-zero."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_BAD_INPUT):
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
