"""Every report of every trial, as the driver received it, in ``tuneable_gan_result.jsonl``.

Ray's own ``result.json`` is rewritten from the storage copy whenever a trial (re)starts (its
JSON logger restores the file from the storage before appending), so the rows written since the
last sync are lost each time a trial is paused and restarted: under PBT, at every exploit
(seen: a two-trial PBT smoke run kept 2 of its 4 rows per trial). This callback appends each
result to its own file in the trial's directory of the driver's staging area, which Ray only
ever uploads; ``analysis.collect`` reads it in preference to ``result.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray import tune

RESULT_LOG = "tuneable_gan_result.jsonl"


class ResultLog(tune.Callback):
    """Appends each trial result (one JSON line, NaN and inf as Ray writes them) to
    ``<trial dir>/tuneable_gan_result.jsonl`` on the driver. A resumed sweep's driver starts
    with an empty staging area: the first result of a trial there first fetches the stored
    log (what the interrupted driver had synced), or the upload would replace it."""

    def __init__(self) -> None:
        self._fetched: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # tuner.pkl holds the callback: a resumed driver fetches afresh

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        if not trial.local_path:
            return
        path = Path(trial.local_path) / RESULT_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        if trial.trial_id not in self._fetched:
            self._fetched.add(trial.trial_id)
            if not path.exists():
                _fetch(trial, path)
        with path.open("a") as f:
            f.write(json.dumps(result, default=repr) + "\n")


def _fetch(trial: Any, path: Path) -> None:
    """Copy the trial's stored log into the staging area, if the storage has one."""
    import pyarrow.fs as pafs

    storage = trial.storage
    remote = f"{storage.trial_fs_path}/{RESULT_LOG}"
    try:
        if storage.storage_filesystem.get_file_info(remote).type == pafs.FileType.File:
            pafs.copy_files(remote, str(path), source_filesystem=storage.storage_filesystem)
    except OSError:
        pass  # nothing stored yet, or unreadable: the log starts here
