"""The STL monitor: every operator against a brute-force reference written from the definitions, identities,
the sign of robustness, the scenario examples by hand, and every kind of bad formula or trace."""

import functools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scenarios.stl import WINDOW_SLACK, FormulaError, parse

SIGNALS = ("a", "b", "c")
STEPS = st.sampled_from([0.1, 0.25, 0.5, 1.0]) | st.floats(0.01, 2.0)  # round steps put samples exactly on window ends
WINDOWS = st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]) | st.floats(0.01, 5.0)
VALUES = st.sampled_from([0.0, 1.0, -1.0]) | st.floats(-10.0, 10.0)  # repeated values make ties and zero robustness


# ------------------------------------------------------------------- formulas as tuples: drawn, written out, evaluated

def _binary(names, sub):
    return st.tuples(st.sampled_from(names), sub, sub)


EXPRS = st.recursive(
    st.sampled_from(SIGNALS).map(lambda s: ("sig", s)) | VALUES.map(lambda v: ("num", v)),
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(["neg", "abs"]), sub),
        _binary(["+", "-", "*", "min", "max"], sub),
        # Division by expressions would make NaN and inf, which get their own tests.
        st.tuples(st.just("/"), sub, st.sampled_from([0.5, -2.0, 4.0]).map(lambda v: ("num", v)))),
    max_leaves=3)
ATOMS = st.tuples(st.sampled_from(["<", "<=", ">", ">="]), EXPRS, EXPRS)
FORMULAS = st.recursive(
    ATOMS,
    lambda sub: st.one_of(
        st.tuples(st.just("not"), sub),
        _binary(["and", "or", "implies", "until"], sub),
        st.tuples(st.sampled_from(["always", "eventually"]), sub),
        st.tuples(st.sampled_from(["always_within", "eventually_within"]), WINDOWS, sub)),
    max_leaves=5)


def write(node) -> str:
    """The formula's text, every operand in parentheses so the tuple's structure is the parse's."""
    kind, *args = node
    if kind == "sig":
        return args[0]
    if kind == "num":
        return f"({args[0]!r})"
    if kind == "neg":
        return f"(-{write(args[0])})"
    if kind == "not":
        return f"(not {write(args[0])})"
    if kind in ("+", "-", "*", "/", "<", "<=", ">", ">=", "and", "or"):
        return f"({write(args[0])} {kind} {write(args[1])})"
    if kind.endswith("_within"):
        return f"{kind}({args[0]!r}, {write(args[1])})"
    return f"{kind}({', '.join(write(a) for a in args)})"


def reference(node, signals, t) -> list[float]:
    """Robustness at every index, in plain Python, straight from the definitions in the module docstring."""
    n = len(t)
    slack = WINDOW_SLACK * max(1.0, abs(t[0]), abs(t[-1]))

    def value(e, i):
        kind, *args = e
        if kind == "sig":
            return float(signals[args[0]][i])
        if kind == "num":
            return args[0]
        x = [value(a, i) for a in args]
        return {"neg": lambda: -x[0], "abs": lambda: abs(x[0]), "min": lambda: min(x), "max": lambda: max(x),
                "+": lambda: x[0] + x[1], "-": lambda: x[0] - x[1], "*": lambda: x[0] * x[1], "/": lambda: x[0] / x[1]}[kind]()

    @functools.cache
    def rho(f, i):
        kind, *args = f
        if kind in (">", ">="):
            return value(args[0], i) - value(args[1], i)
        if kind in ("<", "<="):
            return value(args[1], i) - value(args[0], i)
        if kind == "not":
            return -rho(args[0], i)
        if kind == "and":
            return min(rho(args[0], i), rho(args[1], i))
        if kind == "or":
            return max(rho(args[0], i), rho(args[1], i))
        if kind == "implies":
            return max(-rho(args[0], i), rho(args[1], i))
        if kind == "always":
            return min(rho(args[0], j) for j in range(i, n))
        if kind == "eventually":
            return max(rho(args[0], j) for j in range(i, n))
        if kind in ("always_within", "eventually_within"):
            window = [rho(args[1], j) for j in range(i, n) if t[j] - t[i] <= args[0] + slack]
            return min(window) if kind == "always_within" else max(window)
        assert kind == "until"
        return max(min(rho(args[1], j), min((rho(args[0], k) for k in range(i, j)), default=math.inf)) for j in range(i, n))

    return [rho(node, i) for i in range(n)]


