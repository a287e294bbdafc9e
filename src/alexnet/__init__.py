"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) as the paper describes it."""

__version__ = "0.1.0"
