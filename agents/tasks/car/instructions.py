"""Driving instructions: four categories, a template grammar per split, and a reader for what people write.

Categories and evaluation speeds follow RobotxR1's evaluation: centerline, reference
velocity, reverse (tracked as -1 m/s), smooth. Instructions are drawn from a template
grammar (TRAIN_GRAMMAR, HELD_OUT_GRAMMAR): imperative, polite and terse tones, a situation
said first, a sentence that changes nothing, speeds in digits or words, in m/s, km/h or mph
(the target is always kept in m/s, to 0.01). The two splits share no sentence frame and no
situation or filler sentence: held-out wordings are new to a model trained on the train split,
and held-out speeds are RobotxR1's (training draws speeds at least 0.1 m/s away from them).
The train split also draws from the language model's own paraphrases of train sentences
(paraphrases.json, made by `python -m agents.tasks.car.paraphrase`).

`parse_instruction` reads any wording, not only the generated ones: the category from its
words, the speed (digits or words, with a unit) with safety.audit.claims' speed reader, and
rejects text it cannot read, or that asks for two things at once, with what to write instead.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import numpy as np

from safety.audit.claims import ACCELERATIONS, LENGTHS, NEGATIONS, TENS, UNITS, WORDS, Claim, extract_claims
from twin.core.config import ConfigError

CATEGORIES: tuple[str, ...] = ("centerline", "velocity", "reverse", "smooth")
REVERSE_SPEED = -1.0
"""Target speed of the 'reverse' category (m/s), as in RobotxR1's evaluation."""
SPEED_RANGE = (0.2, 8.0)
"""Target speeds a velocity instruction may ask for (m/s)."""
TRAIN_SPEED_RANGE = (0.8, 4.8)
"""Target speeds the train split draws (m/s)."""
HELD_OUT_SPEEDS: tuple[float, ...] = (3.5, 2.2, 1.25, 2.9, 4.5)
"""RobotxR1's evaluation speeds; training draws speeds at least 0.1 m/s away from them."""
PARAPHRASES_PATH = Path(__file__).with_name("paraphrases.json")
"""The language model's paraphrases of train sentences (train split only)."""
PARAPHRASE_SHARE = 0.15
"""Share of train draws taken from the model's paraphrases (when there are any of the category)."""
WRITTEN_PATH = Path(__file__).with_name("written.json")
"""Train wordings written by a second, larger language model shown only the train wordings (made by
`python -m agents.tasks.car.written`; train split only)."""
BLIND_PATH = Path(__file__).with_name("blind.json")
"""Test wordings written by a third language model session shown no wordings at all, kept only where they share
no frame and no phrase with the train split (`python -m agents.tasks.car.written --split blind`)."""
WRITTEN_SHARE = 0.3
"""Share of train draws whose sentence is a written wording (with the train split's speeds, situations and
fillers)."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction as given to the agent, with its ground truth."""

    category: str
    """One of CATEGORIES."""
    text: str
    """The words the agent reads."""
    target_speed: float | None = None
    """Speed to hold (m/s) for 'velocity' (and -1 for 'reverse'); None otherwise."""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ConfigError(f"unknown instruction category {self.category!r}; choose from {list(CATEGORIES)}")
        lo, hi = SPEED_RANGE
        if self.category == "velocity" and (self.target_speed is None or not lo <= self.target_speed <= hi):
            raise ConfigError(f"velocity instruction needs a target speed in [{lo}, {hi}] m/s, got {self.target_speed}")


# -- the grammar -----------------------------------------------------------------------------------------------

