"""Running the project's tests: cold, or from the warm forking runner once proven safe; the
results parsed into typed records; every process a run started ended."""
