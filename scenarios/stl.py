"""Signal Temporal Logic monitors: parse a scenario's formula, compute its robustness over a recorded trace.

Scenario files state what an episode must satisfy as STL formulas over named signals, for example
``always(clearance > 0.05)`` or ``always(implies(braking > 0.5, eventually_within(1.0, speed < 0.2)))``.
`parse` turns the text into a `Formula`; `Formula.robustness_trace` evaluates it over a discrete-time,
finite trace (one float array per signal, sampled at strictly increasing times ``t`` in seconds).

Why our own evaluator: rtamt 0.4.10 pins antlr4 4.7 (clashes with other tools and needs a source build)
and imports with a DeprecationWarning, an error under ``-W error``. The offline discrete-time semantics
needed here are a couple of hundred lines of numpy; tests/scenarios/test_stl.py checks every operator
against a brute-force reference written from the definitions below.

Grammar (Python syntax, read with `ast`; nothing outside this whitelist is accepted):
arithmetic ``name``, numbers, ``-x``, ``x + y``, ``x - y``, ``x * y``, ``x / y``, ``abs(x)``, ``min(a, b)``,
``max(a, b)``; formulas ``a < b``, ``a <= b``, ``a > b``, ``a >= b`` (one operator, no chains), ``not f``,
``f and g``, ``f or g``, ``implies(f, g)``, ``always(f)``, ``eventually(f)``, ``always_within(T, f)``,
``eventually_within(T, f)``, ``until(f, g)`` with ``T`` a positive number of seconds written as a literal.

Quantitative semantics, rho(f)(i) at time index i (standard STL robustness):
``a > b`` and ``a >= b``: a - b; ``a < b`` and ``a <= b``: b - a (so strict and non-strict coincide);
``not f``: -rho(f); ``and``: min; ``or``: max; ``implies(f, g)``: max(-rho(f), rho(g));
``always(f)(i)`` = min over j >= i of rho(f)(j); ``eventually``: the max;
``always_within(T, f)(i)`` = min over j >= i with t[j] - t[i] <= T (+ WINDOW_SLACK, below); ``eventually_within``: the max;
``until(f, g)(i)`` = max over j >= i of min(rho(g)(j), min over i <= k < j of rho(f)(k)), the inner min being +inf for j = i.
Windows are cut at the end of the trace (the trace is all there is).

Verdicts: f holds at i when rho > 0 and is violated when rho < 0. rho == 0 is the boundary (e.g. clearance exactly
at its limit): no violation happened, so a monitor counts it as not failed, i.e. *failed iff rho < 0*.
Robustness may be +-inf (e.g. a separation of inf when nobody is near); NaN never is: a comparison that comes out
NaN (a NaN sample, 0/0, inf - inf) raises FormulaError naming it and the time index.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from collections.abc import Collection, Mapping

import numpy as np
from scipy import ndimage

WINDOW_SLACK = 1e-9
"""Window ends reach this much past T, relative to max(1, |t[0]|, |t[-1]|): timestamps built as k * dt carry
rounding noise (with t = np.arange(n) * 0.1, t[6] - t[1] is 0.5000000000000001), and a sample T seconds on must
count as within T."""

ALLOWED = ("allowed: signal names, numbers, + - * /, abs(x), min(a, b), max(a, b), one comparison (<, <=, >, >=) "
           "between arithmetic expressions, not, and, or, implies(f, g), always(f), eventually(f), always_within(T, f), "
           "eventually_within(T, f), until(f, g), with T a positive number of seconds")

_ARITH_FUNCS = {"abs": 1, "min": 2, "max": 2}
_FORMULA_FUNCS = {"implies": 2, "always": 1, "eventually": 1, "always_within": 2, "eventually_within": 2, "until": 2}
_USAGE = {"abs": "abs(x)", "min": "min(a, b)", "max": "max(a, b)", "implies": "implies(f, g)", "always": "always(f)",
          "eventually": "eventually(f)", "always_within": "always_within(T, f)",
          "eventually_within": "eventually_within(T, f)", "until": "until(f, g)"}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_NUMPY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "neg": np.negative,
          "abs": np.abs, "min": np.minimum, "max": np.maximum}
_GREATER = {ast.Gt: True, ast.GtE: True, ast.Lt: False, ast.LtE: False}
# What to call the Python constructs we refuse, so the message names them the way a formula author would.
_CONSTRUCTS = {ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
               ast.IfExp: "conditional expression", ast.NamedExpr: "assignment expression", ast.Starred: "starred argument",
               ast.JoinedStr: "f-string", ast.List: "list", ast.Tuple: "tuple", ast.Set: "set", ast.Dict: "dict",
               ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
               ast.GeneratorExp: "generator expression", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
               ast.Slice: "slice"}


class FormulaError(ValueError):
    """A formula that cannot be parsed, or a trace it cannot be evaluated on; the message says what and how to fix it."""


# ---------------------------------------------------------------------------------------------------- evaluation


class _Trace:
    """One evaluation's inputs, checked once, and its window ends (shared by every window of the same length)."""

    __slots__ = ("text", "signals", "t", "n", "_ends")

    def __init__(self, formula: Formula, signals: Mapping[str, np.ndarray], t: np.ndarray) -> None:
        self.text = text = formula.text
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 1 or len(t) == 0:
            raise FormulaError(f"formula {text!r}: t must be a non-empty 1-D array of times, got shape {t.shape}")
        if not (np.isfinite(t[0]) and np.isfinite(t[-1]) and (t[1:] > t[:-1]).all()):
            raise FormulaError(f"formula {text!r}: t must be finite and strictly increasing (sort the samples, drop repeats)")
        missing = sorted(formula.signals - signals.keys())
        if missing:
            raise FormulaError(f"formula {text!r} needs signal(s) {', '.join(map(repr, missing))}, missing from the trace "
                               f"(it has: {', '.join(sorted(signals)) or 'none'}); record them or change the formula")
        self.signals: dict[str, np.ndarray] = {}
        for name in formula.signals:
            try:
                values = np.asarray(signals[name], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise FormulaError(f"formula {text!r}: signal {name!r} is not numeric ({exc})") from exc
            if values.shape != t.shape:
                raise FormulaError(f"formula {text!r}: signal {name!r} has shape {values.shape}, but t has {len(t)} samples; "
                                   "every signal needs one value per time (np.full(len(t), c) for a constant)")
            self.signals[name] = values
        self.t = t
        self.n = len(t)
        self._ends: dict[float, np.ndarray] = {}

    def ends(self, window: float) -> np.ndarray:
        """end[i] = the last index j with t[j] - t[i] <= window + slack (>= i)."""
        if window not in self._ends:
            t = self.t
            reach = window + WINDOW_SLACK * max(1.0, abs(t[0]), abs(t[-1]))
            end = np.searchsorted(t, t + reach, side="right") - 1
            # searchsorted tests t[j] <= t[i] + reach, which rounds differently from t[j] - t[i] <= reach:
            # step each end to the exact boundary (at most a sample or two; differences are monotone in j).
            while (over := t[end] - t > reach).any():
                end[over] -= 1
            last = self.n - 1
            while (under := (end < last) & (t[np.minimum(end + 1, last)] - t <= reach)).any():
                end[under] += 1
            self._ends[window] = end
        return self._ends[window]


def _window_reduce(x: np.ndarray, end: np.ndarray, is_min: bool) -> np.ndarray:
    """out[i] = min (or max) of x[i..end[i]], for non-decreasing end with end[i] >= i."""
    n = len(x)
    idx = np.arange(n)
    w = int(end[0])
    if np.array_equal(end, np.minimum(idx + w, n - 1)):
        # The same number of samples in every window (uniform dt): scipy's running filter, O(n) in C. The 'nearest'
        # padding past the end repeats x[-1], which every cut window holds anyway.
        running = ndimage.minimum_filter1d if is_min else ndimage.maximum_filter1d
        return running(x, size=w + 1, origin=-((w + 1) // 2), mode="nearest")
    # Non-uniform dt: a sparse table (level k holds the reduction over 2**k samples from each index), then every
    # window is covered by two overlapping power-of-two blocks. O(n log n) numpy work, O(1) per query.
    op = np.minimum if is_min else np.maximum
    level = np.frexp(end - idx + 1)[1] - 1  # floor(log2(window length)), exact for integers
    table = np.empty((int(level.max()) + 1, n))
    table[0] = x
    for k in range(1, len(table)):
        half, m = 1 << (k - 1), n - (1 << k) + 1
        op(table[k - 1, :m], table[k - 1, half:half + m], out=table[k, :m])
    return op(table[level, idx], table[level, end - (1 << level) + 1])


def _until(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """until(f, g) from the recursion U(i) = max(g(i), min(f(i), U(i+1))), U(n) = -inf, as a parallel suffix scan.

    Each step u -> max(g_i, min(f_i, u)) is the clamp clip(u, g_i, max(f_i, g_i)); clamps compose into clamps, so
    log2(n) doubling steps (each composing every clamp with the one s samples later) give every suffix
    composition, and U(i) is that composition applied to -inf: its lower bound. Vectorised instead of an O(n)
    Python loop, which costs ~1 ms at 5,000 samples.
    """
    lo, hi = g.copy(), np.maximum(f, g)
    s = 1
    while s < len(lo):
        outer_lo, outer_hi = lo[:-s], hi[:-s]
        new_lo = np.minimum(np.maximum(lo[s:], outer_lo), outer_hi)
        new_hi = np.minimum(np.maximum(hi[s:], outer_lo), outer_hi)
        lo[:-s], hi[:-s] = new_lo, new_hi
        s *= 2
    return lo


@dataclasses.dataclass(frozen=True)
class _Signal:
    name: str

    def values(self, tr: _Trace) -> np.ndarray | float:
        return tr.signals[self.name]


@dataclasses.dataclass(frozen=True)
class _Const:
    value: float

    def values(self, tr: _Trace) -> np.ndarray | float:
        return self.value


@dataclasses.dataclass(frozen=True)
class _Apply:
    """An arithmetic operator or function (a key of _NUMPY) applied to arithmetic operands."""

    op: str
    args: tuple

    def values(self, tr: _Trace) -> np.ndarray | float:
        return _NUMPY[self.op](*(a.values(tr) for a in self.args))


@dataclasses.dataclass(frozen=True)
class _Compare:
    source: str
    greater: bool
    strict: bool
    """'>' or '<' (at the boundary, robustness 0, it does not hold); '>=' or '<=' (it does)."""
    left: object
    right: object

    def rho(self, tr: _Trace) -> np.ndarray:
        a, b = self.left.values(tr), self.right.values(tr)
        d = np.subtract(a, b) if self.greater else np.subtract(b, a)
        if np.ndim(d) == 0:  # numbers only, e.g. '1 > 0'
            d = np.full(tr.n, float(d))
        if np.isnan(d).any():
            i = int(np.argmax(np.isnan(d)))
            raise FormulaError(f"formula {tr.text!r}: comparison {self.source!r} is NaN at time index {i} (t={tr.t[i]:g}): "
                               "a NaN sample or an undefined operation (0/0, inf - inf, 0 * inf); clean the trace or "
                               "guard the arithmetic")
        return d

    def decided(self, tr: _Trace) -> int:
        return 0

    def holds(self, tr: _Trace) -> np.ndarray:
        d = self.rho(tr)
        return d > 0 if self.strict else d >= 0


@dataclasses.dataclass(frozen=True)
class _Not:
    child: object

    def rho(self, tr: _Trace) -> np.ndarray:
        return -self.child.rho(tr)

    def holds(self, tr: _Trace) -> np.ndarray:
        return ~self.child.holds(tr)

    def decided(self, tr: _Trace) -> int:
        return self.child.decided(tr)


@dataclasses.dataclass(frozen=True)
class _Junction:
    """'and' (the min of its children) or 'or' (the max)."""

    is_and: bool
    children: tuple

    def rho(self, tr: _Trace) -> np.ndarray:
        op = np.minimum if self.is_and else np.maximum
        out = self.children[0].rho(tr)
        for child in self.children[1:]:
            out = op(out, child.rho(tr))
        return out

    def holds(self, tr: _Trace) -> np.ndarray:
        op = np.logical_and if self.is_and else np.logical_or
        out = self.children[0].holds(tr)
        for child in self.children[1:]:
            out = op(out, child.holds(tr))
        return out

    def decided(self, tr: _Trace) -> int:
        at_zero = [child.rho(tr)[0] for child in self.children]
        pick = int(np.argmin(at_zero) if self.is_and else np.argmax(at_zero))
        return self.children[pick].decided(tr)


@dataclasses.dataclass(frozen=True)
class _Implies:
    premise: object
    conclusion: object

    def rho(self, tr: _Trace) -> np.ndarray:
        return np.maximum(-self.premise.rho(tr), self.conclusion.rho(tr))

    def holds(self, tr: _Trace) -> np.ndarray:
        return ~self.premise.holds(tr) | self.conclusion.holds(tr)

    def decided(self, tr: _Trace) -> int:
        if -self.premise.rho(tr)[0] >= self.conclusion.rho(tr)[0]:
            return self.premise.decided(tr)
        return self.conclusion.decided(tr)


@dataclasses.dataclass(frozen=True)
class _Temporal:
    """always (a min over the future) or eventually (a max), over the rest of the trace or a window of seconds."""

    is_always: bool
    window: float | None
    child: object

    def rho(self, tr: _Trace) -> np.ndarray:
        inner = self.child.rho(tr)
        if self.window is not None:
            return _window_reduce(inner, tr.ends(self.window), self.is_always)
        acc = np.minimum.accumulate if self.is_always else np.maximum.accumulate
        return acc(inner[::-1])[::-1]

    def holds(self, tr: _Trace) -> np.ndarray:
        return self.rho(tr) > 0  # a temporal formula at robustness 0 counts as not holding

    def decided(self, tr: _Trace) -> int:
        inner = self.child.rho(tr)
        if self.window is not None:
            inner = inner[:tr.ends(self.window)[0] + 1]
        return int(np.argmin(inner) if self.is_always else np.argmax(inner))


@dataclasses.dataclass(frozen=True)
class _Until:
    hold: object
    reach: object

    def rho(self, tr: _Trace) -> np.ndarray:
        return _until(self.hold.rho(tr), self.reach.rho(tr))

    def holds(self, tr: _Trace) -> np.ndarray:
        return self.rho(tr) > 0

    def decided(self, tr: _Trace) -> int:
        # The witness j* maximising min(g(j), min f[0:j]); it is decided by g at j*, or by f's minimum before j*.
        f, g = self.hold.rho(tr), self.reach.rho(tr)
        before = np.concatenate(([np.inf], np.minimum.accumulate(f)[:-1]))
        j = int(np.argmax(np.minimum(g, before)))
        return j if g[j] <= before[j] else int(np.argmin(f[:j]))


# ---------------------------------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class Formula:
    """A parsed STL formula; build it with `parse`. Evaluation methods take a trace: signals by name, and times t."""

    text: str
    """The formula as written (surrounding whitespace removed)."""
    signals: frozenset[str]
    """The names of the signals it reads."""
    _root: object = dataclasses.field(repr=False, compare=False)
    """The checked syntax tree (internal)."""

    def robustness_trace(self, signals: Mapping[str, np.ndarray], t: np.ndarray) -> np.ndarray:
        """Robustness at every time index (float64, len(t)); > 0 satisfied, < 0 violated there."""
        tr = _Trace(self, signals, t)
        with np.errstate(all="ignore"):  # 1/0 -> inf is meaningful; NaN is caught at the comparisons
            return self._root.rho(tr)

    def robustness(self, signals: Mapping[str, np.ndarray], t: np.ndarray) -> float:
        """Robustness of the whole trace (at index 0); failed iff < 0."""
        return float(self.robustness_trace(signals, t)[0])

    def holds(self, signals: Mapping[str, np.ndarray], t: np.ndarray) -> bool:
        """Whether the formula holds at index 0, with the comparisons' own strictness at their boundary
        ('t >= 3' holds at t = 3, 't > 3' does not; robustness alone cannot tell them apart): event triggers."""
        tr = _Trace(self, signals, t)
        with np.errstate(all="ignore"):
            return bool(self._root.holds(tr)[0])

    def decided_at(self, signals: Mapping[str, np.ndarray], t: np.ndarray) -> int:
        """The time index that decides the verdict at index 0, for saying *when* a run failed.

        always: where the inner robustness is lowest (first such index); eventually: where it is highest; windows
        likewise within the first window; a comparison: 0; and/or: the index of the child that sets the min/max;
        not: its operand's; implies: the premise's or the conclusion's, whichever sets the max; until: the witness
        index, or where the held formula is lowest before it when that is what limits the robustness.
        """
        tr = _Trace(self, signals, t)
        with np.errstate(all="ignore"):
            return int(self._root.decided(tr))

    def __str__(self) -> str:
        return self.text


def parse(text: str, known_signals: Collection[str] | None = None) -> Formula:
    """Parse an STL formula (grammar in the module docstring); with known_signals, refuse any other signal name."""
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, got {type(text).__name__} {text!r}")
    formula, first_use = _parse_text(text.strip())
    if known_signals is not None:
        unknown = [(name, lineno, column) for name, lineno, column in first_use if name not in known_signals]
        if unknown:
            _, lineno, column = unknown[0]
            raise FormulaError(_message(
                formula.text, f"uses unknown signal(s) {', '.join(repr(u[0]) for u in unknown)}", lineno, column,
                allowed=f"known signals: {', '.join(sorted(known_signals)) or 'none'}"))
    return formula


# Episode runners parse the same few formulas again and again, and parsing (~0.1 ms) costs more than evaluating.
@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> tuple[Formula, tuple[tuple[str, int, int], ...]]:
    """The formula and where each signal is first used (name, line, column); immutable, so cached copies are shared."""
    if not text:
        raise FormulaError(f"the formula is empty; write one such as 'always(clearance > 0.05)'. {ALLOWED}")
    builder = _Builder(text)
    try:
        root = builder.formula(ast.parse(text, mode="eval").body)
    except SyntaxError as exc:
        column = (exc.offset or 1) - 1  # SyntaxError counts characters from 1
        raise FormulaError(_message(text, f"is not valid syntax: {exc.msg}", exc.lineno or 1, column)) from None
    except RecursionError:  # from ast.parse or from our walk
        raise FormulaError(f"formula {text[:80]!r}... is nested too deeply; split it into several monitors") from None
    except FormulaError:
        raise
    except ValueError as exc:  # e.g. a null byte
        raise FormulaError(f"formula {text!r} cannot be read: {exc}. {ALLOWED}") from None
    first_use = tuple((name, node.lineno, _char_column(text, node)) for name, node in builder.first_use.items())
    return Formula(text, frozenset(builder.first_use), root), first_use


def _lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text)


def _char_column(text: str, node: ast.AST) -> int:
    """ast's col_offset counts UTF-8 bytes; messages count characters."""
    line = _lines(text)[node.lineno - 1]
    return len(line.encode()[:node.col_offset].decode(errors="ignore"))


def _message(text: str, what: str, lineno: int, column: int, allowed: str = ALLOWED) -> str:
    lines = _lines(text)
    where = f"column {column}" if len(lines) == 1 else f"line {lineno}, column {column}"
    line = lines[min(lineno, len(lines)) - 1]
    return f"formula {text!r} {what} (at {where}, counting from 0)\n    {line}\n    {' ' * column}^\n{allowed}"


class _Builder:
    """Walks Python's syntax tree, keeps only the whitelisted nodes, and sorts arithmetic from formulas."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.first_use: dict[str, ast.Name] = {}

    def error(self, node: ast.AST, what: str) -> FormulaError:
        return FormulaError(_message(self.text, what, node.lineno, _char_column(self.text, node)))

    def piece(self, node: ast.AST) -> str:
        return repr(ast.get_source_segment(self.text, node))

    def formula(self, node: ast.expr) -> object:
        """A node that must be a formula (has robustness)."""
        built = self.build(node)
        if not hasattr(built, "rho"):
            raise self.error(node, f"uses the arithmetic expression {self.piece(node)} as a formula; compare it with a "
                                   f"threshold, e.g. '{ast.get_source_segment(self.text, node)} < 0.5'")
        return built

    def arithmetic(self, node: ast.expr, where: str) -> object:
        """A node that must be arithmetic (has values)."""
        built = self.build(node)
        if not hasattr(built, "values"):
            raise self.error(node, f"uses the formula {self.piece(node)} {where}, which needs a number; "
                                   "negate formulas with 'not', combine them with and/or")
        return built

    def build(self, node: ast.expr) -> object:
        match node:
            case ast.Name(id=name):
                if name in _ARITH_FUNCS or name in _FORMULA_FUNCS:
                    raise self.error(node, f"names the function {name!r} without calling it; write {_USAGE[name]}")
                self.first_use.setdefault(name, node)
                return _Signal(name)
            case ast.Constant(value=value):
                number = _number(value)
                if number is None:
                    raise self.error(node, f"has the constant {self.piece(node)}, which is not a finite number")
                return _Const(number)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return _Apply("neg", (self.arithmetic(operand, "after unary '-'"),))
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return _Not(self.formula(operand))
            case ast.BinOp(op=op, left=left, right=right) if type(op) in _BINOPS:
                symbol = _BINOPS[type(op)]
                return _Apply(symbol, (self.arithmetic(left, f"in '{symbol}'"), self.arithmetic(right, f"in '{symbol}'")))
            case ast.BinOp():
                op_text = self.text_between(node.left, node.right)
                raise self.error(node, f"uses the operator {op_text!r} in {self.piece(node)}, which is not supported")
            case ast.Compare(ops=ops, left=left, comparators=comparators):
                if len(ops) != 1:
                    raise self.error(node, f"chains comparisons in {self.piece(node)}; write one comparison per formula "
                                           "and join them with 'and', e.g. 'a < x and x < b'")
                if type(ops[0]) not in _GREATER:
                    op_text = self.text_between(left, comparators[0])
                    hint = (" (equality has no useful robustness; write e.g. 'abs(x - c) < 0.01')"
                            if isinstance(ops[0], ast.Eq | ast.NotEq) else "")
                    raise self.error(node, f"uses the comparison {op_text!r} in {self.piece(node)}; only <, <=, >, >= "
                                           f"are supported{hint}")
                where = f"in the comparison {self.piece(node)}"
                return _Compare(ast.get_source_segment(self.text, node), _GREATER[type(ops[0])],
                                isinstance(ops[0], ast.Gt | ast.Lt), self.arithmetic(left, where),
                                self.arithmetic(comparators[0], where))
            case ast.BoolOp(op=op, values=values):
                return _Junction(isinstance(op, ast.And), tuple(self.formula(v) for v in values))
            case ast.Call(func=ast.Name(id=name), args=args, keywords=keywords):
                return self.call(node, name, args, keywords)
            case ast.Call(func=func):
                raise self.error(node, f"calls {self.piece(func)}, which is not one of the known functions "
                                       f"({', '.join(sorted(_USAGE))})")
            case _:
                construct = _CONSTRUCTS.get(type(node), f"Python construct {type(node).__name__}")
                raise self.error(node, f"uses {construct} {self.piece(node)}, which is not allowed")

    def text_between(self, left: ast.AST, right: ast.AST) -> str:
        """The operator's text, read from the source between two operands on one line."""
        if left.end_lineno != right.lineno:
            return "?"
        line = _lines(self.text)[right.lineno - 1].encode()
        return line[left.end_col_offset:right.col_offset].decode(errors="ignore").strip(" ()\t")

    def call(self, node: ast.Call, name: str, args: list[ast.expr], keywords: list[ast.keyword]) -> object:
        arity = _ARITH_FUNCS.get(name, _FORMULA_FUNCS.get(name))
        if arity is None:
            raise self.error(node, f"calls the unknown function {name!r}; known: {', '.join(sorted(_USAGE))}")
        if keywords or any(isinstance(a, ast.Starred) for a in args):
            raise self.error(node, f"passes keyword or starred arguments to {name!r}; write {_USAGE[name]}")
        if len(args) != arity:
            raise self.error(node, f"calls {name!r} with {len(args)} argument(s), it takes {arity}: {_USAGE[name]}")
        if name in _ARITH_FUNCS:
            return _Apply(name, tuple(self.arithmetic(a, f"in {name}()") for a in args))
        if name == "implies":
            return _Implies(self.formula(args[0]), self.formula(args[1]))
        if name == "until":
            return _Until(self.formula(args[0]), self.formula(args[1]))
        is_always = name.startswith("always")
        if name.endswith("_within"):
            return _Temporal(is_always, self.window(name, args[0]), self.formula(args[1]))
        return _Temporal(is_always, None, self.formula(args[0]))

    def window(self, name: str, node: ast.expr) -> float:
        value = _number(node.value) if isinstance(node, ast.Constant) else None
        if value is None or value <= 0:
            raise self.error(node, f"gives {name} the window {self.piece(node)}; it must be a positive number of seconds "
                                   f"written as a literal, e.g. {name}(2.5, f)")
        return value


def _number(value: object) -> float | None:
    """A literal's value as a finite float, or None (strings, True/False, complex, None, 1e999, 10**400 are not numbers)."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if np.isfinite(number) else None
