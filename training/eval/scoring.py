"""Text normalisation, answer matching and word error rate for the evaluation.

Both the model's reply text and the ASR transcript of its speech go through `normalize` before
they are compared, so that "3 plus 4 is 7." and "three plus four is seven" score the same:

1. lower case; curly apostrophes become "'"; aliases are expanded ("drvoice" -> "doctor voice",
   the way the assistant voice says the name and the way the recogniser hears it);
2. numbers are rewritten into one form: `numbers="words"` spells digit strings out in US style
   ("144" -> "one hundred forty four", "1,200" -> "one thousand two hundred", "2.5" -> "two point
   five"); `numbers="digits"` parses runs of number words back into digits ("twenty seven" ->
   "27");
3. hyphens and every other punctuation mark become spaces, except an apostrophe inside a word
   ("i'm"); whitespace is collapsed.

`contains_answer` matches on the digit form, whole words only: the answer "7" matches "seven" and
"7" but neither "17" nor "twenty seven" (which read as "17" and "27"); given the question, a number
answer does not count where the reply only echoes it (an operand equal to the answer). `wer`
compares the word forms (the recogniser writes numbers as words).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ALIASES = {"drvoice": "doctor voice"}  # names the assistant voice spells out

_ONE_VALUE = {w: i for i, w in enumerate(ONES)}
_TENS_VALUE = {w: 10 * i for i, w in enumerate(TENS) if w != "_"}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
# a leading "-" is a minus sign only when it does not follow a word ("5-3" is a range, not 5, -3)
_NUMBER_RE = re.compile(r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ALIAS_RE = re.compile(r"\b(" + "|".join(map(re.escape, ALIASES)) + r")\b")
_PUNCT_RE = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE_RE = re.compile(r"(?<!\w)'|'(?!\w)")


def number_to_words(n: int) -> str:
    """Spells a whole number in US English without "and" or hyphens.

    Args:
        n: an integer with |n| < 10**12.

    Returns:
        e.g. 7 -> "seven", 144 -> "one hundred forty four", 1200 -> "one thousand two hundred",
        -3 -> "minus three".
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 10**12:
        raise ValueError(f"number_to_words handles |n| < 10**12, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for scale, name in ((10**9, "billion"), (10**6, "million"), (10**3, "thousand")):
        if n >= scale:
            rest = n % scale
            return (
                number_to_words(n // scale) + f" {name}" + ("" if rest == 0 else " " + number_to_words(rest))
            )
    raise AssertionError("unreachable")


def _spell_number(match: re.Match) -> str:
    text = match.group(0).replace(",", "")
    negative = text.startswith("-")
    text = text.lstrip("-")
    whole, _, fraction = text.partition(".")
    if len(whole) > 12:  # an id or a long code: read it digit by digit
        words = " ".join(ONES[int(d)] for d in whole)
    else:
        words = number_to_words(int(whole))
    if fraction:
        words += " point " + " ".join(ONES[int(d)] for d in fraction)
    return (" minus " if negative else " ") + words + " "


def words_to_numbers(tokens: Sequence[str]) -> list[str]:
    """Replaces each run of English number words by its value in digits.

    A run follows the way numbers are spoken: "twenty seven" -> "27", "one hundred and five" ->
    "105", "two thousand twenty" -> "2020". Words that cannot continue the number start a new token:
    "three four" -> "3", "4"; "and" joins only after "hundred" / "thousand" / ... and before a number word.

    Args:
        tokens: lower-case words.

    Returns:
        the tokens with number runs collapsed to digit strings.
    """
    out: list[str] = []
    i = 0
    while i < len(tokens):
        value, end = _parse_number(tokens, i)
        if end == i:
            out.append(tokens[i])
            i += 1
        else:
            out.append(str(value))
            i = end
    return out


def _is_number_word(word: str) -> bool:
    return word in _ONE_VALUE or word in _TENS_VALUE


def _parse_number(tokens: Sequence[str], start: int) -> tuple[int, int]:
    """Longest spoken number starting at `start`: (value, end index); end == start if none."""
    total, current = 0, 0  # finished scale groups ("two million"), the group being read ("seventeen")
    last = None  # kind of the previous word: unit, tens, hundred, scale
    last_scale = None  # scales must decrease: "two million three thousand", never "thousand million"
    i = start
    while i < len(tokens):
        word = tokens[i]
        if word in _ONE_VALUE:
            value = _ONE_VALUE[word]
            if value == 0:
                if last is not None:
                    break
                return 0, i + 1  # "zero" stands alone
            if value < 10 and last not in (None, "tens", "hundred", "scale"):
                break
            if value >= 10 and last not in (None, "hundred", "scale"):
                break
            current += value
            last = "unit"
        elif word in _TENS_VALUE:
            if last not in (None, "hundred", "scale"):
                break
            current += _TENS_VALUE[word]
            last = "tens"
        elif word == "hundred":
            if last != "unit" or current >= 100:
                break
            current *= 100
            last = "hundred"
        elif word in _SCALES:
            scale = _SCALES[word]
            if last not in ("unit", "tens", "hundred") or (last_scale is not None and scale >= last_scale):
                break
            total, current = total + current * scale, 0
            last, last_scale = "scale", scale
        elif word == "and":
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if last not in ("hundred", "scale") or not _is_number_word(nxt) or nxt == "zero":
                break
        else:
            break
        i += 1
    if last is None:
        return 0, start
    return total + current, i


def normalize(text: str, numbers: str = "words") -> str:
    """Lower-cased words separated by single spaces, numbers in one form (module docstring).

    Args:
        text: any reply text or transcript.
        numbers: "words" (digits spelled out; for WER) or "digits" (number words parsed; for answers).

    Returns:
        the normalised text ("" for empty input).
    """
    if numbers not in ("words", "digits"):
        raise ValueError(f"numbers must be 'words' or 'digits', got {numbers!r}")
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = _ALIAS_RE.sub(lambda m: ALIASES[m.group(1)], text)
    text = _NUMBER_RE.sub(_spell_number, text)  # digits -> words first, so both forms meet
    text = _PUNCT_RE.sub(" ", text)
    text = _LOOSE_APOSTROPHE_RE.sub(" ", text)
    tokens = text.split()
    if numbers == "digits":
        tokens = words_to_numbers(tokens)
    return " ".join(tokens)


def _occurrences(words: Sequence[str], target: Sequence[str]) -> int:
    n = len(target)
    return sum(words[i : i + n] == target for i in range(len(words) - n + 1))


def contains_answer(text: str, answers: Iterable[str], question: str | None = None) -> bool:
    """True when one of the accepted answers occurs in `text` as a whole-word phrase.

    Both sides are normalised with `numbers="digits"`; an answer that normalises to nothing is
    ignored. With `question`, a numeric answer's mentions that only echo the question do not count:
    it must occur more often in `text` than in the question, so "Twelve minus six is five." does not
    answer "What is twelve minus six?" with its operand "six", while "Zero times ten is zero." still
    answers "zero" (the price: a bare "Zero." to that question scores as wrong). Word answers are
    matched as they are: echoing "hello" is the right reply to "Hey, hello!".
    """
    words = normalize(text, numbers="digits").split()
    asked = normalize(question, numbers="digits").split() if question else []
    for answer in answers:
        target = normalize(answer, numbers="digits").split()
        if not target:
            continue
        echoed = _occurrences(asked, target) if all(w.isdigit() for w in target) else 0
        if _occurrences(words, target) > echoed:
            return True
    return False


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, deletions, insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion of ref_word
                    current[j - 1] + 1,  # insertion of hyp_word
                    previous[j - 1] + (ref_word != hyp_word),  # substitution / match
                )
            )
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after `normalize(numbers="words")`: the parts of a corpus WER."""
    ref = normalize(reference).split()
    hyp = normalize(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (both normalised).

    Returns:
        edits / reference words; with an empty reference 0.0 if the hypothesis is empty too, else 1.0.
    """
    errors, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / n
