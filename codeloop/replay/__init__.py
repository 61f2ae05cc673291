"""Recordings: the recorder that writes them, and reading, watching, re-executing and
re-asking them."""