TRAIN_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "centerline": ("Drive on the centerline.", "Stay in the middle of the track.",
                   "Keep the car centred between the walls."),
    "velocity": ("Drive at {v} m/s.", "Hold a speed of {v} m/s.", "Keep your speed at {v} meters per second."),
    "reverse": ("Reverse the car.", "Drive backwards.", "Back up along the track."),
    "smooth": ("Drive smoothly.", "Drive gently, no harsh acceleration.", "Make the ride comfortable."),
}
"""The first train wordings ({v}: a speed in m/s, digits); they are sentences of TRAIN_GRAMMAR."""
HELD_OUT_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "centerline": ("Follow the middle line of the track as closely as you can.",
                   "Stay equally far from both walls."),
    "velocity": ("Cruise at exactly {v} m/s.", "I want you going {v} m/s, steady."),
    "reverse": ("Go in reverse, slowly.", "Put it in reverse and roll back."),
    "smooth": ("Be gentle: passengers are sleeping.", "Avoid jerky steering and braking."),
}
"""The first held-out wordings; they are sentences of HELD_OUT_GRAMMAR."""


@dataclasses.dataclass(frozen=True)
class Grammar:
    """The sentence frames and word choices of one split."""

    cores: Mapping[str, tuple[str, ...]]
    """Per category, what to do: a lower-case clause that a tone wraps, or a whole sentence that takes none
    (leading '='; leading '~': a terse one that takes no situation either); '[a|b]' picks one word choice,
    '{speed}' is the speed slot (velocity only)."""
    tones: tuple[str, ...]
    """Ways of saying a clause '{c}': imperative, polite, terse."""
    situations: tuple[str, ...]
    """Said first, sometimes ('The track is slippery, so'); they name no category and no speed."""
    fillers: tuple[str, ...]
    """Sentences said after the instruction, sometimes, that change nothing."""
    units: tuple[str, ...]
    """Speed units the speed slot is written in (keys of safety.audit.claims.UNITS)."""

    def __post_init__(self) -> None:
        if set(self.cores) != set(CATEGORIES):
            raise ConfigError(f"Grammar.cores has categories {sorted(self.cores)}; give cores for {list(CATEGORIES)}")
        for cat, cores in self.cores.items():
            for core in cores:
                if ("{speed}" in core) != (cat == "velocity"):
                    raise ConfigError(f"Grammar core {core!r} of {cat!r}: the '{{speed}}' slot belongs in velocity "
                                      "cores only, and every velocity core needs it")
        if not all("{c}" in tone for tone in self.tones):
            raise ConfigError("every Grammar tone must hold the clause slot '{c}'")
        unknown = [u for u in self.units if u not in UNITS]
        if unknown or not self.units:
            raise ConfigError(f"Grammar.units {unknown or '()'}: use units of safety.audit.claims.UNITS")
        object.__setattr__(self, "cores", MappingProxyType(dict(self.cores)))


