"""The catalog audit's review queue: decisions in SQLite (``store``) behind a small FastAPI app (``app``)."""
from genrec.review.app import create_review_app, open_review
from genrec.review.store import DECISIONS, Decision, ReviewError, ReviewStore

__all__ = ["DECISIONS", "Decision", "ReviewError", "ReviewStore", "create_review_app", "open_review"]
