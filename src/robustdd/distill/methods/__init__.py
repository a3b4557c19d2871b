"""Built-in methods; importing this package registers them."""

from robustdd.distill.methods import (  # noqa: F401
    bacon,
    dc,
    dm,
    guard,
    herding,
    idm,
    kcenter,
    mtt,
    random_selection,
    rdd,
    rome,
    sre2l,
)
