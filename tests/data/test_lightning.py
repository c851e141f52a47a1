"""QADataModule inside real Lightning: Trainer resume, per-source validation loaders, LightningCLI parsing."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI

from searchr1.data import DataSource, QADataModule


class RecordingModule(LightningModule):
    """Trains one scalar; records the ids of every batch and marks it consumed, as the RL module must."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []
        self.validated: list[tuple[str, list[str]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append([e.id for e in batch])
        self.trainer.datamodule.mark_batch_consumed()
        return (self.weight - len(batch)).pow(2).sum()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.validated.append((self.trainer.datamodule.val_sources[dataloader_idx], [e.id for e in batch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, max_steps: int, **kwargs) -> Trainer:
    """A quiet one-device CPU trainer without logger or checkpoints."""
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _fit(tmp_path: Path, nq: str, max_steps: int, ckpt_path: str | None = None) -> tuple[Trainer, RecordingModule]:
    trainer = _trainer(tmp_path, max_steps)
    module = RecordingModule()
    trainer.fit(module, datamodule=QADataModule(train_files=[nq], batch_size=4, seed=11), ckpt_path=ckpt_path)
    return trainer, module


def test_trainer_resume_continues_the_same_batches(tmp_path: Path, data_dir: Path) -> None:
    nq = str(data_dir / "flashrag_sample/nq_test.jsonl")  # 17 rows, 5 batches of 4 per epoch
    _, full = _fit(tmp_path, nq, max_steps=8)
    trainer, first = _fit(tmp_path, nq, max_steps=3)
    ckpt = tmp_path / "step3.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=False)["QADataModule"] == {"epoch": 0, "batches_consumed": 3}
    _, resumed = _fit(tmp_path, nq, max_steps=8, ckpt_path=str(ckpt))
    assert len(full.seen) == 8 and first.seen == full.seen[:3]
    assert resumed.seen == full.seen[3:]  # crosses the epoch boundary after step 5


def test_trainer_validates_each_source_by_dataloader_idx(tmp_path: Path, data_dir: Path) -> None:
    nq = str(data_dir / "flashrag_sample/nq_test.jsonl")
    bamboogle = DataSource(str(data_dir / "bamboogle/questions.jsonl"), data_source="bamboogle")
    dm = QADataModule(train_files=[nq], val_files=[nq, bamboogle], batch_size=4, val_batch_size=50)
    trainer = _trainer(tmp_path, 2, val_check_interval=2, num_sanity_val_steps=0)
    module = RecordingModule()
    trainer.fit(module, datamodule=dm)
    # nq_test: 17 rows in one batch; bamboogle: 125 rows in 3 near-equal batches (42, 42, 41)
    assert [(name, len(ids)) for name, ids in module.validated] == [
        ("nq_test", 17),
        ("bamboogle", 42),
        ("bamboogle", 42),
        ("bamboogle", 41),
    ]


def test_lightning_cli_parses_paths_hub_specs_and_data_sources(data_dir: Path) -> None:
    nq = str(data_dir / "flashrag_sample/nq_test.jsonl")
    bamboogle = str(data_dir / "bamboogle/questions.jsonl")
    cli = LightningCLI(
        RecordingModule,
        QADataModule,
        run=False,
        args=[
            f"--data.train_files=[{nq}, hf://RUC-NLPIR/FlashRAG_datasets/nq/train]",
            f'--data.val_files=[{{"path": "{bamboogle}", "data_source": "bamboogle"}}]',
            "--data.batch_size=4",
            "--trainer.logger=false",
        ],
    )
    dm = cli.datamodule
    assert dm.train_sources_spec == [
        DataSource(nq),
        DataSource("RUC-NLPIR/FlashRAG_datasets", name="nq", split="train"),
    ]
    assert dm.val_sources_spec == [DataSource(bamboogle, data_source="bamboogle")]
    assert dm.batch_size == 4 and dm.val_batch_size == 4
