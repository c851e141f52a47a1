"""QA data: typed examples, validating readers and the Lightning data module.

``build_prompt`` (from ``searchr1.protocols``) is re-exported lazily, so importing this package does not import
the prompt module; the data module (and Lightning) are imported lazily too.
"""

from __future__ import annotations

from searchr1._lazy import lazy_exports
from searchr1.data.qa import (
    EVAL_SPLITS,
    FLASHRAG_REPO,
    TRAIN_SOURCES,
    DataError,
    DataSource,
    QAExample,
    parse_source,
    read_examples,
    to_flashrag_record,
    to_search_r1_record,
)

_LAZY = {
    "QADataModule": "searchr1.data.datamodule",
    "TrainBatchStream": "searchr1.data.datamodule",
    "EvalBatches": "searchr1.data.datamodule",
    "shard_eval": "searchr1.data.datamodule",
    "build_prompt": "searchr1.protocols",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "EVAL_SPLITS",
    "FLASHRAG_REPO",
    "TRAIN_SOURCES",
    "DataError",
    "DataSource",
    "QAExample",
    "parse_source",
    "read_examples",
    "to_flashrag_record",
    "to_search_r1_record",
    *_LAZY,
]
