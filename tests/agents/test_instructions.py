"""Driving instructions as people write them: words and units read, train and held-out wordings kept apart,
every generated instruction read back to its own truth, unreadable text refused with what to write instead."""

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.tasks.car.instructions import (
    BLIND_PATH,
    CATEGORIES,
    HELD_OUT_GRAMMAR,
    HELD_OUT_PARAPHRASES,
    HELD_OUT_SPEEDS,
    PARAPHRASES_PATH,
    TRAIN_GRAMMAR,
    TRAIN_PARAPHRASES,
    TRAIN_SPEED_RANGE,
    WRITTEN_PATH,
    Instruction,
    expand,
    frame,
    grammar_texts,
    held_out_cores,
    held_out_phrase,
    in_family,
    in_held_out_family,
    number_words,
    paraphrase_pool,
    parse_instruction,
    sample_instruction,
    shared_phrase,
    template_instruction,
    written_grammar,
    written_speed,
)
from agents.tasks.car.metrics import thought_agreement
from agents.tasks.car.paraphrase import verdict
from agents.tasks.car.written import WrittenArgs, judge, written
from agents.training.sft_data import car_examples, car_thought
from safety.audit.claims import extract_claims
from twin.car.tracks import training_tracks
from twin.core.config import ConfigError


@pytest.mark.parametrize(("text", "speed"), [
    ("Drive at one point six meters per second.", 1.6),
    ("Go 9 km/h.", 2.5),
    ("5 mph, please.", 2.24),
    ("Hold two and a half metres per second.", 2.5),
    ("Three m/s, thanks.", 3.0),
    ("The track is slippery, so eighteen kph.", 5.0),
    ("Cruise at twenty-five kilometres per hour.", 6.94),
    ("go 10 kilometres an hour", 2.78),
    ("Keep 1.234 m/s", 1.23),
    ("Drive at 2 meters/second", 2.0),
    ("Drive at 4 m/s.", 4.0),
])
def test_speeds_in_words_and_units_are_read_in_metres_per_second(text, speed):
    assert parse_instruction(text) == Instruction("velocity", text, speed)


@pytest.mark.parametrize(("text", "category"), [
    ("stay away from the barriers", "centerline"),
    ("Keep clear of both kerbs.", "centerline"),
    ("No need to reverse; stay in the middle.", "centerline"),
    ("Avoid jerky steering and braking.", "smooth"),
    ("Take it nice and easy.", "smooth"),
    ("Drive gently, no harsh acceleration.", "smooth"),
    ("Put it in reverse and roll back.", "reverse"),
    ("Drive rear first, please.", "reverse"),
    ("Reverse at one metre per second.", "reverse"),
])
def test_categories_are_read_from_the_words(text, category):
    assert parse_instruction(text).category == category


@pytest.mark.parametrize(("text", "says"), [
    ("do a backflip", r"unknown instruction .*Write e\.g\. 'Stay in the middle"),
    ("", "unknown instruction"),
    ("drive at 2", "write its unit: m/s, km/h or mph"),
    ("keep it under 3 m/s", "only a limit: say the speed to hold"),
    ("Can't keep the ride smooth.", "unknown instruction"),
    ("Brake harshly.", "unknown instruction"),
    ("Drive at 2 m/s in the middle.", r"ambiguous .*velocity .*centerline .*ask for one"),
    ("Drive at 2 m/s, then 3 m/s.", r"ambiguous .*ask for one"),
    ("Reverse at 3 m/s.", "drives at 1 m/s; leave the speed out"),
    ("Go 40 km/h.", r"11\.11 m/s; the car holds 0\.2 to 8 m/s"),
])
def test_unreadable_text_is_refused_saying_what_to_write(text, says):
    with pytest.raises(ConfigError, match=says):
        parse_instruction(text)


def test_the_first_wordings_are_still_read():
    for table, speed in ((TRAIN_PARAPHRASES, 1.7), (HELD_OUT_PARAPHRASES, 2.9)):
        for category, templates in table.items():
            for template in templates:
                ins = parse_instruction(template.format(v=f"{speed:g}"))
                assert ins.category == category
                assert ins.target_speed == {"velocity": speed, "reverse": -1.0}.get(category)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), split=st.sampled_from(["train", "heldout"]),
       category=st.sampled_from([None, *CATEGORIES]))
def test_every_generated_instruction_reads_back_to_its_own_truth(seed, split, category):
    ins = sample_instruction(np.random.default_rng(seed), split, category)
    assert parse_instruction(ins.text) == ins
    assert category in (None, ins.category)
    assert ins.text == " ".join(ins.text.split()) and not ins.text[0].islower()


