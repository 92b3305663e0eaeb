"""Transcription with faster-whisper (CTranslate2) and the packaged Whisper tiny.en model."""

from __future__ import annotations

import io
import logging
from functools import lru_cache

import av
from faster_whisper import WhisperModel

from kb_platform.contracts import TranscriptSegment
from kb_platform.errors import Corrupt, TooLarge
from kb_platform.models.registry import whisper_model_path

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def whisper_model(cpu_threads: int = 2) -> WhisperModel:
    return WhisperModel(
        str(whisper_model_path()), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )


def audio_duration_s(content: bytes) -> float:
    """Duration from the container header (or by decoding when the header has none)."""
    try:
        with av.open(io.BytesIO(content)) as container:
            if container.duration is not None:
                return container.duration / av.time_base
            stream = container.streams.audio[0]
            return sum(
                float(frame.duration * frame.time_base) for frame in container.decode(stream)
            )
    except (av.error.FFmpegError, IndexError) as exc:
        raise Corrupt(f"audio cannot be decoded: {exc}") from exc


def transcribe(
    content: bytes, *, doc_id: str, max_duration_s: float, language: str = "en"
) -> list[TranscriptSegment]:
    duration = audio_duration_s(content)
    if duration > max_duration_s:
        raise TooLarge(f"{duration:.0f}s of audio is over the limit of {max_duration_s:.0f}s")
    try:
        segments, info = whisper_model().transcribe(
            io.BytesIO(content), language=language, beam_size=1, vad_filter=False
        )
        result = [
            TranscriptSegment(
                doc_id=doc_id,
                start_s=round(s.start, 3),
                end_s=round(s.end, 3),
                text=s.text.strip(),
                avg_logprob=s.avg_logprob,
            )
            for s in segments
        ]
    except (av.error.FFmpegError, ValueError) as exc:
        raise Corrupt(f"audio cannot be decoded: {exc}") from exc
    log.info("transcribed %.1fs of audio into %d segments", info.duration, len(result))
    return result
