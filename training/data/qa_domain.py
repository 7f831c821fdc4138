"""The spoken-QA domain of the synthetic corpus: intents, question phrasings, replies, answers.

Every intent has a set of operand tuples ("combos": (3, 4) for "plus", ("France",) for "capital",
() for small talk), at least six question phrasings and one reply template. A question and its
reply are fully determined by (intent, phrasing index, operands).

Number convention: numbers are written as words everywhere in the corpus, in the user's question
and in the assistant's reply ("What is three plus four?" -> "Three plus four is seven."), US style
without "and" or hyphens ("one hundred forty four"), exactly as `training.eval.scoring` spells them
and as the recogniser transcribes them. So the written reply is word for word what the assistant
voice says, the text stream of a parallel reply runs ahead of its speech with no digit-to-word
mapping to learn, and the transcript of a question equals its typed text. Accepted answers list both
forms (["7", "seven"]); the evaluation matches either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from training.eval.scoring import number_to_words

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "India": "New Delhi", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Egypt": "Cairo", "Russia": "Moscow", "Kenya": "Nairobi", "Greece": "Athens",
    "Portugal": "Lisbon", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Ireland": "Dublin", "Austria": "Vienna", "Turkey": "Ankara",
    "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "South Korea": "Seoul", "Cuba": "Havana", "Mexico": "Mexico City",
}  # fmt: skip
OPPOSITE_PAIRS = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("open", "closed"), ("early", "late"), ("loud", "quiet"), ("hard", "soft"), ("full", "empty"),
    ("wet", "dry"), ("up", "down"),
)  # fmt: skip
OPPOSITES = {**dict(OPPOSITE_PAIRS), **{b: a for a, b in OPPOSITE_PAIRS}}
ARITHMETIC_MAX = 12  # operands of plus / minus / times are 0..12
NUMBER_RANGE = (1, 99)  # operands of next_number / previous_number


@dataclass(frozen=True)
class Intent:
    """One kind of question."""

    name: str  # e.g. "plus"
    category: str  # arithmetic, number, weekday, month, capital, opposite, smalltalk
    phrasings: tuple[str, ...]  # question templates over the fields of `fields(operands)`
    reply: str  # reply template over the same fields
    combos: tuple[tuple, ...]  # every operand tuple the intent is asked about
    answer_keys: tuple[str, ...] = ("answer",)  # fields whose values are accepted answers
    extra_answers: tuple[str, ...] = ()  # fixed accepted answers (small talk)
    holdout_combos: bool = False  # combos can be held out (the answer can be inferred, not recalled)


@dataclass(frozen=True)
class QA:
    """A rendered question and its reply."""

    question: str
    reply: str
    answers: tuple[str, ...]


def _words(n: int) -> str:
    return number_to_words(n)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def intent_fields(intent: Intent, operands: tuple) -> dict[str, str]:
    """Template fields of an operand tuple (numbers as words) plus the answer's raw value."""
    name = intent.name
    if intent.category == "arithmetic":
        a, b = operands
        c = {"plus": a + b, "minus": a - b, "times": a * b}[name]
        return {"a": _words(a), "b": _words(b), "answer": _words(c), "answer_digits": str(c)}
    if intent.category == "number":
        (n,) = operands
        m = n + 1 if name == "next_number" else n - 1
        return {"n": _words(n), "answer": _words(m), "answer_digits": str(m)}
    if intent.category in ("weekday", "month"):
        (x,) = operands
        items = WEEKDAYS if intent.category == "weekday" else MONTHS
        step = 1 if name.endswith("after") else -1
        return {"x": x, "answer": items[(items.index(x) + step) % len(items)]}
    if intent.category == "capital":
        (country,) = operands
        return {"country": country, "answer": CAPITALS[country]}
    if intent.category == "opposite":
        (w,) = operands
        return {"w": w, "answer": OPPOSITES[w]}
    return {}


def render(intent: Intent, phrasing: int, operands: tuple) -> QA:
    """The question (with phrasing template `phrasing`) and the reply for `operands`."""
    f = intent_fields(intent, operands)
    question = _sentence(intent.phrasings[phrasing].format(**f))
    reply = _sentence(intent.reply.format(**f))
    answers = [f[k] for k in intent.answer_keys if k in f]
    if "answer_digits" in f:
        answers.insert(0, f["answer_digits"])
    return QA(question, reply, tuple(answers) + intent.extra_answers)


def _arith_combos(op: str) -> tuple[tuple[int, int], ...]:
    r = range(ARITHMETIC_MAX + 1)
    return tuple((a, b) for a in r for b in r if op != "minus" or a >= b)


_NUMBERS = tuple((n,) for n in range(NUMBER_RANGE[0], NUMBER_RANGE[1] + 1))