@st.composite
def traces(draw, max_samples: int = 10):
    """Signals a, b, c and times: uniform steps (scipy's running filters) or uneven ones (the sparse table)."""
    n = draw(st.integers(1, max_samples))
    t0 = draw(st.sampled_from([0.0, -3.0, 12.5]))
    if draw(st.booleans()):
        t = t0 + draw(STEPS) * np.arange(n)
    else:
        t = t0 + np.concatenate(([0.0], np.cumsum(draw(hnp.arrays(np.float64, n - 1, elements=STEPS)))))
    return dict(zip(SIGNALS, draw(hnp.arrays(np.float64, (len(SIGNALS), n), elements=VALUES)))), t


# ------------------------------------------------------------------- semantics against the reference

@settings(max_examples=250, deadline=None)
@given(formula=FORMULAS, trace=traces())
def test_random_nested_formulas_match_the_reference(formula, trace):
    signals, t = trace
    parsed = parse(write(formula), known_signals=SIGNALS)
    rho = parsed.robustness_trace(signals, t)
    assert rho.dtype == np.float64 and rho.shape == t.shape
    np.testing.assert_array_equal(rho, reference(formula, signals, t))
    assert parsed.robustness(signals, t) == rho[0]
    assert 0 <= parsed.decided_at(signals, t) < len(t)


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(["always", "eventually", "always_within", "eventually_within", "until", "implies"]),
       window=WINDOWS, trace=traces(max_samples=50))
def test_each_temporal_operator_on_longer_traces_matches_the_reference(kind, window, trace):
    # Longer traces reach deeper sparse-table levels and wider running filters than the nested test's.
    signals, t = trace
    f, g = (">", ("sig", "a"), ("num", 0.0)), ("<", ("sig", "b"), ("sig", "c"))
    node = {"always_within": (kind, window, f), "eventually_within": (kind, window, f),
            "until": (kind, f, g), "implies": (kind, f, g)}.get(kind, (kind, f))
    np.testing.assert_array_equal(parse(write(node)).robustness_trace(signals, t), reference(node, signals, t))


def test_a_sample_exactly_window_seconds_later_is_inside_despite_rounding():
    t = np.arange(30) * 0.1  # t[6] - t[1] == 0.5000000000000001
    x = np.ones(30)
    x[6] = -1.0
    rho = parse("always_within(0.5, x > 0)").robustness_trace({"x": x}, t)
    assert rho[1] == -1.0 and rho[0] == 1.0  # t[6] - t[0] is 0.6: outside
    uneven = t + np.where(np.arange(30) == 20, 0.01, 0.0)  # the sparse-table path
    assert parse("always_within(0.5, x > 0)").robustness_trace({"x": x}, uneven)[1] == -1.0


def test_window_ends_follow_the_definition_where_rounding_makes_searchsorted_disagree():
    # The monitor finds window ends by t[j] <= t[i] + reach; the definition is t[j] - t[i] <= reach. Float rounding
    # makes them disagree both ways for samples right at the end: find such samples (all times < 1 s, so the slack
    # is WINDOW_SLACK itself) and check those windows against the reference.
    window = 0.3
    reach = window + WINDOW_SLACK
    cases: dict[bool, list] = {True: [], False: []}
    for ti in np.linspace(0.01, 0.5, 2000):
        end = ti + reach
        for tj in (np.nextafter(end, 0.0), end, np.nextafter(end, 1.0)):
            inside = tj - ti <= reach
            if inside != (tj <= end):
                cases[inside].append((ti, tj))
    assert cases[True] and cases[False]
    node = ("always_within", window, (">", ("sig", "a"), ("num", 0.0)))
    signals = {"a": np.array([1.0, 1.0, -1.0])}
    for ti, tj in cases[True][:30] + cases[False][:30]:
        t = np.array([0.0, ti, tj])
        np.testing.assert_array_equal(parse(write(node)).robustness_trace(signals, t), reference(node, signals, t))


