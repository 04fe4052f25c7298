"""rinkit's built-in modality plugins (installed as the `rinkit_plugins` package).

Each registers through the `rinkit` entry-point group in pyproject.toml, exactly as a
third-party plugin package would."""
