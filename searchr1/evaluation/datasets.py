"""Which evaluation sets to read: ``name=path`` pairs or the 7 standard names resolved in a data folder.

The standard sets are Search-R1's (``searchr1.data.EVAL_SPLITS``, in the paper's column order): nq, triviaqa,
popqa, hotpotqa, 2wikimultihopqa, musique, bamboogle. A standard name is looked up in the folder that
``tools/prepare_data.py --out DIR`` writes, trying in order ``DIR/test/<name>.jsonl``, ``DIR/<name>.jsonl``,
``DIR/test/<name>.parquet``, ``DIR/<name>.parquet`` and finally the merged ``DIR/test.parquet`` (rows whose
``data_source`` is the name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from searchr1.data import EVAL_SPLITS, QAExample, read_examples
from searchr1.errors import UserError

STANDARD_DATASETS: tuple[str, ...] = tuple(EVAL_SPLITS)
"""The 7 evaluation sets of the paper, in its column order."""


@dataclass(frozen=True)
class EvalDataset:
    """One evaluation set.

    Attributes:
        name: the table row / column name.
        path: the file it is read from.
        data_source: keep only rows with this ``data_source`` (for the merged ``test.parquet``), else all rows.
    """

    name: str
    path: str
    data_source: str | None = None

    def load(self, max_samples: int | None = None) -> list[QAExample]:
        """Read the rows (the first ``max_samples`` when given)."""
        examples = read_examples(self.path)
        if self.data_source is not None:
            examples = [ex for ex in examples if ex.data_source == self.data_source]
            if not examples:
                raise ValueError(
                    f"{self.path} has no rows with data_source={self.data_source!r}; "
                    f"write the set with tools/prepare_data.py --test-sources {self.data_source} or give name=path"
                )
        if max_samples is not None:
            if max_samples <= 0:
                raise ValueError(f"max_samples must be positive, got {max_samples}")
            examples = examples[:max_samples]
        return examples


def _find_standard(name: str, data_dir: Path) -> EvalDataset:
    candidates = [
        data_dir / "test" / f"{name}.jsonl",
        data_dir / f"{name}.jsonl",
        data_dir / "test" / f"{name}.parquet",
        data_dir / f"{name}.parquet",
    ]
    for path in candidates:
        if path.is_file():
            return EvalDataset(name, str(path))
    merged = data_dir / "test.parquet"
    if merged.is_file():
        return EvalDataset(name, str(merged), data_source=name)
    tried = ", ".join(str(p) for p in [*candidates, merged])
    raise FileNotFoundError(
        f"standard dataset {name!r} not found in {data_dir} (tried {tried}). Fix: run "
        f"`python tools/prepare_data.py --out {data_dir} --test-sources {name}` or give it as {name}=PATH"
    )


def resolve_datasets(specs: Sequence[str], data_dir: str | Path | None = None) -> list[EvalDataset]:
    """Turn command-line dataset specs into :class:`EvalDataset` entries.

    Args:
        specs: each ``name=path`` (any file ``read_examples`` reads), a standard name (see
            :data:`STANDARD_DATASETS`), or ``all`` for the 7 standard sets.
        data_dir: folder where standard names are looked up (the ``tools/prepare_data.py`` layout).

    Returns:
        One entry per set, in the given order (``all`` expands in the paper's order); names are unique.
    """
    out: list[EvalDataset] = []
    for spec in specs:
        if "=" in spec:
            name, _, path = spec.partition("=")
            name, path = name.strip(), path.strip()
            if not name or not path:
                raise UserError(f"dataset spec {spec!r} must look like name=path (e.g. nq=data/test/nq.jsonl)")
            if not Path(path).exists() and not path.startswith("hf://"):
                raise FileNotFoundError(f"dataset {name!r}: file {path} does not exist")
            out.append(EvalDataset(name, path))
            continue
        names = list(STANDARD_DATASETS) if spec == "all" else [spec]
        for name in names:
            if name not in STANDARD_DATASETS:
                raise UserError(
                    f"unknown dataset {name!r}: give name=path, 'all', or one of {', '.join(STANDARD_DATASETS)}"
                )
            if data_dir is None and spec == "all":
                raise UserError(
                    "--datasets is 'all' (the default): the 7 standard sets, read from --data-dir (the folder "
                    "written by tools/prepare_data.py); pass --data-dir, or give your files as --datasets name=path"
                )
            if data_dir is None:
                raise UserError(
                    f"dataset {name!r} is a standard name; pass --data-dir (the folder written by "
                    "tools/prepare_data.py) or give it as name=path"
                )
            out.append(_find_standard(name, Path(data_dir)))
    seen: set[str] = set()
    for ds in out:
        if ds.name in seen:
            raise UserError(f"dataset {ds.name!r} is given twice; names must be unique")
        seen.add(ds.name)
    return out


def load_datasets(datasets: Sequence[EvalDataset], max_samples: int | None = None) -> dict[str, list[QAExample]]:
    """Read every set: ``{name: examples}`` in the given order."""
    return {ds.name: ds.load(max_samples) for ds in datasets}
