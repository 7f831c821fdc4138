"""A real browser (Debian chromium driven by Playwright) against a live app on a loopback port.

Screenshots go to tests/_artifacts/screenshots/ for inspection.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.app.conftest import ARTIFACTS, REPLY

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
SHOTS = ARTIFACTS / "screenshots"
TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]


@pytest.fixture(scope="module")
def page(server):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server[0])
        page.wait_for_selector("#chat-send")
        yield page
        browser.close()


def upload(page, component: str, path: str) -> None:
    """Picks the upload source of a gr.Audio (the microphone is the default) and sets the file."""
    page.click(f"#{component} button[aria-label='Upload file']")
    page.set_input_files(f"#{component} input[type=file]", path)
    page.wait_for_selector(f"#{component} audio", state="attached")


def audio_info(page, selector: str) -> list[dict]:
    return page.evaluate(
        """(sel) => Array.from(document.querySelectorAll(sel)).map(
            a => ({src: a.src, duration: a.duration, readyState: a.readyState}))""",
        f"{selector} audio",
    )


def test_chat_in_the_browser(page, server, question_wav):
    ctx = server[1]
    page.screenshot(path=str(SHOTS / "01-loaded.png"), full_page=True)
    # bad input: nothing recorded, nothing typed -> a readable message, the page keeps working
    page.get_by_label("Text-to-Multimodal (T2M)").check()
    page.click("#chat-send")
    page.wait_for_function(
        "document.querySelector('#chat-status').innerText.includes('Nothing to answer yet')"
    )
    page.screenshot(path=str(SHOTS / "02-bad-input.png"), full_page=True)

    upload(page, "chat-audio-in", question_wav)
    page.get_by_label("Speech-Text Chain (STC)").check()
    clicked = time.perf_counter()
    page.click("#chat-send")
    page.wait_for_function(
        "(reply) => document.querySelector('#chatbot').innerText.includes(reply)", arg=REPLY.rstrip(".")
    )
    first_text = time.perf_counter() - clicked
    page.wait_for_function("document.querySelector('#chat-metrics').innerText.includes('first audio')")
    # the streamed reply plays in an <audio> element fed by a media stream that has data
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#chat-reply-audio audio')).some(a => a.src && a.duration > 0.5)"
    )
    players = audio_info(page, "#chat-reply-audio")
    assert any(p["src"].startswith(("blob:", "http")) and p["duration"] > 0.5 for p in players), players
    chat_text = page.inner_text("#chatbot")
    assert "Transcript" in chat_text and "Text response" in chat_text  # chain phases shown distinctly
    page.screenshot(path=str(SHOTS / "03-chat-reply.png"), full_page=True)
    (turn,) = ctx.repo.list_turns(limit=1)
    assert turn.mode == "STC" and turn.status == "done" and turn.reply_text == REPLY
    assert turn.user_audio_path and turn.reply_audio_path and turn.speech_tokens
    # 👍 with a comment on the reply
    page.fill("#chat-comment textarea", "nice voice")
    page.locator("#chatbot button[aria-label='Like']").last.click()
    page.wait_for_function("document.querySelector('#chat-status').innerText.includes('Liked')")
    assert [(f.rating, f.comment) for f in ctx.repo.list_feedback(turn.id)] == [(1, "nice voice")]
    print(f"browser: reply text visible {first_text * 1000:.0f} ms after clicking Send")


def test_compare_and_vote_in_the_browser(page, server, question_wav):
    ctx = server[1]
    page.get_by_role("tab", name="Compare").click()
    upload(page, "cmp-audio-in", question_wav)
    assert page.is_disabled("#vote-a")
    page.click("#cmp-run")
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled")
    assert REPLY in page.inner_text("#cmp-text-a") and REPLY in page.inner_text("#cmp-text-b")
    assert "Setting" not in page.inner_text("#cmp-reveal")  # blinded: nothing revealed yet
    for side in "ab":  # both replies were streamed into players that have data
        page.wait_for_function(
            "(sel) => Array.from(document.querySelectorAll(sel)).some(a => a.src && a.duration > 0)",
            arg=f"#cmp-audio-{side} audio",
        )
    page.screenshot(path=str(SHOTS / "04-compare-ready.png"), full_page=True)
    page.fill("#cmp-comment textarea", "A was clearer")
    page.click("#vote-a")
    page.wait_for_function("document.querySelector('#cmp-reveal').innerText.includes('Your vote')")
    reveal = page.inner_text("#cmp-reveal")
    assert "Speech-to-Multimodal (S2M)" in reveal and "Speech-Text Chain (STC)" in reveal
    assert page.is_disabled("#vote-b")
    page.screenshot(path=str(SHOTS / "05-compare-voted.png"), full_page=True)
    (comparison,) = ctx.repo.list_comparisons(limit=1)
    assert comparison.vote == "A" and comparison.comment == "A was clearer"
    assert {comparison.label_a, comparison.label_b} == {"S2M", "STC"}

    page.get_by_role("tab", name="Data").click()
    page.wait_for_function("document.querySelector('#data-counts').innerText.includes('comparisons')")
    assert "1** comparisons" in page.inner_html(
        "#data-counts"
    ) or "1</strong> comparisons" in page.inner_html("#data-counts")
    page.click("#data-turns [data-testid=cell-0-1]")  # a row plays back its audio
    page.wait_for_function("document.body.innerText.includes('conversation_id')")
    page.screenshot(path=str(SHOTS / "06-data.png"), full_page=True)


def test_chat_sliders_follow_the_checkpoints_recommended_settings(page, server, monkeypatch):
    """Picking a mode sets the sampling sliders to what the checkpoint recommends for it."""
    from core.sampling import ModeSampling, SamplingConfig

    engine = server[1].engine(None)
    monkeypatch.setattr(engine, "sampling", ModeSampling(modes={"S2T": SamplingConfig(audio_views=3)}))
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Sampling settings").first.click()  # the accordion renders its sliders when open
    views = "#chat-audio-views input[type=number]"
    page.wait_for_selector(views)
    page.get_by_label("Speech-to-Text (S2T)").check()
    page.wait_for_function("(sel) => document.querySelector(sel).value === '3'", arg=views)
    page.get_by_label("Text-to-Text (T2T)").check()
    page.wait_for_function("(sel) => document.querySelector(sel).value === '1'", arg=views)
