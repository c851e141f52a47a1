"""The search log of a run (one Parquet row per executed search) and :class:`ReplayRetriever`, which answers from it.

:class:`SearchRecorder` wraps any retriever and remembers what each query got (passages, latency, error);
after a rollout, :func:`search_records` joins that with the trajectories (which search of which trajectory, at
which turn) and :class:`SearchLog` appends the rows to ``search_log.parquet`` (pyarrow). Columns: ``step``,
``trajectory``, ``turn``, ``query``, ``topk``, ``passage_ids``, ``titles``, ``contents`` (each passage's title line
as shown to the policy, a newline, its text), ``scores``, ``seconds``
(latency of the retriever call that served the query), ``server``, ``error`` (the failure message of a failed
search, else null) and ``phase``: ``train`` (a training rollout), ``val`` (a validation rollout of ``fit``) or
``eval`` (``searchr1 eval``). Besides the searches the policy issued, a method that retrieves for the prompt
(``rag``) logs that retrieval: one row per question, turn 0 (:func:`context_records`).

:class:`ReplayRetriever` reads such a log and answers every query it holds with exactly the logged passages (or
raises the logged failure), offline, without the index or the server; a query the log has never seen raises
:class:`ReplayMissError` naming it. With greedy decoding an evaluation replayed from its own log writes the same
trajectories and scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from searchr1.retrieval.call_metrics import CallWindow, client_metrics
from searchr1.retrieval.types import Passage, RetrievalError, Retriever

SEARCH_LOG_FILE = "search_log.parquet"


@dataclass(frozen=True)
class SearchCall:
    """What one query got from the retriever.

    Attributes:
        passages: the passages returned (empty for a failed search).
        seconds: wall time of the retriever call that served it (the whole batch).
        topk: passages asked for.
        error: the failure message when the call raised :class:`RetrievalError`, else None.
    """

    passages: list[Passage]
    seconds: float
    topk: int
    error: str | None = None


NOT_RECORDED = SearchCall([], 0.0, 0, "not recorded: the search did not go through the SearchRecorder")
"""What :func:`search_records` logs for a query the recorder never saw (a replay of it raises this error)."""


class SearchRecorder:
    """A :class:`Retriever` that forwards every search to ``retriever`` and remembers each query's answer.

    It also times every call: :meth:`metrics` gives latency p50/p99, failures, qps and the wrapped retriever's
    cache/de-duplication hit rate (:mod:`~searchr1.retrieval.call_metrics`).

    Args:
        retriever: the real search engine.
        server: what the log calls it (default: its ``url`` when it has one, else its class name).
    """

    def __init__(self, retriever: Retriever, server: str | None = None) -> None:
        self.retriever = retriever
        self.server = server or str(getattr(retriever, "url", None) or type(retriever).__name__)
        self._calls: dict[str, SearchCall] = {}
        self.window = CallWindow()

    def __getattr__(self, name: str) -> Any:
        """Everything else is the wrapped retriever's (``probe``, ``spend``, ``manifest``, ``urls``, ...)."""
        if name == "retriever" or name.startswith("__"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.retriever, name)

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        start = time.perf_counter()
        try:
            results = self.retriever.search(queries, topk)
        except RetrievalError as err:
            seconds = time.perf_counter() - start
            self.window.add(seconds, len(queries), failed=True)
            self._calls.update({q: SearchCall([], seconds, topk, str(err)) for q in queries})
            raise
        seconds = time.perf_counter() - start
        self.window.add(seconds, len(queries))
        self._calls.update({q: SearchCall(list(ps), seconds, topk) for q, ps in zip(queries, results)})
        return results

    def metrics(self) -> dict[str, float]:
        """Per-call metrics: ``latency_p50_ms``, ``latency_p99_ms``, ``qps``, ``calls``, ``queries``, ``failures``,
        ``cache_hit_rate`` (see :func:`~searchr1.retrieval.call_metrics.client_metrics`)."""
        return client_metrics(self.window, self.retriever)

    def take(self, queries: Sequence[str] | None = None) -> dict[str, SearchCall]:
        """The answers remembered since the last ``take`` (by query), forgotten here; with ``queries``, only theirs
        (the others stay: a validation rollout does not take searches of training rollouts sampled ahead)."""
        if queries is None:
            calls, self._calls = self._calls, {}
            return calls
        return {q: self._calls.pop(q) for q in dict.fromkeys(queries) if q in self._calls}


