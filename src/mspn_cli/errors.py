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
EXIT_ENVIRONMENT = 6  # `mspn doctor`: a required package is missing or incompatible, or no backend runs
EXIT_INTERNAL = 70  # a bug in mspn-cli (EX_SOFTWARE), or a graph the exporter cannot convert (ExportError)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after flushing what was done
# SIGTERM (Slurm, Kubernetes, `timeout`) exits 143 and SIGHUP 129: 128 + the signal
# number, as shells report it, after the same orderly stop as Ctrl-C.


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


class MegEngineMissing(UsageError, ModuleNotFoundError):
    """A feature that needs MegEngine (the reference backend, MegEngine Lite, `.mge` export,
    parity checks) was asked for where MegEngine is not installed. Still a ModuleNotFoundError
    (name "megengine"), so code that treats MegEngine as optional keeps working."""

    def __init__(self, message: str):
        UsageError.__init__(self, message)
        self.msg = message
        self.name = "megengine"

    def __str__(self) -> str:
        return self.msg


class OutputError(MspnError):
    """An output cannot be written (missing folder, read-only, would overwrite)."""

    exit_code = EXIT_INPUT


class ExportError(MspnError):
    """A network could not be traced or converted, or its exported graph does not reproduce MegEngine.

    Not a usage error (the options were fine) and not the user's input: it is what the
    exporter could not do, an operator it does not support or a converter bug. It exits
    with EXIT_INTERNAL (70, EX_SOFTWARE), and its message names a backend that runs the
    network anyway (megengine, mge-lite). `--backend auto` falls back by itself.
    """

    exit_code = EXIT_INTERNAL


class UnsupportedOperatorError(ExportError):
    """The graph contains an operator (or operator mode) the ONNX converter cannot express."""


class OutputExistsError(MspnError):
    """An output file exists and --overwrite was not given, or an output would replace an input."""

    exit_code = EXIT_USAGE


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: stop in order, keep what is finished, exit 128 + signal."""

    def __init__(self, signum: int = 2):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


_UNREADABLE = (
    (FileNotFoundError, "file not found"),
    (IsADirectoryError, "is a folder, not a file"),
    (PermissionError, "permission denied"),
)


def unreadable_reason(exc: OSError) -> str:
    """Why a file could not be opened or read, as the end of a one-line message."""
    return next((reason for kind, reason in _UNREADABLE if isinstance(exc, kind)), f"cannot read ({exc.strerror or exc})")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line report (MegEngine, onnxruntime
    and Ray append C++ traces or wrapped tracebacks); the exception's type when it has none."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def interrupt_exit_code(exc: BaseException) -> int:
    """The exit code of an interruption: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return getattr(exc, "exit_code", EXIT_INTERRUPTED)