def _legacy(table: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The first wordings as whole-sentence cores, their speed slot open to any unit."""
    return {cat: tuple("=" + t.replace("{v} m/s", "{speed}").replace("{v} meters per second", "{speed}") for t in ts)
            for cat, ts in table.items()}


def _grammar(legacy: Mapping[str, tuple[str, ...]], cores: Mapping[str, tuple[str, ...]], **rest: tuple[str, ...]) -> Grammar:
    old = _legacy(legacy)
    return Grammar({cat: old[cat] + cores[cat] for cat in CATEGORIES}, **rest)


TRAIN_GRAMMAR = _grammar(TRAIN_PARAPHRASES, {
    "centerline": ("stay in the middle of the [lane|road]", "keep the car [centred|centered] on the track",
                   "stay away from the [walls|barriers]", "keep [clear of|off] the [walls|barriers]",
                   "drive down the [middle|centre|center] of the [track|lane]", "hold the [centre|center] line",
                   "keep to the [middle|centre] of the [track|road]", "[follow|track] the centerline",
                   "~Centerline, please.", "~Middle of the track."),
    "velocity": ("drive at {speed}", "hold a speed of {speed}", "keep your speed at {speed}", "go {speed}",
                 "[hold|keep|maintain] {speed}", "set the speed to {speed}", "run at {speed}",
                 "drive at a constant {speed}", "keep it at {speed}", "~Speed: {speed}.", "~{speed}, please."),
    "reverse": ("reverse the car", "drive backwards", "back up along the track", "back the car up",
                "drive in reverse", "[go|drive] backwards [around|along] the [track|lane]", "reverse down the track",
                "~Reverse.", "~Backwards, please."),
    "smooth": ("drive [smoothly|gently]", "drive gently, no harsh acceleration", "make the ride comfortable",
               "keep the ride [smooth|comfortable]", "=No sudden [moves|inputs].", "take it easy on the [throttle|brakes]",
               "be smooth on the [throttle|steering|brakes]", "=Gentle [inputs|steering] only.", "~Smooth ride, please.",
               "~Smooth."),
}, tones=("{c}.", "please {c}.", "{c}, please.", "could you {c}?", "I need you to {c}.", "can you {c}?", "just {c}."),
    situations=("The track is slippery, so", "We are testing new tyres, so", "This is a practice lap, so", "Quick test:",
                "Next run:"),
    fillers=("The lap timer is running.", "Ignore the cones by the pit lane.", "Telemetry is being recorded.",
             "The team is watching from the pit wall."),
    units=("m/s", "meters per second", "metres per second", "km/h", "kph", "mph"))
"""The train split's frames and words (the first train wordings among them)."""

HELD_OUT_GRAMMAR = _grammar(HELD_OUT_PARAPHRASES, {
    "centerline": ("keep [equidistant from|the same distance from] [both|the two] [kerbs|boundaries]",
                   "don't get close to the [kerbs|boundaries], [ride|run] the [midline|mid-line]",
                   "[thread|run] the car right down the [midline|mid-line]",
                   "give the [kerbs|boundaries] a wide berth", "[steer|aim] for the dead [centre|center] of the course",
                   "~Midline.", "~Dead centre, thanks."),
    "velocity": ("[cruise|travel|move along] at {speed}", "[lock in|settle on|sit at] {speed}",
                 "=Your [target|pace] is {speed}.", "aim for {speed} all the way round",
                 "=The pace today is {speed}.", "~Pace: {speed}."),
    "reverse": ("[roll|travel] backward [round|through] the [circuit|course]", "drive [rear|tail] first",
                "move the car [rear|tail] first along the course", "[select|engage] reverse gear and [go|move]",
                "~Rear first."),
    "smooth": ("pretend there is a [glass of water|cup of coffee] on the [dashboard|dash]",
               "=No abrupt [inputs|steering].", "keep every input [calm|relaxed]",
               "make it comfy for the [riders|people on board]", "feather the pedals and steering",
               "~Comfy ride.", "~No jolts."),
}, tones=("kindly {c}.", "{c}, if you would.", "go ahead and {c}.", "make sure you {c}.", "would you {c}?",
          "your job: {c}.", "{c}, thanks."),
    situations=("The forecast says rain later, so", "Visitors are watching from the stands, so", "After the tyre change,",
                "Heads up:"),
    fillers=("A camera crew is filming at turn three.", "The data logger has fresh batteries.",
             "Radio check after the run.", "Someone left a toolbox in the garage."),
    units=("m/s", "meters per second", "metres per second", "km/h", "kph", "mph", "kilometres per hour",
           "kilometers per hour", "miles per hour"))
"""The held-out split's frames and words: none of its cores, tones, situations or fillers is the train split's
(held-out units add spellings training never writes)."""

SPLITS: tuple[str, ...] = ("train", "heldout", "blind")
"""Where instructions come from: 'train' (TRAIN_GRAMMAR, the model's paraphrases, the written wordings);
'heldout' (HELD_OUT_GRAMMAR: no frame, tone, situation or filler of train's); 'blind' (BLIND_PATH's sentences,
with held-out situations, fillers and speeds: wordings none of us chose)."""
SITUATION_SHARE, FILLER_SHARE, WORDS_SHARE = 0.3, 0.2, 0.5
"""How often a generated instruction starts with a situation, ends with a filler, writes its speed in words."""
_CHOICE = re.compile(r"\[([^\]]+)\]")
T = TypeVar("T")


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def expand(core: str) -> list[str]:
    """Every word choice of a core ('stay away from the [walls|barriers]' -> two clauses)."""
    m = _CHOICE.search(core)
    if m is None:
        return [core]
    return [s for option in m.group(1).split("|") for s in expand(core[:m.start()] + option + core[m.end():])]


# -- speeds ------------------------------------------------------------------------------------------------------

_SAY = {**{v: w for w, v in WORDS.items()}, **{v: w for w, v in TENS.items()}}


def number_words(number: str, rng: np.random.Generator | None = None) -> str:
    """A number written in digits ('12.5', '1.25', '25') in words, as safety.audit.claims reads them back
    ('twelve and a half' or 'twelve point five', 'one point two five', 'twenty-five'); `rng` picks between
    the ways of saying it (None: the first). Whole parts 0-99. Hand-written: num2words is no dependency, and
    only the forms the claims reader reads may be written."""
    whole_text, _, frac = number.partition(".")
    whole = int(whole_text)
    if not 0 <= whole <= 99 or not frac.isdigit() and frac:
        raise ConfigError(f"number_words reads plain decimals with a whole part 0-99, got {number!r}")
    if whole in _SAY:
        words = _SAY[whole]
    else:
        words = f"{_SAY[whole - whole % 10]}{'-' if rng is None or rng.random() < 0.5 else ' '}{_SAY[whole % 10]}"
    if frac == "5" and (rng is None or rng.random() < 0.5):
        return f"{words} and a half"
    return f"{words} point {' '.join(_SAY[int(d)] for d in frac)}" if frac else words


def _train_number(rng: np.random.Generator, unit: str) -> str:
    """A train speed as people would write it in `unit`: m/s to 0-2 decimals, km/h and mph whole or half."""
    factor, (lo, hi) = UNITS[unit], TRAIN_SPEED_RANGE
    while True:
        if factor == 1.0:
            value = round(float(rng.uniform(lo, hi)), _pick(rng, (0, 1, 1, 2)))
        else:
            value = round(float(rng.uniform(lo / factor, hi / factor)) * 2) / 2
        truth = round(value * factor, 2)
        if lo <= truth <= hi and min(abs(truth - h) for h in HELD_OUT_SPEEDS) >= 0.1:
            return f"{value:g}"


def _held_out_number(rng: np.random.Generator, unit: str) -> str:
    """A held-out speed in `unit`, with the fewest decimals that still read back to it to 0.01 m/s."""
    v, factor = _pick(rng, HELD_OUT_SPEEDS), UNITS[unit]
    return next(f"{x:g}" for x in (round(v / factor, d) for d in range(4)) if round(x * factor, 2) == v)


def _speed(rng: np.random.Generator, split: str, units: tuple[str, ...]) -> tuple[str, float]:
    """A speed as written (digits or words, with its unit) and its value in m/s to 0.01."""
    unit = _pick(rng, units)
    number = (_train_number if split == "train" else _held_out_number)(rng, unit)
    text = f"{number_words(number, rng) if rng.random() < WORDS_SHARE else number} {unit}"
    return text, round(float(number) * UNITS[unit], 2)


# -- drawing -----------------------------------------------------------------------------------------------------


def _check(split: str, category: str | None) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} must be one of {list(SPLITS)}")
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"unknown instruction category {category!r}; choose from {list(CATEGORIES)}")