# ------------------------------------------------------------------- identities and signs

@settings(max_examples=100, deadline=None)
@given(f=FORMULAS, g=FORMULAS, window=WINDOWS, trace=traces())
def test_identities(f, g, window, trace):
    signals, t = trace
    F, G = write(f), write(g)

    def rho(text):
        return parse(text).robustness_trace(signals, t)

    np.testing.assert_array_equal(rho(f"always({F})"), -rho(f"eventually(not {F})"))
    np.testing.assert_array_equal(rho(f"always_within({window!r}, {F})"), -rho(f"eventually_within({window!r}, not {F})"))
    np.testing.assert_array_equal(rho(f"not not {F}"), rho(F))
    np.testing.assert_array_equal(rho(f"not ({F} and {G})"), rho(f"(not {F}) or (not {G})"))
    np.testing.assert_array_equal(rho(f"not ({F} or {G})"), rho(f"(not {F}) and (not {G})"))
    np.testing.assert_array_equal(rho(f"implies({F}, {G})"), rho(f"(not {F}) or {G}"))
    until = rho(f"until({F}, {G})")
    assert np.all(until <= rho(f"eventually({G})")) and np.all(until >= rho(G))


@settings(max_examples=100, deadline=None)
@given(trace=traces(max_samples=30), pick=st.integers(0, 29), offset=st.sampled_from([0.0, 0.5, -0.5]))
def test_always_is_negative_exactly_when_some_sample_violates(trace, pick, offset):
    signals, t = trace
    x = signals["a"]
    c = float(x[pick % len(x)] + offset)  # thresholds at a sample's value give robustness exactly 0
    rho = parse(f"always(a > {c!r})").robustness(signals, t)
    assert (rho < 0) == bool(np.any(x < c))
    assert (rho > 0) == bool(np.all(x > c))


# ------------------------------------------------------------------- when the verdict was decided

@settings(max_examples=100, deadline=None)
@given(f=FORMULAS, g=FORMULAS, window=WINDOWS, trace=traces())
def test_decided_at_points_at_the_sample_that_sets_the_robustness(f, g, window, trace):
    signals, t = trace
    F, G = write(f), write(g)
    inner, other = parse(F).robustness_trace(signals, t), parse(G).robustness_trace(signals, t)

    def check(text):
        formula = parse(text)
        return formula.robustness(signals, t), formula.decided_at(signals, t)

    rho, at = check(f"always({F})")
    assert at == int(np.argmin(inner)) and inner[at] == rho
    rho, at = check(f"eventually({F})")
    assert at == int(np.argmax(inner)) and inner[at] == rho
    rho, at = check(f"always_within({window!r}, {F})")
    assert inner[at] == rho and t[at] - t[0] <= window + WINDOW_SLACK * max(1.0, abs(t[0]), abs(t[-1]))
    rho, at = check(f"until({F}, {G})")
    assert rho in (inner[at], other[at]) and min(other[at:].max(), inner[:at].min(initial=np.inf)) >= rho
    # and/or: the child that sets the min/max decides (the first one on ties).
    lower = F if inner.min() <= other.min() else G
    assert check(f"always({F}) and always({G})")[1] == parse(f"always({lower})").decided_at(signals, t)
    higher = F if inner.max() >= other.max() else G
    assert check(f"eventually({F}) or eventually({G})")[1] == parse(f"eventually({higher})").decided_at(signals, t)
    assert check(f"not always({F})")[1] == int(np.argmin(inner))
    assert check("a > b")[1] == 0


# ------------------------------------------------------------------- the scenario files' examples, by hand

T = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
TRACE = {
    "clearance": np.array([0.3, 0.2, 0.1, 0.08, 0.25]),
    "speed": np.array([1.0, 2.0, 3.5, 0.1, 0.0]),
    "zone_limit": np.full(5, 3.0),
    "progress": np.array([0.0, 4.0, 8.0, 11.0, 12.0]),
    "separation": np.array([5.0, 4.0, 3.0, 2.5, 2.8]),
    "iso_min": np.full(5, 2.0),
    "braking": np.array([0.0, 0.0, 1.0, 0.0, 0.0]),
    "s": np.array([0.0, 10.0, 19.0, 25.0, 30.0]),
    "d": np.array([0.1, -0.3, 0.35, -0.5, 0.2]),
    "crashed": np.zeros(5),
}


