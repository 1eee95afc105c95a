"""Resume trust: a keyed record of every file in an experiment that ``Tuner.restore`` unpickles.

Ray's restore unpickles ``tuner.pkl``, the newest ``experiment_state-*.json`` (its trials carry
cloudpickled blobs), the searcher's ``basic-variant-state-*.json``, ``search_gen_state-*.json``
and ``searcher-state-*.pkl``, ``callback-states-*.pkl`` and, for an errored trial, its
``error.pkl`` (docs/ray.md 3.3). A file planted there runs code as whoever resumes. So a sweep
keeps ``tuneable_gan_integrity.hmac`` beside its results: the HMAC-SHA256 of each such file (its
path inside the experiment and its bytes), keyed with a per-user secret that never enters the
experiment (``$TUNEABLE_GAN_HOME/resume.key``, default ``~/.config/tuneable-gan/resume.key``,
created 0600 on first use). ``IntegrityRecorder`` adds each version Ray writes while the sweep
runs, so an interrupted or killed sweep stays resumable; ``verify`` checks every such file
before ``Tuner.restore`` reads anything and refuses, in one line naming the file, otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from tuneable_gan.constants import SPEC_FILE
from tuneable_gan.disk import writing
from tuneable_gan.errors import UserError

# Not .json or .pkl: Ray copies every top-level file with those endings into the driver's
# staging directory on restore and syncs that directory back, which would roll the record back.
RECORD_FILE = "tuneable_gan_integrity.hmac"
KEY_FILE = "resume.key"
HOME_ENV = "TUNEABLE_GAN_HOME"
TRUST_FLAG = "--trust-experiment-dir"
FORMAT = 1
# Versions kept per file: the storage may lag the driver's staging copy by a few syncs when the
# driver dies, and any version this sweep wrote is as trustworthy as the newest.
HISTORY = 8


class IntegrityError(UserError):
    """An experiment whose pickles resume cannot vouch for: refused unless trusted explicitly."""


def key_path() -> Path:
    """Where this user's resume key lives (outside every experiment directory)."""
    home = os.environ.get(HOME_ENV)
    root = Path(home).expanduser() if home else Path.home() / ".config" / "tuneable-gan"
    return root / KEY_FILE


