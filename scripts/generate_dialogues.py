"""Deterministic generator for the bundled SAMSum-style dialogue -> summary data.

Writes ``dialogsum_train.jsonl`` (1000 rows) and ``dialogsum_heldout.jsonl``
(200 rows) into a directory, by default the package's ``sclora_tools/datasets/``.  Each row is ``{"dialogue": ..., "summary": ...}``
where the dialogue is ``"Name: line\\nName2: line\\n..."`` and the summary is a
short third-person SAMSum-style summary.

Everything is synthetic and written for this package (no third-party text).
Only the standard library is used and all randomness comes from
``random.Random(seed)``, so the output is byte-for-byte reproducible::

    python scripts/generate_dialogues.py [OUTPUT_DIR]

A one-off: the package ships the jsonl it made, not this script; tests/scripts/ checks that
re-running it reproduces the shipped files byte for byte.

To keep ROUGE from saturating, dialogues mix many scenario types, 2-4 speakers,
varied phrasings, times/amounts written differently in the dialogue than in the
summary, changes of plan (the summary must report the final decision) and small
talk that the summary must skip.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

TRAIN_SEED = 1234
HELDOUT_SEED = 987654321
N_TRAIN = 1000
N_HELDOUT = 200
MIN_TURNS = 4
MAX_TURNS = 14

TRAIN_FILE = "dialogsum_train.jsonl"
HELDOUT_FILE = "dialogsum_heldout.jsonl"
PACKAGE_DATASETS = Path(__file__).resolve().parents[1] / "sclora_tools" / "datasets"

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

NAMES: list[tuple[str, str]] = [
    ("Amanda", "f"), ("Hannah", "f"), ("Priya", "f"), ("Chiara", "f"), ("Fatima", "f"),
    ("Siobhan", "f"), ("Yuki", "f"), ("Olivia", "f"), ("Emma", "f"), ("Sofia", "f"),
    ("Zoe", "f"), ("Leila", "f"), ("Nadia", "f"), ("Grace", "f"), ("Mia", "f"),
    ("Ines", "f"), ("Marta", "f"), ("Aisha", "f"), ("Chloe", "f"), ("Lucy", "f"),
    ("Kasia", "f"), ("Ewa", "f"), ("Julia", "f"), ("Rosa", "f"), ("Elena", "f"),
    ("Mei", "f"), ("Hana", "f"), ("Tanya", "f"), ("Naomi", "f"), ("Ruth", "f"),
    ("Helen", "f"), ("Abby", "f"), ("Jess", "f"), ("Megan", "f"), ("Bianca", "f"),
    ("Camila", "f"), ("Ingrid", "f"), ("Freya", "f"), ("Noor", "f"), ("Amara", "f"),
    ("Kemi", "f"), ("Lina", "f"), ("Sara", "f"), ("Vera", "f"), ("Dorota", "f"),
    ("Tom", "m"), ("Olek", "m"), ("Tomasz", "m"), ("Kwame", "m"), ("Mateo", "m"),
    ("Lukas", "m"), ("Jerry", "m"), ("Ben", "m"), ("Sam", "m"), ("Omar", "m"),
    ("Ravi", "m"), ("Hiro", "m"), ("Diego", "m"), ("Pablo", "m"), ("Marco", "m"),
    ("Luca", "m"), ("Felix", "m"), ("Jonas", "m"), ("Noah", "m"), ("Liam", "m"),
    ("Jack", "m"), ("Harry", "m"), ("Adam", "m"), ("Ethan", "m"), ("Leo", "m"),
    ("Max", "m"), ("Kofi", "m"), ("Chidi", "m"), ("Arjun", "m"), ("Dev", "m"),
    ("Ivan", "m"), ("Piotr", "m"), ("Bartek", "m"), ("Eric", "m"), ("Daniel", "m"),
    ("Josh", "m"), ("Ryan", "m"), ("Connor", "m"), ("Sean", "m"), ("Yusuf", "m"),
    ("Karim", "m"), ("Tariq", "m"), ("Andre", "m"), ("Malik", "m"), ("Theo", "m"),
    ("Oscar", "m"), ("Hugo", "m"), ("Nils", "m"), ("Sven", "m"), ("Gareth", "m"),
]
GENDER: dict[str, str] = dict(NAMES)

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ALLDAYS = WEEKDAYS + ["Saturday", "Sunday"]
CURRENCIES = ["$", "£", "€"]


def _h12(h: int) -> int:
    return (h - 1) % 12 + 1


def _ampm(h: int) -> str:
    return "am" if h % 24 < 12 else "pm"


def t_sum(h: int, m: int) -> str:
    """Canonical time for summaries, e.g. '7:30 pm' or '7 pm'."""
    h %= 24
    if m == 0:
        return f"{_h12(h)} {_ampm(h)}"
    return f"{_h12(h)}:{m:02d} {_ampm(h)}"


def add_minutes(h: int, m: int, delta: int) -> tuple[int, int]:
    tot = (h * 60 + m + delta) % (24 * 60)
    return tot // 60, tot % 60


def join_names(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class Ctx:
    """Per-dialogue random context: speakers, pronouns and phrasing helpers."""

    def __init__(self, rng: random.Random, k: int):
        self.rng = rng
        people = rng.sample(NAMES, k + 3)
        self.n = [p[0] for p in people[:k]]
        self.spare = [p[0] for p in people[k:]]  # third parties, never speakers
        self.k = k
        self.cur = rng.choice(CURRENCIES)

    # randomness
    def pick(self, seq):
        return self.rng.choice(seq)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # pronouns
    @staticmethod
    def he(name: str) -> str:
        return "she" if GENDER[name] == "f" else "he"

    @staticmethod
    def him(name: str) -> str:
        return "her" if GENDER[name] == "f" else "him"

    @staticmethod
    def his(name: str) -> str:
        return "her" if GENDER[name] == "f" else "his"

    # formatting
    def t(self, h: int, m: int) -> str:
        """A time as someone might type it in a chat."""
        h %= 24
        opts = [f"{_h12(h)}:{m:02d}", f"{_h12(h)}:{m:02d}{_ampm(h)}", f"{h:02d}:{m:02d}",
                f"{_h12(h)}.{m:02d}"]
        if m == 0:
            opts += [f"{_h12(h)}", f"{_h12(h)}{_ampm(h)}", f"{_h12(h)} o'clock", f"{_h12(h)} {_ampm(h)}"]
        if m == 30:
            opts += [f"half {_h12(h)}", f"half past {_h12(h)}"]
        if m == 15:
            opts += [f"quarter past {_h12(h)}"]
        if m == 45:
            opts += [f"quarter to {_h12(h + 1)}"]
        return self.rng.choice(opts)

    def money(self, amount) -> str:
        if isinstance(amount, float) and not amount.is_integer():
            return f"{self.cur}{amount:.2f}"
        return f"{self.cur}{int(amount)}"


Turn = tuple[int, str]
Block = list[Turn]


class Scenario:
    def __init__(self, blocks: list[Block], summary: str, closing: Block | None = None,
                 asker: int = 0, other: int = 1):
        self.blocks = blocks
        self.summary = summary
        self.closing = closing
        self.asker = asker
        self.other = other


# ---------------------------------------------------------------------------
# Small talk the summary must ignore
# ---------------------------------------------------------------------------

def _digressions(c: Ctx, a: int, b: int) -> list[Block]:
    x = c.spare[-1]
    return [
        [(a, "Did you see the match last night?"), (b, c.pick(["Only the second half. What a mess lol", "Don't talk to me about it",
                                                               "Yes!! What a finish"]))],
        [(a, c.pick(["It's absolutely pouring here", "The weather is so grim today"])), (b, c.pick(["Same here, I got soaked this morning",
                                                                                                    "Tell me about it"]))],
        [(a, "Have you finished that series yet?"), (b, c.pick(["Two episodes left, no spoilers please!", "Not yet, I fell asleep again haha"]))],
        [(a, "How's your mum doing by the way?"), (b, c.pick(["Much better, thanks for asking :)", "Still tired but recovering, thanks"]))],
        [(a, "Btw I finally tried that new coffee place"), (b, "And?? Is it good?"), (a, c.pick(["Overpriced but the croissants are amazing",
                                                                                                 "Meh. Nice cups though"]))],
        [(a, "Ugh, I'm so tired today"), (b, c.pick(["Same, I barely slept", "Coffee. Lots of coffee."]))],
        [(a, f"Did you hear {x} is leaving?"), (b, c.pick(["No way! Since when?", "Seriously? Didn't see that coming"])), (a, "Tell you later")],
        [(a, "Random but I just saw a fox in the garden"), (b, "Haha cute"), (a, "<file_photo>")],
        [(a, "My neighbour is drilling AGAIN"), (b, c.pick(["Brutal", "On a weekend?? Unbelievable"]))],
        [(a, "How was your weekend btw?"), (b, c.pick(["Quiet, mostly gardening. Yours?", "Too short as always. Yours?"])),
         (a, c.pick(["Same old", "Lovely, went to the seaside"]))],
        [(a, "lol did you see what " + x + " posted"), (b, c.pick(["Yes :D I can't believe it", "No, what?"]))],
        [(a, "Are you still doing the 10k in May?"), (b, c.pick(["Trying to! My knee isn't happy though", "Yep, training is going ok"]))],
        [(a, "The heating at work is broken again"), (b, c.pick(["Bring a jumper haha", "Classic"]))],
        [(a, "Sorry, my phone is about to die"), (b, "Haha classic you")],
        [(a, "Have you been to the new Thai place yet?"), (b, c.pick(["Not yet, is it good?", "Yes, the green curry is amazing"]))],
    ]


# ---------------------------------------------------------------------------
# Scenarios.  Each returns a Scenario whose summary reports the final outcome.
# ---------------------------------------------------------------------------

MEETING_TOPICS = ["the Q3 budget", "the new website", "the client presentation", "the hiring plan",
                  "the spring campaign", "the project timeline", "the office move", "the quarterly report",
                  "the supplier contract", "the training schedule", "the app redesign", "the conference stand"]
ROOMS = ["in room 3B", "in the small meeting room", "in the boardroom", "on Zoom", "on Teams",
         "in the café downstairs", "in the project room", "in the kitchen area"]
BUSY = ["at a client site", "on a training course", "in back-to-back calls", "off", "at the dentist in the morning and then in workshops"]


def sc_meeting(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    topic = c.pick(MEETING_TOPICS)
    d0, d1 = c.rng.sample(WEEKDAYS, 2)
    h, m = c.pick([9, 10, 11, 13, 14, 15, 16]), c.pick([0, 0, 30, 15])
    place = c.pick(ROOMS)
    blocks: list[Block] = [[(0, c.pick([
        f"Can we get together on {d0} to go over {topic}?",
        f"We need to talk about {topic} at some point. Does {d0} work for you?",
        f"Hi {B}, are you around on {d0}? I'd like to discuss {topic}.",
        f"I think we should sit down and sort out {topic}. {d0} any good?",
    ]))]]
    conflict = c.chance(0.65)
    if conflict:
        blocks.append([(1, c.pick([
            f"{d0} is bad for me, I'm {c.pick(BUSY)}. What about {d1}?",
            f"Can't do {d0}, sorry. {d1} would be better.",
            f"I'm {c.pick(BUSY)} on {d0} :( Could we do {d1} instead?",
        ]))])
        day = d1
        if c.chance(0.5):
            h0 = c.pick([9, 10])
            if c.chance(0.5):
                h, m = h0 + c.pick([1, 2]), c.pick([0, 30])
                blocks.append([(0, f"{d1} works. {cap(c.t(h0, 0))}?"),
                               (1, f"A bit later? I have something until {c.t(h, m)}."),
                               (0, c.pick([f"OK, {c.t(h, m)} then", f"Sure, {c.t(h, m)} it is"]))])
            else:
                h, m = c.pick([13, 14, 15, 16]), c.pick([0, 30])
                blocks.append([(0, f"{d1} works. {cap(c.t(h0, 0))}?"),
                               (1, f"Could we do the afternoon? Say {c.t(h, m)}? Mornings are hectic."),
                               (0, c.pick(["Sure", "Fine by me", "OK, no problem"]))])
        else:
            blocks.append([(0, c.pick([f"{d1} is fine. {cap(c.t(h, m))}?", f"OK, {d1} at {c.t(h, m)} then?"])),
                           (1, c.pick(["Perfect", "Works for me", "Yes, great"]))])
    else:
        day = d0
        blocks.append([(1, c.pick([f"Sure, {d0} is fine. What time?", "Yes, I'm free. When?", "Sure. Morning or afternoon?"])),
                       (0, c.pick([f"{cap(c.t(h, m))}?", f"How about {c.t(h, m)}?", f"Let's say {c.t(h, m)}"])),
                       (1, c.pick(["Great", "OK", "Deal"]))])
    blocks.append([(c.pick([0, 1]), c.pick([f"Let's do it {place}", f"{cap(place)}, ok?", f"I'll send an invite, {place}"]))])
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, c.pick([f"Can I join? I've got some numbers on {topic}", "Mind if I join? It affects my team too"])),
                       (0, c.pick(["Of course", "Sure, the more the merrier", "Yes please"]))])
        extra += c.pick([f" {C} will join them.", f" {C} is joining too."])
    if c.k >= 4:
        D = c.n[3]
        blocks.append([(3, c.pick(["I can't make it, but please send me the notes", "I'm off that day, can someone share the notes after?"])),
                       (1, "Will do")])
        extra += c.pick([f" {D} can't come and will get the notes.", f" {D} will be sent the notes."])
    ts = t_sum(h, m)
    if conflict and c.chance(0.5):
        summ = c.pick([
            f"{B} can't meet on {d0}, so {A} and {B} will discuss {topic} on {day} at {ts} {place}.",
            f"{A} and {B} moved their meeting about {topic} from {d0} to {day} at {ts}. It will be {place}.",
        ])
    else:
        summ = c.pick([
            f"{A} and {B} will meet on {day} at {ts} {place} to discuss {topic}.",
            f"{A} wants to talk about {topic}. {A} and {B} are meeting {place} on {day} at {ts}.",
            f"The meeting about {topic} is on {day} at {ts} {place}.",
        ])
    closing = [(1, c.pick(["See you then", "Talk then!", "Thanks"]))]
    return Scenario(blocks, summ + extra, closing)


BORROW_ITEMS = [
    ("drill", ["put up some shelves", "hang a big mirror"]),
    ("ladder", ["clean the gutters", "paint the hallway ceiling"]),
    ("tent", ["go camping by the lake", "go to a festival"]),
    ("projector", ["show a film in the garden", "run a workshop"]),
    ("big suitcase", ["go to Lisbon for a week", "fly to see family"]),
    ("camera", ["take photos at a friend's wedding", "shoot a short film for a course"]),
    ("sewing machine", ["take up some curtains", "fix a costume"]),
    ("slow cooker", ["make chilli for a party", "cook for a family lunch"]),
    ("lecture notes", ["catch up before the exam", "prepare for the seminar"]),
    ("car", ["pick up a sofa", "drive to a job interview out of town"]),
    ("hedge trimmer", ["tidy up the garden", "cut back the hedge before a barbecue"]),
    ("folding chairs", ["host a barbecue", "have people over for a birthday"]),
    ("jump leads", ["start a car with a flat battery", "help a neighbour with a dead battery"]),
]


def sc_borrow(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    item, purposes = c.pick(BORROW_ITEMS)
    purpose = c.pick(purposes)
    plural = item.endswith("s")
    it = "them" if plural else "it"
    is_ = "are" if plural else "is"
    a_item = item if plural else f"a {item}"
    pick_day, ret_day = c.rng.sample(ALLDAYS, 2)
    h = c.pick([17, 18, 19, 10, 11, 12])
    blocks: list[Block] = [[(0, c.pick([
        f"Hey {B}, could I borrow your {item}? I need to {purpose}.",
        f"Random question: do you still have {'those' if plural else 'that'} {item}? I need to {purpose}.",
        f"Would you mind lending me your {item}? I want to {purpose}.",
        f"{B}! Any chance I could borrow the {item} for a few days? Need to {purpose}",
    ]))]]
    r = c.rng.random()
    if r < 0.62:
        blocks.append([(1, c.pick([f"Sure! When do you need {it}?", f"Of course. When do you want to pick {it} up?", "Yes, no problem. When?"])),
                       (0, c.pick([f"{pick_day} if that's ok?", f"Could I grab {it} on {pick_day}?", f"{pick_day} would be ideal"])),
                       (1, c.pick([f"I'm home after {c.t(h, 0)}, come by then", f"Come around {c.t(h, 0)}, I'll be in",
                                   f"Fine, I'm around from {c.t(h, 0)}"]))])
        blocks.append([(0, c.pick([f"Great, I'll bring {it} back by {ret_day}", f"Thanks! You'll have {it} back by {ret_day}",
                                   f"I'll return {it} on {ret_day} at the latest"])),
                       (1, c.pick(["No rush", "Perfect",
                                   "Good, I need it myself after that" if not plural else "Good, I need them myself after that"]))])
        summ = c.pick([
            f"{B} is lending {A} {c.his(B)} {item} so {A} can {purpose}. {A} will pick {it} up on {pick_day} at {t_sum(h, 0)} and return {it} by "
            f"{ret_day}.",
            f"{A} will borrow {B}'s {item} to {purpose}. {cap(c.he(A))} is collecting {it} on {pick_day} after {t_sum(h, 0)} and will give {it} back "
            f"by {ret_day}.",
            f"{A} needs to {purpose}, so {B} will lend {c.him(A)} the {item}. Pick-up is on {pick_day} at {t_sum(h, 0)}, and {A} will return {it} by "
            f"{ret_day}.",
        ])
        if c.k >= 3:
            C = c.n[2]
            blocks.append([(2, c.pick([f"Can I have {it} after {A}? :)", f"Ooh, I'll need {it} after you, {A}"])),
                           (1, "Fine, just sort it out between you")])
            summ += c.pick([f" {C} wants to borrow {it} afterwards.", f" {C} will borrow {it} after {A}."])
    elif r < 0.82 or c.k < 3:
        x = c.n[2] if c.k >= 3 else c.spare[0]
        blocks.append([(1, c.pick([f"Sorry, {x} has {it} at the moment.", f"Ah, I lent {it} to {x} last week, sorry!"])),
                       (1, c.pick([f"Ask {x}, I'm sure {c.he(x)}'ll pass {it} on", f"Maybe ask {x} when {c.he(x)}'s done with {it}?"]))])
        if c.k >= 3:
            blocks.append([(2, c.pick([f"I'm done with {it}, {A}, you can pick {it} up on {pick_day}",
                                       f"Yep I've got {it}. Come and get {it} on {pick_day}"])),
                           (0, c.pick(["Amazing, thank you both!", "Perfect, thanks!"]))])
            summ = c.pick([
                f"{B} lent {c.his(B)} {item} to {x}, who will pass {it} on to {A} on {pick_day} so {A} can {purpose}.",
                f"{A} wants to borrow {B}'s {item} to {purpose}. {x} has {it} at the moment and {A} will pick {it} up from {c.him(x)} on {pick_day}.",
            ])
        else:
            blocks.append([(0, c.pick([f"OK, I'll message {c.him(x)}. Thanks!", f"No worries, I'll ask {x}"]))])
            summ = c.pick([
                f"{A} wants to borrow {B}'s {item} to {purpose}, but {x} has {it}. {A} will ask {x}.",
                f"{B} can't lend {A} the {item} because {x} has {it} at the moment, so {A} will ask {x} for {it}.",
            ])
    else:
        C = c.n[2]
        blocks.append([(1, c.pick([f"Oh no, {it} broke last month :(", f"I'd love to but {it} {is_} broken, sorry"])),
                       (2, c.pick([f"{A}, I have {'some' if plural else 'one'}! You can borrow mine", f"I've got {a_item} you can use, {A}"])),
                       (0, c.pick([f"You're a lifesaver {C}! Can I get {it} on {pick_day}?", f"Really? Thanks! {pick_day} ok?"])),
                       (2, c.pick(["Sure", f"Yes, any time after {c.t(h, 0)}"]))])
        summ = c.pick([
            f"{B}'s {item} {is_} broken, so {C} will lend {A} {c.his(C)} {item} on {pick_day} so {A} can {purpose}.",
            f"{A} needs {a_item} to {purpose}. {B}'s {is_} broken, but {C} will lend {A} {'some' if plural else 'one'} on {pick_day}.",
        ])
    closing = [(0, c.pick(["Thanks so much!", "You're a star", "Thank you!!"])), (1, c.pick(["No problem", "Anytime :)"]))]
    return Scenario(blocks, summ, closing)


def sc_delay(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    mode = c.pick(["train", "train", "bus", "flight", "coach"])
    h0 = c.pick([8, 9, 11, 13, 17, 18, 19])
    m0 = c.pick([0, 10, 15, 20, 30, 40, 45, 50])
    delay = c.pick([15, 20, 25, 30, 40, 45, 50, 60, 90])
    h1, m1 = add_minutes(h0, m0, delay)
    plan = c.pick([("dinner", "the restaurant"), ("the film", "the cinema"), ("the meeting", "the office"),
                   ("drinks", "the pub"), ("the party", "Jess's place"), ("the tour", "the museum")])
    what, where = plan
    verb = "landing" if mode == "flight" else "arriving"
    blocks: list[Block] = [[(0, c.pick([
        f"My {mode} is delayed by {delay} minutes :(",
        f"Bad news, the {mode} is running {delay} minutes late",
        f"Ugh, {delay} min delay on my {mode}",
        f"Stuck. The {mode} is {delay} minutes late",
    ]))]]
    blocks.append([(1, c.pick(["Oh no! When do you get in now?", "Nooo. What's your new arrival time?", "Typical. When will you be here?"])),
                   (0, c.pick([f"Should be {verb} at {c.t(h1, m1)} instead of {c.t(h0, m0)}", f"{cap(verb)} at {c.t(h1, m1)} now",
                               f"{c.t(h1, m1)} if nothing else goes wrong"]))])
    opt = c.rng.random()
    if opt < 0.4:
        blocks.append([(1, c.pick(["I'll pick you up at the station then", "I'll come and get you, text me when you're close",
                                   "I'll collect you, don't worry"])),
                       (0, c.pick(["You're the best", "Thank you!! Wait by the main entrance?"])),
                       (1, "Ok")])
        action = c.pick([f"{B} will pick {c.him(A)} up", f"{B} is going to collect {c.him(A)}"])
    elif opt < 0.75:
        blocks.append([(0, c.pick([f"Start {what} without me, I'll come straight to {where}",
                                   f"Don't wait for me, go ahead and I'll meet you at {where}"])),
                       (1, c.pick(["Ok, see you there", "Fine, we'll save you a seat", "Will do, text when you're near"]))])
        action = c.pick([f"{B} will start {what} without {c.him(A)}, and {A} will go straight to {where}",
                         f"{A} will join {B} at {where} later"])
    else:
        blocks.append([(1, c.pick([f"No worries, I'll wait for you at {where}", f"That's fine, I'll wait at {where} and grab a coffee"])),
                       (0, c.pick(["Sorry!!", "Thanks for waiting, sorry again"]))])
        action = f"{B} will wait for {c.him(A)} at {where}"
    extra = ""
    if c.k >= 3:
        blocks.append(c.pick([[(2, "Same thing happened to me last week, the line is a disaster"), (0, "Every single time")],
                              [(2, f"Want me to tell the others you'll be late, {A}?"), (0, "Yes please, thanks")]]))
    summ = c.pick([
        f"{A}'s {mode} is {delay} minutes late, so {c.he(A)} will arrive at {t_sum(h1, m1)}. {cap(action)}.",
        f"{A}'s {mode} has been delayed and now gets in at {t_sum(h1, m1)}; {action}.",
        f"{A} is running late because of a {delay}-minute {mode} delay. {cap(action)}.",
    ])
    closing = [(0, c.pick(["See you soon", "Will keep you posted"]))]
    return Scenario(blocks, summ + extra, closing)


GIFTS = [
    ("a cookbook", "loves cooking"), ("a pair of wireless headphones", "is always on the phone"),
    ("a yoga mat", "has just started yoga"), ("concert tickets", "loves live music"),
    ("a spa voucher", "really needs a break"), ("a board game", "loves games nights"),
    ("a plant and a nice pot", "is obsessed with plants"), ("a watch", "keeps being late"),
    ("a cashmere scarf", "is always cold"), ("a voucher for a pottery class", "wants to try pottery"),
    ("a coffee grinder", "is a coffee snob"), ("a framed photo of us all", "is sentimental"),
]


def sc_gift(c: Ctx) -> Scenario:
    rel = c.pick(["friend", "friend", "mum", "dad", "grandma"])
    if rel == "friend":
        X = c.spare[0]
        who, poss = X, f"{c.his(X)}"
        who_sum = X
    else:
        who = f"{rel.capitalize()}"
        poss = "her" if rel in ("mum", "grandma") else "his"
        who_sum = f"their {rel}"
    (g1, why1), (g2, why2) = c.rng.sample(GIFTS, 2)
    price = c.pick([30, 40, 45, 60, 75, 80, 90, 120])
    payers = c.n[:min(c.k, 3)]
    share = price / len(payers)
    day = c.pick(ALLDAYS)
    buyer = c.pick(payers)
    blocks: list[Block] = [[(0, c.pick([
        f"What are we getting {who} for {poss} birthday?",
        f"{who}'s birthday is on {day}, we need to sort out a present!",
        f"Any ideas for {who}'s birthday? It's {day}",
    ]))]]
    blocks.append([(1, c.pick([f"Maybe {g1}? {cap(c.he(who) if rel == 'friend' else ('she' if poss == 'her' else 'he'))} {why1}",
                               f"What about {g1}?"])),
                   (0, c.pick(["Hmm, I think someone already got that", "Not sure, feels a bit boring", "Didn't we do that last year?"])),
                   (0, c.pick([f"What about {g2}?", f"I was thinking {g2}"])),
                   (1, c.pick(["Oh yes, perfect", "Love it", "Good idea!"]))])
    if len(payers) >= 3:
        blocks.append([(2, c.pick(["Count me in!", "I'll chip in too", "Can I go in on it with you?"])),
                       (0, "Of course")])
    blocks.append([(c.pick([0, 1]), c.pick([f"It's about {c.money(price)}", f"Found one for {c.money(price)}", f"{c.money(price)} online"])),
                   (c.pick([0, 1]), c.pick([f"So {c.money(share)} each", f"Fine, {c.money(share)} each then"]))])
    bi = c.n.index(buyer)
    blocks.append([(bi, c.pick(["I'll order it tonight", "I'll buy it and you can send me the money", "Leave it with me, I'll get it"]))])
    if c.k >= 4:
        blocks.append([(3, "I already got a card from all of us :)"), (1, "Amazing")])
    gift = g2
    summ = c.pick([
        f"{join_names(payers)} are getting {who_sum} {gift} for {poss} birthday. It costs {c.money(price)}, {c.money(share)} each, and {buyer} will "
        f"buy it.",
        f"{join_names(payers)} will split the cost of {gift} ({c.money(price)}) for {who_sum}'s birthday. {buyer} is ordering it.",
        f"For {who_sum}'s birthday, {join_names(payers)} chose {gift} instead of {g1}. {buyer} will buy it and "
        + (f"{[p for p in payers if p != buyer][0]} will pay {c.his(buyer)} "
           f"{c.money(share)}." if len(payers) == 2 else f"the others will pay {c.money(share)} each."),
    ])
    if c.k >= 4:
        summ += f" {c.n[3]} has already bought a card."
    return Scenario(blocks, summ, [(1, c.pick(["Great, sorted!", "Perfect :)"]))])


FEMALE_PETS = ["Mittens", "Luna", "Daisy", "Bella", "Clover", "Shelly", "Kiwi"]
PETS = [("cat", ["Mittens", "Luna", "Tiger", "Oreo", "Simba"]), ("dog", ["Buddy", "Rex", "Daisy", "Milo", "Bella"]),
        ("rabbit", ["Clover", "Thumper", "Biscuit"]), ("parrot", ["Kiwi", "Rio"]), ("tortoise", ["Speedy", "Shelly"])]
SPOTS = ["near the park gate", "behind the school", "by the bins on Elm Street", "in the allotments",
         "outside the corner shop", "under a car on Mill Road", "near the playground", "by the canal path"]


def sc_lostpet(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    kind, names = c.pick(PETS)
    pet = c.pick(names)
    pp = "her" if pet in FEMALE_PETS else "him"
    pe = "she" if pp == "her" else "he"
    since = c.pick(["this morning", "last night", "yesterday afternoon", "Sunday"])
    last = c.pick(SPOTS)
    found_at = c.pick([s for s in SPOTS if s != last])
    blocks: list[Block] = [[(0, c.pick([
        f"{pet} is missing!! Haven't seen {pp} since {since}",
        f"Have you seen {pet}? Our {kind} got out {'on ' if since == 'Sunday' else ''}{since}",
        f"Please keep an eye out, {pet} has been gone since {since} :(",
    ]))]]
    if c.chance(0.4):
        blocks[0].append((0, "<file_photo>"))
    blocks.append([(1, c.pick(["Oh no! Where was the last place you saw them?", "Oh no :( Where did you last see them?",
                               "Nooo. Where was it last seen?"])),
                   (0, c.pick([f"{cap(last)}", f"My neighbour saw {pp} {last}", f"Someone said {last}"]))])
    outcome = c.rng.random()
    if outcome < 0.4:
        helper = c.n[2] if c.k >= 3 else B
        hi = c.n.index(helper)
        blocks.append([(hi, c.pick([f"Wait, I think I just saw a {kind} {found_at}!", f"There's a {kind} {found_at} that looks just like {pet}"])),
                       (0, "Omg going now"),
                       (0, c.pick([f"IT'S {pet.upper()}!! Thank you so much", f"Found {pet}! Thank you!!"])),
                       (hi, c.pick(["Yay!!", "So glad :)"]))])
        summ = c.pick([
            f"{A}'s {kind} {pet} went missing {since}. {helper} spotted {pp} {found_at} and {A} found {pp} there.",
            f"{A} lost {c.his(A)} {kind}, {pet}, {since}. Thanks to {helper}, who saw {pp} {found_at}, {pet} is back.",
        ])
    elif outcome < 0.8:
        h = c.pick([17, 18, 19, 10, 11])
        blocks.append([(1, c.pick([f"I'll help you look. Meet at yours at {c.t(h, 0)}?",
                                   f"Want me to come search with you? I can be there by {c.t(h, 0)}"])),
                       (0, c.pick(["Yes please", "That would be amazing, thanks"])),
                       (1, c.pick(["I'll print some posters too", "I'll post in the neighbourhood group as well"]))])
        task = "print posters" if "posters" in blocks[-1][2][1] else "post in the neighbourhood group"
        summ = c.pick([
            f"{A}'s {kind} {pet} has been missing since {since}; {pe} was last seen {last}. {B} will help {c.him(A)} search at {t_sum(h, 0)} and "
            f"{task}.",
            f"{pet}, {A}'s {kind}, disappeared {since}. {B} is coming over at {t_sum(h, 0)} to look for {pp} and will {task}.",
        ])
        if c.k >= 3:
            C = c.n[2]
            blocks.append([(2, "I'm at work but I'll check my street on the way home"), (0, "Thank you")])
            summ += f" {C} will check {c.his(C)} street after work."
    else:
        blocks.append([(1, c.pick(["Have you checked the garden shed?", "Did you check inside the house? They hide in weird places"])),
                       (0, c.pick(["Not yet, going now", "Hmm, hold on"])),
                       (0, c.pick([f"{pet} was asleep in the laundry basket the whole time...", f"Found {pet} in the shed. Unbelievable"])),
                       (1, c.pick(["Hahaha classic", "Told you :D"]))])
        if c.k >= 3:
            blocks.append([(2, c.pick([f"Haha typical {pet}", "Glad it was a false alarm!"]))])
        summ = c.pick([
            f"{A} thought {c.his(A)} {kind} {pet} was missing, but after {B}'s suggestion {c.he(A)} found {pp} at home.",
            f"{A}'s {kind} {pet} wasn't lost after all; {A} found {pp} hiding at home.",
        ])
    return Scenario(blocks, summ, None)


COMPANIES = ["Brightline", "Nordica Logistics", "Helix Labs", "the city council", "a design studio called Fold",
             "Greenleaf Bank", "St Mary's Hospital", "a start-up called Quokka", "the local library", "Vantage Insurance"]
ROLES = ["junior developer", "marketing assistant", "accountant", "nurse", "data analyst", "receptionist",
         "project manager", "graphic designer", "sales manager", "teaching assistant"]


def sc_interview(c: Ctx) -> Scenario:
    A = c.n[0]
    comp, role = c.pick(COMPANIES), c.pick(ROLES)
    day = c.pick(WEEKDAYS)
    blocks: list[Block] = [[(1, c.pick(["So how did the interview go??", f"How was the interview at {comp}?", "Well? Tell me everything!"]))]]
    nxt = c.rng.random()
    mood = c.pick(["well", "well", "ok", "badly"]) if nxt < 0.85 else "well"
    if mood == "well":
        blocks.append([(0, c.pick(["Really well I think!", "Honestly, better than expected", "Pretty good!"]))])
    elif mood == "ok":
        blocks.append([(0, c.pick(["Not sure tbh", "Ok I guess? Hard to tell", "Mixed. Some questions were tough"]))])
    else:
        blocks.append([(0, c.pick(["Badly. I blanked on a question", "Not great, I was so nervous", "Disaster, I was late and flustered"]))])
    blocks[-1].append((0, c.pick([
        f"It's for the {role} role at {comp}",
        f"They were nice though. Three people from {comp} on the panel for the {role} job",
        f"{cap(comp)} asked loads about teamwork for the {role} position",
    ])))
    if nxt < 0.35:
        blocks.append([(0, c.pick([f"They want me back for a second round on {day}!", f"Second interview on {day}"])),
                       (1, c.pick(["Amazing!!", "Yesss, well done"]))])
        res = f"{c.he(A)} has a second interview on {day}"
    elif nxt < 0.7:
        blocks.append([(0, c.pick([f"They'll let me know by {day}", f"I should hear back by {day}"])),
                       (1, c.pick(["Fingers crossed!", "I'm sure it'll be fine"]))])
        res = f"{c.he(A)} will hear back by {day}"
    elif nxt < 0.85:
        blocks.append([(0, c.pick([f"I have to send them a short task by {day}", f"They gave me a case study to do by {day}"])),
                       (1, "You've got this")])
        res = f"{c.he(A)} has to send them a task by {day}"
    else:
        blocks.append([(0, c.pick(["They offered me the job on the spot!!", "I got it! They called an hour later"])),
                       (1, c.pick(["WHAT. Congrats!!", "No way!! Congratulations"])),
                       (0, f"I start on {day} next week")])
        res = f"{c.he(A)} got the job and starts next {day}"
    if c.chance(0.5):
        blocks.append([(1, "Drinks to celebrate later?"), (0, c.pick(["Definitely", "Only if you're buying haha"]))])
    if c.k >= 3:
        blocks.append([(2, c.pick([f"Good luck {A}!!", "So proud of you"])), (0, "Thanks :)")])
    msum = {"well": "went well", "ok": "went okay, though " + c.he(A) + " isn't sure", "badly": "didn't go well"}[mood]
    summ = c.pick([
        f"{A} had an interview for a {role} job at {comp}. It {msum}, and {res}.",
        f"{A}'s interview at {comp} for the {role} position {msum}; {res}.",
    ])
    return Scenario(blocks, summ, None, asker=1, other=0)


RESTAURANTS = ["Sakura Sushi", "Trattoria Roma", "the Thai place on Elm Street", "Burger Barn", "El Toro",
               "Masala House", "the Greek taverna", "Pho Saigon", "the Lebanese place", "Casa Lola"]
PAY = ["bank transfer", "PayPal", "Revolut", "cash"]


def sc_bill(c: Ctx) -> Scenario:
    A = c.n[0]
    others = c.n[1:]
    rest = c.pick(RESTAURANTS)
    method = c.pick(PAY)
    if c.k == 2 and c.chance(0.5):
        B = c.n[1]
        food = c.pick([18, 22, 25, 27, 31, 34])
        drinks = c.pick([8, 12, 14, 16])
        total = 2 * food + drinks
        blocks: list[Block] = [[(0, c.pick([f"Dinner at {rest} came to {c.money(total)}", f"So the bill at {rest} was {c.money(total)} in the end"])),
                                (0, c.pick(["How do you want to split it?", "Shall we just halve it?"]))],
                               [(1, c.pick([f"I didn't have any wine though, the drinks were {c.money(drinks)}",
                                            f"Minus your drinks? That was {c.money(drinks)} haha"])),
                                (0, c.pick(["Fair enough", "True, sorry!"])),
                                (0, c.pick([f"So {c.money(food)} for you", f"You owe me {c.money(food)} then"]))],
                               [(1, c.pick([f"Sending by {method} now" if method != "cash" else "I'll give you cash tomorrow",
                                            f"Ok, {method} tonight" if method != "cash" else "I'll bring cash on Monday"]))]]
        how = f"by {method}" if method != "cash" else "in cash"
        summ = c.pick([
            f"{A} paid {c.money(total)} for dinner at {rest}. {B} didn't drink, so {c.he(B)} owes {A} {c.money(food)} and will pay {how}.",
            f"The dinner at {rest} cost {c.money(total)}, including {c.money(drinks)} of drinks that only {A} had. {B} will pay {A} {c.money(food)} "
            f"{how}.",
        ])
        return Scenario(blocks, summ, [(0, "Thanks!")])
    n = c.k
    share = c.pick([15, 18, 20, 22, 24, 25, 28, 32])
    total = share * n
    blocks = [[(0, c.pick([f"Hi all, dinner at {rest} was {c.money(total)} in total", f"Ok so the bill from {rest} came to {c.money(total)}",
                           f"Paid the bill at {rest}: {c.money(total)}"]))]]
    if c.chance(0.5):
        blocks.append([(1, c.pick(["Wasn't there a tip included?", "Did that include service?"])),
                       (0, c.pick(["Yes, it's all in", "Yep, tip included"]))])
    blocks.append([(0, c.pick([f"So {c.money(share)} each", f"That's {c.money(share)} per person", f"{c.money(share)} each please :)"]))])
    replies: Block = []
    for i in range(1, n):
        replies.append((i, c.pick(["Sending now", "Done", "Will send tonight", "Thanks for paying!"])))
    blocks.append(replies)
    how = f"by {method}" if method != "cash" else "in cash"
    if method != "cash":
        blocks.insert(-1, [(1, c.pick([f"{cap(method)}?", f"Can I send it by {method}?"])), (0, c.pick([f"Yes, {method} is perfect", "Sure"]))])
    else:
        blocks.insert(-1, [(1, "Is cash ok? I'll see you tomorrow"), (0, "Sure")])
    summ = c.pick([
        f"{A} paid {c.money(total)} for dinner at {rest}. {join_names(others)} {'each owe' if len(others) > 1 else 'owes'} {c.him(A)} "
        f"{c.money(share)} and will pay {how}.",
        f"The bill at {rest} came to {c.money(total)}, which {A} covered. Everyone pays {c.money(share)}; {join_names(others)} will settle up {how}.",
    ])
    return Scenario(blocks, summ, None)


AREAS = ["Mill Road", "the new flat near the station", "Riverside", "Oak Street", "the flat above the bakery", "Greenwood", "the city centre"]


def sc_moving(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    day = c.pick(["Saturday", "Sunday", "Friday"])
    area = c.pick(AREAS)
    h = c.pick([8, 9, 10])
    hb = c.pick([11, 12, 13])
    blocks: list[Block] = [[(0, c.pick([
        f"So I'm finally moving on {day}! To {area}",
        f"Big news: moving to {area} on {day}",
        f"Moving day is {day}. Any chance you could help? It's {area}",
    ]))]]
    blocks.append([(1, c.pick(["Congrats!! Do you need help?", "Finally! What do you need?", "Nice! Need an extra pair of hands?"])),
                   (0, c.pick([f"Mainly carrying boxes. We start at {c.t(h, 0)}", f"Just help carrying stuff really. Starting {c.t(h, 0)}"]))])
    late = c.chance(0.5)
    if late:
        blocks.append([(1, c.pick([f"I have football in the morning, can I come at {c.t(hb, 0)}?",
                                   f"I can only get there by {c.t(hb, 0)}, is that ok?"])),
                       (0, "That's fine, there'll still be plenty to do haha")])
        when = f"from {t_sum(hb, 0)}"
    else:
        blocks.append([(1, c.pick(["Sure, I'll be there", "Count me in"]))])
        when = f"at {t_sum(h, 0)}"
    van = c.chance(0.5)
    if van:
        blocks.append([(0, c.pick(["I've booked a van so we just need muscles", "Van's booked, just need people"]))])
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, c.pick(["I can bring my car for the fragile stuff", "I'll come too, I've got a big car if you need it"])),
                       (0, "Amazing, thank you!")])
        extra = f" {C} will help too and bring {c.his(C)} car."
    treat_line, treat = c.pick([("Pizza and beer on me afterwards!", "pizza and beer"), ("I'll order pizza for everyone", "pizza"),
                                ("Dinner's on me after", "dinner"), ("I'll buy everyone curry after", "curry")])
    blocks.append([(0, treat_line)])
    summ = c.pick([
        f"{A} is moving to {area} on {day}. {B} will help carry boxes {when}, and {A} will buy {treat} afterwards.",
        f"{B} is going to help {A} move to {area} on {day} {when}." + (" The van is already booked." if van else ""),
        f"{A} moves to {area} on {day} and asked {B} for help; {B} will come {when}.",
    ])
    return Scenario(blocks, summ + extra, [(1, "See you then")])


ILLNESS = ["flu", "a migraine", "a stomach bug", "a fever", "a terrible cold", "food poisoning"]
COVER = [("the 10 am call with the client", "the client call"), ("the team stand-up", "the stand-up"),
         ("my presentation to the sales team", "the presentation"), ("the interview this afternoon", "the interview"),
         ("the supplier meeting", "the supplier meeting")]


def sc_sick(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    ill = c.pick(ILLNESS)
    when = c.pick(["today", "today", "tomorrow"])
    back = c.pick(["Wednesday", "Thursday", "Monday", "Friday"])
    cover_full, cover_short = c.pick(COVER)
    blocks: list[Block] = [[(0, c.pick([
        f"Hi {B}, I'm really sorry but I've got {ill} and won't make it in {when}",
        f"Morning, bad news: {ill}. I won't be in {when}",
        f"I'm off sick {when}, {ill} :( Sorry for the short notice",
    ]))]]
    blocks.append([(1, c.pick(["Oh no, get well soon!", "Sorry to hear that, rest up", "No worries, look after yourself"]))])
    mode = c.rng.random()
    if mode < 0.6:
        blocks.append([(0, c.pick([f"Could you cover {cover_full}?", f"Would you mind taking {cover_full}?"])),
                       (1, c.pick(["Sure, send me your notes", "Of course, I'll handle it", "No problem, just forward me the details"])),
                       (0, c.pick(["Thank you, just sent them", "Thanks, you're a lifesaver"]))])
        task = f"{B} will cover {cover_short}"
    else:
        blocks.append([(0, c.pick([f"Can we move {cover_full} to {back}?", f"Would it be ok to push {cover_full} to {back}?"])),
                       (1, c.pick([f"Yes, I'll let everyone know it's moved to {back}", f"Fine, {back} it is"]))])
        task = f"{cover_short} is moved to {back}"
    blocks.append([(0, c.pick([f"I should be back on {back}", f"Hoping to be back {back}", f"I'll keep you posted, hopefully back on {back}"]))])
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, c.pick(["Get well soon! I'll water your plants :)", "Feel better! I can take your afternoon tickets"])),
                       (0, "Thanks so much")])
        extra = c.pick(["", f" {C} offered to help too."])
    summ = c.pick([
        f"{A} has {ill} and won't come in {when}. {cap(task)}. {cap(c.he(A))} hopes to be back on {back}.",
        f"{A} is off sick {when} with {ill}; {task}. {A} expects to be back on {back}.",
        (f"{A} called in sick today ({ill}). {cap(task)}, and {A} should return on {back}." if when == "today"
         else f"{A} won't be at work tomorrow because of {ill}. {cap(task)}, and {A} should return on {back}."),
    ])
    return Scenario(blocks, summ + extra, None)


BANDS = ["Velvet Harbour", "The Midnight Owls", "Neon Parade", "Paper Lanterns", "Copper Sky", "The Salt Marsh Band", "Lunar Bloom"]
VENUES = ["Riverside Arena", "the Apollo", "the town hall", "Arena North", "the Roundhouse", "the old brewery", "the Jazz Cellar"]


def sc_ticket(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    band, venue = c.pick(BANDS), c.pick(VENUES)
    day = c.pick(ALLDAYS)
    date = c.pick(["the 3rd", "the 9th", "the 14th", "the 21st", "the 28th", "the 12th"])
    price = c.pick([25, 35, 40, 45, 55, 60, 70])
    h = c.pick([18, 19, 20])
    m = c.pick([0, 30])
    blocks: list[Block] = [[(0, c.pick([
        f"I've got a spare ticket for {band} at {venue} on {day} {date}. Anyone?",
        f"{cap(c.spare[0])} dropped out so I have an extra ticket for {band}! {day} {date}, {venue}",
        f"Who wants to see {band}?? Spare ticket for {day} {date} at {venue}",
    ]))]]
    taker = B
    if c.k >= 3 and c.chance(0.5):
        C = c.n[2]
        blocks.append([(1, c.pick(["Argh, I'm working that night", "I'd love to but I'm away that weekend"])),
                       (2, c.pick(["ME! How much?", "I'll take it! How much do I owe you?"]))])
        taker = C
        ti = 2
    else:
        blocks.append([(1, c.pick(["Me!! How much?", "Yes please! How much was it?", "Omg I love them. Price?"]))])
        ti = 1
    blocks.append([(0, c.pick([f"{c.money(price)}, what I paid", f"It was {c.money(price)}", f"{c.money(price)}, face value"]))])
    if c.chance(0.4):
        blocks.append([(ti, "Can I pay you on payday? :D"), (0, "Sure, no stress")])
    blocks.append([(0, c.pick([f"Doors open at {c.t(h, m)}, meet outside?", f"Let's meet at the entrance at {c.t(h, m)}",
                               f"Meet at the bar next door at {c.t(h, m)}?"])),
                   (ti, c.pick(["Perfect", "See you there!", "Deal"]))])
    summ = c.pick([
        f"{A} has a spare ticket for {band} at {venue} on {day} {date}. {taker} will take it for {c.money(price)}, and they'll meet at "
        f"{t_sum(h, m)}.",
        f"{taker} is buying {A}'s spare ticket for {band} for {c.money(price)}. The gig is on {day} {date} at {venue}; they're meeting at "
        f"{t_sum(h, m)}.",
    ])
    if taker != B:
        summ += f" {B} can't go."
    elif c.k >= 3:
        blocks.append([(2, c.pick(["Jealous!! Have fun", "Noooo I wanted it :("]))])
    return Scenario(blocks, summ, None)


DISHES = [("lemon drizzle cake", "a spoonful of yogurt in the batter"), ("lasagne", "a bit of nutmeg in the béchamel"),
          ("chickpea curry", "coconut milk and a squeeze of lime"), ("banana bread", "brown butter"),
          ("guacamole", "a pinch of cumin"), ("mushroom risotto", "dried porcini"),
          ("chilli", "a square of dark chocolate"), ("carrot cake", "grated orange zest"), ("pad thai", "tamarind paste")]


def sc_recipe(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    dish, secret = c.pick(DISHES)
    event = c.pick(["at the barbecue", "on Sunday", "at your party", "at book club", "at the potluck"])
    occasion = c.pick(["my in-laws on Saturday", "the office potluck on Friday", "my sister's birthday", "a dinner party next week",
                       "the kids' school fair"])
    occ_sum = occasion.replace("my in-laws", f"{c.his(A)} in-laws").replace("my sister's", f"{c.his(A)} sister's")
    how = c.pick(["email", "WhatsApp", "a photo of the recipe card"])
    blocks: list[Block] = [[(0, c.pick([
        f"That {dish} {event} was incredible. Can I have the recipe?",
        f"I'm still thinking about your {dish} from {event.replace('at ', '').replace('on ', '')}. Recipe please!!",
        f"Would you share your {dish} recipe? Everyone loved it {event}",
    ]))]]
    blocks.append([(1, c.pick(["Haha thank you! Of course", "Aww thanks! Sure", "Glad you liked it!"])),
                   (1, c.pick([f"The secret is {secret}", f"Don't tell anyone, but it's {secret}", f"Key thing is {secret}"]))])
    blocks.append([(0, c.pick([f"Ahh that makes sense. I want to make it for {occasion}", f"Genius. It's for {occasion}"]))])
    if c.chance(0.5):
        blocks.append([(1, c.pick(["Don't rush it, that's the main thing", "Taste as you go!", "Use the best ingredients you can find"])),
                       (0, "Noted")])
    blocks.append([(1, c.pick([f"I'll send you the full recipe by {how} tonight", f"Sending it by {how} later"]))])
    if how == "a photo of the recipe card":
        blocks[-1] = [(1, "Here you go"), (1, "<file_photo>")]
    summ_how = {"email": "by email", "WhatsApp": "on WhatsApp", "a photo of the recipe card": "as a photo"}[how]
    sent = "sent" if how == "a photo of the recipe card" else "will send"
    summ = c.pick([
        f"{A} loved {B}'s {dish} and asked for the recipe. {B} {sent} it {summ_how}; the secret is {secret}. {A} wants to make it for {occ_sum}.",
        f"{B} {sent} {A} the recipe for {c.his(B)} {dish} {summ_how}. {A} plans to cook it for {occ_sum}.",
    ])
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, "Can you send it to me too?"), (1, "Sure!")])
        summ += f" {C} wants it too."
    return Scenario(blocks, summ, [(0, "Thank you!!")])


CAR_ISSUES = [("won't start", "a dead battery"), ("has a flat tyre", "a punctured tyre"),
              ("has a warning light on", "worn brake pads"), ("is making a horrible noise", "a broken exhaust")]
GARAGES = ["Kwik Fit", "the garage on Station Road", "Dave's Motors", "the dealership", "AutoCare"]


def sc_car(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    issue, cause = c.pick(CAR_ISSUES)
    where = c.pick(["at home", "in the supermarket car park", "at work", "outside the gym"])
    garage = c.pick(GARAGES)
    day = c.pick(WEEKDAYS)
    cost = c.pick([80, 120, 150, 220, 260, 340])
    h = c.pick([7, 8])
    m = c.pick([0, 15, 30, 45])
    blocks: list[Block] = [[(0, c.pick([
        f"My car {issue} :(",
        f"Great start to the day, the car {issue}",
        f"Help, my car {issue} and I'm {where}",
    ]))]]
    lift = c.chance(0.6)
    if lift:
        blocks.append([(0, c.pick(["Any chance you could give me a lift to work tomorrow?", "Could I get a ride with you in the morning?"])),
                       (1, c.pick([f"Sure, I'll pick you up at {c.t(h, m)}", f"Of course. Be ready at {c.t(h, m)}"])),
                       (0, "You're a star")])
    else:
        blocks.append([(1, c.pick(["Want me to come over with jump leads?", "Do you need me to come?"])),
                       (0, "No it's fine, I've called someone")])
    blocks.append([(0, c.pick([f"Booked it into {garage} for {day}", f"{cap(garage)} can look at it on {day}"])),
                   (1, c.pick(["What do they think it is?", "Did they say what's wrong?"])),
                   (0, c.pick([f"They think it's {cause}. About {c.money(cost)} :(", f"Probably {cause}, around {c.money(cost)}"]))])
    if c.k >= 3:
        blocks.append([(2, c.pick([f"{garage} overcharged me last time, get a second quote", "I can lend you my bike meanwhile"])),
                       (0, "Good to know")])
    summ = c.pick([
        f"{A}'s car {issue}. {cap(garage)} will look at it on {day}; they think it's {cause} and it will cost about {c.money(cost)}.",
        f"{A} has car trouble: it {issue}, probably because of {cause}. It goes to {garage} on {day} (about {c.money(cost)}).",
    ])
    if lift:
        summ += c.pick([f" {B} will give {c.him(A)} a lift to work tomorrow at {t_sum(h, m)}.",
                        f" Meanwhile {B} is driving {c.him(A)} to work at {t_sum(h, m)}."])
    return Scenario(blocks, summ, None)


SUBJECTS = ["statistics", "organic chemistry", "microeconomics", "contract law", "anatomy", "linear algebra", "European history", "marketing"]


def sc_study(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    subj = c.pick(SUBJECTS)
    exam_day = c.pick(["next Monday", "next Tuesday", "on the 15th", "in two weeks"])
    day = c.pick(ALLDAYS)
    h = c.pick([10, 11, 13, 14, 16, 18])
    place = c.pick(["the library, second floor", "the library café", f"{B}'s flat", "the study room in Block C",
                    "the big table in the student union"])
    place_b = place.replace(f"{B}'s flat", "my flat")
    blocks: list[Block] = [[(0, c.pick([
        f"The {subj} exam is {exam_day} and I'm panicking. Study session?",
        f"Anyone up for revising {subj} together? Exam's {exam_day}",
        f"We should do a {subj} study group before the exam {exam_day}",
    ]))]]
    blocks.append([(1, c.pick([f"Yes please. {day}?", f"I'm in. How about {day}?", f"Definitely, {day} works for me"])),
                   (0, c.pick([f"{day} is good. {c.t(h, 0)}?", f"Ok {day} at {c.t(h, 0)}"])),
                   (1, c.pick([f"Let's meet at {place_b}", f"{cap(place_b)}?"]))])
    names = [A, B]
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        late = c.chance(0.5)
        if late:
            blocks.append([(2, c.pick([f"I have a shift until {c.t(h + 1, 0)}, I'll join after", "I'll come but an hour late"])),
                           (0, "No problem")])
            extra += f" {C} will join an hour later."
        else:
            blocks.append([(2, "Count me in! I'll bring my notes on the hard chapters")])
            extra += f" {C} is coming and will bring notes."
        names.append(C)
    if c.k >= 4:
        D = c.n[3]
        blocks.append([(3, "Can't make it but I'll share my flashcards in the group"), (1, "Thanks!")])
        extra += f" {D} can't come but will share flashcards."
    if c.chance(0.5):
        blocks.append([(0, "Let's each do two past papers before"), (1, "Ok")])
        extra += " Everyone should do two past papers beforehand."
    ns = join_names(names)
    summ = c.pick([
        f"{ns} will study for the {subj} exam on {day} at {t_sum(h, 0)} at {place}.",
        f"The {subj} exam is {exam_day}. {ns} are meeting on {day} at {t_sum(h, 0)} at {place} to revise.",
    ])
    return Scenario(blocks, summ + extra, None)


DOCS = [("dentist", "dentist appointment"), ("GP", "doctor's appointment"), ("physio", "physio session"),
        ("eye test", "eye test"), ("blood test", "blood test")]


def sc_doctor(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    doc, label = c.pick(DOCS)
    d0 = c.pick(WEEKDAYS)
    h0, m0 = c.pick([9, 10, 11, 14, 15]), c.pick([0, 15, 30, 45])
    blocks: list[Block] = [[(0, c.pick([
        f"Don't forget your {label} on {d0} at {c.t(h0, m0)}!",
        f"Reminder: {doc} {d0}, {c.t(h0, m0)}",
        f"You remember the {label} is {d0}, right? {c.t(h0, m0)}",
    ]))]]
    if c.chance(0.55):
        d1 = c.pick([d for d in WEEKDAYS if d != d0])
        h1, m1 = c.pick([8, 12, 16, 17]), c.pick([0, 30])
        blocks.append([(1, c.pick([f"Oh no, I totally forgot. I have a work thing on {d0}", "Argh, I can't make that, I'm on a course"])),
                       (0, "Call them and move it?"),
                       (1, c.pick([f"Done, they moved it to {d1} at {c.t(h1, m1)}", f"Just rang them. New slot is {d1} {c.t(h1, m1)}"]))])
        fd, ft = d1, t_sum(h1, m1)
        moved = True
    else:
        blocks.append([(1, c.pick(["Yep, it's in my calendar", "Thanks, I'd totally forgotten", "Yes yes, I know :P"]))])
        fd, ft = d0, t_sum(h0, m0)
        moved = False
    lift = c.chance(0.5)
    if lift:
        blocks.append([(0, c.pick(["Want me to drive you?", "I can give you a lift if you like"])), (1, "Yes please")])
    summ = c.pick([
        (f"{B} moved {c.his(B)} {label} from {d0} to {fd} at {ft}." if moved else f"{A} reminded {B} about {c.his(B)} {label} on {fd} at {ft}."),
        f"{B}'s {label} is on {fd} at {ft}." + (f" {cap(c.he(B))} couldn't make {d0}." if moved else ""),
    ])
    if lift:
        summ += f" {A} will drive {c.him(B)}."
    if c.k >= 3:
        blocks.append([(2, "Can you ask them if they have any slots for me too?"), (1, "Sure")])
    return Scenario(blocks, summ, None)


DESTS = ["Lisbon", "Crete", "Krakow", "Porto", "Barcelona", "Edinburgh", "Split", "Tenerife", "Copenhagen", "Sicily"]


def sc_holiday(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    d1, d2 = c.rng.sample(DESTS, 2)
    dates, dates_sum = c.pick([("the first week of July", "in the first week of July"),
                               ("the 12th to the 19th of August", "from the 12th to the 19th of August"),
                               ("Easter", "over Easter"), ("mid-September", "in mid-September"),
                               ("the May bank holiday weekend", "over the May bank holiday weekend")])
    budget = c.pick([400, 500, 600, 800, 1000])
    stay = c.pick(["an Airbnb", "a hotel near the beach", "a hostel", "a small apartment in the old town", "a campsite"])
    blocks: list[Block] = [[(0, c.pick([
        f"So where are we going this summer? I'm thinking {d1}",
        f"Holiday planning time! {d1}?",
        f"I found cheap flights to {d1}!",
    ]))]]
    switched = c.chance(0.5)
    if switched:
        blocks.append([(1, c.pick([f"We did {d1} two years ago though. What about {d2}?", f"Hmm, {d1} will be so crowded. {d2}?"])),
                       (0, c.pick([f"Oh, {d2} sounds great actually", f"Fine, {d2} it is!"]))])
        dest = d2
    else:
        blocks.append([(1, c.pick([f"{d1} sounds amazing", "Yes!! Been wanting to go for ages"]))])
        dest = d1
    blocks.append([(0, c.pick([f"When? I can do {dates}", f"I can get time off for {dates}"])),
                   (1, c.pick(["Works for me", "Perfect, me too"])),
                   (1, c.pick([f"Let's keep it under {c.money(budget)} each", f"Budget around {c.money(budget)} per person?"]))])
    booker_f = c.pick([0, 1])
    blocks.append([(booker_f, "I'll book the flights"), (1 - booker_f, c.pick([f"And I'll look for {stay}", f"I'll find {stay} then"]))])
    F, S = c.n[booker_f], c.n[1 - booker_f]
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, "Can I come?? :D"), (0, c.pick(["Of course!", "The more the merrier"]))])
        extra = f" {C} is coming too."
    summ = c.pick([
        f"{A} and {B} are going to {dest} {dates_sum} with a budget of about {c.money(budget)} each. {F} will book the flights and {S} will look for "
        f"{stay}.",
        f"{A} and {B} picked {dest} for a trip {dates_sum}."
        + (f" {B} didn't want {d1}." if switched else "")
        + f" {F} is booking flights and {S} is finding {stay}.",
    ])
    return Scenario(blocks, summ + extra, None)


OCCASIONS = ["our anniversary", "a catch-up", "the promotion", "Mum's visit", "the end of exams"]


def sc_dinner(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    r1, r2 = c.rng.sample(RESTAURANTS, 2)
    day = c.pick(["Friday", "Saturday", "Thursday", "tomorrow", "Sunday"])
    on_day = day if day == "tomorrow" else f"on {day}"
    h, m = c.pick([18, 19, 20]), c.pick([0, 30, 0, 15])
    people = c.k + c.pick([0, 0, 1])
    blocks: list[Block] = [[(0, c.pick([
        f"Dinner {day}? I fancy {r1}",
        f"Shall we go out for dinner {day}? Maybe {r1}?",
        f"We should celebrate! {cap(r1)} {on_day}?",
    ]))]]
    changed = c.chance(0.5)
    if changed:
        blocks.append([(1, c.pick([f"I had {r1} last week, how about {r2}?", f"{cap(r1)} is always fully booked. {cap(r2)}?"])),
                       (0, c.pick(["Sure, good shout", f"Fine, {r2} then"]))])
        rest = r2
    else:
        blocks.append([(1, c.pick(["Yes!! Love that place", "Go on then"]))])
        rest = r1
    if c.k >= 3:
        blocks.append([(2, "Can I join?"), (0, "Of course")])
    if people > c.k:
        blocks.append([(1, c.pick([f"Can I bring {c.spare[0]}?", f"{c.spare[0]} might come too"])), (0, "Sure")])
    blocks.append([(0, c.pick([f"I'll book a table for {people} at {c.t(h, m)}", f"Booking for {people} people, {c.t(h, m)}"])),
                   (1, "Perfect")])
    ns = join_names(c.n)
    summ = c.pick([
        f"{A} is booking a table for {people} at {rest} {on_day} at {t_sum(h, m)}.",
        f"{ns} are going to dinner at {rest} {on_day} at {t_sum(h, m)}; {A} will book a table for {people}.",
    ])
    if changed:
        summ += c.pick([f" {B} didn't want {r1}.", ""])
    if people > c.k:
        summ += f" {c.spare[0]} is coming too."
    return Scenario(blocks, summ, None)


def sc_sitting(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    what = c.pick(["cat", "plants", "dog", "fish", "kids"])
    d1, d2 = c.pick([("Friday", "Sunday"), ("Thursday", "Monday"), ("Saturday", "Tuesday"), ("the 3rd", "the 10th")])
    key = c.pick(["under the mat", "with my neighbour at number 12", "in the lockbox by the door", "with the concierge"])
    key_sum = key.replace("my neighbour", f"{c.his(A)} neighbour")
    if what == "kids":
        h1, h2 = c.pick([18, 19]), c.pick([22, 23])
        blocks: list[Block] = [[(0, c.pick([
            f"Huge favour: could you babysit on {d1} evening? We have a wedding do",
            f"Any chance you're free {d1} night to watch the kids?",
        ]))],
            [(1, "Sure! What time?"), (0, f"From {c.t(h1, 0)} until about {c.t(h2, 0)}"), (1, "No problem")],
            [(0, c.pick(["They're usually asleep by 8, pizza is in the freezer", "Bedtime is 8, they'll try to negotiate haha"])),
             (1, "Haha I'm immune to negotiation")]]
        summ = c.pick([
            f"{B} will babysit {A}'s kids on {d1} from {t_sum(h1, 0)} until about {t_sum(h2, 0)}.",
            f"{A} asked {B} to look after the kids on {d1} evening, {t_sum(h1, 0)} to {t_sum(h2, 0)}, and {B} agreed.",
        ])
        if c.k >= 3:
            blocks.append([(2, c.pick(["Good luck with that, they're a handful haha", f"I can take over next time, {A}"]))])
        return Scenario(blocks, summ, [(0, "Thank you so much!")])
    task = {"cat": "feed the cat", "plants": "water the plants", "dog": "walk and feed the dog", "fish": "feed the fish"}[what]
    freq = {"cat": "twice a day", "plants": "every other day", "dog": "morning and evening", "fish": "once a day"}[what]
    blocks = [[(0, c.pick([
        f"We're away from {d1} to {d2}. Could you {task}?",
        f"Big favour: could you {task} while we're away? From {d1} to {d2}",
    ]))],
        [(1, c.pick(["Of course! How often?", "Sure, what do I need to do?"])),
         (0, c.pick([f"Just {freq}", f"{cap(freq)} should be fine"]))],
        [(0, c.pick([f"Key is {key}", f"The key will be {key}"])),
         (1, "Got it")]]
    if c.chance(0.4):
        blocks.append([(0, "I'll bring you something back :)"), (1, "Wine please haha")])
    summ = c.pick([
        f"{A} is away from {d1} to {d2}, and {B} will {task} {freq}. The key is {key_sum}.",
        f"{B} agreed to {task} for {A} from {d1} to {d2}; the key is {key_sum}.",
    ])
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, f"I can take over on the last day if you need, {B}"), (1, "Great, thanks")])
        summ += f" {C} can help on the last day."
    return Scenario(blocks, summ, None)


def sc_parcel(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    item = c.pick(["my new phone", "a birthday present for Mum", "a new lamp", "a pair of trainers", "a laptop for work"])
    day = c.pick(["tomorrow", "Thursday", "Friday", "Monday"])
    h1 = c.pick([9, 10, 12])
    h2 = h1 + c.pick([2, 3, 4])
    back = c.pick([13, 14, 15, 16])
    on_day = day if day == "tomorrow" else f"on {day}"
    item_sum = item.replace("my new", f"{c.his(A)} new").replace("for Mum", f"for {c.his(A)} mum")
    blocks: list[Block] = [[(0, c.pick([
        f"Will you be home {on_day}? I've got a parcel coming between {c.t(h1, 0)} and {c.t(h2, 0)}",
        f"Are you in {on_day}? {cap(item)} is being delivered, {c.t(h1, 0)}-{c.t(h2, 0)}",
    ]))]]
    if c.chance(0.5):
        blocks.append([(1, c.pick(["Yes, I'm working from home", "I'll be in all day"])),
                       (0, "Amazing, it needs a signature"), (1, "No problem")])
        summ = c.pick([
            f"{B} will be home {on_day} to sign for {A}'s parcel ({item_sum}), due between {t_sum(h1, 0)} and {t_sum(h2, 0)}.",
            f"{A} is expecting {item_sum} {on_day} between {t_sum(h1, 0)} and {t_sum(h2, 0)}; {B} will be in to receive it.",
        ])
    else:
        nb = c.pick(["4", "7", "12", "15"])
        blocks.append([(1, c.pick([f"I'm out until {c.t(back, 0)} :(", f"No, I'm at work until about {c.t(back, 0)}"])),
                       (1, c.pick([f"Ask them to leave it with the neighbours at number {nb}?", f"Could it go to number {nb}? They're always in"])),
                       (0, c.pick(["Good idea, I'll add a note", f"Ok, I'll change it to number {nb}"]))])
        summ = c.pick([
            f"{A}'s parcel with {item_sum} arrives {on_day}, but {B} is out until {t_sum(back, 0)}, so it will be left with the neighbours at number "
            f"{nb}.",
            f"{B} can't take in {A}'s delivery {on_day}, so {A} will have it left at number {nb}.",
        ])
    return Scenario(blocks, summ, None)


def sc_workout(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    act, place = c.pick([("a run", "the park"), ("yoga", "the studio on King Street"), ("the gym", "the gym"),
                         ("tennis", "the courts by the river"), ("a swim", "the leisure centre"), ("a bike ride", "the canal path")])
    if act == "the gym":
        act = "a gym session"
    day = c.pick(ALLDAYS)
    h0 = c.pick([6, 7])
    h1 = c.pick([8, 9, 10])
    blocks: list[Block] = [[(0, c.pick([
        f"Fancy {act} on {day}? {cap(c.t(h0, 30))} at {place}?",
        f"{day} morning: {act} at {place}? I was thinking {c.t(h0, 30)}",
        f"Are you up for {act} this {day}? Early, like {c.t(h0, 30)}, at {place}",
    ]))]]
    if c.chance(0.6):
        blocks.append([(1, c.pick(["That's so early :( Could we do a bit later?", "Ugh, I'm not a morning person. Later?"])),
                       (0, f"{cap(c.t(h1, 0))}?"), (1, "Deal")])
        h, m, moved = h1, 0, True
    else:
        blocks.append([(1, c.pick(["Yes! See you there", "Deal, don't be late"]))])
        h, m, moved = h0, 30, False
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        blocks.append([(2, "Can I come too?"), (0, "Of course!")])
        extra = f" {C} is joining them."
    if c.chance(0.4):
        blocks.append([(1, "Breakfast after?"), (0, "Obviously")])
        extra += " They'll have breakfast afterwards."
    summ = c.pick([
        f"{A} and {B} are going for {act} at {place} on {day} at {t_sum(h, m)}.",
        f"{A} invited {B} for {act} on {day}. They'll meet at {place} at {t_sum(h, m)}" + (" rather than early in the morning." if moved else "."),
    ])
    return Scenario(blocks, summ + extra, None)


FILMS = ["Jurassic Park", "Inception", "Paddington 2", "The Godfather", "Spirited Away", "Casablanca", "Alien", "Toy Story", "Parasite",
         "Back to the Future"]


def sc_movienight(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    f1, f2 = c.rng.sample(FILMS, 2)
    day = c.pick(["Friday", "Saturday", "tonight", "Sunday"])
    h = c.pick([19, 20])
    m = c.pick([0, 30])
    blocks: list[Block] = [[(0, c.pick([
        f"Movie night at mine {day}? {c.t(h, m)}",
        f"Who's up for a film at my place {day}? Thinking {c.t(h, m)}",
    ]))]]
    blocks.append([(1, c.pick(["Yes! What are we watching?", "I'm in. Which film?"])),
                   (0, c.pick([f"{f1}?", f"I was thinking {f1}"])),
                   (1, c.pick([f"Seen it too many times. {f2}?", f"Meh. What about {f2}?"]))])
    film = f2
    if c.chance(0.3):
        blocks[-1].append((0, f"Fine, {f2} it is"))
    else:
        blocks[-1].append((0, f"{f2} works"))
    bring = {1: c.pick(["snacks", "popcorn", "crisps and dips"])}
    blocks.append([(1, f"I'll bring {bring[1]}")])
    extra = ""
    if c.k >= 3:
        C = c.n[2]
        drink = c.pick(["drinks", "a bottle of wine", "ice cream"])
        blocks.append([(2, f"Count me in, I'll bring {drink}")])
        extra = f" {C} is bringing {drink}."
    if c.k >= 4:
        D = c.n[3]
        blocks.append([(3, "I'll be late, start without me"), (0, "Ok!")])
        extra += f" {D} will arrive late."
    summ = c.pick([
        f"{A} is hosting a movie night {'on ' if day not in ('tonight',) else ''}{day} at {t_sum(h, m)}. They'll watch {film}, and {B} will bring "
        f"{bring[1]}.",
        f"Movie night at {A}'s {'on ' if day != 'tonight' else ''}{day} at {t_sum(h, m)}: {film} instead of {f1}. {B} brings {bring[1]}.",
    ])
    return Scenario(blocks, summ + extra, None)


def sc_lostitem(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    item = c.pick(["scarf", "umbrella", "keys", "headphones", "water bottle", "glasses", "phone charger", "jacket"])
    it = "them" if item in ("keys", "headphones", "glasses") else "it"
    spot = c.pick(["on your sofa", "in your kitchen", "in your hallway", "at your party"])
    found = c.pick(["behind the sofa cushions", "on the kitchen counter", "under the coat rack", "in the bathroom"])
    when, when_sum = c.pick([("to work tomorrow", "to work tomorrow"), ("on Friday", "on Friday"),
                             ("to book club on Thursday", "to book club on Thursday"), ("when I see you on Sunday", "when they meet on Sunday")])
    blocks: list[Block] = [[(0, c.pick([
        f"Did I leave my {item} {spot}? Can't find {it} anywhere",
        f"Have you seen my {item}? I think I left {it} {spot}",
    ]))]]
    if c.chance(0.75):
        blocks.append([(1, c.pick(["Let me check", "Hang on"])),
                       (1, c.pick([f"Found {it}! {'They were' if it == 'them' else 'It was'} {found}", f"Yes! {cap(found)}"])),
                       (0, "Phew, thank you")])
        if c.chance(0.5):
            blocks.append([(1, f"I'll bring {it} {when}"), (0, "Perfect")])
            res = f"{c.he(B)} will bring {it} {when_sum}"
        else:
            h = c.pick([17, 18, 19])
            blocks.append([(0, f"Can I come get {it} today around {c.t(h, 0)}?"), (1, "Sure, I'm in")])
            res = f"{A} will pick {it} up today at {t_sum(h, 0)}"
        summ = c.pick([
            f"{A} left {c.his(A)} {item} at {B}'s place. {B} found {it} {found} and {res}.",
            f"{B} found {A}'s {item} {found}; {res}.",
        ])
    else:
        blocks.append([(1, c.pick(["Haven't seen it, sorry", "Nothing here, sorry :("])),
                       (1, "Did you check the café?"),
                       (0, "Ah maybe, I'll call them")])
        summ = f"{A} lost {c.his(A)} {item}. {'They aren' if it == 'them' else 'It isn'}'t at {B}'s place, so {A} will call the café."
    return Scenario(blocks, summ, None)


GROCERIES = ["milk", "eggs", "bread", "bananas", "washing-up liquid", "toilet paper", "pasta", "coffee", "tomatoes", "cheese", "rice", "onions"]


def sc_groceries(c: Ctx) -> Scenario:
    A, B = c.n[0], c.n[1]
    items = c.rng.sample(GROCERIES, c.pick([2, 3]))
    more = c.pick([g for g in GROCERIES if g not in items])
    chore = c.pick(["take the bins out", "do the dishes", "clean the bathroom", "hoover the living room"])
    blocks: list[Block] = [[(0, c.pick(["At the supermarket, need anything?", "I'm at Tesco, anything we need?",
                                        "Popping to the shop, shopping list?"]))]]
    blocks.append([(1, c.pick([f"We're out of {join_names(items)}", f"{cap(join_names(items))} please!",
                               f"{cap(join_names(items))}. That's it I think"]))])
    got = list(items)
    if c.k >= 3:
        blocks.append([(2, f"And {more}!"), (0, "Ok")])
        got.append(more)
    elif c.chance(0.5):
        blocks.append([(1, f"Oh and {more}"), (0, "Got it")])
        got.append(more)
    blocks.append([(1, c.pick([f"I'll {chore} tonight", f"I'll {chore} while you're out"])), (0, "Deal")])
    summ = c.pick([
        f"{A} is at the supermarket and will buy {join_names(got)}. {B} will {chore}.",
        f"{A} is getting {join_names(got)} from the shop, and {B} will {chore} in the meantime.",
    ])
    return Scenario(blocks, summ, None)


SCENARIOS: list[tuple[Callable[[Ctx], Scenario], tuple[int, ...]]] = [
    (sc_meeting, (2, 2, 3, 4)),
    (sc_borrow, (2, 2, 2, 3)),
    (sc_delay, (2, 2, 2, 3)),
    (sc_gift, (2, 2, 3, 3, 4)),
    (sc_lostpet, (2, 2, 3)),
    (sc_interview, (2, 2, 2, 3)),
    (sc_bill, (2, 2, 3, 4)),
    (sc_moving, (2, 2, 3)),
    (sc_sick, (2, 2, 2, 3)),
    (sc_ticket, (2, 2, 3)),
    (sc_recipe, (2, 2, 2, 3)),
    (sc_car, (2, 2, 3)),
    (sc_study, (2, 3, 3, 4)),
    (sc_doctor, (2, 2, 2, 3)),
    (sc_holiday, (2, 2, 3)),
    (sc_dinner, (2, 2, 3)),
    (sc_sitting, (2, 2, 3)),
    (sc_parcel, (2,)),
    (sc_workout, (2, 2, 3)),
    (sc_movienight, (2, 3, 3, 4)),
    (sc_lostitem, (2,)),
    (sc_groceries, (2, 2, 3)),
]

GREETINGS = ["Hi {o}!", "Hey {o}!", "Hi!", "Hello!", "Hey!", "Morning!", "Hiya!", "{o}!"]


def _assemble(c: Ctx, sc: Scenario) -> list[Turn] | None:
    rng = c.rng
    blocks = [list(b) for b in sc.blocks]
    # Optional greeting merged into the first turn.
    if rng.random() < 0.35:
        spk, txt = blocks[0][0]
        other = c.n[sc.other if spk == sc.asker else sc.asker]
        g = rng.choice(GREETINGS).format(o=other)
        if not txt.startswith(other) and not txt.startswith(("Hi", "Hey", "Morning")):
            blocks[0][0] = (spk, f"{g} {txt}")
    # Digressions, never before the first block.
    n_dig = rng.choice([0, 0, 1, 1, 1, 2])
    dig_ids = rng.sample(range(len(_digressions(c, 0, 1))), n_dig)
    for di in dig_ids:
        a, b = rng.sample(range(c.k), 2)
        dig = _digressions(c, a, b)[di]
        pos = rng.randint(2, len(blocks)) if len(blocks) >= 3 else len(blocks)
        blocks.insert(pos, dig)
    if sc.closing and rng.random() < 0.6:
        blocks.append(list(sc.closing))
    turns = [t for b in blocks for t in b]
    if len(turns) > MAX_TURNS:
        return None
    if len(turns) < MIN_TURNS:
        filler = [(sc.other, rng.choice(["Ok :)", "Great", "Sounds good"])), (sc.asker, rng.choice(["Thanks!", "Cool", "Perfect"]))]
        turns += filler[: MIN_TURNS - len(turns)]
    # Make sure every speaker says something.
    spoken = {s for s, _ in turns}
    for i in range(c.k):
        if i not in spoken:
            turns.append((i, rng.choice(["Haha", "Keep us posted!", "Ok :)", "+1", ":)"])))
    if len(turns) > MAX_TURNS:
        return None
    return turns


_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_LOWER_OK = ("They", "They'll", "Everyone", "The", "Meanwhile", "It", "He", "She", "His", "Her")


def limit_sentences(summary: str, max_sentences: int = 3) -> str:
    """Merge trailing sentences so a summary has at most ``max_sentences``."""
    sents = _SENT_SPLIT.split(summary.strip())
    if len(sents) <= max_sentences:
        return summary.strip()
    head, tail = sents[: max_sentences - 1], sents[max_sentences - 1:]
    clauses = []
    for i, t in enumerate(tail):
        t = t.rstrip(".")
        if i > 0 and t.split(" ", 1)[0] in _LOWER_OK:
            t = t[0].lower() + t[1:]
        clauses.append(t)
    if len(clauses) == 2:
        merged = f"{clauses[0]}, and {clauses[1]}."
    else:
        merged = ", ".join(clauses[:-1]) + f", and {clauses[-1]}."
    return " ".join(head + [merged])


def _one(rng: random.Random) -> dict[str, str]:
    while True:
        fn, ks = rng.choice(SCENARIOS)
        k = rng.choice(ks)
        c = Ctx(rng, k)
        sc = fn(c)
        turns = _assemble(c, sc)
        if turns is None:
            continue
        dialogue = "\n".join(f"{c.n[s]}: {txt}" for s, txt in turns)
        return {"dialogue": dialogue, "summary": limit_sentences(sc.summary)}


def generate(n: int, seed: int, exclude: set | None = None) -> list[dict[str, str]]:
    """Generate ``n`` unique rows with ``random.Random(seed)``.

    Dialogues found in ``exclude`` (or already generated) are skipped, which
    keeps held-out rows disjoint from the training rows.
    """
    rng = random.Random(seed)
    seen = set(exclude or ())
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        row = _one(rng)
        if row["dialogue"] in seen:
            continue
        seen.add(row["dialogue"])
        rows.append(row)
    return rows


def build_all() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Return (train_rows, heldout_rows) exactly as shipped."""
    train = generate(N_TRAIN, TRAIN_SEED)
    heldout = generate(N_HELDOUT, HELDOUT_SEED, exclude={r["dialogue"] for r in train})
    return train, heldout


def dumps_rows(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_all(out_dir: Path | None = None) -> tuple[Path, Path]:
    out = Path(out_dir) if out_dir is not None else PACKAGE_DATASETS
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = build_all()
    p_train, p_held = out / TRAIN_FILE, out / HELDOUT_FILE
    p_train.write_text(dumps_rows(train), encoding="utf-8")
    p_held.write_text(dumps_rows(heldout), encoding="utf-8")
    return p_train, p_held


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the bundled dialogue -> summary jsonl files.")
    parser.add_argument("output_dir", nargs="?", type=Path, default=PACKAGE_DATASETS,
                        help="where to write them (default: the package's datasets folder)")
    p_train, p_held = write_all(parser.parse_args(argv).output_dir)
    print(f"wrote {p_train} ({N_TRAIN} rows) and {p_held} ({N_HELDOUT} rows)")


if __name__ == "__main__":
    main()