@pytest.mark.parametrize("text, robustness, decided_at", [
    ("always(clearance > 0.05)", 0.08 - 0.05, 3),
    ("always(speed <= zone_limit + 0.1)", 3.1 - 3.5, 2),
    ("eventually_within(5, progress > 10)", 12.0 - 10.0, 4),
    ("always(separation >= iso_min)", 2.5 - 2.0, 3),
    # Only index 2 brakes; within 1 s of it speed drops to 0.1 then 0.0: max(-(1 - 0.5), 0.2 - 0.0).
    ("always(implies(braking > 0.5, eventually_within(1.0, speed < 0.2)))", 0.2, 2),
    # s first exceeds 20 at index 3, but speed broke 3 before that at index 2 (3 - 3.5).
    ("until(speed < 3, s > 20)", -0.5, 2),
    # |d| reaches 0.5 at index 3 within the first 2 s; never crashed: min(0.4 - 0.5, -(0 - 0.5)).
    ("always_within(2, abs(d) < 0.4) and not crashed > 0.5", -0.1, 3),
])
def test_scenario_examples_by_hand(text, robustness, decided_at):
    formula = parse(text, known_signals=TRACE)
    assert formula.robustness(TRACE, T) == pytest.approx(robustness, abs=1e-12)
    assert formula.decided_at(TRACE, T) == decided_at


def test_formula_value_object():
    formula = parse("  always(speed <= zone_limit + 0.1)\n")
    assert formula.text == str(formula) == "always(speed <= zone_limit + 0.1)"
    assert formula.signals == frozenset({"speed", "zone_limit"})
    copy = pickle.loads(pickle.dumps(formula))  # formulas travel to worker processes
    assert copy == formula and copy.robustness(TRACE, T) == formula.robustness(TRACE, T)
    assert parse("1 > 0").robustness_trace({}, T).tolist() == [1.0] * 5  # no signals: a constant
    assert parse("eventually_within(0.1, speed > 3)").robustness_trace(TRACE, T).tolist() == [-2.0, -1.0, 0.5, -2.9, -3.0]


# ------------------------------------------------------------------- bad formulas

@pytest.mark.parametrize("text, fragments", [
    ("always(x == 1)", ["'=='", "only <, <=, >, >=", "abs(x - c)", "column 7"]),
    ("always(x != 1)", ["'!='", "only <, <=, >, >="]),
    ("always(0 < x < 1)", ["chains comparisons", "'0 < x < 1'", "a < x and x < b", "column 7"]),
    ("always(car.speed > 1)", ["attribute access 'car.speed'", "column 7"]),
    ("np.abs(x) > 1", ["'np.abs'", "known functions"]),
    ("always(x[0] > 1)", ["subscript 'x[0]'"]),
    ("always(x > 'fast')", ["constant \"'fast'\"", "not a finite number", "column 11"]),
    ("always(x > True)", ["'True'", "not a finite number"]),
    ("always((lambda: x)() > 0)", ["lambda"]),
    ("always(sqrt(x) > 1)", ["unknown function 'sqrt'", "known: abs, always", "column 7"]),
    ("always(x > 0, y > 0)", ["'always' with 2 argument(s), it takes 1: always(f)"]),
    ("min(x) > 0", ["'min' with 1 argument(s), it takes 2"]),
    ("until(x > 0) ", ["'until' with 1 argument(s)"]),
    ("always(f=x > 0)", ["keyword"]),
    ("always_within(0, x > 0)", ["window '0'", "positive number of seconds", "column 14"]),
    ("eventually_within(-1.5, x > 0)", ["window '-1.5'", "positive"]),
    ("always_within(T, x > 0)", ["window 'T'", "literal"]),
    ("always_within(1e999, x > 0)", ["window '1e999'"]),
    ("crashed", ["arithmetic expression 'crashed' as a formula", "'crashed < 0.5'"]),
    ("always(speed - 1)", ["arithmetic expression 'speed - 1'", "'speed - 1 < 0.5'", "column 7"]),
    ("not crashed", ["'crashed' as a formula"]),
    ("(x > 0) + 1 > 0", ["the formula 'x > 0' in '+'", "not"]),
    ("-(x > 0)", ["the formula 'x > 0'"]),
    ("always > 0", ["names the function 'always' without calling it"]),
    ("x ** 2 > 1", ["operator '**'"]),
    ("x > 1 if y > 0 else x > 2", ["conditional expression"]),
    ("always(x >)", ["not valid syntax", "column 10"]),
    ("always(x > 0", ["not valid syntax", "never closed"]),
    ("", ["empty"]),
])
def test_bad_formulas_are_refused_with_a_useful_message(text, fragments):
    with pytest.raises(FormulaError) as caught:
        parse(text)
    message = str(caught.value)
    for fragment in fragments + ([repr(text.strip()), "allowed:"] if text.strip() else []):
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize("text", ["not " * 3000 + "x > 0", "always(" * 3000 + "x > 0" + ")" * 3000, "x > 0\x00"])
def test_pathological_texts_are_refused_too(text):
    with pytest.raises(FormulaError, match="nested too deeply|cannot be read|not valid syntax"):
        parse(text)


