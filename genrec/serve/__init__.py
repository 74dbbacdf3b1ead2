"""``genrec serve``: the HTTP retrieval endpoint (FastAPI on uvicorn) with dynamic micro-batching.
``ServeSettings`` and its flags (``settings``) are light; the app and the runner load fastapi and torch and
are imported on first use."""
from genrec.serve.settings import ServeSettings, add_arguments, from_arguments

__all__ = ["ServeSettings", "ServerThread", "add_arguments", "create_app", "from_arguments", "serve"]


def __getattr__(name: str):
    """``create_app`` (``genrec.serve.app``), ``ServerThread`` and ``serve`` (``genrec.serve.runner``),
    imported on first use."""
    if name == "create_app":
        from genrec.serve.app import create_app

        return create_app
    if name in ("ServerThread", "serve"):
        from genrec.serve import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'genrec.serve' has no attribute {name!r}")