def _first_upper(s: str) -> str:
    return s[:1].upper() + s[1:]


def template_instruction(rng: np.random.Generator, split: str = "train", category: str | None = None) -> Instruction:
    """A random instruction from the split's grammar only (for train: no model paraphrases, no written wordings)."""
    _check(split, category)
    return _from_grammar(rng, split_grammar(split), split, category or _pick(rng, CATEGORIES))


def _from_grammar(rng: np.random.Generator, grammar: Grammar, split: str, cat: str) -> Instruction:
    """A random instruction of category `cat` from `grammar`, its speeds drawn as the split draws them."""
    core = _pick(rng, expand(_pick(rng, grammar.cores[cat])))
    speed: float | None = REVERSE_SPEED if cat == "reverse" else None
    if cat == "velocity":
        written, speed = _speed(rng, split, grammar.units)
        core = core.replace("{speed}", written)
    text = core[1:] if core[0] in "=~" else _pick(rng, grammar.tones).format(c=core)
    if rng.random() < SITUATION_SHARE and core[0] != "~":
        text = f"{_pick(rng, grammar.situations)} {text if text.startswith('I ') else text[:1].lower() + text[1:]}"
    if rng.random() < FILLER_SHARE:
        text = f"{text} {_pick(rng, grammar.fillers)}"
    return Instruction(cat, _first_upper(text), speed)


