"""DrVoice core: the dual-resolution speech-text model, its generator, codecs and engine."""