def test_unknown_signals_are_refused_when_the_scenario_lists_its_signals():
    with pytest.raises(FormulaError, match=r"unknown signal\(s\) 'spd'.*column 7(.|\n)*known signals: clearance, speed$"):
        parse("always(spd > 1 and speed > 0)", known_signals=["speed", "clearance"])
    assert parse("always(speed > 1)", known_signals={"speed"}).signals == {"speed"}


def test_caret_and_line_of_a_multiline_formula():
    message = str(pytest.raises(FormulaError, parse, "always(\n  x.y > 0)").value)
    assert "line 2, column 2" in message and "\n      x.y > 0)\n      ^\n" in message


# ------------------------------------------------------------------- bad traces

@pytest.mark.parametrize("signals, t, fragment", [
    ({"a": np.ones(5)}, T, "needs signal(s) 'b', missing from the trace (it has: a)"),
    ({"a": np.ones(4), "b": np.ones(5)}, T, "'a' has shape (4,), but t has 5 samples"),
    ({"a": np.ones(5), "b": np.ones(5)}, T[::-1], "strictly increasing"),
    ({"a": np.ones(5), "b": np.ones(5)}, np.array([0.0, 1.0, 1.0, 2.0, 3.0]), "strictly increasing"),
    ({"a": np.ones(5), "b": np.ones(5)}, np.array([0.0, 1.0, 2.0, 3.0, np.nan]), "finite"),
    ({"a": np.ones(0), "b": np.ones(0)}, np.ones(0), "non-empty"),
    ({"a": np.array([1.0, 1.0, np.nan, 1.0, 1.0]), "b": np.ones(5)}, T, "'a > b' is NaN at time index 2 (t=1)"),
    ({"a": np.array(["x"] * 5), "b": np.ones(5)}, T, "'a' is not numeric"),
])
def test_bad_traces_are_refused(signals, t, fragment):
    with pytest.raises(FormulaError) as caught:
        parse("always(a > b)").robustness_trace(signals, t)
    assert fragment in str(caught.value) and "'always(a > b)'" in str(caught.value)


def test_infinities_are_robustness_but_undefined_arithmetic_is_an_error():
    big = {"sep": np.array([np.inf, 3.0, np.inf]), "z": np.zeros(3)}
    t = np.arange(3.0)
    assert parse("always(sep > 2)").robustness_trace(big, t).tolist() == [1.0, 1.0, np.inf]
    assert parse("always(1 / z > 2)").robustness(big, t) == np.inf  # no warning either (pytest -W error would fail)
    with pytest.raises(FormulaError, match="'z / z > 0' is NaN at time index 0"):
        parse("always(z / z > 0)").robustness(big, t)
    assert parse("always(a > 0)").robustness({"a": np.ones(3), "unused": None}, t) == 1.0  # extra signals are ignored