@functools.cache
def paraphrase_pool() -> Mapping[str, tuple[Instruction, ...]]:
    """The model's paraphrases of train sentences by category, read once from PARAPHRASES_PATH."""
    try:
        data = json.loads(PARAPHRASES_PATH.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{PARAPHRASES_PATH} is missing: make it with `python -m agents.tasks.car.paraphrase` "
                          "or reinstall shakedown with its package data") from None
    pool: dict[str, list[Instruction]] = {cat: [] for cat in CATEGORIES}
    for item in data["paraphrases"]:
        pool[item["category"]].append(Instruction(item["category"], item["text"], item["target_speed"]))
    return MappingProxyType({cat: tuple(items) for cat, items in pool.items()})


@functools.cache
def sentence_grammar(path: Path, like: str) -> Grammar:
    """The sentences of a written file (WRITTEN_PATH, BLIND_PATH: {"wordings": {category: [...]}}) as whole-sentence
    cores, with the tones, situations, fillers and units of split `like`; a category without sentences has no
    cores."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: make it with `python -m agents.tasks.car.written` "
                          "or reinstall shakedown with its package data") from None
    cores = {cat: tuple("=" + t for t in data["wordings"].get(cat, ())) for cat in CATEGORIES}
    return dataclasses.replace(TRAIN_GRAMMAR if like == "train" else HELD_OUT_GRAMMAR, cores=cores)


def written_grammar() -> Grammar:
    """The written train wordings (WRITTEN_PATH) with the train split's tones, situations, fillers and units."""
    return sentence_grammar(WRITTEN_PATH, "train")


def split_grammar(split: str) -> Grammar:
    """The grammar a split's template draws come from (for train, its templates; see sample_instruction)."""
    _check(split, None)
    return {"train": TRAIN_GRAMMAR, "heldout": HELD_OUT_GRAMMAR}.get(split) or sentence_grammar(BLIND_PATH, "heldout")


def sample_instruction(rng: np.random.Generator, split: str = "train", category: str | None = None) -> Instruction:
    """A random instruction of a split (SPLITS; train: templates, the model's paraphrases and the written
    wordings), optionally of one category."""
    _check(split, category)
    cat = category or _pick(rng, CATEGORIES)
    if split == "train":
        # One draw picks the source, so the template draws below 1 - WRITTEN_SHARE are what they always were.
        draw = rng.random()
        if draw < PARAPHRASE_SHARE and (own := paraphrase_pool()[cat]):
            return _pick(rng, own)
        if draw >= 1 - WRITTEN_SHARE and (written := written_grammar()).cores[cat]:
            return _from_grammar(rng, written, split, cat)
    return template_instruction(rng, split, cat)


# -- reading -----------------------------------------------------------------------------------------------------


def _words(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """Any of `phrases` as whole words, any spacing between their words."""
    alts = sorted((r"\s+".join(map(re.escape, p.split())) for p in phrases), key=len, reverse=True)
    return re.compile(rf"(?<![\w-])(?:{'|'.join(alts)})(?![\w-])")


CATEGORY_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "centerline": ("centerline", "centreline", "center line", "centre line", "middle", "center", "centre", "centered",
                   "centred", "centering", "centring", "midline", "mid-line", "mid line", "equidistant",
                   "equally far", "same distance from", "wide berth", "away from the walls", "clear of the walls",
                   "off the walls", "central", "centrally", "midway", "halfway between", "midpoint", "equal distance",
                   "same gap", "split the difference"),
    "smooth": ("smooth", "smoothly", "smoother", "smoothness", "gentle", "gently", "gentler", "comfortable",
               "comfortably", "comfort", "comfy", "calm", "calmly", "relaxed", "take it easy", "easy on",
               "nice and easy", "easy does it", "glass of water", "cup of coffee", "motion sick", "feather", "fluid",
               "fluidly", "progressive", "progressively", "gradual", "gradually", "silky", "buttery", "soft hands"),
})
"""Words that ask for a centerline or a smooth drive (whole words, any case), unless a negation stands before them
in their clause ('I can't keep it smooth'). 'walls' stands for any side: barriers, kerbs, edges, boundaries."""
ROUGH_WORDS = ("harsh", "harshly", "hard", "jerky", "jerk", "jerks", "jerking", "abrupt", "abruptly", "sudden",
               "suddenly", "jolt", "jolts", "jolting", "stab", "yank", "lurch", "lurching", "snappy", "aggressive",
               "aggressively", "twitchy")
