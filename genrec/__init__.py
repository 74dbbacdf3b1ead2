"""genrec: shopper sessions -> the next product's Semantic ID, and everything that serves it."""


def __getattr__(name: str):
    """``from genrec import Retriever``: the public inference API, imported on first use (torch is heavy)."""
    if name == "Retriever":
        from genrec.retriever import Retriever

        return Retriever
    raise AttributeError(f"module 'genrec' has no attribute {name!r}")


__all__ = ["Retriever"]
