import json
import shutil

import pytest
import torch

from core.checkpoint import from_pretrained
from core.generate import DrVoiceGenerator
from core.sampling import SamplingConfig
from core.sequence import IGNORE, Sample, SequenceBuilder, UserInput
from training.data import MelCache, read_manifest
from training.metrics import read_metrics
from training.recipes import gspo


def reply_length(reply_text, item):
    """A dense test reward (the untrained tiny model never says the answer): words in the reply."""
    return float(len(reply_text.split()))


def _cfg(assets, out, **kw):
    base = dict(
        init=str(assets.init),
        train_manifest=str(assets.manifest),
        output_dir=str(out),
        reward="tests.training.test_gspo_recipe:reply_length",
        modes=["S2T", "S2M"],
        group_size=4,
        prompts_per_step=2,
        max_new_steps=10,
        max_steps=3,
        peak_lr=1e-3,
        final_lr=1e-4,
        warmup_fraction=0.0,
        log_every=1,
        save_every=2,
        precision="fp32",
        device="cpu",
    )
    base.update(kw)
    return gspo.GSPOConfig(**base)


def test_gspo_runs_and_logs_mean_reward_per_step(tiny_assets, tmp_path):
    out = tmp_path / "run"
    final = gspo.run(_cfg(tiny_assets, out, ppo_epochs=2))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["mean_reward"] >= 0 and 0 <= r["clip_fraction"] <= 1 and r["groups_with_signal"] > 0
    # the second update of each batch sees a moved policy: its ratios leave 1 and get clipped
    assert any(r["ratio_max"] > 1 or r["ratio_min"] < 1 for r in rows)
    assert any(r["clip_fraction"] > 0 for r in rows)
    assert (out / "reward.png").stat().st_size > 1000
    init = from_pretrained(tiny_assets.init).model.state_dict()
    trained = from_pretrained(final).model.state_dict()
    for prefix in ("llm.", "srh.", "encoder."):
        assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith(prefix)), prefix


def test_on_policy_ratio_is_exactly_one(tiny_assets, tmp_path):
    """ppo_epochs=1: pi_old is the policy being differentiated, s_i = exp(0) = 1 exactly."""
    out = tmp_path / "run"
    gspo.run(_cfg(tiny_assets, out, ppo_epochs=1, max_steps=2, reward="training.rewards:math_answer"))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["ratio_min"] == 1.0 and r["ratio_max"] == 1.0 and r["clip_fraction"] == 0.0
        assert 0.0 <= r["mean_reward"] <= 1.0


def test_resume_after_interruption_gives_the_same_curve(tiny_assets, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    gspo.run(_cfg(tiny_assets, full, max_steps=4, ppo_epochs=2))
    gspo.run(_cfg(tiny_assets, part, max_steps=4, ppo_epochs=2))
    for p in (part / "state").glob("step-*"):  # simulate a kill after step 3
        if p.name != "step-0000002":
            shutil.rmtree(p)
    lines = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    (part / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["step"] <= 3))
    gspo.run(_cfg(tiny_assets, part, max_steps=4, ppo_epochs=2))
    keys = ("step", "loss", "mean_reward", "ratio_mean", "reply_text_tokens")
    a = [tuple(r[k] for k in keys) for r in read_metrics(full / "metrics.jsonl")]
    b = [tuple(r[k] for k in keys) for r in read_metrics(part / "metrics.jsonl")]
    assert [r[0] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, abs=1e-6), (ra, rb)


