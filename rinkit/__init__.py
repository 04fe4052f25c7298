"""rinkit: Recurrent Interface Networks for any modality.

    import rinkit
    m = rinkit.load("digits")            # shipped weights, a run folder or a checkpoint file
    x = m.sample(labels=[0, 1, 2])       # (3, 1, 8, 8) in [-1, 1]
    m.save(x, "digits")                  # digits.png through the modality's writer
    run = rinkit.train("digits", overrides={"train.steps": 500})

The API is imported lazily, so `import rinkit` stays cheap (no torch until used)."""
__version__ = "0.1.0"
__all__ = ["Model", "load", "shipped_models", "train"]


def __getattr__(name: str):
    if name == "train":  # the package rinkit.train, callable as rinkit.api.train (see its docstring)
        import importlib
        return importlib.import_module("rinkit.train")
    if name in __all__:
        from rinkit import api
        return getattr(api, name)
    raise AttributeError(f"module 'rinkit' has no attribute {name!r}")
