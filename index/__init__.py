"""index: Semantic IDs -> products, partitioned by retailer, with the prefix tries decoding is constrained by."""
