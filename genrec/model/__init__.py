"""The model: SID tokens of a session (``tokens``), the decoder (``decoder``, ``item_decoder``), the
constrained beam search (``beam_search``), the training recipe (``train``) with its optimiser pieces (``optim``),
validation (``validation``), checkpoint (``checkpoint``) and history (``history``). The
co-purchase memory and the item head that re-score decoded products live with the rank stage
(``genrec.rank``)."""
