"""The synthetic knowledge task: determinism, disjoint entity splits, answers only in the corpus, compact names."""

from __future__ import annotations

import json

from searchr1.data import read_examples
from searchr1.data.synthetic import generate_task, gold_turns
from searchr1.models import load_tokenizer
from searchr1.rewards import exact_match, extract_answer


def test_same_seed_same_task_other_seed_other_task():
    a, b, c = generate_task(seed=1), generate_task(seed=1), generate_task(seed=2)
    assert a.corpus() == b.corpus() and a.questions("heldout") == b.questions("heldout")
    assert a.corpus() != c.corpus()


def test_heldout_entities_never_appear_in_training_questions(task):
    assert set(task.train_people).isdisjoint(task.heldout_people)
    train_text = " ".join(ex.question for ex in task.questions("train"))
    for name in task.heldout_people:
        assert name not in train_text
    assert len(task.questions("heldout")) == 3 * len(task.heldout_people)


def test_every_answer_is_stated_in_the_corpus_along_the_gold_path(task, task_files):
    passages = {}
    for line in task_files.corpus.read_text().splitlines():
        row = json.loads(line)
        title, text = row["contents"].split("\n", 1)
        assert title.startswith('"') and title.endswith('"')  # wiki-18: "Title"\ntext
        passages[title.strip('"')] = text
    for ex in read_examples(str(task_files.heldout)):
        person = passages[ex.metadata["entity"]]
        answer = ex.golden_answers[0]
        if ex.metadata["hops"] == 1:
            assert answer in person
        else:  # the person's passage names the city, the city's passage names the country
            city = task.person(ex.metadata["entity"]).city
            assert city in person and answer not in person and answer in passages[city]


def test_gold_turns_search_the_path_and_answer_correctly(task):
    ex = next(e for e in task.questions("train") if e.metadata["hops"] == 2)
    turns = gold_turns(task, ex)
    assert len(turns) == 3
    assert f"<search> {ex.metadata['entity']} </search>" in turns[0]
    assert exact_match(extract_answer(turns[-1]), ex.golden_answers)


def test_gold_reasoning_restates_the_retrieved_sentence_verbatim(task):
    """Each later turn's <think> is a sentence of the passage the previous search returns, ending in the fact."""
    passages = {row["contents"].split("\n")[0].strip('"'): row["contents"] for row in task.corpus()}
    for ex in task.questions("heldout")[:3]:  # born, job, country of one person
        turns = gold_turns(task, ex)
        searched = [t.split("<search> ")[1].split(" </search>")[0] for t in turns if "<search>" in t]
        for query, turn in zip(searched, turns[1:]):
            thought = turn.split("<think> ")[1].split(" </think>")[0]
            assert thought in passages[query], (thought, passages[query])
        assert thought.endswith(f" {ex.golden_answers[0]}.")


def test_names_are_one_or_two_tokens_for_the_task_tokenizer(task, model_dir):
    tok = load_tokenizer(str(model_dir))
    for p in task.people:
        for word in p.name.split():
            assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) <= 2, word


def test_teacher_guesses_the_requested_share_without_searching(task):
    from searchr1.data.synthetic import answer_options, teacher_turns
    from searchr1.protocols import normalize_question

    examples = task.questions("train")
    none, every = teacher_turns(task, examples, 0.0, seed=1), teacher_turns(task, examples, 1.0, seed=1)
    for ex in examples:
        key = normalize_question(ex.question)
        assert none[key] == gold_turns(task, ex)
        (guess,) = every[key]  # one turn, an answer, no search
        assert "<search>" not in guess and extract_answer(guess) in answer_options(task, ex)
    half = teacher_turns(task, examples, 0.5, seed=1)
    guessed = sum("<search>" not in turns[0] for turns in half.values())
    assert 0.3 * len(examples) < guessed < 0.7 * len(examples)
    assert half == teacher_turns(task, examples, 0.5, seed=1)


def test_redrawn_world_keeps_names_and_splits_but_not_the_facts(task):
    from searchr1.data.synthetic import redraw_facts

    world = redraw_facts(task, seed=7)
    assert [p.name for p in world.people] == [p.name for p in task.people]
    assert world.train_people == task.train_people and world.heldout_people == task.heldout_people
    assert set(world.cities) == set(task.cities) and set(world.cities.values()) == set(task.cities.values())
    same = sum(a.city == b.city for a, b in zip(world.people, task.people))
    assert same < 0.5 * len(task.people)  # 1 in 12 expected by chance
