"""The rank stage between the decoder and the list a shopper sees: candidate sources beside the generative
beam (``sources``), their feature columns (``features``), the rankers that order them (``rankers``), the
learned ranker's training on validation targets (``train``), and what they read besides the decoder: the
co-purchase memory (``memory``), the item head (``item_head``) and per-product statistics
(``item_stats``). ``genrec.retriever.Retriever`` runs it."""