"""Words that ask for a smooth drive when negated in their clause ('no harsh acceleration', 'avoid jerky steering')."""
_SIDES = r"(?:walls?|barriers?|kerbs?|curbs?|edges?|boundar(?:y|ies)|sides?)"
# 'the walls' in CATEGORY_WORDS stands for 'the' or 'both' and any word of _SIDES.
_CATEGORY_AT = {cat: re.compile(_words(words).pattern.replace(r"the\s+walls", rf"(?:the\s+|both\s+)?{_SIDES}"))
                for cat, words in CATEGORY_WORDS.items()}
_ROUGH_AT = _words(ROUGH_WORDS)
_NEGATION_AT = _words(NEGATIONS)
_CLAUSE_END = re.compile(r"[,;:.!?()]|\b(?:and|but|so|then|just|or)\b")


def _negated(low: str, at: int) -> bool:
    """Whether a negation (safety.audit.claims.NEGATIONS) stands before `at` in its clause."""
    start = max((m.end() for m in _CLAUSE_END.finditer(low, 0, at)), default=0)
    return _NEGATION_AT.search(low, start, at) is not None


def _asked(low: str) -> dict[str, str]:
    """The categories the words of lower-cased text ask for, besides speeds and directions: {category: words}."""
    found = {cat: m.group(0) for cat, pat in _CATEGORY_AT.items()
             for m in pat.finditer(low) if not _negated(low, m.start())}
    if "smooth" not in found and (rough := [m.group(0) for m in _ROUGH_AT.finditer(low) if _negated(low, m.start())]):
        found["smooth"] = rough[0]
    return found


REVERSE_WORDS = ("roll back", "rolling back", "rear first", "tail first", "back it up", "back the car up",
                 "backing up", "back out", "rear end first", "back end first", "astern", "rearward", "rearwards")
"""Ways of saying 'reverse' beyond safety.audit.claims' own ('reverse', 'backwards', 'back up'): read as 'reverse',
so its negation rules ('no need to reverse') hold for them too."""
UNIT_SPELLINGS: Mapping[str, str] = MappingProxyType({
    r"kilomet(?:re|er)s?\s+(?:an|a|per)\s+hour|km\s+(?:an|a|per)\s+hour|km/hr|kmh|kmph": "km/h",
    r"miles?\s+(?:an|a)\s+hour|mi/h": "mph",
    r"met(?:re|er)s?\s+(?:a|each)\s+second|met(?:re|er)s?/s(?:ec(?:ond)?)?|m/second|m\s+per\s+s(?:ec(?:ond)?)?": "m/s",
})
"""Unit spellings the claims reader lacks, and the spelling it reads (patterns on lower-case text)."""
_UNIT_AT = re.compile("|".join(f"(?<![\\w/])(?:{p})(?![\\w/])" for p in UNIT_SPELLINGS))
_UNIT_OF = [(re.compile(f"^(?:{p})$"), u) for p, u in UNIT_SPELLINGS.items()]
_REVERSE_AT = _words(REVERSE_WORDS)
_ANY_UNIT = "|".join(sorted(map(re.escape, [*UNITS, *LENGTHS, *ACCELERATIONS]), key=len, reverse=True))
_BARE_NUMBER = re.compile(rf"(?<![\w.])(?:\d+(?:\.\d+)?|{'|'.join(sorted(WORDS, key=len, reverse=True))})(?![\w.])"
                          rf"(?!\s*(?:{_ANY_UNIT})(?![\w/]))")
