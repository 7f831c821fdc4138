import torch

from training.data.augment import AugmentedMels, augment_mel


def _mel(frames=300):
    return torch.linspace(-1, 1, 80)[:, None] * torch.ones(80, frames) + torch.sin(
        torch.arange(frames * 1.0) / 7
    )


def test_augmentation_changes_tempo_and_spectrum_and_is_seeded():
    mel = _mel()
    original = mel.clone()
    outs = [augment_mel(mel, torch.Generator().manual_seed(s)) for s in range(6)]
    again = augment_mel(mel, torch.Generator().manual_seed(0))
    assert torch.equal(outs[0], again)  # same seed, same perturbation
    assert all(o.shape[0] == 80 and 300 / 1.15 - 1 <= o.shape[1] <= 300 / 0.85 + 1 for o in outs)
    assert len({o.shape[1] for o in outs}) > 1  # tempo varies
    assert torch.isfinite(torch.stack([o[:, :200] for o in outs])).all()
    assert torch.equal(mel, original)  # the cached features are never modified in place


def test_without_tempo_the_frame_count_stays_and_the_spectrum_still_moves():
    mel = _mel()
    outs = [augment_mel(mel, torch.Generator().manual_seed(s), tempo=False) for s in range(4)]
    assert all(o.shape == mel.shape for o in outs)
    assert all((o - mel).abs().mean() > 1e-3 for o in outs)


def test_augmented_features_are_fresh_per_call_and_plan_from_the_original_shapes():
    calls = []

    class Source:
        def __call__(self, path):
            calls.append(path)
            return _mel(200)

        def shape_only(self, path):
            return torch.zeros(()).expand(80, 200)

    features = AugmentedMels(Source(), seed=3)
    a, b = features("x.wav"), features("x.wav")
    assert calls == ["x.wav", "x.wav"]
    assert not (a.shape == b.shape and torch.equal(a, b))
    assert features.shape_only("x.wav").shape == (80, 200)
    replay = AugmentedMels(Source(), seed=3)
    assert torch.equal(replay("x.wav"), a)  # seeded
    assert AugmentedMels(Source(), tempo=False)("x.wav").shape == (80, 200)
