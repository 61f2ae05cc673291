"""The workspace: the git sandbox beside the user's repo, every git command codeloop runs,
the records of what codeloop made, and `clean`."""
