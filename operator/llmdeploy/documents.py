"""Reading users' files (manifests, catalogs, image locks, config.json, traces).

Every way such a file can be unreadable is a DocumentError naming the file, never a traceback:
bytes that are not UTF-8, nesting deeper than the parsers recurse, and integers beyond Python's
4,300-digit conversion limit included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """The safe loader, reading scalars as kubectl sends them to the API server: `8.03e9` and
    `1e9` are numbers (YAML 1.1 makes them strings, which the strict models would refuse) and
    `2024-01-01` is a string (JSON has no dates)."""


Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class DocumentError(ValueError):
    """A file that cannot be read or parsed; the message names it."""


def decode(data: bytes, origin: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{origin}: not UTF-8 text (byte {exc.start})") from None


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror}") from None
    return decode(data, str(path))


def load_yaml_documents(text: str, origin: str) -> list[Any]:
    """The documents of a YAML stream, with the safe loader."""
    try:
        return list(yaml.load_all(text, Loader=Loader))
    except yaml.YAMLError as exc:
        raise DocumentError(f"{origin}: malformed YAML: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{origin}: nested too deeply") from None
    except ValueError as exc:  # a value the constructors refuse: too many digits, a bad date
        raise DocumentError(f"{origin}: unreadable value: {exc}") from None


def load_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise DocumentError(f"{origin}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or too many digits
        raise DocumentError(f"{origin}: malformed JSON: {exc}") from None
