"""Built-in methods; importing this package registers them."""

from robustdd.distill.methods import dm, random_selection  # noqa: F401
