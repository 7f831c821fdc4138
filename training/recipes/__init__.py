"""Training recipes, one file per workflow (setup / train / save), each a command with --help."""
