"""A seeded synthetic knowledge task whose answers exist only in its own corpus (the CPU learning demo).

``generate_task(seed)`` invents people (names built from syllables), cities and countries, writes one passage per
entity in the wiki-18 format (``{"id", "contents": "\\"Title\\"\\ntext"}``) and asks questions about the people:

* one-hop (like NQ): ``Where was Kavo Dessin born?`` → the person's passage names the city;
  ``What is the job of Kavo Dessin?`` → the job;
* two-hop (like HotpotQA's bridge questions): ``In which country was Kavo Dessin born?`` → search the person,
  read the city, search the city, read the country.

People are split into *train* and *held-out* entities, so memorising training answers cannot answer held-out
questions: only reading the retrieved passages can. Every fact is a random draw (uniform over the cities, jobs
and countries), so a policy that never searches scores about 1 / (number of options) on each question type.
Names are short syllable words repeated across the corpus, so a tokenizer trained on :func:`tokenizer_texts`
encodes each name in one or two tokens.

The gold search path of a question (:func:`gold_turns`) is what a perfect policy writes, turn by turn, in either
protocol (``search_r1`` tags or ``tool_call``);
``searchr1.training.sft`` replays it through the real rollout engine to build SFT trajectories.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from searchr1.data.qa import QAExample
from searchr1.protocols import Action, get_protocol, normalize_question

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s"]
JOBS = ["baker", "pilot", "farmer", "painter", "doctor", "sailor", "teacher", "miner", "singer", "tailor"]
"""Occupations (real words: one token each in a tokenizer trained on the corpus)."""

TRAIN_SOURCE = "synthetic_train"
HELDOUT_SOURCE = "synthetic_heldout"


@dataclass(frozen=True)
class Person:
    """A fictional person: ``name`` (two syllable words), birthplace ``city`` and ``job``."""

    name: str
    city: str
    job: str


@dataclass
class SyntheticTask:
    """The generated world and its questions.

    Attributes:
        people: every person (train and held-out).
        cities: city name → country name.
        train_people: names of the training entities.
        heldout_people: names of the held-out entities (disjoint from ``train_people``).
        seed: the generator seed.
    """

    people: list[Person]
    cities: dict[str, str]
    train_people: list[str]
    heldout_people: list[str]
    seed: int
    _by_name: dict[str, Person] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {p.name: p for p in self.people}

    def person(self, name: str) -> Person:
        """The person called ``name``."""
        return self._by_name[name]

    def corpus(self) -> list[dict[str, str]]:
        """Wiki-18-format passages: one per person, then one per city."""
        rows = [
            {"id": f"p{i}", "contents": f'"{p.name}"\n{p.name} was born in {p.city}. {p.name} works as a {p.job}.'}
            for i, p in enumerate(self.people)
        ]
        rows += [
            {"id": f"c{i}", "contents": f'"{city}"\n{city} is a city in {country}.'}
            for i, (city, country) in enumerate(sorted(self.cities.items()))
        ]
        return rows

    def questions(self, split: str, two_hop: bool = True) -> list[QAExample]:
        """The questions about ``split``'s people (``"train"`` or ``"heldout"``): born-in, job, (country)."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        names = self.train_people if split == "train" else self.heldout_people
        source = TRAIN_SOURCE if split == "train" else HELDOUT_SOURCE
        out = []
        for name in names:
            p = self.person(name)
            rows = [
                ("born", f"Where was {name} born?", p.city, 1),
                ("job", f"What is the job of {name}?", p.job, 1),
            ]
            if two_hop:
                rows.append(("country", f"In which country was {name} born?", self.cities[p.city], 2))
            for kind, question, answer, hops in rows:
                meta = {"kind": kind, "hops": hops, "entity": name}
                out.append(QAExample(f"{source}_{len(out)}", question, [answer], source, meta))
        return out


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _unique_words(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = _word(rng, syllables)
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def generate_task(
    seed: int = 0,
    num_people: int = 200,
    heldout_fraction: float = 0.25,
    num_first_names: int = 24,
    num_last_names: int = 24,
    num_cities: int = 12,
    num_countries: int = 4,
) -> SyntheticTask:
    """Invent a world: people with unique two-word names, cities in countries, and a held-out split of people.

    Args:
        seed: the generator seed (same seed, same task).
        num_people: people in the world (at most ``num_first_names * num_last_names``).
        heldout_fraction: share of people whose questions form the held-out set.
        num_first_names: distinct first names (reused across people, so each is a frequent token).
        num_last_names: distinct last names.
        num_cities: cities (birthplaces drawn uniformly).
        num_countries: countries (each city's country drawn uniformly, every country used at least once).
    """
    if num_people > num_first_names * num_last_names:
        raise ValueError(
            f"num_people={num_people} exceeds the {num_first_names} x {num_last_names} name combinations; "
            "raise num_first_names / num_last_names"
        )
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if num_countries > num_cities:
        raise ValueError(f"num_countries ({num_countries}) must not exceed num_cities ({num_cities})")
    rng = random.Random(seed)
    taken: set[str] = set()
    firsts = _unique_words(rng, num_first_names, 2, taken)
    lasts = _unique_words(rng, num_last_names, 2, taken)
    city_names = _unique_words(rng, num_cities, 2, taken)
    countries = _unique_words(rng, num_countries, 3, taken)
    homes = countries + [rng.choice(countries) for _ in range(num_cities - num_countries)]
    rng.shuffle(homes)
    cities = dict(zip(city_names, homes))
    pairs = rng.sample([(f, la) for f in firsts for la in lasts], num_people)
    people = [Person(f"{f} {la}", rng.choice(city_names), rng.choice(JOBS)) for f, la in pairs]
    names = [p.name for p in people]
    n_held = max(1, round(num_people * heldout_fraction))
    return SyntheticTask(people, cities, sorted(names[n_held:]), sorted(names[:n_held]), seed)


def redraw_facts(task: SyntheticTask, seed: int) -> SyntheticTask:
    """The same people, cities and countries (same names, same splits) with every fact drawn again.

    SFT data built over several redrawn worlds cannot be fitted by memorising who was born where: only reading
    the retrieved passage answers all of them, so the warm start learns to copy from ``<information>``.
    """
    rng = random.Random(seed)
    countries = sorted(set(task.cities.values()))
    city_names = sorted(task.cities)
    homes = countries + [rng.choice(countries) for _ in range(len(city_names) - len(countries))]
    rng.shuffle(homes)
    people = [Person(p.name, rng.choice(city_names), rng.choice(JOBS)) for p in task.people]
    return SyntheticTask(people, dict(zip(city_names, homes)), task.train_people, task.heldout_people, seed)


def gold_turns(task: SyntheticTask, example: QAExample, protocol: str = "search_r1") -> list[str]:
    """What a perfect policy writes for ``example``, one string per generation turn (each ends in an action).

    One-hop: search the person, restate the fact as the passage words it, answer. Two-hop: search the person,
    restate the birthplace, search the city, restate its country, answer. Restating the passage's sentence is the
    reasoning step: after the question-determined words (``X was born in``) the fact is the word that followed
    them in the observation, which a small model learns to copy far sooner than picking it out by its context.
    ``protocol`` names the text protocol the turns are written in (``Protocol.write_turn``).
    """
    write = get_protocol(protocol).write_turn
    p = task.person(example.metadata["entity"])
    answer = example.golden_answers[0]
    born = f"{p.name} was born in {p.city}."
    turns = [write(f"I need to search {p.name}.", Action("search", p.name))]
    if example.metadata["kind"] == "job":
        fact = f"{p.name} works as a {p.job}."
    elif example.metadata["hops"] == 2:
        turns.append(write(born, Action("search", p.city)))
        fact = f"{p.city} is a city in {answer}."
    else:
        fact = born
    turns.append(write(fact, Action("answer", answer)))
    return turns


def answer_options(task: SyntheticTask, example: QAExample) -> list[str]:
    """Every possible answer of ``example``'s question type (cities, jobs or countries), sorted."""
    kind = example.metadata["kind"]
    if kind == "born":
        return sorted(task.cities)
    if kind == "job":
        return sorted(JOBS)
    return sorted(set(task.cities.values()))


def guess_turns(example: QAExample, guess: str, protocol: str = "search_r1") -> list[str]:
    """What a teacher that does not search writes: one turn answering ``guess`` at once (no search)."""
    return [get_protocol(protocol).write_turn(f"The answer is {guess}.", Action("answer", guess))]


def teacher_turns(
    task: SyntheticTask,
    examples: list[QAExample],
    guess_fraction: float = 0.0,
    seed: int = 0,
    protocol: str = "search_r1",
) -> dict[str, list[str]]:
    """Turn scripts of an imperfect teacher: normalised question → turns (see ``searchr1.training.sft``).

    A seeded random ``guess_fraction`` of the questions get :func:`guess_turns` with a uniformly drawn option
    of the right type (right by chance only); the others get the gold search path (:func:`gold_turns`).

    Args:
        task: the task.
        examples: the questions to script.
        guess_fraction: share of questions answered by guessing without searching, in [0, 1].
        seed: seed of which questions guess and of the guesses.
        protocol: the text protocol the turns are written in.
    """
    if not 0.0 <= guess_fraction <= 1.0:
        raise ValueError(f"guess_fraction must be in [0, 1], got {guess_fraction}")
    rng = random.Random(seed)
    out = {}
    for ex in examples:
        if rng.random() < guess_fraction:
            out[normalize_question(ex.question)] = guess_turns(ex, rng.choice(answer_options(task, ex)), protocol)
        else:
            out[normalize_question(ex.question)] = gold_turns(task, ex, protocol)
    return out


def tokenizer_texts(task: SyntheticTask, repeats: int = 3, protocol: str = "search_r1") -> list[str]:
    """Texts to train the tiny tokenizer on: corpus, questions, gold turns and the prompt/observation text.

    The gold turns and the fixed texts (``Protocol.tokenizer_texts``) are the ones of ``protocol``.
    """
    examples = task.questions("train") + task.questions("heldout")
    texts = [row["contents"] for row in task.corpus()] * repeats
    texts += [ex.question for ex in examples]
    texts += [turn for ex in examples for turn in gold_turns(task, ex, protocol)]
    texts += get_protocol(protocol).tokenizer_texts() * 50
    texts += ['\n\n<information>Doc 1(Title: "X") x\n</information>\n\n'] * 50
    return texts


@dataclass(frozen=True)
class TaskFiles:
    """Where :func:`write_task` put the task: ``corpus``, ``train`` and ``heldout`` JSONL paths."""

    corpus: Path
    train: Path
    heldout: Path


def write_task(task: SyntheticTask, out_dir: str | Path, two_hop: bool = True) -> TaskFiles:
    """Write ``corpus.jsonl`` (wiki-18 format) and FlashRAG-format ``train.jsonl`` / ``heldout.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = TaskFiles(out / "corpus.jsonl", out / "train.jsonl", out / "heldout.jsonl")
    _write_jsonl(files.corpus, task.corpus())
    for split, path in (("train", files.train), ("heldout", files.heldout)):
        rows = [
            {
                "id": ex.id,
                "question": ex.question,
                "golden_answers": ex.golden_answers,
                "data_source": ex.data_source,
                "metadata": ex.metadata,
            }
            for ex in task.questions(split, two_hop)
        ]
        _write_jsonl(path, rows)
    return files


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
