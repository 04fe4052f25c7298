"""Training: the loop (trainer.py), optimizers, EMA, checkpoints, data order, distributed setup.

`rinkit.train` is both this package and the API's training function: `rinkit.train("digits",
overrides={...})` calls `rinkit.api.train` (the package would otherwise shadow the function as
soon as anything imported `rinkit.train.trainer`)."""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from rinkit.api import train
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
