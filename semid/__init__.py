"""semid: items -> Semantic IDs (embeddings, RQ-VAE with taxonomy contrastive loss, tokenizer, evaluation,
audit). Imports neither genrec nor index."""
