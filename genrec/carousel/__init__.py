"""Batch carousel candidate generation: a parquet file of requests in, K products per request out,
streamed in chunks, resumable after a kill, and sharded across ``accelerate launch`` processes."""
from genrec.carousel.parts import OUTPUT_SCHEMA
from genrec.carousel.run import CarouselConfig, carousel_chunk, run_carousel

__all__ = ["OUTPUT_SCHEMA", "CarouselConfig", "carousel_chunk", "run_carousel"]