INTENTS: tuple[Intent, ...] = (
    Intent(
        "plus", "arithmetic",
        ("What is {a} plus {b}?", "How much is {a} plus {b}?", "What do you get when you add {a} and {b}?",
         "Can you add {a} and {b} for me?", "What is the sum of {a} and {b}?",
         "Tell me what {a} plus {b} equals."),
        "{a} plus {b} is {answer}.", _arith_combos("plus"), holdout_combos=True,
    ),
    Intent(
        "minus", "arithmetic",
        ("What is {a} minus {b}?", "How much is {a} minus {b}?",
         "What do you get when you subtract {b} from {a}?", "Can you take {b} away from {a}?",
         "What is {a} take away {b}?", "Tell me what {a} minus {b} equals."),
        "{a} minus {b} is {answer}.", _arith_combos("minus"), holdout_combos=True,
    ),
    Intent(
        "times", "arithmetic",
        ("What is {a} times {b}?", "How much is {a} times {b}?",
         "What do you get when you multiply {a} by {b}?", "Can you multiply {a} by {b} for me?",
         "What is the product of {a} and {b}?", "Tell me what {a} times {b} equals."),
        "{a} times {b} is {answer}.", _arith_combos("times"), holdout_combos=True,
    ),
    Intent(
        "next_number", "number",
        ("What number comes after {n}?", "What is the next number after {n}?", "Which number follows {n}?",
         "What is one more than {n}?", "If you count up from {n}, what comes next?",
         "Tell me the number right after {n}."),
        "The number after {n} is {answer}.", _NUMBERS, holdout_combos=True,
    ),
    Intent(
        "previous_number", "number",
        ("What number comes before {n}?", "What is the number just before {n}?",
         "Which number comes right before {n}?", "What is one less than {n}?",
         "If you count down from {n}, what comes next?", "Tell me the number right before {n}."),
        "The number before {n} is {answer}.", _NUMBERS, holdout_combos=True,
    ),
    Intent(
        "day_after", "weekday",
        ("What day comes after {x}?", "Which day of the week follows {x}?", "What is the day after {x}?",
         "If today is {x}, what day is tomorrow?", "What day is it the day after {x}?",
         "Tell me the day that comes after {x}."),
        "The day after {x} is {answer}.", tuple((d,) for d in WEEKDAYS),
    ),
    Intent(
        "day_before", "weekday",
        ("What day comes before {x}?", "Which day of the week comes before {x}?",
         "What is the day before {x}?", "If today is {x}, what day was yesterday?",
         "What day was it the day before {x}?", "Tell me the day that comes before {x}."),
        "The day before {x} is {answer}.", tuple((d,) for d in WEEKDAYS),
    ),
    Intent(
        "month_after", "month",
        ("What month comes after {x}?", "Which month follows {x}?", "What is the month after {x}?",
         "If this month is {x}, what month is next?", "What month do we have after {x}?",
         "Tell me the month that comes after {x}."),
        "The month after {x} is {answer}.", tuple((m,) for m in MONTHS),
    ),
    Intent(
        "month_before", "month",
        ("What month comes before {x}?", "Which month comes right before {x}?",
         "What is the month before {x}?", "If this month is {x}, what was last month?",
         "What month do we have before {x}?", "Tell me the month that comes before {x}."),
        "The month before {x} is {answer}.", tuple((m,) for m in MONTHS),
    ),
    Intent(
        "capital", "capital",
        ("What is the capital of {country}?", "What is the capital city of {country}?",
         "Which city is the capital of {country}?", "Do you know the capital of {country}?",
         "What city is the capital of {country}?", "Tell me the capital of {country}."),
        "The capital of {country} is {answer}.", tuple((c,) for c in CAPITALS),
    ),
    Intent(
        "opposite", "opposite",
        ("What is the opposite of {w}?", "What is the antonym of {w}?",
         "What word means the opposite of {w}?", "What is the reverse of {w}?",
         "Give me the opposite of {w}.", "Tell me a word that means the opposite of {w}."),
        "The opposite of {w} is {answer}.", tuple((w,) for w in OPPOSITES),
    ),
    Intent(
        "hello", "smalltalk",
        ("Hello!", "Hi there!", "Hey, hello!", "Good morning!", "Hi, nice to meet you!",
         "Hello there, assistant!"),
        "Hello! How can I help you today?", ((),), extra_answers=("hello",),
    ),
    Intent(
        "how_are_you", "smalltalk",
        ("How are you?", "How are you doing today?", "How is it going?", "Are you doing well?",
         "How do you feel today?", "How have you been?"),
        "I am doing well, thank you for asking.", ((),), extra_answers=("well",),
    ),
    Intent(
        "name", "smalltalk",
        ("What is your name?", "What should I call you?", "Who are you?", "Do you have a name?",
         "Tell me your name.", "What are you called?"),
        "My name is DrVoice.", ((),), extra_answers=("DrVoice",),
    ),
    Intent(
        "thanks", "smalltalk",
        ("Thank you!", "Thanks a lot!", "Thank you very much!", "Thanks for your help!", "Many thanks!",
         "I really appreciate your help, thanks!"),
        "You are welcome!", ((),), extra_answers=("welcome",),
    ),
    Intent(
        "goodbye", "smalltalk",
        ("Goodbye!", "Bye for now!", "See you later!", "I have to go now, goodbye!",
         "Talk to you later, bye!", "Good night!"),
        "Goodbye! Have a nice day.", ((),), extra_answers=("goodbye", "bye"),
    ),
)  # fmt: skip
INTENTS_BY_NAME = {i.name: i for i in INTENTS}
CATEGORIES = tuple(dict.fromkeys(i.category for i in INTENTS))


