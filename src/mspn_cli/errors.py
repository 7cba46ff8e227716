"""One exception family for the whole package.

Library code raises these; only the CLI turns them into a stderr line and an exit code.
"""

from __future__ import annotations

# Exit codes, documented in README and `mspn --help`.
EXIT_OK = 0
EXIT_PARTIAL = 1  # some inputs failed, the others were processed
EXIT_USAGE = 2  # Typer/Click's own code for bad options, reused for bad arguments
EXIT_INPUT = 3  # nothing could be processed: missing/corrupt inputs, malformed JSON
EXIT_WEIGHTS = 4  # weights or model unavailable, corrupt, foreign or unsafe
EXIT_CONFIG = 5  # a config file is missing or invalid
EXIT_INTERNAL = 70  # a bug in mspn-cli (EX_SOFTWARE); the message asks for a report
EXIT_INTERRUPTED = 130  # Ctrl-C, after flushing what was done


class MspnError(Exception):
    """Base class: a message meant for the user, one line, no traceback."""

    exit_code = EXIT_INPUT


class InputError(MspnError):
    """An image, video, folder or JSON file the user gave cannot be used."""

    exit_code = EXIT_INPUT


class UsageError(MspnError):
    """Options that contradict each other or are out of range."""

    exit_code = EXIT_USAGE


class WeightsError(MspnError):
    """Weights cannot be found, downloaded, verified, unpickled or loaded."""

    exit_code = EXIT_WEIGHTS


class ConfigError(MspnError):
    """A configuration file is missing or invalid."""

    exit_code = EXIT_CONFIG


class OutputError(MspnError):
    """An output cannot be written (missing folder, read-only, would overwrite)."""

    exit_code = EXIT_INPUT
