"""The BentoML model store as the home of models this project converts from packaged weights
(the generator's checkpoint, the ONNX text encoder): a lookup, and a lock so that workers and
test processes that start together convert once, not each."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import bentoml


@contextlib.contextmanager
def store_lock(name: str) -> Iterator[None]:
    """Held while ``name`` is converted into the store (an exclusive file lock beside it)."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    del bentoml  # imported for its configuration side: the container knows BENTOML_HOME
    home = Path(BentoMLContainer.bentoml_home.get())
    home.mkdir(parents=True, exist_ok=True)
    with (home / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stored_model(name: str) -> bentoml.Model | None:
    """The newest stored version of ``name``, or None."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(f"{name}:latest")
    except NotFound:
        return None
