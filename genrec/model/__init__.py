"""The model: SID tokens of a session (``tokens``), the run config sections ``decoder`` and ``train``
(``config``), the decoder (``decoder``, ``item_decoder``), the constrained beam search (``beam_search``) and
the one cached decoder call it makes (``decoder_step``), the training recipe (``train``) with its optimiser
pieces (``optim``), validation (``validation``), checkpoint (``checkpoint``) and training log
(``training_log``). The co-purchase memory and the item head that re-score decoded products live with the rank
stage (``genrec.rank``)."""
