"""What the model sees: the prompt and its cache-friendly layout, the repo map, the read-only
tools, the context size and compaction helpers."""
