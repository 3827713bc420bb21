"""Safe output writing: nothing overwritten unless asked, nothing half-written.

Two tools:

- :func:`atomic_path` makes one write safe: write to a temporary sibling, then rename it into place.
- :class:`OutputSet` makes a set of writes safe: it checks every output *before* any computation and renames
  all of them into place only when the whole body succeeded.

Example
-------
>>> with OutputSet([recon_path, sidecar_path], force=False) as out:  # doctest: +SKIP
...     save_like(recon, record, out.tmp(recon_path))
...     write_sidecar(out.tmp(sidecar_path), fields)
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from neurodiff.errors import InputError, OutputExistsError


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s extension (``.tmp-<random>-<name>``) so format-by-extension writers
    such as ``nibabel.save`` work unchanged. On error the temporary file is removed and the error re-raised.

    Parameters
    ----------
    path : str or Path
        Final file path. Its folder must exist.

    Yields
    ------
    Path
        Where the block should write.

    Raises
    ------
    InputError
        If the file cannot be written or renamed (permissions, missing folder, full disk).
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {_reason(error)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class OutputSet:
    """Transaction over a set of output files.

    On entry, checks that every output folder exists or can be created and is writable, and that no output
    exists unless ``force``: call it before any computation so a user mistake costs nothing. Inside the block,
    write each output to ``tmp(path)``. On normal exit every temporary file is renamed onto its final path; on
    an exception (including Ctrl-C) all temporary files, and the folders it created, are deleted and the
    exception propagates, so no half-written output remains.

    Parameters
    ----------
    paths : sequence of str or Path
        Final output paths. Each must be written inside the block.
    force : bool
        Overwrite outputs that already exist.
    inputs : sequence of str or Path
        Files the computation reads; none of them is ever overwritten, even with ``force``.

    Raises
    ------
    InputError
        On entry, if an output folder cannot be created or written, an output path is a folder, or an output
        is one of ``inputs``.
    OutputExistsError
        On entry, if an output exists and ``force`` is false.
    """

    def __init__(self, paths: Sequence[str | Path], *, force: bool = False,
                 inputs: Sequence[str | Path] = ()) -> None:
        finals = [Path(p) for p in paths]
        if len(set(finals)) != len(finals):
            raise ValueError(f"output paths must be distinct, got {[str(p) for p in finals]}")
        read = {Path(p).resolve() for p in inputs}
        clash = [p for p in finals if p.resolve() in read]
        if clash:
            raise InputError(f"the output {clash[0]} would overwrite an input file; choose another output folder")
        self.paths: tuple[Path, ...] = tuple(finals)
        self.force = force
        self._tmp = {p: p.with_name(f".tmp-{p.name}") for p in finals}
        self._created: list[Path] = []  # folders this set made, removed again if nothing is written

    def tmp(self, path: str | Path) -> Path:
        """Temporary path to write ``path`` to: ``.tmp-<name>`` in the same folder."""
        try:
            return self._tmp[Path(path)]
        except KeyError:
            raise ValueError(f"{path} is not one of this OutputSet's paths") from None

    def __enter__(self) -> OutputSet:
        for folder in dict.fromkeys(p.parent for p in self.paths):
            new = [f for f in (folder, *folder.parents) if not f.exists()]
            _check_writable(folder)
            self._created += new
        for path in self.paths:
            if path.is_dir():
                raise InputError(f"{path} is a folder; give a file name for the output")
        existing = [p for p in self.paths if p.exists() or p.is_symlink()]
        if existing and not self.force:
            more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
            raise OutputExistsError(f"{existing[0]} exists{more}; use --force to overwrite")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            missing = [p for p, t in self._tmp.items() if not t.exists()]
            if not missing:
                self._commit()
                return
            self._discard()
            raise RuntimeError(f"output {missing[0]} was not written to {self._tmp[missing[0]]}")
        self._discard()

    def _commit(self) -> None:
        for path, tmp in self._tmp.items():
            try:
                os.replace(tmp, path)
            except OSError as error:
                self._discard()
                raise InputError(f"cannot write {path}: {_reason(error)}") from None

    def _discard(self) -> None:
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        for folder in sorted(set(self._created), key=lambda f: len(f.parts), reverse=True):  # deepest first
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                pass


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable by creating and deleting a probe file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-probe-"):
            pass
    except OSError as error:
        reason = "it is a file, not a folder" if folder.is_file() else _reason(error)
        raise InputError(f"cannot write to {folder}: {reason}") from None
