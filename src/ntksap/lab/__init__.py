"""The theory lab: small experiments behind NTK-SAP's argument (reference section 7), each a
function returning a :class:`LabResult` and drawing one figure.

- :func:`dynamics`: kernel prediction u(t) = exp(-K t) u(0) against gradient descent;
- :func:`frequency`: NTK eigenvectors oscillate more as the eigenvalues shrink;
- :func:`asi`: zero initial output (ASI, doubling trick) against a large random one.
"""

from .asi import asi, build_variants
from .common import LabResult
from .dynamics import dynamics
from .frequency import frequency, zero_crossings
from .nets import ASI, DeepNTK, TwoLayer, doubled

EXPERIMENTS = {"dynamics": dynamics, "frequency": frequency, "asi": asi}

__all__ = ["ASI", "EXPERIMENTS", "DeepNTK", "LabResult", "TwoLayer", "asi", "build_variants",
           "doubled", "dynamics", "frequency", "zero_crossings"]
