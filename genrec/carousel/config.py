"""``CarouselConfig``: how a carousel job decodes and cuts its work (``genrec carousel``'s flags). A module of
its own, free of torch, so the command line builds its flags without loading the model stack."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from semid.config import Checks


@dataclass
class CarouselConfig:
    """How a carousel job decodes and how it cuts its work. One CPU thread per process is the default because
    the beam search's many small ops gain little from threads and lose ~10x when cores are shared."""

    k: int = 50  # products per request
    chunk_size: int = 2048  # requests per part file: the unit of resuming and of sharding across processes
    batch_size: int = 512  # requests per beam search call (bounds the decoder's memory)
    exclude_history: bool = True  # never recommend a product already in the request's history
    beam_width: int = 20  # decoder beams (raised to k when k is larger)
    on_missing: Literal["skip", "error"] = "skip"  # a request with no usable history: skip and count it, or fail
    threads: int = 1  # torch CPU threads per process (scale out with processes instead); 0: torch's default
    device: str | None = None  # torch device; None: accelerate's device of the process (cuda:<rank>), else cpu
    # decoder weights (auto: bfloat16 on CUDA and on CPUs with native bf16 matmul)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    progress: bool = True  # progress bar (requests per second) on the main process

    def __post_init__(self) -> None:
        c = Checks(self, "carousel")
        c.literals()
        c.at_least(1, "k", "chunk_size", "batch_size", "beam_width")
        c.at_least(0, "threads")
