"""Reading user-supplied JSON files with one clear error per failure, and naming JSON types."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

from mspn_cli.errors import InputError, unreadable_reason

PathLike = Union[str, Path]

__all__ = ["read_json_file", "parse_json_text", "json_type_name", "is_json_int", "is_finite_number"]


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
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: {unreadable_reason(exc)}") from None


def parse_json_text(text: str, where: str, kind: type, expected: str) -> Any:
    """Decode one JSON document (a file's text or one JSONL line) that must be a `kind`
    (list or dict), or raise InputError: "{where}: not valid JSON (...)" / "{where}: {expected}, found ..."."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({_position(exc)}{exc.msg})") from None
    if not isinstance(value, kind):
        raise InputError(f"{where}: {expected}, found {json_type_name(value)}")
    return value


def _position(exc: json.JSONDecodeError) -> str:
    """"line L, column C: " within a file's text; "column C: " within one JSONL line (which has no newline)."""
    return f"line {exc.lineno}, column {exc.colno}: " if "\n" in exc.doc else f"column {exc.colno}: "


def json_type_name(value: Any) -> str:
    """What a decoded JSON value is, as an error message says it ("a string", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_json_int(value: Any) -> bool:
    """A JSON integer usable as an id (true/false arrive as bool, a subclass of int: not ids)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number usable as a float: not a bool, not NaN/inf, not an integer beyond float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53  # larger JSON integers overflow or lose precision as floats
    return math.isfinite(value)
