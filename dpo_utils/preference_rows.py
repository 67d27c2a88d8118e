"""Preference rows in TRL's format: read them from a file or a list, and check every field.

A row has ``prompt``, ``chosen`` and ``rejected``, either

- *plain*: three strings, or
- *conversational*: ``prompt`` a list of messages ``{"role", "content"}`` and ``chosen`` /
  ``rejected`` lists holding the assistant's reply (TRL's "conversational" format).

Bad rows raise :class:`PreferenceDataError` naming the source, the row and the field (or are
skipped and counted with ``on_bad_row="skip"``), so they never turn into a NaN mid-training.
Messages have the roles in :data:`ROLES` (``system``, ``user``, ``assistant``) and non-empty string
contents; the prompt may hold any of them, ``chosen`` and ``rejected`` assistant turns only. A
file is read as UTF-8 (a byte order mark on line 1 is decoded); a line that is not UTF-8, a string
holding a lone surrogate (``"\ud800"``: not text) and an object with a key twice are bad rows like any
other. Any readable path that is not a directory is read, a FIFO or character device as a stream
(``<(zcat data.jsonl.gz)``, ``/dev/stdin``); ``bytes`` and open files are refused with a ``TypeError``
(pass a ``str`` path: ``os.fsdecode(path)``).
Where a row came from is said the way you would find it: ``line N`` in a JSONL file (1-based,
as an editor numbers lines, blank lines included) and ``row i`` in a list or ``datasets.Dataset``
(its index, ``rows[i]``).
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

FIELDS = ("prompt", "chosen", "rejected")
SIDES = ("chosen", "rejected")


class PreferenceDataError(ValueError):
    """A preference row that cannot be used, with where and why."""


class IdenticalPairError(PreferenceDataError):
    """Chosen and rejected are the same: the pair has zero gradient."""


class PreferenceFileNotFoundError(PreferenceDataError, FileNotFoundError):
    """The JSONL file does not exist (also a ``FileNotFoundError``)."""


class PreferenceDataIsADirectoryError(PreferenceDataError, IsADirectoryError):
    """The data path is a directory (also an ``IsADirectoryError``)."""


def is_path(source) -> bool:
    """Whether ``source`` names a file (``str`` or ``os.PathLike``) rather than holding rows."""
    return isinstance(source, (str, os.PathLike))


def read_preference_rows(source) -> tuple[list[tuple[int, str, dict | PreferenceDataError]], str]:
    """Every row with where it came from, and the source's name, in source order.

    Each item is ``(number, where, row)``: ``(7, "line 7", {...})`` for a JSONL file, ``(0, "row 0",
    {...})`` for a list or ``datasets.Dataset``. A line that is not UTF-8 or not JSON, and a list
    item that is not a dict, comes back as a :class:`PreferenceDataError` in place of its row, so
    the caller decides to raise or skip it. A UTF-8 byte order mark on line 1 is decoded, not refused.
    """
    if not is_path(source):
        return _in_memory_rows(source), type(source).__name__
    path = Path(source)
    data = _read_bytes(path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # the whole file is UTF-16: no line of it can be read
        error = PreferenceDataError(
            f"{path}, line 1: the file is UTF-16 (it starts with a UTF-16 byte order mark), "
            "not UTF-8; save it as UTF-8"
        )
        return [(1, "line 1", error)], str(path)
    items = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            items.append(
                (
                    number,
                    f"line {number}",
                    PreferenceDataError(
                        f"{path}, line {number}: not UTF-8 "
                        f"(byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line); "
                        "save the file as UTF-8"
                    ),
                )
            )
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_without_repeated_keys)
        except json.JSONDecodeError as error:
            hint = " (it holds NUL bytes: is the file UTF-16?)" if "\0" in line else ""
            row = PreferenceDataError(f"{path}, line {number}: not valid JSON ({error.msg}){hint}")
        except _RepeatedKeyError as error:
            row = PreferenceDataError(
                f"{path}, line {number}: key {error.args[0]!r} appears twice in one object (JSON would keep "
                "only the last); remove one"
            )
        items.append((number, f"line {number}", row))
    return items, str(path)


def _read_bytes(path: Path) -> bytes:
    """The bytes of a file, FIFO or character device; a :class:`PreferenceDataError` saying why not."""
    if path.is_dir():
        jsonl = sorted(p.name for p in path.glob("*.jsonl"))[:5]
        raise PreferenceDataIsADirectoryError(
            f"{path}: is a directory, not a preference data file; pass the path of a JSONL file"
            + (f" (it holds {', '.join(jsonl)})" if jsonl else "")
        )
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        dangling = f"; it is a symlink to {os.readlink(path)}, which does not exist" if path.is_symlink() else ""
        raise PreferenceFileNotFoundError(
            f"{path}: no such preference data file (absolute path {path.absolute()}){dangling}"
        ) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise PreferenceDataError(f"{path}: a symlink loop (its links never reach a file)") from None
        raise PreferenceDataError(f"{path}: cannot be read ({error.strerror or error})") from None


class _RepeatedKeyError(ValueError):
    """A JSON object with a key twice (``json.loads`` would silently keep the last)."""


def _without_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKeyError(key)
        seen.add(key)
    return dict(pairs)


def _in_memory_rows(source) -> list[tuple[int, str, dict | PreferenceDataError]]:
    """``read_preference_rows`` for a list or ``datasets.Dataset``: items that are not dicts become errors."""
    name = type(source).__name__
    if isinstance(source, (bytes, bytearray, memoryview, io.IOBase)):
        hint = (
            "an open file: pass its path"
            if isinstance(source, io.IOBase)
            else "bytes: pass a str path, os.fsdecode(path)"
        )
        raise TypeError(
            f"expected a JSONL path (str or os.PathLike), a list of rows or a datasets.Dataset, got {hint}"
        )
    if isinstance(source, Mapping):
        raise PreferenceDataError(
            f"{name}: expected a JSONL path, a list of rows or a datasets.Dataset, got one "
            f"{name}; wrap a single row in a list"
        )
    try:
        rows = list(source)
    except TypeError:
        raise PreferenceDataError(f"expected a JSONL path, a list of rows or a datasets.Dataset, got {name}") from None
    items = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            row = PreferenceDataError(
                f"{name}, row {i}: expected a dict with {', '.join(FIELDS)}, got {type(row).__name__}"
            )
        items.append((i, f"row {i}", row if isinstance(row, (dict, PreferenceDataError)) else dict(row)))
    return items


def load_preference_rows(source) -> tuple[list[dict], str]:
    """Rows and a source name from a JSONL path, a ``datasets.Dataset`` or a list of dicts.

    Raises :class:`PreferenceDataError` at the first line that is not JSON."""
    items, name = read_preference_rows(source)
    for _, _, row in items:
        if isinstance(row, PreferenceDataError):
            raise row
    return [row for _, _, row in items], name


ROLES = ("system", "user", "assistant")  # the roles chat templates render; a completion holds assistant turns only


def _text_of(value, row: str, name: str, source: str) -> str | list:
    """Check one field and return it; messages are checked for role/content strings and known roles."""
    where = f"{source}, {row}, field '{name}'"
    if value is None:
        raise PreferenceDataError(f"{where}: missing")
    if isinstance(value, str):
        if not value.strip():
            raise PreferenceDataError(f"{where}: empty")
        if surrogate := _lone_surrogate(value):
            raise PreferenceDataError(f"{where}: {surrogate}")
        return value
    if isinstance(value, list) and value:
        for k, message in enumerate(value):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("content"), str)
                or not isinstance(message.get("role"), str)
            ):
                raise PreferenceDataError(
                    f"{where}: message {k} must be a dict with string 'role' and 'content'" + _got(message)
                )
            role = message["role"]
            if role not in ROLES:
                raise PreferenceDataError(
                    f"{where}: message {k} has unknown role {role!r} (expected one of {', '.join(ROLES)})"
                )
            if name != "prompt" and role != "assistant":
                raise PreferenceDataError(
                    f"{where}: message {k} has role {role!r}; a completion holds assistant turns only "
                    "(put earlier turns in the prompt)"
                )
            if not message["content"].strip():
                raise PreferenceDataError(f"{where}: message {k} has empty content")
            if surrogate := _lone_surrogate(message["content"]):
                raise PreferenceDataError(f"{where}: message {k} {surrogate}")
        return value
    raise PreferenceDataError(f"{where}: expected a non-empty string or list of messages, got {type(value).__name__}")


def _lone_surrogate(text: str) -> str:
    """Where ``text`` holds a lone surrogate (half of a UTF-16 pair, which no tokenizer takes); "" if nowhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"holds a lone surrogate U+{ord(text[error.start]):04X} at character {error.start + 1}, which is "
            "not text (often a JSON escape such as \\ud83d without its second half); fix or remove it"
        )
    return ""


