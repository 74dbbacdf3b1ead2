"""A run folder and what makes one: its file names (``layout``), its config (``config``), the Semantic ID
stage (``semids``: ``genrec semid *``), the whole training pipeline (``build``: ``genrec train``) and the
demo (``demo``)."""
