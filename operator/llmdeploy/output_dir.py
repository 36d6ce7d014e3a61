"""`llmdeploy render --output-dir`: one file per object, and nothing written through a link.

The directory may hold other files (a GitOps repository does); only the files a previous render
listed in the index are removed when this render no longer writes them, so a stale
`01-deployment-x.yaml` is not applied beside the new `00-deployment-x.yaml`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

INDEX = ".llmdeploy-rendered"
# What render names its files; an index line that is anything else (a path, `..`) is ignored.
RENDERED_NAME = re.compile(r"[0-9]{2,}-[a-z]+-[a-z0-9][-a-z0-9.]*\.yaml")


class OutputDirError(OSError):
    """The directory cannot be written as asked; the message says why."""


def write_rendered(directory: Path, files: Mapping[str, str]) -> None:
    """Write `files` (name -> text) into `directory` and remove the previous render's others.

    Each file is written to a temporary name and renamed over its name: a symbolic link there
    is replaced, never followed, and a reader never sees half a file.
    """
    if directory.is_symlink():
        raise OutputDirError(f"{directory} is a symbolic link; give the directory itself")
    directory.mkdir(parents=True, exist_ok=True)
    previous = _read_index(directory)
    for name, text in files.items():
        _replace(directory, name, text)
    for name in sorted(previous - files.keys()):
        # unlink removes a link itself, never its target; a directory is not ours to remove.
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (directory / name).unlink()
    _replace(directory, INDEX, "".join(f"{name}\n" for name in sorted(files)))


def _read_index(directory: Path) -> set[str]:
    try:
        fd = os.open(directory / INDEX, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise OutputDirError(
            f"{directory / INDEX}: cannot read the index of the previous render: {exc.strerror}"
        ) from None
    with open(fd, encoding="utf-8", errors="replace") as index:
        return {line.strip() for line in index if RENDERED_NAME.fullmatch(line.strip())}


def _replace(directory: Path, name: str, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".llmdeploy-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the manifests from a GitOps agent
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
