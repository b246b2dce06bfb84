"""The paper's claims, one registered entry each (`base.Claim`); every module of this package
registers its own, so adding a claim is one `CLAIMS.add(...)` in a new module here."""

# isort: off
from emergence_lab.report.claims import level, emergence, plateau, designs, landscape  # noqa: F401,E501 - table order
# isort: on
from emergence_lab.registry import import_submodules
from emergence_lab.report.claims.base import (  # noqa: F401 - the claims' interface
    ALL_LEVELS,
    ALL_RUNS,
    CLAIMS,
    HOLM_FAMILY,
    PAIRED,
    TREND,
    Claim,
    references,
    vs_control,
    vs_reference,
)
from emergence_lab.report.claims.plateau import (  # noqa: F401
    near_zero_epoch,
    never_near_zero,
    plateau_effects,
)

import_submodules(__name__)  # any further module registers its own
