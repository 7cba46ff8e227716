"""Reading user-supplied JSON files with one clear error per failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from mspn_cli.errors import InputError

PathLike = Union[str, Path]

__all__ = ["read_json_file"]


def read_json_file(path: PathLike, what: str) -> Any:
    """Parse a JSON file, or raise InputError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a JSON file")
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except PermissionError:
        raise InputError(f"{what} {path}: permission denied") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
