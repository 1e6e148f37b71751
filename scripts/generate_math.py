"""Deterministic generator for the bundled arithmetic word problems (the knowledge testbed's D+).

Writes ``math_train.jsonl`` (1000 rows) and ``math_heldout.jsonl`` (200 rows) into a directory,
by default the package's ``sclora_tools/datasets/``. Each row is
``{"question": ..., "solution": ..., "answer": ...}``: a two-step word problem, a worked solution
whose every step is ``x op y = z.`` and which ends ``The answer is N.``, and N alone (a
non-negative integer written without separators), so that a generation is scored by exact match
of its final number (examples/knowledge_testbed/math_task.py).

Everything is synthetic and written for this package (no third-party text). Only the standard
library is used and all randomness comes from ``random.Random(seed)``, so the output is
byte-for-byte reproducible; no held-out question also occurs in the training file::

    python scripts/generate_math.py [OUTPUT_DIR]

A one-off like generate_dialogues.py: tests/scripts/ checks that re-running it reproduces the
shipped files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

TRAIN_SEED = 2718
HELDOUT_SEED = 314159
N_TRAIN = 1000
N_HELDOUT = 200
TRAIN_FILE = "math_train.jsonl"
HELDOUT_FILE = "math_heldout.jsonl"
PACKAGE_DATASETS = Path(__file__).resolve().parents[1] / "sclora_tools" / "datasets"

NAMES = ("Amira", "Ben", "Chen", "Dana", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jamal", "Kira", "Luis",
         "Maya", "Nikos", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "stamps", "cards", "buttons", "shells", "books")
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("crate", "crates"), ("jar", "jars"), ("basket", "baskets"), ("tray", "trays"))


def step(x: int, op: str, y: int) -> tuple[int, str]:
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y}[op]
    return value, f"{x} {op} {y} = {value}."


def solved(question: str, steps: list[str], answer: int) -> dict:
    return {"question": question, "solution": " ".join([*steps, f"The answer is {answer}."]), "answer": str(answer)}


def buy_packs(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    have, packs, per = rng.randint(2, 60), rng.randint(2, 9), rng.randint(2, 12)
    bought, first = step(packs, "*", per)
    total, second = step(have, "+", bought)
    question = f"{name} has {have} {item}. {name} buys {packs} packs with {per} {item} in each pack. How many {item} does {name} have now?"
    return solved(question, [first, second], total)


def fill_and_give(rng: random.Random) -> dict:
    name, item, (container, containers) = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    per, count = rng.randint(3, 15), rng.randint(2, 9)
    filled, first = step(per, "*", count)
    given = rng.randint(1, filled - 1)
    left, second = step(filled, "-", given)
    question = (f"Each {container} holds {per} {item}. {name} fills {count} {containers} and then gives away {given} {item}. "
                f"How many {item} does {name} still have?")
    return solved(question, [first, second], left)


def wages(rng: random.Random) -> dict:
    name = rng.choice(NAMES)
    rate, hours = rng.randint(5, 30), rng.randint(2, 10)
    earned, first = step(rate, "*", hours)
    spent = rng.randint(1, earned - 1)
    left, second = step(earned, "-", spent)
    question = (f"{name} earns {rate} dollars an hour and works for {hours} hours. {name} then spends {spent} dollars. "
                f"How many dollars does {name} have left?")
    return solved(question, [first, second], left)


def share_out(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each, kept = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    total = friends * each
    shared, first = step(total, "/", friends)
    result, second = step(shared, "+", kept)
    question = (f"{name} shares {total} {item} equally among {friends} friends. One friend already had {kept} {item}. "
                f"How many {item} does that friend have now?")
    return solved(question, [first, second], result)


def change(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    price, count = rng.randint(2, 9), rng.randint(2, 9)
    cost, first = step(price, "*", count)
    note = next(n for n in (20, 50, 100) if n > cost)
    left, second = step(note, "-", cost)
    question = (f"A shop sells {item} for {price} dollars each. {name} buys {count} of them and pays with a {note}-dollar note. "
                f"How much change does {name} get?")
    return solved(question, [first, second], left)


def reading(rng: random.Random) -> dict:
    name = rng.choice(NAMES)
    pages, days, extra = rng.randint(5, 40), rng.randint(2, 7), rng.randint(1, 30)
    read, first = step(pages, "*", days)
    total, second = step(read, "+", extra)
    question = (f"{name} reads {pages} pages a day for {days} days and then {extra} more pages on the last evening. "
                f"How many pages did {name} read in all?")
    return solved(question, [first, second], total)


TEMPLATES: tuple[Callable[[random.Random], dict], ...] = (buy_packs, fill_and_give, wages, share_out, change, reading)


def generate(seed: int, count: int, exclude: set[str] = frozenset()) -> list[dict]:
    """`count` problems with distinct questions, none of them in `exclude`."""
    rng, rows, seen = random.Random(seed), [], set(exclude)
    while len(rows) < count:
        row = rng.choice(TEMPLATES)(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", nargs="?", type=Path, default=PACKAGE_DATASETS)
    out = parser.parse_args().output_dir
    out.mkdir(parents=True, exist_ok=True)
    train = generate(TRAIN_SEED, N_TRAIN)
    write(out / TRAIN_FILE, train)
    write(out / HELDOUT_FILE, generate(HELDOUT_SEED, N_HELDOUT, exclude={row["question"] for row in train}))


if __name__ == "__main__":
    main()
