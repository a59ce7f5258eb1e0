"""The one user-error type.

Anything a user can fix (a bad flag, a missing or malformed file, a model that cannot be loaded, an
unsupported open_clip) raises :class:`UserError` or a subclass. The ``openclip-ce`` command prints
it as one line, ``openclip-ce COMMAND: error: MESSAGE``, and exits with :data:`EXIT_USAGE`; a
traceback means a bug. Subclasses exist only where a caller must tell one failure from another
(a bad shard is recorded and the job goes on; a missing benchmark is skipped).
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


class UserError(Exception):
    """A problem the user can fix; the message names the file, sample or flag and what is wrong."""

    def one_line(self) -> str:
        return " ".join(str(self).split()) or type(self).__name__


def reason(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of a caught exception on one line, for a :class:`UserError` naming what failed; the
    type alone when the message is empty (``EOFError()`` from a 0-byte file)."""
    text = " ".join(str(exc).split())[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
