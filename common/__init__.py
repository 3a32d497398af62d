"""What every app needs and no app owns: the environment, signing, pushes to the consoles,
the Redis client, logs, pagination, request types. The bottom layer of the import rule
(STYLE.md B.2): nothing here imports an app (tests/test_layers.py)."""
