"""The servers users pick instead of ours, each a few lines in its framework, each run in its own venv."""
