"""Edits: finding them in a model reply, and turning unified diffs into exact file edits or a
precise refusal. Pure: reads files, never writes them, never runs git."""