@pytest.mark.parametrize("max_new_steps", [3, 12])
@pytest.mark.parametrize("mode", ["S2M", "S2T"])
def test_scored_example_is_the_generated_sequence(tiny_assets, mode, max_new_steps):
    """Greedy rollout, cut by max_new_steps or not. The targets of the scored layout are exactly the
    tokens the generator drew (no re-tokenisation of the decoded text, no closing tokens it did not
    draw, no forced <|sil|>), and under teacher forcing each is the masked argmax the generator took."""
    ckpt = from_pretrained(tiny_assets.init)
    model = ckpt.model.eval()
    cfg = model.config
    builder = SequenceBuilder(cfg, ckpt.tokenizer)
    generator = DrVoiceGenerator(model)
    item = read_manifest(tiny_assets.manifest)[0]
    task = gspo.Task(item, mode)
    prompt, user, history = gspo.task_prompt(task, builder, MelCache(None, cfg.encoder["n_mels"]))
    sampling = SamplingConfig(max_new_steps=max_new_steps)
    r = gspo.sample_reply(generator, ckpt.tokenizer, task, prompt, user, history, sampling)
    steps = list(generator.stream(prompt, mode, sampling))  # the same greedy decode, as reference
    drawn_text = [st.text_token for st in steps if st.text_token is not None]  # <|sil|> is None
    drawn_speech = [c for st in steps for c in st.speech_tokens] + (
        [cfg.speech_eos] * any(st.speech_done for st in steps)
    )
    assert r.steps == len(steps) and r.sample.reply_ids == [
        t for t in drawn_text if t != cfg.special_token_ids["im_end"]
    ]
    assert r.reply_text == ckpt.tokenizer.decode(r.sample.reply_ids, skip_special_tokens=True)

    ex = gspo.rollout_example(builder, r)
    assert torch.equal(ex.input_ids[: len(prompt)], prompt.input_ids)
    text_pos = (ex.text_targets != IGNORE).nonzero().squeeze(-1)
    assert ex.text_targets[text_pos].tolist() == drawn_text
    speech = ex.speech_targets[ex.speech_targets[:, 0] != IGNORE].reshape(-1)
    assert speech[speech != cfg.speech_pad].tolist() == (drawn_speech if mode == "S2M" else [])
    with torch.no_grad():
        emb = model.embed_inputs(
            ex.input_ids[None], ex.speech_inputs[None], ex.speech_input_mask[None], ex.mels
        )
        hidden = model.llm.model(inputs_embeds=emb).last_hidden_state[0]  # (L, D)
        mask = generator.parallel_mask if mode == "S2M" else generator.text_only_mask
        greedy = (model.llm.lm_head(hidden[text_pos]).float() + mask).argmax(-1)
        assert greedy.tolist() == drawn_text
        if mode == "S2M":
            pos = (ex.speech_targets[:, 0] != IGNORE).nonzero().squeeze(-1)
            targets = ex.speech_targets[pos].reshape(-1)  # (n * k,)
            cond = model.srh_condition(hidden[pos], ex.input_ids[pos]).reshape(1, -1, cfg.srh_hidden_size)
            prev = torch.cat([targets.new_tensor([cfg.speech_bos]), targets[:-1]])[None]
            logits = model.srh(prev, cond)[0, : len(drawn_speech)].float() + generator.speech_mask
            assert logits.argmax(-1).tolist() == drawn_speech


def test_rollout_example_drops_forced_sil_and_unsampled_closing_tokens(tiny_assets):
    """k = 5, no speech delay, T2M reply text [a] (one token).

    Finished: steps (a, g0) (im_end, g1) (sil, g2 = 2 codes + eos): targets a, im_end and 12 codes +
    eos; the forced <|sil|> is no target. Cut after 2 steps (10 codes, no eos): the layout adds a
    third position (sil, [eos, pad..]) that was never sampled: no targets there."""
    ckpt = from_pretrained(tiny_assets.init, load_codec=False)
    cfg = ckpt.model.config
    assert cfg.group_size == 5 and cfg.speech_delay == 0
    builder = SequenceBuilder(cfg, ckpt.tokenizer)
    ids = cfg.special_token_ids
    task = gspo.Task(read_manifest(tiny_assets.manifest)[0], "T2M")
    user = UserInput(text="hi")
    prompt = builder.prompt("T2M", user)
    a = ckpt.tokenizer.encode("four", add_special_tokens=False)[0]

    def targets(codes, steps):
        sample = Sample("T2M", user, "", codes, reply_ids=[a])
        ex = gspo.rollout_example(builder, gspo.Rollout(task, sample, "", len(prompt), steps, True))
        text = ex.text_targets[ex.text_targets != IGNORE].tolist()
        speech = ex.speech_targets[ex.speech_targets[:, 0] != IGNORE].reshape(-1)
        assert len(ex) == len(prompt) + 2  # 3 parallel positions, the first is <|audio_bos|>
        return text, speech[speech != cfg.speech_pad].tolist()

    assert targets(list(range(12)), steps=3) == ([a, ids["im_end"]], list(range(12)) + [cfg.speech_eos])
    assert targets(list(range(10)), steps=2) == ([a, ids["im_end"]], list(range(10)))


def test_tiny_yaml_config_parses():
    from pathlib import Path

    from training.cli import parse_config

    path = Path(__file__).parents[2] / "training/configs/gspo_tiny.yaml"
    cfg = parse_config(gspo.GSPOConfig, ["--config", str(path), "--group_size", "8"])
    assert (
        cfg.group_size == 8 and cfg.reward == "training.rewards:math_answer" and cfg.modes == ["S2M", "S2T"]
    )