@dataclass(frozen=True)
class SearchRecord:
    """One row of the search log (see the module docstring for the columns)."""

    step: int
    trajectory: str
    turn: int
    query: str
    topk: int
    passage_ids: list[str]
    titles: list[str]
    contents: list[str]
    scores: list[float]
    seconds: float
    server: str
    error: str | None
    phase: str = "train"


PHASES = ("train", "val", "eval")
"""Values of the ``phase`` column: a training rollout, a validation rollout of ``fit``, ``searchr1 eval``."""


def search_turns(chunks: Sequence[tuple[int, int, str]]) -> list[int]:
    """The generation turn (1-based) that issued each observation, from a trajectory's ``chunks``.

    The k-th observation chunk answers the k-th search; its turn is the number of policy chunks before it.
    """
    turns, policy = [], 0
    for _, _, kind in chunks:
        if kind == "policy":
            policy += 1
        elif kind == "observation":
            turns.append(policy)
    return turns


def search_records(
    step: int,
    trajectories: Sequence[Any],
    trajectory_ids: Sequence[str],
    calls: dict[str, SearchCall],
    server: str,
    phase: str = "train",
) -> list[SearchRecord]:
    """The log rows of a rollout: one per executed search of each trajectory, in order.

    Args:
        step: training step or evaluation batch.
        trajectories: the rollout's :class:`~searchr1.rollout.Trajectory` objects.
        trajectory_ids: a name for each trajectory (e.g. ``<dataset>/<question id>/<sample>``).
        calls: :meth:`SearchRecorder.take` after the rollout.
        server: the recorder's ``server``.
        phase: one of :data:`PHASES`.
    """
    rows = []
    for traj, tid in zip(trajectories, trajectory_ids):
        turns = search_turns(traj.chunks)
        for k, query in enumerate(traj.queries):
            turn = turns[k] if k < len(turns) else traj.num_turns
            rows.append(_record(step, str(tid), turn, query, calls.get(query, NOT_RECORDED), server, phase))
    return rows


def context_records(
    step: int,
    queries: Sequence[str],
    trajectory_ids: Sequence[str],
    calls: dict[str, SearchCall],
    server: str,
    phase: str = "eval",
) -> list[SearchRecord]:
    """The log rows of a retrieval done for the prompt (the ``rag`` method: the question's top-k, put in the prompt
    before the first turn): one row per query, turn 0. Arguments as :func:`search_records`."""
    return [
        _record(step, str(tid), 0, q, calls.get(q, NOT_RECORDED), server, phase)
        for q, tid in zip(queries, trajectory_ids)
    ]


def _record(step: int, tid: str, turn: int, query: str, call: SearchCall, server: str, phase: str) -> SearchRecord:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    ps = call.passages
    return SearchRecord(
        step=step,
        trajectory=tid,
        turn=turn,
        query=query,
        topk=call.topk,
        passage_ids=[p.id for p in ps],
        titles=[p.title for p in ps],
        contents=[f"{p.title_line}\n{p.text}" for p in ps],
        scores=[float(p.score) for p in ps],
        seconds=call.seconds,
        server=server,
        error=call.error,
        phase=phase,
    )


def _schema():
    import pyarrow as pa

    strings = pa.list_(pa.string())
    return pa.schema(
        [
            ("step", pa.int64()),
            ("trajectory", pa.string()),
            ("turn", pa.int32()),
            ("query", pa.string()),
            ("topk", pa.int32()),
            ("passage_ids", strings),
            ("titles", strings),
            ("contents", strings),
            ("scores", pa.list_(pa.float64())),
            ("seconds", pa.float64()),
            ("server", pa.string()),
            ("error", pa.string()),
            ("phase", pa.string()),
        ]
    )


