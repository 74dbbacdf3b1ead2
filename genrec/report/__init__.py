"""The run report: one self-contained HTML page (codebook health, similarity and taxonomy figures, a SID
tree browser, product search, the decoder's history and evaluation)."""
from genrec.report.html import write_report

__all__ = ["write_report"]
