"""genrec: shopper sessions -> the next product's Semantic ID, and everything that serves it."""
