"""The centre: typed events and the stream that carries them, the port front ends use, the
shared kinds, errors and the wire-neutral conversation. Imports nothing else of codeloop."""
