"""Saved HF `datasets` folders (`save_to_disk`), read without `datasets.load_from_disk`.

load_from_disk joins each file name in state.json to the folder as given, so a crafted state.json
("../../home/me/secrets.arrow", an absolute path, a symlink) makes it read files outside the folder.
Here every split name and data file must stay inside the folder once symlinks are resolved, and be a
regular file; the Arrow streams are read with pyarrow. The sha256 covers the name and bytes of every
file read, in the order read, so the report describes exactly what was audited.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from auditor.dataset.source import CHUNK, Source, open_source
from auditor.errors import InputError

MAX_MANIFEST_BYTES = 2**20  # state.json / dataset_dict.json: a few hundred bytes in practice
MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class HFFolder:
    def __init__(self, path: Path):
        self.path = path
        self.root = path.resolve(strict=True)
        self.sources: list[Source] = []
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _inside(self, candidate: Path, what: str) -> Path:
        """The resolved path, refused unless it stays inside the folder."""
        try:
            real = candidate.resolve(strict=True)
        except FileNotFoundError:
            raise InputError(self.path, f"{what} {candidate.relative_to(self.path) if candidate.is_relative_to(self.path) else candidate} is missing") from None
        except (OSError, RuntimeError) as err:  # a symlink loop
            raise InputError(self.path, f"cannot resolve {what} {candidate} ({err})") from None
        if not real.is_relative_to(self.root):
            raise InputError(self.path, f"{what} {candidate.name!r} resolves to {real}, outside the dataset folder: refused")
        return real

    def _fail(self, file: Path, problem: str) -> InputError:
        """Errors name the folder the user gave, and the file inside it."""
        inside = file.relative_to(self.path) if file.is_relative_to(self.path) else file
        return InputError(self.path, f"{inside}: {problem}")

    def _open(self, candidate: Path, what: str) -> Source:
        self._inside(candidate, what)
        try:
            source = open_source(candidate, what)
        except InputError as err:
            raise self._fail(candidate, err.problem) from None
        self.sources.append(source)
        return source

    def _hash(self, source: Source, limit: int | None = None) -> bytes | None:
        """Feed the file's name and bytes to the folder's sha256; returns the bytes of a small file."""
        self._digest.update(str(source.path.relative_to(self.path)).encode() + b"\x00")
        kept, size = [], 0
        with source.open() as handle:
            while chunk := handle.read(CHUNK):
                self._digest.update(chunk)
                size += len(chunk)
                if limit is not None:
                    if size > limit:
                        raise self._fail(source.path, f"is over {limit} bytes: not a datasets manifest")
                    kept.append(chunk)
        source.size = size
        return b"".join(kept) if limit is not None else None

    def _manifest(self, name: Path) -> dict:
        source = self._open(name, "manifest")
        text = self._hash(source, MAX_MANIFEST_BYTES)
        try:
            data = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise self._fail(name, f"not a readable datasets manifest ({err})") from None
        if not isinstance(data, dict):
            raise self._fail(name, "not a readable datasets manifest (expected a JSON object)")
        return data

    def _split_folder(self, split: str | None) -> Path:
        manifest = self.path / "dataset_dict.json"
        if not manifest.is_file():
            return self.path  # one dataset, no splits
        names = self._manifest(manifest).get("splits")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise self._fail(manifest, "not a readable datasets manifest ('splits' must be a list of names)")
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in names:
            raise InputError(self.path, f"the folder holds splits {names}; choose one with --split")
        if chosen in ("", ".", "..") or "/" in chosen or "\\" in chosen:
            raise self._fail(manifest, f"split name {chosen!r} is not a plain folder name: refused")
        folder = self.path / chosen
        self._inside(folder, "split folder")
        return folder

    def read(self, split: str | None, max_bytes: int) -> pa.Table:
        folder = self._split_folder(split)
        if not (folder / "state.json").is_file():
            raise InputError(self.path, "is a folder, not a dataset file (and not a saved HF datasets folder)")
        state = self._manifest(folder / "state.json")
        files = state.get("_data_files")
        if not isinstance(files, list) or not files:
            raise self._fail(folder / "state.json", "not a readable datasets manifest ('_data_files' must list the data files)")
        tables, total = [], 0
        for entry in files:
            name = entry.get("filename") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
                raise self._fail(folder / "state.json", f"data file name {name!r} is not a plain name inside the folder: refused")
            source = self._open(folder / name, "data file")
            total += source.stat.st_size
            if total > max_bytes:
                raise InputError(self.path, f"holds more than {max_bytes / 2**30:g} GiB of data (--max-input-gib raises the limit)")
            self._hash(source)
            try:
                tables.append(pa.ipc.open_stream(pa.memory_map(source.read_path)).read_all())
            except (pa.ArrowException, OSError) as err:
                raise self._fail(source.path, f"not a readable saved HF datasets folder ({str(err).splitlines()[0]})") from None
        try:
            return pa.concat_tables(tables)
        except pa.ArrowException as err:
            raise InputError(self.path, f"its data files do not share one schema ({str(err).splitlines()[0]})") from None


def is_hf_folder(path: Path) -> bool:
    return any((path / marker).exists() for marker in MARKERS)