"""A number without a unit ('drive at 2'), for the hint of the error message."""


def _lower(text: str) -> str:
    """Lower case, one space between words, straight quotes, the claims reader's unit spellings."""
    low = " ".join(str(text).split()).lower().replace("\u2019", "'")
    return _UNIT_AT.sub(lambda m: next(u for p, u in _UNIT_OF if p.match(m.group(0))), low)


def _claims(low: str) -> list[Claim]:
    """The speed and direction claims of lower-cased text (REVERSE_WORDS read as 'reverse')."""
    return [c for c in extract_claims(_REVERSE_AT.sub("reverse", low)) if c.kind in ("speed", "reverse", "forward")]


def written_speed(text: str) -> str | None:
    """The first speed the text asks to hold, as written (lower case, unit spelled as the claims reader reads it):
    '9 km/h' in 'Please go 9 km/h.'; None if it gives none."""
    return next((c.text for c in _claims(_lower(text)) if c.kind == "speed" and c.bound == "="), None)


def ending_speed(text: str) -> float | None:
    """The speed `text` ends with (digits or words; m/s, km/h or mph in any spelling parse_instruction reads), in m/s
    to 0.01 as parse_instruction keeps a target: 'Read: ten point zero seven mph' -> 4.5. None if it ends otherwise."""
    low = _lower(text).rstrip()
    speeds = [c for c in _claims(low) if c.kind == "speed" and c.value is not None]
    return round(float(speeds[-1].value), 2) if speeds and low.endswith(speeds[-1].text) else None


def frame(text: str) -> str:
    """The sentence frame of `text`: lower case, speeds (number and unit) blanked to SPEED, punctuation dropped.
    Two instructions that differ only in their speed share a frame."""
    low = _lower(text)
    for c in _claims(low):
        if c.kind == "speed":
            low = low.replace(c.text.lower(), " SPEED ")
    return " ".join(re.sub(r"[^\w/]+", " ", low).split())


def grammar_texts(grammar: Grammar) -> list[str]:
    """Every sentence a grammar's cores say, each word choice taken, the speed slot filled with 2 m/s."""
    return [c.lstrip("=~").replace("{speed}", "2 m/s") for cores in grammar.cores.values() for core in cores
            for c in expand(core)]


def _split_texts(split: str) -> list[str]:
    """Every sentence a split's grammar can say, each word choice taken, its speed slot filled (for train, the
    written wordings and the model's paraphrases too)."""
    texts = grammar_texts(split_grammar(split))
    if split == "train":
        texts += grammar_texts(written_grammar())
        texts += [i.text for items in paraphrase_pool().values() for i in items]
    return texts


@functools.cache
def split_cores(split: str) -> frozenset[str]:
    """The frames of every sentence a split says (_split_texts)."""
    return frozenset(map(frame, _split_texts(split)))


def held_out_cores() -> frozenset[str]:
    """The frames of every held-out core with each of its word choices."""
    return split_cores("heldout")


def in_family(text: str, split: str) -> bool:
    """Whether `text` says one of a split's sentences (any word choice, any speed), with words around it or not."""
    padded = f" {frame(text)} "
    return any(f" {core} " in padded for core in split_cores(split))


def in_held_out_family(text: str) -> bool:
    """Whether `text` says a held-out core (any word choice, any speed): training must never see such text."""
    return in_family(text, "heldout")


def _ambiguous(clean: str, found: dict[str, str]) -> ConfigError:
    said = ", ".join(f"{cat} ({why!r})" for cat, why in found.items())
    return ConfigError(f"ambiguous instruction {clean!r}: it asks for {said}; the car follows one of "
                       f"{list(CATEGORIES)} at a time: ask for one")


