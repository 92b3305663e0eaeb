import subprocess
from pathlib import Path

import pytest

from kb_platform.audio.transcription import audio_duration_s, transcribe
from kb_platform.errors import Corrupt, TooLarge


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wav = tmp_path_factory.mktemp("audio") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "one two three four five"], check=True)
    return Path(wav).read_bytes()


def test_duration_is_read_from_the_header(speech: bytes) -> None:
    assert 1.0 < audio_duration_s(speech) < 10.0


def test_audio_over_the_duration_limit_is_refused_before_decoding(speech: bytes) -> None:
    with pytest.raises(TooLarge, match="audio"):
        transcribe(speech, doc_id="d", max_duration_s=0.5)


def test_garbage_audio_is_corrupt() -> None:
    with pytest.raises(Corrupt):
        transcribe(b"RIFF\x00\x00\x00\x00WAVEfmt garbage", doc_id="d", max_duration_s=60)