def load_key(create: bool = False) -> bytes:
    """This user's resume key; with ``create``, made (32 random bytes, mode 0600) when absent."""
    path = key_path()
    if not path.exists() and create:
        _create_key(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(
            f"no resume key at {path}: resume checks an experiment with the key of the user "
            f"who ran the sweep (set {HOME_ENV} to that user's directory, or resume as them); "
            f"pass {TRUST_FLAG} only if you trust everyone who can write to the experiment"
        ) from None
    except OSError as e:
        raise IntegrityError(f"cannot read the resume key {path}: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise IntegrityError(f"the resume key {path} can be read by others (mode "
                             f"{st.st_mode & 0o777:o}): run chmod 600 {path}")
    if len(data) < 32:
        raise IntegrityError(f"the resume key {path} is damaged ({len(data)} bytes, not 32)")
    return data


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path, need=32):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def key_id(key: bytes) -> str:
    """A public name of ``key`` (tells one user's key from another's; reveals nothing)."""
    return hashlib.sha256(b"tuneable-gan/key-id\0" + key).hexdigest()[:16]


def file_mac(key: bytes, rel: str, data: bytes) -> str:
    """The HMAC of a file: its path inside the experiment and its bytes."""
    return hmac.new(key, b"tuneable-gan/file\0" + rel.encode() + b"\0" + data,
                    hashlib.sha256).hexdigest()


def covered(rel: str) -> bool:
    """Whether restore may deserialize the experiment's file ``rel`` (a relative posix path):
    any top-level .json or .pkl (Ray copies all of them for its searchers and callbacks), the
    stored sweep spec, and any .pkl below (params.pkl, error.pkl)."""
    parts = rel.split("/")
    if len(parts) == 1:
        return rel == SPEC_FILE or rel.endswith((".json", ".pkl"))
    return rel.endswith(".pkl")


def fs_of(experiment: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local experiment path or a URI."""
    if "://" in experiment:
        fs, path = pafs.FileSystem.from_uri(experiment)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(experiment).expanduser().resolve())


class Record:
    """The integrity record of one experiment: file -> the MACs of its recorded versions."""

    def __init__(self, key: bytes, files: dict[str, list[str]] | None = None) -> None:
        self.key = key
        self.files: dict[str, list[str]] = files or {}

    def _mac(self) -> str:
        body = json.dumps({"format": FORMAT, "key_id": key_id(self.key), "files": self.files},
                          sort_keys=True).encode()
        return hmac.new(self.key, b"tuneable-gan/record\0" + body, hashlib.sha256).hexdigest()

    def add(self, rel: str, data: bytes) -> bool:
        """Record a version of ``rel``; False when it was recorded already."""
        mac = file_mac(self.key, rel, data)
        seen = self.files.setdefault(rel, [])
        if mac in seen:
            return False
        seen.append(mac)
        del seen[:-HISTORY]
        return True

    def knows(self, rel: str, data: bytes) -> bool:
        """Whether these bytes of ``rel`` are a version this experiment's sweep wrote."""
        mac = file_mac(self.key, rel, data)
        return any(hmac.compare_digest(mac, m) for m in self.files.get(rel, []))

    def dumps(self) -> bytes:
        """The record as stored: JSON with its own MAC."""
        return json.dumps({"format": FORMAT, "key_id": key_id(self.key), "files": self.files,
                           "mac": self._mac()}, indent=1, sort_keys=True).encode()

    @classmethod
    def load(cls, fs: pafs.FileSystem, root: str, key: bytes, where: str) -> Record:
        """The record of the experiment at ``root``, checked against ``key``."""
        path = f"{root}/{RECORD_FILE}"
        try:
            with fs.open_input_stream(path) as f:
                raw = f.read()
        except FileNotFoundError:
            raise IntegrityError(
                f"{where} has no {RECORD_FILE}, so nothing vouches for the pickles Ray would "
                "load from it (a sweep made before tuneable-gan sealed its experiments, or the "
                f"record was removed); refusing to resume. Pass {TRUST_FLAG} only if you trust "
                f"everyone who can write to {where}") from None
        try:
            doc = json.loads(raw.decode())
            rec = cls(key, {str(k): [str(m) for m in v] for k, v in doc["files"].items()})
            other, mac = str(doc["key_id"]), str(doc["mac"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{where}/{RECORD_FILE} is not an integrity record (damaged?); "
                                 f"refusing to resume; pass {TRUST_FLAG} only if you trust "
                                 f"everyone who can write to {where}") from None
        if other != key_id(key):
            raise IntegrityError(
                f"{where} was sealed with another resume key than {key_path()} (another user "
                "ran the sweep, or the key was replaced): only that user can resume it safely; "
                f"refusing. Pass {TRUST_FLAG} only if you trust everyone who can write to it")
        if not hmac.compare_digest(mac, rec._mac()):
            raise IntegrityError(f"{where}/{RECORD_FILE} was edited (its HMAC does not match); "
                                 f"refusing to resume; pass {TRUST_FLAG} only if you trust "
                                 f"everyone who can write to {where}")
        return rec

    def save(self, fs: pafs.FileSystem, root: str) -> None:
        """Write the record (atomically on a local disk)."""
        blob, path = self.dumps(), f"{root}/{RECORD_FILE}"
        local = isinstance(fs, pafs.LocalFileSystem)
        tmp = f"{root}/.{RECORD_FILE}.{os.getpid()}.tmp" if local else path
        with writing(path, need=len(blob)):
            with fs.open_output_stream(tmp) as f:
                f.write(blob)
            if local:
                os.replace(tmp, path)


def _storage_files(fs: pafs.FileSystem, root: str) -> Iterator[tuple[str, str]]:
    """(relative path, path) of every covered file under ``root``."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    for info in sorted(infos, key=lambda i: i.path):
        rel = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and covered(rel):
            yield rel, info.path


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def seal(experiment: str, names: Iterable[str] | None = None) -> None:
    """Add the current bytes of ``names`` (default: every covered file) of ``experiment`` to its
    record, creating the key and the record when missing (a record of another key, or a damaged
    one, is started afresh: only files this call reads are then vouched for)."""
    fs, root = fs_of(experiment)
    key = load_key(create=True)
    try:
        rec = Record.load(fs, root, key, experiment)
    except IntegrityError:
        rec = Record(key)
    wanted = None if names is None else set(names)
    for rel, path in _storage_files(fs, root):
        if wanted is None or rel in wanted:
            rec.add(rel, _read(fs, path))
    rec.save(fs, root)


def verify(experiment: str) -> None:
    """Refuse (``IntegrityError``, one line naming the file) unless every file of
    ``experiment`` that restore may unpickle is a version its sweep recorded under this user's
    key."""
    fs, root = fs_of(experiment)
    key = load_key()
    rec = Record.load(fs, root, key, experiment)
    for rel, path in _storage_files(fs, root):
        if not rec.knows(rel, _read(fs, path)):
            raise IntegrityError(
                f"{experiment}/{rel} is not a file this experiment's sweep wrote (it differs "
                f"from {RECORD_FILE} or is not in it), and resume would load it (Ray unpickles "
                f"its state files): refusing. Pass {TRUST_FLAG} only if you trust everyone who "
                "can write there")


def _staged(staging: Path, dirs: set[str] | None) -> Iterator[tuple[str, Path, tuple[int, int]]]:
    """(relative path, path, (mtime_ns, size)) of the covered files in the driver's staging
    directory: its top level and the trial directories ``dirs`` in it (None: all)."""
    try:
        top = list(os.scandir(staging))
    except OSError:
        return
    for entry in top:
        try:
            if entry.is_file() and covered(entry.name):
                st = entry.stat()
                yield entry.name, Path(entry.path), (st.st_mtime_ns, st.st_size)
            elif entry.is_dir() and (dirs is None or entry.name in dirs):
                for sub in os.scandir(entry.path):
                    rel = f"{entry.name}/{sub.name}"
                    if sub.is_file() and covered(rel):
                        st = sub.stat()
                        yield rel, Path(sub.path), (st.st_mtime_ns, st.st_size)
        except OSError:
            continue  # removed while scanned; the next step sees the directory as it is


class IntegrityRecorder(tune.Callback):
    """Tune callback (driver side) that adds each version of the files Ray writes to the
    experiment's record, read from the driver's staging directory (the source of what Ray
    syncs to storage) at the end of each step, after Ray saved its state in that step: its top
    level every step, a trial's directory in a step where that trial started, reported,
    failed or ended (when Ray writes its params.pkl and error.pkl), all of it at the end."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}
        self._record: Record | None = None
        self._dirty: set[str] = set()

    # tuner.pkl holds this callback: it must carry neither the key nor what it has seen.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def _mark(self, trial: Any) -> None:
        if trial.local_path:
            self._dirty.add(Path(trial.local_path).name)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._mark(trial)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        self._mark(trial)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self._mark(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any,
                         **info: Any) -> None:
        self._mark(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._mark(trial)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.update(trials, self._dirty)
        self._dirty = set()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.update(trials, None)

    def update(self, trials: list[Any], dirs: set[str] | None = None) -> None:
        """Record what changed in the staging directory's top level and trial directories
        ``dirs`` (None: all) since the last call."""
        if not trials:
            return
        storage = trials[0].storage
        fs, root = storage.storage_filesystem, storage.experiment_fs_path
        changed = [(rel, p, sig) for rel, p, sig in _staged(
            Path(storage.experiment_driver_staging_path), dirs) if self._seen.get(rel) != sig]
        if not changed:
            return
        if self._record is None:
            key = load_key(create=True)
            try:
                self._record = Record.load(fs, root, key, root)
            except IntegrityError:
                self._record = Record(key)
        added = False
        for rel, p, sig in changed:
            try:
                added |= self._record.add(rel, p.read_bytes())
            except OSError:
                continue
            self._seen[rel] = sig
        if added:
            self._record.save(fs, root)