def parse_instruction(text: str) -> Instruction:
    """The Instruction a person's words ask for: its category from its words, its speed (digits or words, m/s,
    km/h or mph; kept in m/s to 0.01) from safety.audit.claims' speed reader. ConfigError, saying what to write,
    for text that asks for none of CATEGORIES, for two at once, or for a speed the car cannot hold."""
    clean = " ".join(str(text).split())
    low = _lower(clean)
    claims = _claims(low)
    found = _asked(low)
    speeds = [c for c in claims if c.kind == "speed" and c.bound == "="]
    directions = {c.kind: c.text for c in claims if c.kind != "speed"}
    if len(directions) > 1 or ("reverse" in directions and found):
        raise _ambiguous(clean, {**directions, **found})
    if "reverse" in directions:
        if wrong := [c.text for c in speeds if abs(abs(c.value) - abs(REVERSE_SPEED)) > 0.005]:
            raise ConfigError(f"instruction {clean!r} asks to reverse at {wrong[0]}: the reverse task drives at "
                              f"{abs(REVERSE_SPEED):g} m/s; leave the speed out or ask for {abs(REVERSE_SPEED):g} m/s")
        return Instruction("reverse", clean, REVERSE_SPEED)
    if speeds:
        values = sorted({round(float(c.value), 2) for c in speeds})
        if len(values) > 1 or found:
            raise _ambiguous(clean, {"velocity": " and ".join(c.text for c in speeds), **found})
        lo, hi = SPEED_RANGE
        if not lo <= values[0] <= hi:
            raise ConfigError(f"instruction {clean!r} asks for {speeds[0].text} = {values[0]:g} m/s; the car holds "
                              f"{lo:g} to {hi:g} m/s (to drive backwards, say 'reverse')")
        return Instruction("velocity", clean, values[0])
    if len(found) > 1:
        raise _ambiguous(clean, found)
    if found:
        return Instruction(next(iter(found)), clean, None)
    hint = ""
    if any(c.kind == "speed" for c in claims):
        hint = " It gives only a limit: say the speed to hold ('drive at 3 m/s')."
    elif _BARE_NUMBER.search(low):
        hint = " If it gives a speed, write its unit: m/s, km/h or mph ('drive at 2 m/s')."
    raise ConfigError(
        f"unknown instruction {clean!r}: it asks for none of {list(CATEGORIES)}.{hint} Write e.g. 'Stay in the "
        "middle of the track.', 'Drive at 2 m/s.' (or km/h, mph, in digits or words), 'Reverse the car.', "
        "'Drive smoothly.', or build an Instruction(category, text, target_speed)")


FUNCTION_WORDS = frozenset(("a", "an", "the", "to", "of", "and", "or", "on", "in", "at", "for", "from", "with", "by",
                            "as", "is", "be", "it", "its", "you", "your", "i", "me", "my", "we", "us", "so",
                            "this", "that", "all", "way", "please", "don", "t", "do", "not", "no", "are", "has",
                            "there", "car", "track", "SPEED"))
"""Words too common to make a phrase: a pair of adjacent words is a phrase only if neither is one of these (as
`frame` writes words: "don't" is "don t")."""


def _phrases(text: str) -> set[tuple[str, str]]:
    words = frame(text).split()
    return {(a, b) for a, b in zip(words, words[1:]) if a not in FUNCTION_WORDS and b not in FUNCTION_WORDS}


@functools.cache
def split_phrases(split: str) -> frozenset[tuple[str, str]]:
    """Every pair of adjacent content words a split says: in its sentences, tones, situations and fillers
    (held-out: ('wide', 'berth'), ('tail', 'first'))."""
    grammar = split_grammar(split)
    texts = _split_texts(split) + [t.replace("{c}", " ") for t in grammar.tones] + [*grammar.situations,
                                                                                   *grammar.fillers]
    return frozenset(p for t in texts for p in _phrases(t))


def shared_phrase(text: str, split: str) -> str | None:
    """The first phrase (two adjacent content words) `text` shares with a split, or None. Stricter than in_family,
    for sentences written outside our grammar: 'Go tail-first round the lap' says no held-out core but says its
    'tail first'."""
    shared = sorted(_phrases(text) & split_phrases(split))
    return " ".join(shared[0]) if shared else None


def held_out_phrase(text: str) -> str | None:
    """The first phrase `text` shares with the held-out split, or None."""
    return shared_phrase(text, "heldout")
