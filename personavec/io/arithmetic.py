"""Code-generated arithmetic word problems: the offline stand-in for the paper's "mistakes"
datasets (worked answers, correct or with one subtle wrong step)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from personavec.io.datasets import Sample

_NAMES = ("Maya", "Leo", "Aisha", "Tom", "Priya", "Omar", "Lena", "Kenji", "Sofia", "Ben")
_SYMBOL = {"+": "+", "-": "-", "*": "×", "/": "÷"}


@dataclass(frozen=True)
class _Step:
    label: str  # what the step computes, e.g. "the cost of the notebooks"
    op: str  # one of + - * /
    operand: int
    operand_first: bool = False  # True: operand op previous (e.g. paid - cost)


@dataclass(frozen=True)
class _Problem:
    question: str
    start: int
    steps: tuple[_Step, ...]


def _apply(op: str, left: int, right: int) -> int | None:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0 or left % right:
        return None
    return left // right


def _shopping_change(rng: random.Random) -> _Problem:
    name, item = rng.choice(_NAMES), rng.choice(("notebooks", "apples", "pencils", "candles"))
    count, price = rng.randint(2, 9), rng.randint(2, 12)
    paid = next(b for b in (20, 50, 100, 200) if b > count * price)
    return _Problem(
        f"{name} buys {count} {item} at ${price} each and pays with a ${paid} bill. "
        "How much change does "
        f"{name} get, in dollars?",
        count,
        (
            _Step(f"the cost of the {item}", "*", price),
            _Step("the change", "-", paid, operand_first=True),
        ),
    )


def _shopping_packs(rng: random.Random) -> _Problem:
    name, item = rng.choice(_NAMES), rng.choice(("pens", "stickers", "batteries", "cookies"))
    per_pack, packs = rng.randint(3, 12), rng.randint(2, 8)
    given = rng.randint(1, per_pack * packs - 1)
    return _Problem(
        f"A shop sells {item} in packs of {per_pack}. {name} buys {packs} packs and gives away "
        f"{given} {item}. How many {item} does {name} have left?",
        per_pack,
        (
            _Step(f"the {item} bought", "*", packs),
            _Step(f"the {item} left", "-", given),
        ),
    )


def _travel_total(rng: random.Random) -> _Problem:
    vehicle = rng.choice(("A train", "A bus", "A car", "A ferry"))
    speed, hours, extra = rng.randint(3, 12) * 10, rng.randint(2, 6), rng.randint(5, 95)
    return _Problem(
        f"{vehicle} travels at {speed} km per hour for {hours} hours, then covers another "
        f"{extra} km. How many km does it travel in total?",
        speed,
        (
            _Step("the distance in the first part", "*", hours),
            _Step("the total distance", "+", extra),
        ),
    )


def _travel_rate(rng: random.Random) -> _Problem:
    name = rng.choice(_NAMES)
    hours, rate, later = rng.randint(2, 6), rng.randint(8, 25), rng.randint(2, 9)
    return _Problem(
        f"{name} cycles {hours * rate} km in {hours} hours at a steady speed. At that speed, "
        f"how many km would {name} cycle in {later} hours?",
        hours * rate,
        (
            _Step("the speed in km per hour", "/", hours),
            _Step(f"the distance in {later} hours", "*", later),
        ),
    )


def _recipe(rng: random.Random) -> _Problem:
    food, ingredient = rng.choice(
        (("pancakes", "grams of flour"), ("soup", "ml of stock"), ("cookies", "grams of sugar"))
    )
    servings, per, wanted = rng.randint(2, 6), rng.randint(2, 9) * 10, rng.randint(3, 12)
    return _Problem(
        f"A recipe for {food} needs {servings * per} {ingredient} for {servings} servings. "
        f"How many {ingredient} are needed for {wanted} servings?",
        servings * per,
        (
            _Step("the amount per serving", "/", servings),
            _Step(f"the amount for {wanted}", "*", wanted),
        ),
    )


def _ages(rng: random.Random) -> _Problem:
    name = rng.choice(_NAMES)
    if rng.random() < 0.5:
        age, older, later = rng.randint(4, 30), rng.randint(2, 15), rng.randint(2, 20)
        return _Problem(
            f"{name} is {age} years old. {name}'s sister is {older} years older. "
            f"How old will the sister be in {later} years?",
            age,
            (
                _Step("the sister's age now", "+", older),
                _Step(f"her age in {later} years", "+", later),
            ),
        )
    age, times, later = rng.randint(3, 12), rng.randint(3, 6), rng.randint(2, 15)
    return _Problem(
        f"{name} is {age} years old and {name}'s grandmother is {times} times as old. "
        f"How old will the grandmother be in {later} years?",
        age,
        (
            _Step("the grandmother's age now", "*", times),
            _Step(f"her age in {later} years", "+", later),
        ),
    )


def _sharing_pool(rng: random.Random) -> _Problem:
    name, item = rng.choice(_NAMES), rng.choice(("marbles", "stickers", "cards", "shells"))
    friends, each = rng.randint(2, 8), rng.randint(3, 15)
    have = rng.randint(1, friends * each - 1)
    return _Problem(
        f"{name} has {have} {item} and gets {friends * each - have} more, then shares them "
        f"equally among {friends} friends. How many {item} does each friend get?",
        have,
        (
            _Step(f"the {item} in total", "+", friends * each - have),
            _Step("each share", "/", friends),
        ),
    )


def _sharing_boxes(rng: random.Random) -> _Problem:
    boxes, students = rng.randint(2, 6), rng.randint(2, 8)
    per_box = students * rng.randint(1, 4)  # makes the total split evenly
    return _Problem(
        f"A teacher has {boxes} boxes of {per_box} crayons and splits all the crayons equally "
        f"among {students} students. How many crayons does each student get?",
        boxes,
        (
            _Step("the crayons in total", "*", per_box),
            _Step("the crayons per student", "/", students),
        ),
    )


_TEMPLATES: tuple[Callable[[random.Random], _Problem], ...] = (
    _shopping_change,
    _shopping_packs,
    _travel_total,
    _travel_rate,
    _recipe,
    _ages,
    _sharing_pool,
    _sharing_boxes,
)

# plausible confusions: the operation a hurried solver might use instead
_WRONG_OP = {"+": ("-", "*"), "-": ("+",), "*": ("+",), "/": ("-", "*")}
_OFFSETS = (-10, -2, -1, 1, 2, 10)


def _solve(
    problem: _Problem, error: tuple[int, str, int] | None = None
) -> Iterator[tuple[_Step, str, int, int, int]]:
    """Yield (step, op written, left, right, result); ``error`` = (step index, kind, amount)."""
    value = problem.start
    for i, step in enumerate(problem.steps):
        op = step.op
        if error is not None and error[0] == i and error[1] == "op":
            op = _WRONG_OP[step.op][error[2]]
        left, right = (step.operand, value) if step.operand_first else (value, step.operand)
        result = _apply(op, left, right)
        if result is None:
            raise ArithmeticError("inexact division")
        if error is not None and error[0] == i and error[1] == "offset":
            result += error[2]
        yield step, op, left, right, result
        value = result


def _render(problem: _Problem, error: tuple[int, str, int] | None = None) -> tuple[str, int]:
    parts = []
    result = problem.start
    for i, (step, op, left, right, result) in enumerate(_solve(problem, error)):
        lead = "First" if i == 0 else ("Then" if i < len(problem.steps) - 1 else "Finally")
        parts.append(f"{lead}, {step.label}: {left} {_SYMBOL[op]} {right} = {result}.")
    parts.append(f"The answer is {result}.")
    return " ".join(parts), result


def _mistake(problem: _Problem, truth: int, rng: random.Random) -> tuple[str, int]:
    candidates = [(i, "offset", d) for i in range(len(problem.steps)) for d in _OFFSETS]
    candidates += [
        (i, "op", k) for i, s in enumerate(problem.steps) for k in range(len(_WRONG_OP[s.op]))
    ]
    rng.shuffle(candidates)
    for error in candidates:
        try:
            steps = list(_solve(problem, error))
        except ArithmeticError:
            continue
        final = steps[-1][-1]
        if final != truth and final > 0 and all(s[-1] >= 0 for s in steps):
            return _render(problem, error)
    raise AssertionError("no plausible mistake found")  # unreachable: a final offset always works


def arithmetic_problems(n: int, seed: int, *, wrong: bool = False) -> list[Sample]:
    """``n`` deterministic two-step word problems with worked answers ending ``The answer is N.``;
    ``wrong`` gives each answer one subtle mistake (a result off by 1, 2 or 10, or a plausible
    wrong operation). Tags: ``{"source": "correct" | "mistake", "truth": <correct answer>}``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    samples: list[Sample] = []
    seen: set[str] = set()
    attempts = 0
    while len(samples) < n:
        problem = rng.choice(_TEMPLATES)(rng)
        attempts += 1
        if problem.question in seen and attempts < 20 * n:  # avoid repeats while cheap
            continue
        seen.add(problem.question)
        text, truth = _render(problem)
        if wrong:
            text, _ = _mistake(problem, truth, random.Random(f"mistake-{seed}-{len(samples)}"))
        source = "mistake" if wrong else "correct"
        samples.append(Sample(problem.question, text, {"source": source, "truth": truth}))
    return samples