def _texts(split: str, n: int, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    return {sample_instruction(rng, split).text for _ in range(n)}


def test_train_and_held_out_share_no_frame_and_no_family():
    train, held = _texts("train", 4000, 1), _texts("heldout", 4000, 2)
    train_frames, held_frames = set(map(frame, train)), set(map(frame, held))
    assert len(train_frames) > 500 and len(held_frames) > 500  # many wordings, not a handful
    assert not train_frames & held_frames
    assert not [t for t in train if in_held_out_family(t)]
    assert all(in_held_out_family(t) for t in held)
    for part in ("tones", "situations", "fillers"):
        assert not set(getattr(TRAIN_GRAMMAR, part)) & set(getattr(HELD_OUT_GRAMMAR, part))
    train_cores = {frame(c.lstrip("=~").replace("{speed}", "2 m/s"))
                   for cores in TRAIN_GRAMMAR.cores.values() for core in cores for c in expand(core)}
    assert not train_cores & held_out_cores()


def test_speeds_of_each_split():
    rng = np.random.default_rng(3)
    train = [sample_instruction(rng, "train", "velocity") for _ in range(400)]
    held = [sample_instruction(rng, "heldout", "velocity") for _ in range(400)]
    lo, hi = TRAIN_SPEED_RANGE
    assert all(lo <= i.target_speed <= hi and min(abs(i.target_speed - h) for h in HELD_OUT_SPEEDS) >= 0.1
               for i in train)
    assert {i.target_speed for i in held} == set(HELD_OUT_SPEEDS)
    for split in (train, held):  # speeds in digits and in words, in several units
        written = [written_speed(i.text) for i in split]
        assert any(re.match(r"\d", w) for w in written) and any(re.match(r"[a-z]", w) for w in written)
        assert all(any(w.endswith(u) for w in written) for u in ("m/s", "km/h", "kph", "mph", "per second"))


def test_same_seed_same_instructions():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [sample_instruction(rng, split) for split in ("train", "heldout") * 40]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    with pytest.raises(ConfigError, match="must be one of"):
        sample_instruction(np.random.default_rng(0), "test")
    with pytest.raises(ConfigError, match="unknown instruction category"):
        template_instruction(np.random.default_rng(0), "train", "fly")


@settings(max_examples=200, deadline=None)
@given(whole=st.integers(0, 99), frac=st.sampled_from(["", "5", "25", "05", "8", "75"]), seed=st.integers(0, 2**32))
def test_number_words_are_read_back_by_the_claims_reader(whole, frac, seed):
    number = f"{whole}.{frac}" if frac else str(whole)
    (claim,) = extract_claims(f"Hold {number_words(number, np.random.default_rng(seed))} m/s.")
    assert claim.value == float(number)


def test_the_model_paraphrases_are_train_only_and_mean_what_they_are_stored_as():
    data = json.loads(PARAPHRASES_PATH.read_text())
    assert data["kept"] == len(data["paraphrases"]) <= data["generated"]
    pool = paraphrase_pool()
    assert sum(map(len, pool.values())) == data["kept"] > 0
    for ins in (i for items in pool.values() for i in items):
        assert parse_instruction(ins.text) == ins
        assert not in_held_out_family(ins.text)
    rng = np.random.default_rng(0)
    drawn = {sample_instruction(rng, "train").text for _ in range(600)}
    assert drawn & {i.text for items in pool.values() for i in items}


def test_paraphrase_verdicts():
    source = Instruction("velocity", "Drive at 2.5 m/s.", 2.5)
    assert verdict("Keep the car going at two and a half metres per second.", source, set()) == "kept"
    assert verdict("Keep the car going at 3 m/s.", source, set()) == "changed meaning"
    assert verdict("Lock in 2.5 m/s.", source, set()) == "says a held-out wording"
    assert verdict("Go fast.", source, set()) == "unreadable"
    assert verdict("Drive at 2.5 m/s!", source, set()) == "not new"


def test_the_expert_thought_states_the_target_it_read_in_metres_per_second():
    thought = car_thought("velocity", 1.6, {"v_max": 1.62}, written_speed("Drive at one point six meters per second."))
    assert thought == "one point six meters per second is 1.6 m/s. Target 1.6 m/s."
    assert car_thought("velocity", 2.0, {"v_max": 2.02}, "2 m/s") == "Target 2 m/s."
    velocity = [ex for ex in car_examples(16, seed=1, tracks=("oval",)) if ex.observation.privileged["category"] == "velocity"]
    assert velocity
    for ex in velocity:
        assert f"Target {ex.observation.privileged['target_speed']:g} m/s." in ex.target


def test_on_many_widths_the_centerline_answer_copies_the_half_width_and_keeps_the_expert_margin():
    """The thought states the prompt's half width, then the margin the expert computes from it, as a subtraction the
    decoder's calculator completes: the answer's margin is 0.18 m inside the half width on every track and width
    (the calculator's clip on the widest), and the thought agrees with the answer."""
    from agents.vlm.grammar import SUBTRACTION, subtracted_margin

    tracks = training_tracks((1.6, 2.4))
    examples = [ex for ex in car_examples(64, seed=3, tracks=tracks) if ex.observation.privileged["category"] == "centerline"]
    assert len({ex.observation.state["half_width"] for ex in examples}) >= 5
    for ex in examples:
        hw = ex.observation.state["half_width"]
        thought, action = ex.target.removeprefix("<think>").split("</think>\n")
        margin = json.loads(action)["track_safety_margin"]
        assert thought.startswith(f"Centerline on half width {hw:.2f} less 0.18 is {margin:g}: ")
        assert f"margin {margin:g} m" in thought
        assert margin == pytest.approx(min(1.0, hw - 0.18), abs=1e-9)  # hw - 0.185 rounded alike on every width
        cue = SUBTRACTION.search(thought).end()
        assert subtracted_margin("car", thought[:cue]) == f" {margin:g}"  # what the calculator will append
        assert thought_agreement(thought, json.loads(action)) == 1.0


def test_the_written_wordings_are_train_only_new_and_mean_their_category():
    data = json.loads(WRITTEN_PATH.read_text())
    kept = [(cat, t) for cat, texts in data["wordings"].items() for t in texts]
    assert data["kept"] == len(kept) and data["written"] == len(kept) + sum(map(len, data["dropped"].values()))
    assert all(texts for texts in data["wordings"].values())  # every category has some
    frames = [frame(t.replace("{speed}", "2 m/s")) for _, t in kept]
    assert len(set(frames)) == len(frames) and not set(frames) & {frame(t) for t in grammar_texts(TRAIN_GRAMMAR)}
    assert not [t for _, t in kept if in_held_out_family(t.replace("{speed}", "2 m/s")) or held_out_phrase(t)]
    # Drawn in the train split, with speeds in any train unit, read back to their truth; never in held-out.
    rng = np.random.default_rng(0)
    drawn = [sample_instruction(rng, "train") for _ in range(600)]
    from_written = [i for i in drawn if any(f in frame(i.text) for f in frames)]
    assert 0.15 < len(from_written) / len(drawn) < 0.45  # WRITTEN_SHARE of the draws, about
    assert all(parse_instruction(i.text) == i for i in from_written)
    held = {frame(sample_instruction(rng, "heldout").text) for _ in range(600)}
    assert not any(f in h for h in held for f in frames)


def test_the_blind_split_shares_no_sentence_and_no_phrase_with_train():
    data = json.loads(BLIND_PATH.read_text())
    assert data["split"] == "blind" and all(data["wordings"].values())
    kept = [t.replace("{speed}", "2 m/s") for texts in data["wordings"].values() for t in texts]
    assert data["kept"] == len(kept) and not [t for t in kept if in_family(t, "train") or shared_phrase(t, "train")]
    rng = np.random.default_rng(0)
    drawn = [sample_instruction(rng, "blind", cat) for cat in CATEGORIES for _ in range(50)]
    assert {i.category for i in drawn} == set(CATEGORIES)
    assert {i.target_speed for i in drawn if i.category == "velocity"} <= set(HELD_OUT_SPEEDS)  # held-out speeds
    assert all(any(frame(t) in frame(i.text) for t in kept) for i in drawn if i.category != "velocity")
    # The train draws never say a blind sentence.
    train = {frame(sample_instruction(rng, "train").text) for _ in range(2000)}
    assert not any(frame(t) in f for f in train for t in kept)


def test_written_verdicts_drop_what_the_other_split_says_and_what_cannot_be_read(tmp_path):
    assert held_out_phrase("Go tail-first round the lap.") == "tail first"
    assert held_out_phrase("Give the walls a wide berth.") == "wide berth"
    assert held_out_phrase("Stay in the middle of the track.") is None
    assert judge("Take the lap tail first.", "reverse", set()) == "shares a held-out phrase"
    assert judge("Hug the middle of the road.", "centerline", set()) == "kept"
    assert judge("Hug the middle of the road.", "centerline", {frame("Hug the middle of the road.")}) == "not new"
    assert judge("Do a backflip.", "smooth", set()) == "unreadable"
    assert judge("Stay in the middle.", "smooth", set()) == "changed meaning"
    assert judge("Hold it steady.", "velocity", set()) == "no single speed slot"
    # A blind (test) sentence need not be in the reader's words, but must stay apart from train.
    assert judge("Do it like a limo driver.", "smooth", set(), "blind") == "kept"
    assert judge("Please drive smoothly, thanks.", "smooth", set(), "blind") == "says a train wording"
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"writer": "a test", "centerline": ["Hug the middle of the road.", "Aim for the dead "
                               "centre."], "velocity": ["Peg it at {speed}."], "reverse": [], "smooth": ["Silky, please."]}))
    data = written(WrittenArgs(raw=raw, out=tmp_path / "written.json"))
    assert data["wordings"] == {"centerline": ["Hug the middle of the road."], "velocity": ["Peg it at {speed}."],
                                "reverse": [], "smooth": ["Silky, please."]}
    assert data["dropped"] == {"shares a held-out phrase": ["Aim for the dead centre."]}
    raw.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the writer's file"):
        written(WrittenArgs(raw=raw, out=tmp_path / "written.json"))
    raw.write_text(json.dumps({"centerline": []}))
    with pytest.raises(ConfigError, match="no list of sentences for"):
        written(WrittenArgs(raw=raw, out=tmp_path / "written.json"))
    with pytest.raises(ConfigError, match="must be one of"):
        WrittenArgs(raw=raw, split="heldout")
    assert written_grammar().cores["reverse"]  # the shipped file has every category
