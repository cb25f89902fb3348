"""squeezestudy: the library behind the SqueezeNet study notebooks."""

__version__ = "0.1.0"
