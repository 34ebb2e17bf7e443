"""The FastAPI gateway: routes, dependencies, auth; imports only api/ and shared/ (never torch or vLLM)."""
