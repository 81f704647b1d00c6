"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a hidden temporary file beside ``path`` and rename it into place.

    Example:
        >>> write_text_atomic("runs/pets/eval/metrics.json", "{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


#: A name that becomes a folder or file name (``--name``, ``--run``): letters (Unicode letters
#: too), digits, ``.``, ``_`` and ``-``, starting with a letter or digit, so it can be neither a
#: path (``/``, ``..``) nor hidden; at most ``MAX_NAME`` characters and twice that in UTF-8 bytes,
#: leaving room for the ``.<name>.partial-<pid>-...`` work folders under the 255-byte limit.
MAX_NAME = 100


def check_name(name: str, where: str, error: type[Exception] | None = None,
               fix: str | None = None) -> str:
    """Return ``name`` if it is a safe folder name, else raise ``error`` (a TfodError class).

    Checked before anything touches the disk: ``--name ../x`` or ``--name /tmp/x`` must not
    become a path.

    Example:
        >>> check_name("pets_v2", "--name")
        'pets_v2'
    """
    from tfod.errors import TfodError

    error = error or TfodError
    text = name if isinstance(name, str) else ""
    ok = (0 < len(text) <= MAX_NAME and len(text.encode("utf-8", "replace")) <= 2 * MAX_NAME
          and text[0].isalnum() and all(c.isalnum() or c in "._-" for c in text)
          and text.isprintable())
    if not ok:
        raise error(f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-', "
                    f"starting with a letter or digit, at most {MAX_NAME} characters "
                    "(no '/', no '..', no leading dot)", where=where,
                    fix=fix or f"pass a plain name, e.g. {where} pets_v2")
    return name


# --------------------------------------------------------------------------- #
# Folders tfod owns
# --------------------------------------------------------------------------- #
def marker(kind: str) -> str:
    """The file tfod writes into every folder of ``kind`` it creates (``dataset``, ``run``,
    ``export``, ``synth``): ``.tfod-<kind>``. A folder without it is never replaced, emptied
    or deleted by tfod."""
    return f".tfod-{kind}"


def mark_owned(folder: str | Path, kind: str) -> Path:
    """Write :func:`marker` into ``folder`` (a folder tfod has just created or is writing).

    Example:
        >>> mark_owned("runs/pets", "run")
    """
    path = Path(folder) / marker(kind)
    if not path.is_file():
        path.write_text(f"written by tfod ({kind}): tfod replaces or deletes this folder "
                        "only while this file is in it\n")
    return path


def is_owned(folder: str | Path, kind: str, legacy=None) -> bool:
    """True for a real folder (not a symlink) holding :func:`marker`; ``legacy(folder)``
    may also accept one written by a tfod from before the marker."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    return (folder / marker(kind)).is_file() or bool(legacy and legacy(folder))


def check_owned(folder: str | Path, kind: str, error: type[Exception], fix: str,
                legacy=None) -> None:
    """Raise ``error`` unless ``folder`` is absent or owned (:func:`is_owned`): checked
    before tfod replaces, empties or deletes it."""
    folder = Path(folder)
    if (folder.exists() or folder.is_symlink()) and not is_owned(folder, kind, legacy):
        raise error(f"exists and was not written by tfod (no {marker(kind)} file): "
                    "it is left as it is", where=str(folder), fix=fix)


def remove_owned(folder: str | Path, kind: str, error: type[Exception], fix: str) -> bool:
    """Delete ``folder`` if tfod wrote it (:func:`check_owned`, else ``error`` and nothing
    deleted); True when something was deleted.

    Example:
        >>> remove_owned("runs/demo", "run", TrainError, fix="move runs/demo away")
    """
    import shutil

    folder = Path(folder)
    check_owned(folder, kind, error, fix)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True
