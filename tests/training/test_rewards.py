import pytest

from training.data import ManifestItem
from training.recipes.gspo import GSPOConfig
from training.rewards import checked_reward, load_reward, math_answer


def _item(*answers):
    return ManifestItem(id="q", reply_text="", text="what is three plus four?", answers=list(answers))


@pytest.mark.parametrize(
    ("reply", "answers", "expected"),
    [
        ("three plus four is seven.", ("7", "seven"), 1.0),  # word form
        ("It is 7!", ("seven",), 1.0),  # digits match a word answer
        ("the answer is seventeen.", ("7", "seven"), 0.0),  # 17, not 7
        ("maybe 17", ("7",), 0.0),  # word boundary: no match inside "17"
        ("twenty seven", ("7",), 0.0),  # reads as 27
        ("twenty seven", ("27",), 1.0),
        ("it's 1,200 meters", ("one thousand two hundred",), 1.0),
        ("The capital is Paris.", ("paris",), 1.0),  # case and punctuation
        ("a parisian cafe", ("paris",), 0.0),
        ("", ("7",), 0.0),
        ("seven", (), 0.0),  # an item without answers never scores
    ],
)
def test_math_answer_hand_checked(reply, answers, expected):
    assert math_answer(reply, _item(*answers)) == expected


def test_load_reward_default_and_plugin():
    assert load_reward("training.rewards:math_answer") is math_answer
    assert load_reward("tests.training.test_gspo_recipe:reply_length")("a b c", _item()) == 3.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("training.rewards.math_answer", "must look like 'package.module:function'"),
        (":math_answer", "must look like"),
        ("training.rewards:", "must look like"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("training.rewards:nope", "has no attribute 'nope'"),
        ("training.rewards:DEFAULT_REWARD", "not a function"),
    ],
)
def test_load_reward_errors_name_the_spec(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        load_reward(spec)
    assert "--reward" in str(info.value)


def test_bad_reward_fails_at_config_time():
    with pytest.raises(ValueError, match="cannot import module"):
        GSPOConfig(init="x", train_manifest="y", reward="no_such_module_xyz:f")


def test_rewards_must_be_finite_numbers():
    with pytest.raises(ValueError, match="not finite"):
        checked_reward(lambda text, item: float("nan"), "", _item())
    with pytest.raises(ValueError, match="not a number"):
        checked_reward(lambda text, item: "high", "", _item())
