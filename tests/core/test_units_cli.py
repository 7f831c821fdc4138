"""Reading a manifest's recordings for the units codec's decoder refit (core/codec/units_cli.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from core.codec.units_cli import read_manifest_audio


def test_manifest_recordings_repeat_by_how_often_the_manifest_names_them(tmp_path):
    (tmp_path / "wav").mkdir()
    for name, value in (("often", 0.1), ("once", 0.2)):
        sf.write(tmp_path / "wav" / f"{name}.wav", np.full((800, 2), value, dtype=np.float32), 16000)
    lines = [{"reply_audio": "wav/often.wav"}] * 9 + [{"reply_audio": "wav/once.wav"}, {"reply_audio": None}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def levels(repeat):
        return [round(float(w.samples.mean()), 3) for w in read_manifest_audio(manifest, repeat=repeat)]

    assert levels("distinct") == [0.1, 0.2]
    assert levels("sqrt") == [0.1] * 3 + [0.2]  # sqrt(9) = 3, sqrt(1) = 1
    assert levels("items") == [0.1] * 9 + [0.2]
    assert all(w.samples.ndim == 1 and w.sample_rate == 16000 for w in read_manifest_audio(manifest))
    with pytest.raises(ValueError, match="repeat must be one of"):
        read_manifest_audio(manifest, repeat="twice")
