"""The front ends: the headless printer, the line REPL and the Textual app. Consumers of
events and producers of commands, through the port in `codeloop.core.port` only."""