def combo_key(intent: Intent, operands: tuple) -> tuple:
    """The unit a held-out combo is chosen by: the unordered pair for commutative plus / times
    (so "three plus four" and "four plus three" are held out together), else the operands."""
    if intent.name in ("plus", "times"):
        return tuple(sorted(operands))
    return tuple(operands)


# ------------------------------------------------------------------------------ multi-turn


@dataclass(frozen=True)
class Turn:
    """One exchange of a conversation."""

    intent: str  # the intent the reply answers
    phrasing: str  # "<intent>.<template>", or "followup_<kind>.<template>" for a context-dependent question
    question: str
    reply: str
    answers: tuple[str, ...]
    operands: tuple  # of the intent the reply answers (a follow-up's operand comes from context)


FOLLOWUPS = {
    # follow-ups that only make sense with the previous turn (the operand comes from its answer)
    "followup_next": ("And the one after that?", "What comes after that one?", "And the next one?"),
    "followup_capital": ("And of {country}?", "What about {country}?", "And the capital of {country}?"),
}


def conversation(
    kind: str,
    rng,
    phrasings: Callable[[Intent], list[int]],
    combos: Callable[[Intent], list[tuple]],
) -> list[Turn]:
    """A 2-4 turn conversation whose later turns may depend on the earlier ones.

    Args:
        kind: one of `CONVERSATION_KINDS`.
        rng: a `random.Random`.
        phrasings: the phrasing indices of an intent allowed in this split.
        combos: the operand tuples of an intent allowed in this split (every operand a turn uses,
            follow-ups included, comes from here, so held-out combos stay out of training).
    """

    def turn(intent_name: str, operands: tuple) -> Turn:
        intent = INTENTS_BY_NAME[intent_name]
        p = rng.choice(phrasings(intent))
        qa = render(intent, p, operands)
        return Turn(intent_name, f"{intent_name}.{p}", qa.question, qa.reply, qa.answers, operands)

    def followup(name: str, intent_name: str, operands: tuple, **fmt) -> Turn:
        p = rng.randrange(len(FOLLOWUPS[name]))
        qa = render(INTENTS_BY_NAME[intent_name], 0, operands)
        question = _sentence(FOLLOWUPS[name][p].format(**fmt))
        return Turn(intent_name, f"{name}.{p}", question, qa.reply, qa.answers, operands)

    if kind == "count_numbers":
        allowed = set(combos(INTENTS_BY_NAME["next_number"]))
        starts = sorted(n for (n,) in allowed if (n + 1,) in allowed)
        n = rng.choice(starts)
        return [turn("next_number", (n,)), followup("followup_next", "next_number", (n + 1,))]
    if kind == "count_days":
        d = rng.randrange(len(WEEKDAYS))
        return [
            turn("day_after", (WEEKDAYS[d],)),
            followup("followup_next", "day_after", (WEEKDAYS[(d + 1) % 7],)),
            followup("followup_next", "day_after", (WEEKDAYS[(d + 2) % 7],)),
        ]
    if kind == "capitals":
        (c1,), (c2,) = rng.sample(sorted(combos(INTENTS_BY_NAME["capital"])), 2)
        return [turn("capital", (c1,)), followup("followup_capital", "capital", (c2,), country=c2)]
    if kind == "arithmetic_then_fact":
        pair = rng.choice(sorted(combos(INTENTS_BY_NAME["plus"])))
        word = rng.choice(sorted(combos(INTENTS_BY_NAME["opposite"])))
        return [turn("plus", pair), turn("opposite", word)]
    if kind == "smalltalk":
        turns = [turn("hello", ()), turn("name", ()), turn("thanks", ()), turn("goodbye", ())]
        return turns[: rng.choice((2, 3, 4))]
    raise ValueError(f"unknown conversation kind {kind!r}")


CONVERSATION_KINDS = ("count_numbers", "count_days", "capitals", "arithmetic_then_fact", "smalltalk")
