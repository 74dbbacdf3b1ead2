"""Data: the dataset contract (``dataset``), shopper histories and the train / validation / test splits
(``sequences``), dataset statistics (``stats``), importers of public data sets (``importers``) and the
synthetic grocery world (``synth``)."""
