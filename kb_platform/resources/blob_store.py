"""Where original bytes, page renders and images are kept: a local folder or an S3 bucket."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dagster import ConfigurableResource


class BlobStore(ConfigurableResource):
    """Key/value storage of bytes; keys are relative paths such as ``raw/<doc_id>``."""

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def uri(self, key: str) -> str:
        raise NotImplementedError


class LocalBlobStore(BlobStore):
    base_dir: str

    def _path(self, key: str) -> Path:
        base = Path(self.base_dir).resolve()
        path = (base / key).resolve()
        if not path.is_relative_to(base):
            raise ValueError(f"blob key escapes the store: {key}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # a full disk must not keep half-written files
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()
