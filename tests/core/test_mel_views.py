import pytest
import torch

from core.mel_views import VIEWS, mel_view, retime, warp_mel
from core.sampling import SamplingConfig


def test_retime_changes_the_frame_count_and_keeps_the_ends():
    mel = torch.arange(80 * 100, dtype=torch.float32).reshape(80, 100)
    faster, slower = retime(mel, 1.1), retime(mel, 0.9)
    assert faster.shape == (80, 91) and slower.shape == (80, 111)
    # linear resampling with aligned corners: first and last frames are kept, a ramp stays a ramp
    for out in (faster, slower):
        assert torch.equal(out[:, 0], mel[:, 0]) and torch.allclose(out[:, -1], mel[:, -1])
        steps = out[0, 1:] - out[0, :-1]
        assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-3)
    assert torch.equal(retime(mel, 1.0), mel)


def test_warp_moves_a_peak_the_way_a_vocal_tract_would():
    mel = torch.zeros(80, 3)
    mel[40] = 1.0
    up, down = warp_mel(mel, 0.94), warp_mel(mel, 1.06)  # bin i reads bin i * warp
    assert int(up[:, 0].argmax()) in (42, 43)  # 40 / 0.94 = 42.6: a shorter tract, higher formants
    assert int(down[:, 0].argmax()) in (37, 38)  # 40 / 1.06 = 37.7
    assert torch.equal(warp_mel(mel, 1.0), mel)
    assert torch.equal(mel[40], torch.ones(3))  # the input is untouched


def test_mel_view_combines_both_and_keeps_the_plain_view_as_is():
    mel = torch.randn(80, 50, generator=torch.Generator().manual_seed(0)).half()
    assert mel_view(mel) is mel and VIEWS[0] == (1.0, 1.0)
    both = mel_view(mel, 1.1, 0.94)
    assert both.dtype == torch.float16 and both.shape == (80, 45)
    assert torch.allclose(both.float(), warp_mel(retime(mel, 1.1), 0.94), atol=1e-2)
    assert len(set(VIEWS)) == len(VIEWS)
    with pytest.raises(ValueError, match="positive"):
        mel_view(mel, 0.0, 1.0)


@pytest.mark.parametrize("views", [0, len(VIEWS) + 1])
def test_sampling_refuses_a_view_count_out_of_range(views):
    with pytest.raises(ValueError, match="audio_views"):
        SamplingConfig(audio_views=views)
