"""What the load test asks, and when: a seeded Poisson schedule over virtual users and a mix.

Each virtual user's asks arrive as a Poisson process of rate ``rate / users``, so all of them
together arrive as one Poisson process of the target rate. Each arrival gets a class drawn from
the mix: short factual asks (top_k 5), analytical ones (top_k 20), and a few long-context
``top_k: "auto"`` asks, at most ``max_long`` of them (the rest of their draws become analytical).
With ``repeat``, that share of the asks repeats an earlier ask of its class exactly (question and
options), as people ask what others asked: the asks an answer cache (RAG_ANSWER_CACHE) can serve.
The same seed, users, rate, duration, mix, questions and repeat share give the same plan; the
arrivals and classes do not depend on ``repeat``, so a plan with repeats differs from its seed's
plan without only in the repeated questions.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, replace
from pathlib import Path

TopK = int | str
CLASSES: dict[str, TopK] = {"short": 5, "analytical": 20, "long": "auto"}

# The SEC 10-Q set (../shared/data/sec-10q/qna_data.csv) labels each question; single-chunk
# lookups are the short factual asks, the rest need several passages, and multi-document ones
# are the natural long-context asks.
SEC_TYPES = {
    "short": ("Single-Doc Single-Chunk RAG",),
    "analytical": ("Single-Doc Multi-Chunk RAG", "Multi-Doc RAG"),
    "long": ("Multi-Doc RAG",),
}

GENERIC_QUESTIONS = {
    "short": [
        "What was the total revenue in the most recent quarter?",
        "What is the company's net income for the period?",
        "How many shares were outstanding at the end of the quarter?",
        "What was the gross margin?",
        "What is the cash and cash equivalents balance?",
    ],
    "analytical": [
        "How did operating expenses change compared to the previous period, and why?",
        "What are the main risk factors and how might they affect future results?",
        "Compare the revenue of the business segments and explain the differences.",
        "What drove the change in gross margin across the reported periods?",
    ],
    "long": [
        "Summarise everything the documents say about liquidity and capital resources.",
        "Give an overview of all legal proceedings and contingencies mentioned.",
    ],
}


@dataclass(frozen=True)
class PlannedAsk:
    at_s: float  # seconds after the start
    user: int
    kind: str  # a key of CLASSES
    question: str
    repeat_of: int | None = None  # the index in the plan of the earlier ask it repeats

    @property
    def top_k(self) -> TopK:
        return CLASSES[self.kind]


def load_questions(path: Path | None) -> dict[str, list[str]]:
    """Questions per class: a CSV with `Question` (and the SEC set's `Question Type`), a text
    file of one question per line (every class draws from all of them), or the generic set."""
    if path is None:
        return GENERIC_QUESTIONS
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = [(r["Question"].strip(), r.get("Question Type", "")) for r in csv.DictReader(f)]
        everything = [q for q, _ in rows if q]
        pools = {
            kind: [q for q, t in rows if q and t in types] for kind, types in SEC_TYPES.items()
        }
        return {kind: pool or everything for kind, pool in pools.items()}
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    questions = [line for line in lines if line and not line.startswith("#")]
    if not questions:
        raise ValueError(f"{path} holds no questions")
    return dict.fromkeys(CLASSES, questions)


def parse_mix(text: str) -> dict[str, float]:
    """``short=0.6,analytical=0.3,long=0.1`` as normalised weights."""
    weights: dict[str, float] = dict.fromkeys(CLASSES, 0.0)
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in CLASSES:
            raise ValueError(f"unknown class {name.strip()!r} in the mix; use {', '.join(CLASSES)}")
        weights[name.strip()] = float(value)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"the mix {text!r} needs non-negative weights with a positive sum")
    return {kind: w / total for kind, w in weights.items()}


def poisson_arrivals(rate: float, duration_s: float, rng: random.Random) -> list[float]:
    """Arrival times in [0, duration_s) of a Poisson process: exponential gaps of mean 1/rate."""
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def plan_asks(
    *,
    users: int,
    rate: float,
    duration_s: float,
    mix: dict[str, float],
    max_long: int,
    questions: dict[str, list[str]],
    seed: int,
    repeat: float = 0.0,
) -> list[PlannedAsk]:
    """Every ask of the run in arrival order (see the module's docstring)."""
    if not 0 <= repeat <= 1:
        raise ValueError(f"the repeat share {repeat!r} is not between 0 and 1")
    rng = random.Random(seed)
    arrivals = sorted(
        (t, user) for user in range(users) for t in poisson_arrivals(rate / users, duration_s, rng)
    )
    kinds, weights = list(mix), list(mix.values())
    plan: list[PlannedAsk] = []
    longs = 0
    for t, user in arrivals:
        kind = rng.choices(kinds, weights)[0]
        if kind == "long":
            if longs >= max_long:
                kind = "analytical"
            longs += kind == "long"
        plan.append(PlannedAsk(round(t, 3), user, kind, rng.choice(questions[kind])))
    return with_repeats(plan, repeat, random.Random(f"{seed}:repeat"))


def with_repeats(plan: list[PlannedAsk], share: float, rng: random.Random) -> list[PlannedAsk]:
    """``plan`` with round(share × its length) asks, drawn by ``rng`` among those that have an
    earlier ask of their class, asking again what one such earlier ask (also drawn) asked."""
    first = {a.kind: i for i, a in reversed(list(enumerate(plan)))}  # each class's first ask
    eligible = [i for i, a in enumerate(plan) if first[a.kind] < i]
    chosen = sorted(rng.sample(eligible, min(len(eligible), round(share * len(plan)))))
    repeated = list(plan)
    for i in chosen:
        earlier = [j for j in range(i) if plan[j].kind == plan[i].kind]
        j = rng.choice(earlier)
        source = repeated[j]  # itself a repeat, maybe: the same question either way
        repeated[i] = replace(plan[i], question=source.question, repeat_of=j)
    return repeated
