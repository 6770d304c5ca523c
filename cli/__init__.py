"""The `trackflow` command: the top layer. It imports flows; nothing imports it."""
