"""A run's configuration: one YAML file whose sections are the components' own dataclasses, read
strictly (a wrong key, type or value names itself: ``FILE: section.key: message``). Every section lives in a
module free of torch, so a bad config fails before the model stack loads."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrec.data.sequences import SequenceConfig
from genrec.model.config import DecoderConfig, TrainConfig
from genrec.rank.config import ItemHeadConfig, MemoryConfig, RankConfig
from index.cold import ColdStartConfig
from semid.codebook_config import SemIDConfig
from semid.config import Checks, load
from semid.embeddings import EmbeddingConfig


@dataclass
class RunConfig:
    """Everything a run builds, section by section; each section defaults to its component's defaults."""

    name: str = "run"  # a label for tables and logs
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)  # item -> vector
    semid: SemIDConfig = field(default_factory=SemIDConfig)  # vector -> Semantic ID
    sequence: SequenceConfig = field(default_factory=SequenceConfig)  # events -> histories and splits
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # the transformer
    train: TrainConfig = field(default_factory=TrainConfig)  # the decoder's training recipe
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)  # list slots open to new products
    memory: MemoryConfig = field(default_factory=MemoryConfig)  # co-purchase re-scoring of the decoded products
    item_head: ItemHeadConfig = field(default_factory=ItemHeadConfig)  # learned re-scoring of the decoded products
    rank: RankConfig = field(default_factory=RankConfig)  # candidate sources and the ranker that orders them

    def __post_init__(self) -> None:
        c = Checks(self, "")  # top-level keys have no section
        c.rule(bool(self.name), "name", "must not be empty")
        if self.item_head.weight > 0:
            c.rule(self.decoder.arch != "item", "item_head",
                   "the item head reads the token-level decoder's state (decoder.arch llama or gpt2), not arch item")
            c.rule(not self.sequence.retailer_token, "item_head",
                   "the item head is trained on prompts without a retailer token: set sequence.retailer_token false")


def load_run_config(path: str | Path) -> RunConfig:
    """Read and check a run config YAML (old run folders' spellings too); errors name the file and the key."""
    return load(RunConfig, path)
