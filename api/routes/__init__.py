"""One router file per resource; main.py mounts them (under /v1 with the API key, /healthz without)."""
