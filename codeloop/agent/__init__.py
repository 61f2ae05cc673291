"""The agent: a session and its turns (prompt, stream, edits, tests, feedback), producing
events. Never imports a front end.

    session       `Session`, the façade: open, ask, commands, finish (`core.port.Agent`)
    commands      what each slash command does to a session
    startup       the sandbox and the baseline, overlapped with connecting and warming
    turn          `TurnRunner`: one turn's steps (c)–(h); the stop conditions
    conversation  the conversation's items, what is unsent, notes for the next message
    view          what the model has seen: files, reads, the last report; the pinned files
    model         the requests: tools offered, `model.request`, streaming onto the clock
    applier       a reply's edits applied, committed and tested; the feedback
    compactor     older turns replaced by a summary
    results       test runs as events; the result of each tested commit
    clock         a turn's spans and the session's totals
"""
