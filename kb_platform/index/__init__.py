"""The Elasticsearch chunk index: mapping, writes, retrieval and versioned rollouts."""
