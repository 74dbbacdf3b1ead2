"""The model: SID tokens of a session (``tokens``), the decoder (``decoder``, ``item_decoder``), the
constrained beam search (``beam_search``), the training recipe (``train``) with its optimiser pieces (``optim``),
validation (``validation``), checkpoint (``checkpoint``) and history (``history``), the co-purchase memory
(``memory``) and the learned item head (``item_head``), the two experts that re-score decoded products."""