class SearchLog:
    """Appends :class:`SearchRecord` rows to a Parquet file (one row group per :meth:`write`).

    The file is complete once :meth:`close` ran (also as a context manager).

    Args:
        path: the ``.parquet`` file (its folder is created; an existing file is replaced).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows = 0
        self._writer = None

    def write(self, records: Sequence[SearchRecord]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, _schema())
        columns = {f.name: [getattr(r, f.name) for r in records] for f in fields(SearchRecord)}
        self._writer.write_table(pa.table(columns, schema=_schema()))
        self.rows += len(records)

    def close(self) -> None:
        """Finish the file (an empty log is still written, with the schema)."""
        if self._writer is None:
            self.write([])
        self._writer.close()

    def __enter__(self) -> SearchLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_search_log(path: str | Path) -> list[SearchRecord]:
    """Every row of a search log, in file order."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search log {path} does not exist (runs and evaluations write {SEARCH_LOG_FILE})")
    table = pq.read_table(path)
    later = {"phase": ""}  # columns added after the first logs were written: their value when absent (unknown)
    names = [f.name for f in fields(SearchRecord)]
    missing = [n for n in names if n not in table.column_names and n not in later]
    if missing:
        raise ValueError(f"{path} is not a search log: columns {missing} are missing")
    present = [n for n in names if n in table.column_names]
    absent = {n: v for n, v in later.items() if n not in table.column_names}
    return [SearchRecord(**row, **absent) for row in table.select(present).to_pylist()]


def _passage(id: str, title: str, contents: str, score: float) -> Passage:
    """A logged passage as the retriever returned it: same title, text, score and observation text."""
    return Passage(id=id, title=title, text=contents.partition("\n")[2], score=score, raw_contents=contents)


class ReplayMissError(LookupError):
    """The replayed log never saw a query (the run being replayed searched for something else)."""


class ReplayRetriever:
    """Answers searches from a search log, exactly as logged (offline; no index, no server).

    A query logged with an error raises :class:`RetrievalError` with that message (the rollout shows it as a failed
    search, as in the logged run). The first logged answer of a query wins, unless a later one has a larger
    topk.

    Args:
        log_path: a ``search_log.parquet`` written by a run or an evaluation.
    """

    def __init__(self, log_path: str | Path) -> None:
        self.log_path = Path(log_path)
        self.answers: dict[str, SearchRecord] = {}
        for record in read_search_log(self.log_path):  # the first answer of a query wins, unless a later has more
            known = self.answers.get(record.query)
            if known is None or record.topk > known.topk:
                self.answers[record.query] = record

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        unseen = [q for q in queries if q not in self.answers]
        if unseen:
            more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
            raise ReplayMissError(
                f"the search log {self.log_path} never saw the quer{'y' if len(unseen) == 1 else 'ies'} "
                f"{', '.join(repr(q) for q in unseen[:5])}{more}. A replay only repeats the searches of the logged run "
                "(same model, prompts and greedy decoding); use the real retriever for new queries."
            )
        records = [self.answers[q] for q in queries]
        failed = next((r for r in records if r.error is not None), None)
        if failed is not None:
            raise RetrievalError(failed.error)
        out = []
        for r in records:
            if topk > r.topk and len(r.passage_ids) == r.topk:
                raise ValueError(
                    f"{self.log_path} logged query {r.query!r} with topk={r.topk}; cannot replay topk={topk}"
                )
            out.append([_passage(*row) for row in zip(r.passage_ids, r.titles, r.contents, r.scores)][:topk])
        return out

    def records(self) -> list[dict[str, Any]]:
        """The logged answers as plain dicts (one per distinct query)."""
        return [asdict(r) for r in self.answers.values()]
