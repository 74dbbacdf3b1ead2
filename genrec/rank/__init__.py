"""The rank stage between the decoder and the list a shopper sees: candidate sources beside the generative
beam (``sources``), their feature columns (``features``), the rankers that order them (``rankers``) and the
learned ranker's training on validation targets (``train``). ``genrec.retriever.Retriever`` runs it."""
