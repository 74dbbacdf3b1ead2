"""``genrec serve``: the HTTP retrieval endpoint (FastAPI on uvicorn) with dynamic micro-batching."""
from genrec.serve.app import create_app
from genrec.serve.runner import ServerThread, serve
from genrec.serve.settings import ServeSettings, add_arguments, from_arguments

__all__ = ["ServeSettings", "ServerThread", "add_arguments", "create_app", "from_arguments", "serve"]
