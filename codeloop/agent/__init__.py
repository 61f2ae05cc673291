"""The agent: a session and its turns (prompt, stream, edits, tests, feedback), producing
events. Never imports a front end."""
