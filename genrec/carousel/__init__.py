"""Batch carousel candidate generation: a parquet file of requests in, K products per request out,
streamed in chunks, resumable after a kill, and sharded across ``accelerate launch`` processes.
``run_carousel`` and ``carousel_chunk`` load torch and are imported on first use."""
from genrec.carousel.config import CarouselConfig
from genrec.carousel.parts import OUTPUT_SCHEMA

__all__ = ["OUTPUT_SCHEMA", "CarouselConfig", "carousel_chunk", "run_carousel"]


def __getattr__(name: str):
    """``carousel_chunk`` and ``run_carousel`` (``genrec.carousel.run``), imported on first use."""
    if name in ("carousel_chunk", "run_carousel"):
        from genrec.carousel import run

        return getattr(run, name)
    raise AttributeError(f"module 'genrec.carousel' has no attribute {name!r}")
