"""The evaluation's speech recogniser: pocketsphinx with its packaged US English model.

It is the judge of the generated speech (the paper uses Whisper-large-v3, which needs downloaded
weights; pocketsphinx ships its acoustic model, dictionary and language model inside the wheel, so
the evaluation runs offline). Its absolute accuracy is modest (about 20% WER on flite `slt`
renderings of QA replies), which is why the evaluation also reports its WER on the reference
voice: the codec is judged against that ceiling, not against zero.
"""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np

from core.types import Waveform

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz the packaged acoustic model expects
SILENCE_DBFS = -60.0  # no 20 ms frame louder than this: silence (as core.audio's input check)
_lock = threading.Lock()  # one decoder, one utterance at a time


@functools.lru_cache(maxsize=1)
def _decoder():
    from pocketsphinx import Decoder

    # The default configuration loads the packaged en-us acoustic model, cmudict and 3-gram LM.
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def to_pcm16(waveform: Waveform) -> np.ndarray:
    """Resamples to 16 kHz and converts to int16 (clipping to [-1, 1] first).

    Returns:
        (num_samples,) int16.
    """
    samples = np.asarray(waveform.samples, dtype=np.float32).reshape(-1)
    if waveform.sample_rate != SAMPLE_RATE and len(samples):
        from core.audio import resample

        samples = resample(samples, int(waveform.sample_rate), SAMPLE_RATE)
    samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def transcribe(waveform: Waveform) -> str:
    """Lower-case words the recogniser hears ("" for silence, noise or empty audio).

    Args:
        waveform: mono audio at any sample rate.
    """
    from core.audio import loudest_frame_dbfs

    pcm = to_pcm16(waveform)
    if len(pcm) < SAMPLE_RATE // 10:  # under 100 ms: nothing to recognise
        return ""
    # pocketsphinx hears words ("yeah") in digital silence: silent output must not score words
    if loudest_frame_dbfs(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE) < SILENCE_DBFS:
        return ""
    with _lock:
        decoder = _decoder()
        # the feature front end adapts across utterances; without a reset the transcript of a
        # file depends on what was decoded before it (measured: different words on a second pass)
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
    if hyp is None:
        return ""
    # fillers such as <sil>, [NOISE] or (2) alternative-pronunciation marks never reach hypstr
    return " ".join(hyp.hypstr.split())
