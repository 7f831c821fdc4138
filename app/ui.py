"""The Blocks layout: Chat, Compare and Data tabs, plus the named API endpoints.

``build_app(ctx)`` returns the ``gr.Blocks``; ``launch(demo, ...)`` starts it with the queue
settings of ``ctx.settings``. All model work runs under one concurrency id (``GENERATE_QUEUE``)
whose limit is ``settings.concurrency_limit``: further requests wait in the queue (the page shows
their position) instead of piling up on the engine's lock.
"""

from __future__ import annotations

import gradio as gr

from app.api import ApiHandlers
from app.config import ADMIN_TOKEN_ENV, GENERATE_QUEUE
from app.context import AppContext
from app.data_tab import PAIR_COLUMNS, TURN_COLUMNS, WIN_COLUMNS, DataHandlers
from app.handlers import ChatHandlers, ChatState, CompareHandlers, CompareState
from app.turns import mode_label
from core.mel_views import VIEWS
from core.modes import MODES
from core.sampling import SamplingConfig

INTRO = """# DrVoice
Talk to a speech–text model that writes and speaks at the same time. Pick a **mode**: speech or
text in; text only, or text **and** speech out; the chain modes (STC, SAC, SUC) first write a
transcript and/or a text response, then speak."""
COMPARE_INTRO = """Give one input; two settings (modes or checkpoints) answer it side by side. The sides are
shown as **A** and **B** (shuffled when *blind* is ticked) and revealed after your vote. Vote when both replies are
finished."""
MODE_CHOICES = [(mode_label(m), m.name) for m in MODES.values()]
MODE_TABLE = "| mode | flow |\n|---|---|\n" + "\n".join(
    f"| {mode_label(m)} | {m.flow} |" for m in MODES.values()
)