def _got(message) -> str:
    """What a malformed message holds, in a few words, for the error that refuses it."""
    if not isinstance(message, dict):
        return f", got {type(message).__name__}"
    bad = [
        f"{key} {type(message.get(key)).__name__}"
        for key in ("role", "content")
        if not isinstance(message.get(key), str)
    ]
    return f" (got {', '.join(bad)})"


def validate_row(row: dict, index: int | str, source: str = "data") -> dict:
    """Return the row's three fields checked (present, non-empty, strings, chosen != rejected).

    ``index`` is the row's index in a list, or a place such as ``"line 7"`` (see :func:`read_preference_rows`)."""
    where = index if isinstance(index, str) else f"row {index}"
    if not isinstance(row, dict):
        raise PreferenceDataError(
            f"{source}, {where}: expected an object with {', '.join(FIELDS)}, got {type(row).__name__}"
        )
    checked = {name: _text_of(row.get(name), where, name, source) for name in FIELDS}
    if isinstance(checked["prompt"], str) != isinstance(checked["chosen"], str) or isinstance(
        checked["chosen"], str
    ) != isinstance(checked["rejected"], str):
        raise PreferenceDataError(f"{source}, {where}: mixes plain strings and message lists")
    if checked["chosen"] == checked["rejected"]:
        raise IdenticalPairError(f"{source}, {where}, fields 'chosen'/'rejected': identical, the pair teaches nothing")
    return checked


def no_rows_reason(items: list, source) -> str:
    """Why ``source`` gave no pair: it has no rows at all, or none of them is usable."""
    if items:
        return "no usable rows"
    return "no rows: the file is empty or holds only blank lines" if is_path(source) else "no rows: it is empty"


def save_preference_jsonl(rows: list[dict], path) -> None:
    """Write rows in TRL's preference format, one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({name: row[name] for name in FIELDS}, ensure_ascii=False) + "\n")
