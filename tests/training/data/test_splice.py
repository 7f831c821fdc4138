from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.data.splice import GAP_FRAMES, SplicedMels, filler_pool

# recordings are told apart by a constant level: question q* = 1.0 + index, fillers by voice
LEVELS = {"q_a.wav": 1.0, "q_b.wav": 2.0, "f_a1.wav": -1.0, "f_a2.wav": -1.5, "f_b1.wav": -2.0}
FRAMES = {"q_a.wav": 50, "q_b.wav": 60, "f_a1.wav": 100, "f_a2.wav": 90, "f_b1.wav": 80}


class Source:
    def __init__(self):
        self.calls = []

    def __call__(self, path):
        name = Path(path).name
        self.calls.append(name)
        mel = torch.full((4, FRAMES[name]), LEVELS[name])
        mel[:, 0] = -5.0  # each recording's own silence floor
        return mel

    def shape_only(self, path):
        return torch.zeros(()).expand(4, FRAMES[Path(path).name])


def _fillers():
    items = [
        SimpleNamespace(audio=Path("f_a1.wav"), voice="a"),
        SimpleNamespace(audio=Path("f_a2.wav"), voice="a"),
        SimpleNamespace(audio=Path("f_b1.wav"), voice="b"),
        SimpleNamespace(audio=None, voice="b"),  # no recording: not a filler
    ]
    return filler_pool(items)


def test_filler_pool_groups_recordings_by_voice():
    assert _fillers() == {"a": [Path("f_a1.wav"), Path("f_a2.wav")], "b": [Path("f_b1.wav")]}
    with pytest.raises(ValueError, match="no recordings"):
        filler_pool([SimpleNamespace(audio=None, voice="a")])


def test_a_splice_keeps_the_question_whole_and_adds_a_same_voice_filler_after_a_gap():
    source = Source()
    spliced = SplicedMels(source, _fillers(), {"q_a.wav": "a", "q_b.wav": "b"}, probability=1.0, seed=0)
    sides = set()
    for _ in range(20):
        row = spliced("q_a.wav")[0]
        question = (row == 1.0).nonzero().flatten()
        # the question's 49 level frames stay contiguous, with its own floor frame just before them
        assert len(question) == 49 and bool((question.diff() == 1).all()) and row[question[0] - 1] == -5.0
        filler = ((row == -1.0) | (row == -1.5)).nonzero().flatten()
        assert len(filler) >= round(0.4 * 90) - 1 and not bool((row == -2.0).any())  # voice a's fillers only
        before = bool(filler[-1] < question[0])
        sides.add("before" if before else "after")
        between = row[filler[-1] + 1 : question[0] - 1] if before else row[question[-1] + 1 : filler[0]]
        # a gap at the question's silence floor (plus the filler's own floor frame if it was kept)
        assert bool((between == -5.0).all()) and GAP_FRAMES[0] <= len(between) <= GAP_FRAMES[1] + 1
    assert sides == {"before", "after"}
    assert spliced.shape_only("q_a.wav").shape == (4, 50)  # plans use the unspliced shape


def test_probability_zero_seeds_and_limits():
    source = Source()
    never = SplicedMels(source, _fillers(), probability=0.0)
    assert torch.equal(never("q_a.wav"), source("q_a.wav"))
    a = SplicedMels(Source(), _fillers(), {"q_b.wav": "b"}, probability=0.5, seed=4)
    b = SplicedMels(Source(), _fillers(), {"q_b.wav": "b"}, probability=0.5, seed=4)
    outs = [a("q_b.wav") for _ in range(12)]
    assert all(torch.equal(x, b("q_b.wav")) for x in outs)  # seeded
    assert {x.shape[1] == 60 for x in outs} == {True, False}  # some spliced, some not
    unknown_voice = SplicedMels(Source(), _fillers(), {}, probability=1.0)
    assert unknown_voice("q_a.wav").shape[1] > 50  # a filler of any voice
    short = SplicedMels(Source(), _fillers(), {"q_a.wav": "a"}, probability=1.0, max_frames=60)
    assert short("q_a.wav").shape[1] == 50  # too long once spliced: left as it is
    with pytest.raises(ValueError, match="probability"):
        SplicedMels(Source(), _fillers(), probability=1.5)
