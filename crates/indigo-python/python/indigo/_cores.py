"""The process's open databases: one `Core` per data directory (and one
ephemeral), shared by every client of either flavour, since a second open of a
directory in one process would be refused as if another process held it."""
import threading
from pathlib import Path
from typing import Dict, Optional, Union

from ._indigo import Core

_EPHEMERAL = "ephemeral"
_cores: Dict[str, Core] = {}
_lock = threading.Lock()


def key_of(path: Optional[Union[str, Path]]) -> str:
    return str(Path(path).resolve()) if path is not None else _EPHEMERAL


def core_at(path: Optional[Union[str, Path]], allow_reset: bool = False) -> Core:
    """The process's core of `path` (the ephemeral database if None), opened on
    first use."""
    key = key_of(path)
    with _lock:
        core = _cores.get(key)
        if core is None:
            core = Core(None if key == _EPHEMERAL else key, allow_reset)
            _cores[key] = core
        return core


def release(path: Optional[Union[str, Path]] = None) -> None:
    """Forgets the core of `path` (the ephemeral one if None): the database
    closes once no client holds it (for tests, which open many)."""
    with _lock:
        _cores.pop(key_of(path), None)
