"""Built-in methods; importing this package registers them."""

from robustdd.distill.methods import bacon, dc, dm, herding, idm, mtt, random_selection  # noqa: F401
