"""`arena`, the command line: main.py builds the parser and runs a command; one module per group of commands."""