def sampling_controls(d: SamplingConfig, tab: str) -> list[gr.components.Component]:
    """The sampling accordion, set to ``d`` (the default checkpoint's recommended settings; the Chat
    tab's follow its mode and checkpoint), element ids prefixed by ``tab``; returns its controls in
    ``handlers.SAMPLING_FIELDS`` order."""
    with gr.Accordion("Sampling settings", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, d.temperature, step=0.05, label="Text temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, d.top_p, step=0.05, label="Text top-p")
            top_k = gr.Slider(0, 200, d.top_k, step=1, label="Text top-k (0 = off)")
        with gr.Row():
            speech_temperature = gr.Slider(0, 2, d.speech_temperature, step=0.05, label="Speech temperature")
            speech_top_p = gr.Slider(0.05, 1, d.speech_top_p, step=0.05, label="Speech top-p")
            speech_top_k = gr.Slider(0, 200, d.speech_top_k, step=1, label="Speech top-k (0 = off)")
        with gr.Row():
            repetition_penalty = gr.Slider(
                1, 3, d.repetition_penalty, step=0.05, label="Speech repetition penalty"
            )
            seed = gr.Number(-1 if d.seed is None else d.seed, precision=0, label="Seed (-1 = random)")
            max_new_steps = gr.Slider(
                10, 600, d.max_new_steps, step=10, label="Max LLM steps (5 per second of speech)"
            )
        with gr.Row():
            audio_views = gr.Slider(
                1,
                len(VIEWS),
                d.audio_views,
                step=1,
                elem_id=f"{tab}-audio-views",
                label="Hear spoken input N ways (slower/faster, higher/lower) and write their consensus: "
                "3 answers S2T and chain modes more often and S2M speaks right more often; each way adds time",
            )
            text_guide = gr.Slider(
                0,
                1,
                d.text_guide,
                step=0.25,
                label="S2M/T2M: let the text-only mode help write the text (0 = off, 1 = it writes it); "
                "the text is right more often, the speech stays the same, so they can disagree",
            )
    return [temperature, top_p, top_k, speech_temperature, speech_top_p, speech_top_k, repetition_penalty, seed,
            max_new_steps, audio_views, text_guide]  # fmt: skip


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole app on ``ctx``."""
    settings = ctx.settings
    chat, compare, data, api = ChatHandlers(ctx), CompareHandlers(ctx), DataHandlers(ctx), ApiHandlers(ctx)
    generate = {"concurrency_id": GENERATE_QUEUE, "concurrency_limit": settings.concurrency_limit}
    private = {"api_visibility": "private"}
    several = len(ctx.checkpoints) > 1
    # Uploads and generated files in Gradio's cache are removed a day after they were made.
    with gr.Blocks(title=settings.title, delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(INTRO)
        # ---- Chat ----------------------------------------------------------------------------
        with gr.Tab("Chat", id="chat"):
            chat_state = gr.State(ChatState())
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(
                        label="Conversation", height=460, elem_id="chatbot", buttons=["copy"]
                    )
                    with gr.Row():
                        audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                            label="Speak or upload (speech modes)", elem_id="chat-audio-in")  # fmt: skip
                        text_in = gr.Textbox(
                            label="…or type (text modes T2M, T2T)", lines=3, elem_id="chat-text-in"
                        )
                    with gr.Row():
                        send = gr.Button("Send", variant="primary", elem_id="chat-send")
                        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="chat-stop")
                        new = gr.Button("New conversation", elem_id="chat-new")
                    chat_status = gr.Markdown(elem_id="chat-status")
                with gr.Column(scale=2):
                    mode = gr.Radio(MODE_CHOICES, value="S2M", label="Mode", elem_id="chat-mode")
                    with gr.Accordion("What do the modes do?", open=False):
                        gr.Markdown(MODE_TABLE)
                    checkpoint = gr.Dropdown(ctx.checkpoints, value=ctx.default_checkpoint, label="Checkpoint",
                                             visible=several)  # fmt: skip
                    reply_audio = gr.Audio(label="Spoken reply", streaming=settings.stream_audio, autoplay=True,
                                           interactive=False, elem_id="chat-reply-audio")  # fmt: skip
                    metrics = gr.Markdown(elem_id="chat-metrics")
                    comment = gr.Textbox(
                        label="Comment for your next 👍 / 👎 (optional)", elem_id="chat-comment"
                    )
                    chat_sampling = sampling_controls(ctx.engine(None).sampling.for_mode("S2M"), "chat")
            chat_inputs = [chat_state, chatbot, mode, text_in, audio_in, checkpoint, *chat_sampling]
            for picker in (mode, checkpoint):  # the checkpoint's recommended settings for the mode
                picker.change(
                    chat.recommended_sampling, [mode, checkpoint], chat_sampling, queue=False, **private
                )
            chat_outputs = [
                chatbot,
                reply_audio,
                metrics,
                chat_status,
                chat_state,
                text_in,
                audio_in,
                send,
                stop,
            ]
            for trigger in (send.click, text_in.submit):
                trigger(
                    chat.submit, chat_inputs, chat_outputs, show_progress="minimal", **generate, **private
                )
            stop.click(chat.stop, None, chat_status, queue=False, **private)
            new.click(chat.new_conversation, None,
                      [chatbot, reply_audio, metrics, chat_status, chat_state, text_in, audio_in],
                      queue=False, **private)  # fmt: skip
            chatbot.like(
                chat.feedback, [chat_state, comment], [chat_status, comment], api_name="rate_reply", **private
            )

        # ---- Compare -------------------------------------------------------------------------
        with gr.Tab("Compare", id="compare"):
            compare_state = gr.State(CompareState())
            gr.Markdown(COMPARE_INTRO)
            with gr.Row():
                cmp_audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                     label="Speak or upload (speech modes)", elem_id="cmp-audio-in")  # fmt: skip
                cmp_text = gr.Textbox(label="…or type (text modes)", lines=3, elem_id="cmp-text-in")
            with gr.Row():
                mode_1 = gr.Dropdown(MODE_CHOICES, value="S2M", label="Setting 1: mode", elem_id="cmp-mode-1")
                checkpoint_1 = gr.Dropdown(ctx.checkpoints, value=ctx.default_checkpoint,
                                           label="Setting 1: checkpoint", visible=several)  # fmt: skip
                mode_2 = gr.Dropdown(MODE_CHOICES, value="STC", label="Setting 2: mode", elem_id="cmp-mode-2")
                checkpoint_2 = gr.Dropdown(ctx.checkpoints, value=ctx.checkpoints[-1],
                                           label="Setting 2: checkpoint", visible=several)  # fmt: skip
                blinded = gr.Checkbox(True, label="Blind (A/B shuffled, revealed after the vote)")
            cmp_sampling = sampling_controls(ctx.engine(None).sampling.default, "cmp")
            with gr.Row():
                run = gr.Button("Answer with both", variant="primary", elem_id="cmp-run")
                cmp_stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
                next_round = gr.Button("Next round", elem_id="cmp-next")
            cmp_status = gr.Markdown(elem_id="cmp-status")
            with gr.Row(equal_height=True):
                panels = {}
                for tag in "AB":
                    with gr.Column():
                        gr.Markdown(f"### {tag}")
                        text = gr.Markdown(elem_id=f"cmp-text-{tag.lower()}", min_height=80)
                        audio = gr.Audio(label=f"{tag}: spoken reply", streaming=settings.stream_audio,
                                         autoplay=False, interactive=False, elem_id=f"cmp-audio-{tag.lower()}")  # fmt: skip
                        timing = gr.Markdown(elem_id=f"cmp-metrics-{tag.lower()}")
                        panels[tag] = (text, audio, timing)
            with gr.Row():
                votes = {
                    choice: gr.Button(label, interactive=False, elem_id=f"vote-{choice.lower().replace('_', '-')}")
                    for choice, label in (("A", "A is better"), ("B", "B is better"), ("tie", "Tie"),
                                          ("both_bad", "Both bad"))
                }  # fmt: skip
            vote_comment = gr.Textbox(label="Comment (optional)", elem_id="cmp-comment")
            reveal = gr.Markdown(elem_id="cmp-reveal")
            vote_buttons = list(votes.values())
            cmp_outputs = [
                *panels["A"],
                *panels["B"],
                cmp_status,
                reveal,
                compare_state,
                *vote_buttons,
                run,
                cmp_stop,
            ]
            run.click(compare.run,
                      [compare_state, cmp_text, cmp_audio, mode_1, mode_2, checkpoint_1, checkpoint_2, blinded,
                       *cmp_sampling],
                      cmp_outputs, show_progress="minimal", **generate, **private)  # fmt: skip
            cmp_stop.click(compare.stop, None, cmp_status, queue=False, **private)
            for choice, button in votes.items():
                button.click(lambda state, note, choice=choice: compare.vote(state, choice, note),
                             [compare_state, vote_comment],
                             [cmp_status, reveal, compare_state, *vote_buttons, vote_comment], **private)  # fmt: skip
            next_round.click(compare.next_round, None, [*cmp_outputs, vote_comment, cmp_audio, cmp_text],
                             queue=False, **private)  # fmt: skip

        # ---- Data ----------------------------------------------------------------------------
        with gr.Tab("Data", id="data") as data_tab:
            refresh = gr.Button("Refresh", elem_id="data-refresh")
            counts = gr.Markdown(elem_id="data-counts")
            with gr.Row():
                pairs = gr.Dataframe(headers=PAIR_COLUMNS, label="Votes by pair", interactive=False)
                win_rates = gr.Dataframe(headers=WIN_COLUMNS, label="Win rates (of 'label' against 'opponent')",
                                         interactive=False)  # fmt: skip
            turns = gr.Dataframe(headers=TURN_COLUMNS, label="Recent turns (click a row to play it)",
                                 interactive=False, elem_id="data-turns")  # fmt: skip
            with gr.Row():
                user_player = gr.Audio(label="User audio", interactive=False)
                reply_player = gr.Audio(label="Reply audio", interactive=False)
                details = gr.JSON(label="Turn details")
            with gr.Accordion("Admin: export and deletion", open=False):
                if ctx.admin_enabled:
                    gr.Markdown("Needs the admin token.")
                else:
                    gr.Markdown(
                        f"Disabled: start the app with `{ADMIN_TOKEN_ENV}` set to enable export and deletion."
                    )
                token = gr.Textbox(label="Admin token", type="password", interactive=ctx.admin_enabled)
                with gr.Row():
                    export = gr.Button("Export preference pairs (JSONL)", interactive=ctx.admin_enabled)
                    confirm = gr.Checkbox(
                        label="I understand that this deletes every conversation, vote and audio file"
                    )
                    delete = gr.Button("Delete all data", variant="stop", interactive=ctx.admin_enabled)
                export_file = gr.File(label="Preference pairs", interactive=False)
                admin_status = gr.Markdown()
            data_outputs = [counts, pairs, win_rates, turns]
            refresh.click(data.refresh, None, data_outputs, **private)
            data_tab.select(data.refresh, None, data_outputs, **private)
            turns.select(data.select_turn, None, [user_player, reply_player, details], **private)
            export.click(data.export, token, [export_file, admin_status], **private)
            delete.click(data.delete_all, [token, confirm], admin_status, **private).then(
                data.refresh, None, data_outputs, **private
            )

        # ---- API (no visible components: for gradio_client, see README "API") ----------------
        with gr.Column(visible=False):
            a_message = gr.Textbox(label="message")
            a_audio = gr.Audio(type="filepath", sources=["upload"], label="audio")
            a_mode = gr.Textbox("S2M", label="mode")
            a_conversation = gr.Textbox(label="conversation_id")
            a_checkpoint = gr.Textbox(label="checkpoint")
            a_mode_a, a_mode_b = gr.Textbox("S2M", label="mode_a"), gr.Textbox("STC", label="mode_b")
            a_checkpoint_a, a_checkpoint_b = (
                gr.Textbox(label="checkpoint_a"),
                gr.Textbox(label="checkpoint_b"),
            )
            a_sampling = gr.JSON({}, label="sampling")
            a_comparison, a_vote = gr.Textbox(label="comparison_id"), gr.Textbox(label="vote")
            a_turn, a_rating = gr.Textbox(label="turn_id"), gr.Textbox(label="rating")
            a_comment = gr.Textbox(label="comment")
            a_result = gr.JSON(label="result")
            a_reply = gr.Audio(type="filepath", label="reply_audio")
            a_reply_a, a_reply_b = (
                gr.Audio(type="filepath", label="audio_a"),
                gr.Audio(type="filepath", label="audio_b"),
            )
            a_button = gr.Button()
            a_button.click(api.chat, [a_message, a_audio, a_mode, a_conversation, a_checkpoint, a_sampling],
                           [a_result, a_reply], api_name="chat", **generate)  # fmt: skip
            a_button.click(api.compare,
                           [a_message, a_audio, a_mode_a, a_mode_b, a_checkpoint_a, a_checkpoint_b, a_sampling],
                           [a_result, a_reply_a, a_reply_b], api_name="compare", **generate)  # fmt: skip
            a_button.click(api.vote, [a_comparison, a_vote, a_comment], a_result, api_name="vote")
            a_button.click(api.feedback, [a_turn, a_rating, a_comment], a_result, api_name="feedback")
    return demo


def launch(demo: gr.Blocks, ctx: AppContext, *, host: str, port: int | None, share: bool = False, **kwargs):
    """Starts the queue and the server. Returns what ``Blocks.launch`` returns."""
    settings = ctx.settings
    demo.queue(default_concurrency_limit=4, max_size=settings.queue_size)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=int(settings.limits.max_upload_bytes),
        show_error=True,
        footer_links=["api", "gradio"],
        **kwargs,
    )
