"""A data path as the user wrote it (data.root, data.path, data.test_path, $DNNTRICK_DATA) → a
Path, `~` and `~user` expanded; a `~` that names no home folder is a one-line DataError.
Also `reason`: the one-line cause the data errors quote."""

from __future__ import annotations

from pathlib import Path

from dnntrick.errors import DataError


def reason(err: BaseException) -> str:
    """An error's message on one line (the CLI prints errors on one line); an OS error's
    without the path, which the message around it names."""
    return getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__


def user_path(text: str, field: str) -> Path:
    """`text` with `~`/`~user` expanded. `field` names where it came from in the message."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        head = path.parts[0] if path.parts else text
        who = f"no user {head[1:]!r}" if len(head) > 1 else "no home folder ($HOME is not set)"
        raise DataError(
            f"{field}: {text}: {head} cannot be expanded ({who}); give the full path"
        ) from None
