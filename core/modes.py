"""The seven interaction patterns of DrVoice (paper Table 1) and their system prompts (Table 5)."""

from __future__ import annotations

from dataclasses import dataclass

# Table 5, verbatim (note the typographic apostrophe in "Let’s").
PROMPT_PARALLEL = (
    "You are a helpful assistant and asked to generate both text and speech tokens at the same time."
)
PROMPT_TEXT = "You are a helpful assistant and asked to generate text tokens."
PROMPT_STC = (
    "You are a helpful assistant. Let’s think step by step. Convert speech to text if the query is speech, "
    "think of an appropriate text response, and then convert the response back to both text and speech "
    "tokens at the same time."
)
PROMPT_SAC = (
    "You are a helpful assistant. Let’s think step by step. Think of an appropriate text response, and then "
    "convert the response back to both text and speech tokens at the same time."
)
PROMPT_SUC = (
    "You are a helpful assistant. Let’s think step by step. Convert speech to text if the query is speech, "
    "and then think of both appropriate text and speech responses at the same time."
)


@dataclass(frozen=True)
class Mode:
    """One interaction pattern.

    The text-only phase of chain modes is written as `transcript` and/or `draft`, joined by a
    newline when both are present (STC: "transcript\\ndraft"), then `<|audio_bos|>` switches the
    parallel text+speech stream on.
    """

    name: str  # abbreviation, e.g. "S2M"
    title: str  # readable name (Table 1)
    flow: str  # modality flow (Table 1)
    system_prompt: str  # Table 5
    speech_input: bool  # the user turn is speech
    speech_output: bool  # the reply has a parallel speech stream
    has_transcript: bool  # chain phase writes the transcript of the user's speech
    has_draft: bool  # chain phase writes a text response before the parallel phase

    @property
    def is_chain(self) -> bool:
        return self.has_transcript or self.has_draft


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode(
            "S2M",
            "Speech-to-Multimodal",
            "Speech → Joint speech-text response",
            PROMPT_PARALLEL,
            True,
            True,
            False,
            False,
        ),
        Mode("S2T", "Speech-to-Text", "Speech → Text-only response", PROMPT_TEXT, True, False, False, False),
        Mode(
            "T2M",
            "Text-to-Multimodal",
            "Text → Joint speech-text response",
            PROMPT_PARALLEL,
            False,
            True,
            False,
            False,
        ),
        Mode("T2T", "Text-to-Text", "Text → Text-only response", PROMPT_TEXT, False, False, False, False),
        Mode(
            "STC",
            "Speech-Text Chain",
            "Speech → Text transcription → Text response → Multimodal response",
            PROMPT_STC,
            True,
            True,
            True,
            True,
        ),
        Mode(
            "SAC",
            "Speech-Assisted Chain",
            "Speech → Text response (agent perspective) → Multimodal response",
            PROMPT_SAC,
            True,
            True,
            False,
            True,
        ),
        Mode(
            "SUC",
            "Speech-User Chain",
            "Speech → Text transcription (user perspective) → Multimodal response",
            PROMPT_SUC,
            True,
            True,
            True,
            False,
        ),
    )
}
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def get_mode(name: str) -> Mode:
    """Looks a mode up by abbreviation (case-insensitive); raises ValueError listing the valid ones."""
    key = name.strip().upper()
    if key not in MODES:
        raise ValueError(f"unknown mode {name!r}; expected one of {', '.join(MODE_NAMES)}")
    return MODES[key]


def text_twin(mode: Mode) -> Mode | None:
    """The text-only mode with the same input as a parallel speaking mode (S2M → S2T, T2M → T2T);
    None for the other modes."""
    if not mode.speech_output or mode.is_chain:
        return None
    return next(
        m
        for m in MODES.values()
        if m.speech_input == mode.speech_input and not m.speech_output and not m.is_chain
    )


def chain_text(mode: Mode, transcript: str, draft: str) -> str:
    """The text-only phase of a chain mode (empty for the other modes)."""
    parts = []
    if mode.has_transcript:
        parts.append(transcript)
    if mode.has_draft:
        parts.append(draft)
    return "\n".join(parts)


def split_chain_text(mode: Mode, text: str) -> tuple[str, str]:
    """Inverse of `chain_text`: returns (transcript, draft) of a (possibly partial) text phase."""
    if mode.has_transcript and mode.has_draft:
        transcript, _, draft = text.partition("\n")
        return transcript, draft
    if mode.has_transcript:
        return text, ""
    if mode.has_draft:
        return "", text
    return "", ""
