"""One encoder service (bentos/encoder, a real process) for the serving tests, serving MiniLM and
a promoted CLIP checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_platform.encoder_service.client import EncoderClient
from kb_platform.serving.launcher import ENCODER_SERVICE, ServiceProcess, private_bentoml_home
from kb_platform.training.promotion import Promoted
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.encoder_stack import LIMITS, TOKEN, promote_untrained_clip


@pytest.fixture(scope="package")
def served_clip(tmp_path_factory: pytest.TempPathFactory) -> Promoted:
    return promote_untrained_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="package")
def encoder_service(
    tmp_path_factory: pytest.TempPathFactory, served_clip: Promoted
) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("encoder")
    (work / "token").write_text(TOKEN + "\n")
    service = ServiceProcess(
        port=free_port(),
        env={
            "KB_ENCODER_TOKEN_FILE": str(work / "token"),
            **{f"KB_ENCODER_{k.upper()}": str(v) for k, v in LIMITS.items()},
            "KB_CLIP_DIR": str(Path(served_clip.export_dir).parents[1]),
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
        service=ENCODER_SERVICE,
    )
    with service.running(timeout=240):
        yield service


@pytest.fixture(scope="package")
def encoder_client(encoder_service: ServiceProcess) -> Iterator[EncoderClient]:
    client = EncoderClient(encoder_service.url, TOKEN)
    yield client
    client.close()
