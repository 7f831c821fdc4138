"""Speech tokenizers (waveform -> 25 Hz codes) and detokenizers (codes -> waveform)."""

from core.codec.base import DetokenizerStream, SpeechDetokenizer, SpeechTokenizer

__all__ = ["DetokenizerStream", "SpeechDetokenizer", "SpeechTokenizer"]
