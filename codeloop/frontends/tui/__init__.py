"""The Textual front end: a consumer of the session's events and a producer of user commands.

Nothing outside this package imports Textual.
"""
