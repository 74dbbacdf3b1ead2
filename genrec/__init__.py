"""genrec: shopper sessions -> the next product's Semantic ID, and everything that serves it."""


def __getattr__(name: str):
    """``from genrec import Retriever``: the public inference API, imported on first use (torch is heavy);
    ``ConfigError`` likewise."""
    if name == "Retriever":
        from genrec.retriever import Retriever

        return Retriever
    if name == "ConfigError":  # every bad configuration key, type, value or file, with .section and .key
        from semid.config import ConfigError

        return ConfigError
    raise AttributeError(f"module 'genrec' has no attribute {name!r}")


__all__ = ["ConfigError", "Retriever"]
